"""The HTTP API: FastAPI over one loaded export and the live state.

`create_app(settings)` builds the app; `curator serve` runs it under uvicorn. The request path
of a recommendation is numpy only (profile lookup, the user tower's kernel, one matrix product,
a partial sort); TensorFlow runs only to embed artworks added live and to load a model.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from serving.batcher import MicroBatcher
from serving.catalogue import Catalogue, Ranked, RequestError
from serving.metrics import Metrics, RequestMetrics
from serving.model import ExportError, load_serving_model, newest_version
from serving.schemas import (
    Accepted,
    BatchRequest,
    BatchResponse,
    NewArtworks,
    Purchases,
    RecommendationRequest,
    Recommendations,
    ReloadResult,
)
from serving.settings import Settings
from serving.store import NewItem, Purchase, Store

log = logging.getLogger("curator.serving")


class Service:
    """The settings, the database, the catalogue being served, and model swaps.

    Writes and swaps hold `write_lock`: a swap rebuilds the catalogue from the new export and
    everything in the database, so no write lands in the old catalogue while it rebuilds.
    Reads never wait: they use whichever catalogue `self.catalogue` holds when they start."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.store = Store(settings.resolved_database_url())
        self.metrics = Metrics()
        self.write_lock = threading.Lock()
        self.catalogue: Catalogue | None = None
        self.failed_version: Path | None = None  # the watcher does not retry a broken export

    def reload(self, path: Path | None = None) -> ReloadResult:
        """Loads `path` (default: the newest export) and switches to it; on any ExportError
        the current catalogue keeps serving."""
        started = time.perf_counter()
        try:
            path = path or newest_version(self.settings.model_dir)
            model = load_serving_model(path)
            with self.write_lock:
                catalogue = Catalogue.build(model, self.store.items(), self.store.purchases())
                self.catalogue = catalogue
        except ExportError:
            self.metrics.reloads.labels("refused").inc()
            self.failed_version = path
            raise
        self.metrics.reloads.labels("loaded").inc()
        self.metrics.model_version.set(model.version)
        log.info("serving %s (version %d)", path, model.version)
        return ReloadResult(
            model_version=model.version,
            path=str(path),
            seconds=round(time.perf_counter() - started, 3),
        )

    def current(self) -> Catalogue:
        if self.catalogue is None:
            raise HTTPException(503, "no model loaded yet")
        return self.catalogue

    def resolve(self, request: RecommendationRequest, where: str = "") -> ResolvedQuery:
        """Checks a request against the catalogue now served and finds its profile: the
        customer's purchases, then the given item_ids; the most recent `max_profile` count.
        `where` prefixes the fields named in errors (e.g. "requests[3].")."""
        catalogue, settings = self.current(), self.settings
        if request.k > settings.max_k:
            raise RequestError(f"{where}k: {request.k} is out of range [1, {settings.max_k}]")
        given = catalogue.rows(f"{where}item_ids", request.item_ids).tolist()
        bought = catalogue.profiles.get(request.customer_id, []) if request.customer_id else []
        profile = np.array(list(dict.fromkeys([*bought, *given])), np.int64)
        return ResolvedQuery(
            catalogue,
            profile[-settings.max_profile :],
            profile if request.exclude_purchased else profile[:0],
            request.k,
            request.available_only,
        )

    @staticmethod
    def answer(queries: Sequence[ResolvedQuery]) -> list[dict]:
        """Answers resolved queries: per catalogue, one user-tower call and one matrix product
        for all that have a profile; the popular artworks for those without."""
        answers: dict[int, dict] = {}
        catalogues = {id(q.catalogue): q.catalogue for q in queries}
        for key, catalogue in catalogues.items():
            mine = [i for i, q in enumerate(queries) if id(q.catalogue) == key]
            modelled = [i for i in mine if queries[i].profile.size]
            if modelled:
                users = catalogue.user_vectors([queries[i].profile for i in modelled])
                ranked = catalogue.top_k(
                    users,
                    max(queries[i].k for i in modelled),
                    exclude=[queries[i].excluded for i in modelled],
                    available_only=[queries[i].available_only for i in modelled],
                )
                for i, result in zip(modelled, ranked, strict=True):
                    answers[i] = _recommendations(catalogue, "model", result, queries[i].k)
            for i in set(mine) - set(modelled):
                query = queries[i]
                result = catalogue.popular(
                    query.k, exclude=query.excluded, available_only=query.available_only
                )
                answers[i] = _recommendations(catalogue, "popular", result, query.k)
        return [answers[i] for i in range(len(queries))]

    def similar(self, item_id: str, k: int) -> dict:
        catalogue = self.current()
        if k > self.settings.max_k:
            raise RequestError(f"k: {k} is out of range [1, {self.settings.max_k}]")
        (row,) = catalogue.rows("item_id", [item_id])
        query = catalogue.vectors[row].copy()
        if catalogue.model.item_tower.bias_slot:
            query[-1] = 0.0  # visual similarity only: the bias slot does not count
        (result,) = catalogue.top_k(
            query[None, :], k, exclude=[np.array([row])], available_only=[True]
        )
        return _recommendations(catalogue, "similar", result, k)

    def add_items(self, body: NewArtworks) -> Accepted:
        now = time.time()
        items = [
            NewItem(
                item.item_id,
                item.artist_id,
                item.one_of_a_kind,
                _seconds(item.upload_time, now),
                np.asarray(item.features, np.float32),
            )
            for item in body.items
        ]
        with self.write_lock:
            catalogue = self.current()
            catalogue.check_new_items(items)
            vectors = catalogue.embed(items)
            catalogue.add_items(items, vectors, self.store)
            return Accepted(accepted=len(items), catalogue_size=catalogue.size)

    def add_purchases(self, body: Purchases) -> Accepted:
        now = time.time()
        records = [
            Purchase(p.customer_id, p.item_id, _seconds(p.timestamp, now)) for p in body.purchases
        ]
        with self.write_lock:
            catalogue = self.current()
            catalogue.add_purchases(records, self.store)
            return Accepted(accepted=len(records), catalogue_size=catalogue.size)


@dataclass(frozen=True)
class ResolvedQuery:
    """A recommendation request resolved against one catalogue."""

    catalogue: Catalogue
    profile: np.ndarray  # catalogue rows, oldest first; empty: no profile
    excluded: np.ndarray  # rows never recommended
    k: int
    available_only: bool


def _recommendations(catalogue: Catalogue, strategy: str, result: Ranked, k: int) -> dict:
    """A `Recommendations` body as plain data (the request path skips pydantic objects)."""
    item_ids, artist_ids = catalogue.item_ids, catalogue.artist_ids
    rows, scores = result.rows[:k].tolist(), result.scores[:k].tolist()
    return {
        "model_version": catalogue.model.version,
        "strategy": strategy,
        "items": [
            {"item_id": item_ids[row], "score": score, "artist_id": artist_ids[row]}
            for row, score in zip(rows, scores, strict=True)
        ],
    }


def _json(body: dict) -> Response:
    return Response(json.dumps(body, allow_nan=False), media_type="application/json")


def _seconds(moment: datetime | None, default: float) -> float:
    if moment is None:
        return default
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # naive times are UTC
    return moment.timestamp()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await asyncio.to_thread(service.reload)  # fails the start-up on a broken export
        # TensorFlow leaves millions of long-lived objects; without this, every full garbage
        # collection walks them all and stalls requests for tens of milliseconds
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(_watch(service)) if settings.watch_seconds else None
        yield
        if watcher:
            watcher.cancel()
        service.store.close()

    app = FastAPI(
        title="Curator",
        summary="Visually-aware art recommendations (CuratorNet towers, TFRS, ScaNN)",
        version="1",
        lifespan=lifespan,
        max_body_size=settings.max_body_bytes,
    )
    batcher = MicroBatcher(
        service.answer, settings.max_batch, on_batch=service.metrics.batch_size.observe
    )
    app.state.service, app.state.batcher = service, batcher
    app.add_middleware(RequestMetrics, metrics=service.metrics)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return JSONResponse({"detail": str(error)}, status_code=error.status)

    def require_api_key(x_api_key: str | None = Header(None)) -> None:
        expected = settings.api_key
        if expected is None:
            return
        if x_api_key is None or not secrets.compare_digest(
            x_api_key.encode(), expected.get_secret_value().encode()
        ):
            raise HTTPException(401, "missing or wrong X-API-Key header")

    errors = {404: {"description": "unknown item ids"}, 409: {"description": "conflict"}}
    guarded = {401: {"description": "missing or wrong X-API-Key"}}

    @app.post("/v1/recommendations", response_model=Recommendations, responses=errors)
    async def recommendations(body: RecommendationRequest) -> Response:
        # a body the response model describes, serialised once without re-validation
        return _json(await batcher.submit(service.resolve(body)))

    @app.post("/v1/recommendations:batch", response_model=BatchResponse, responses=errors)
    async def recommendations_batch(body: BatchRequest) -> Response:
        if len(body.requests) > settings.max_batch:
            raise RequestError(
                f"requests: {len(body.requests)} requests, at most {settings.max_batch} per call"
            )
        queries = [service.resolve(r, f"requests[{i}].") for i, r in enumerate(body.requests)]
        # submitted together, they are answered by one batch (one model call)
        return _json({"results": await asyncio.gather(*map(batcher.submit, queries))})

    @app.get("/v1/items/{item_id}/similar", response_model=Recommendations, responses=errors)
    async def similar(item_id: str, k: int = Query(10, ge=1)) -> Response:
        return _json(service.similar(item_id, k))

    @app.post(
        "/v1/items",
        response_model=Accepted,
        dependencies=[Depends(require_api_key)],
        responses={**errors, **guarded},
    )
    def add_items(body: NewArtworks) -> Accepted:
        return service.add_items(body)

    @app.post(
        "/v1/purchases",
        response_model=Accepted,
        dependencies=[Depends(require_api_key)],
        responses={**errors, **guarded},
    )
    def add_purchases(body: Purchases) -> Accepted:
        return service.add_purchases(body)

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {"description": "no model loaded"}})
    async def readyz() -> JSONResponse:
        if service.catalogue is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": service.catalogue.model.version})

    @app.get("/v1/model")
    async def model() -> dict:
        catalogue = service.current()
        return {"path": str(catalogue.model.path), **catalogue.model.manifest}

    @app.get("/metrics")
    async def metrics() -> Response:
        if service.catalogue is not None:
            catalogue = service.catalogue
            service.metrics.catalogue_items.set(catalogue.size)
            service.metrics.available_items.set(int(catalogue.available(catalogue.size).sum()))
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload",
        response_model=ReloadResult,
        dependencies=[Depends(require_api_key)],
        responses={**guarded, 409: {"description": "the export was refused"}},
    )
    async def reload() -> ReloadResult:
        try:
            return await asyncio.to_thread(service.reload)
        except ExportError as error:
            raise HTTPException(
                409, f"refused, still serving the previous model: {error}"
            ) from None

    return app


async def _watch(service: Service) -> None:
    """Loads a newer export when one appears under the export root."""
    while True:
        await asyncio.sleep(service.settings.watch_seconds)
        try:
            newest = newest_version(service.settings.model_dir)
        except ExportError:
            continue
        current = service.catalogue.model.path if service.catalogue else None
        if newest in (current, service.failed_version):
            continue
        try:
            await asyncio.to_thread(service.reload, newest)
        except ExportError as error:
            log.error("not switching to %s: %s", newest, error)
