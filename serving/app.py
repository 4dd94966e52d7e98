"""The HTTP API: FastAPI routes over `Service` (serving/service.py).

`create_app(settings)` builds the app; `curator serve` runs it under uvicorn. The request path
of a recommendation is numpy only (profile lookup, the user tower's kernel, one matrix product,
a partial sort), batched across concurrent requests (serving/batcher.py); TensorFlow runs only
to embed artworks added live and to load a model. Request bodies are read by serving/bodies.py,
the API key is checked by serving/auth.py before any body is read, and the interactive docs'
scripts are served by the service itself (fastapi-offline), so `/docs` works without internet.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serving.auth import ApiKeyGuard
from serving.batcher import MicroBatcher
from serving.bodies import BodyValidator, describe_errors
from serving.body_limit import BodyLimit
from serving.errors import Conflict, RequestError
from serving.export_loader import ExportError
from serving.image_uploads import multipart_spec, read_image_upload
from serving.openapi import body_spec, error_responses, schema_builder
from serving.schemas import (
    Accepted,
    BatchRequest,
    BatchResponse,
    Favourites,
    FavouritesChange,
    NewArtworks,
    Purchases,
    Readiness,
    RecommendationRequest,
    Recommendations,
    ReloadResult,
)
from serving.service import Service
from serving.settings import Settings
from serving.telemetry import RequestMetrics
from training.data.ids import ID_MAX_LENGTH, ID_PATTERN, ID_RULE

log = logging.getLogger("curator.serving")

GUARDED = {
    ("POST", "/v1/items"),
    ("POST", "/v1/items/image"),
    ("POST", "/v1/purchases"),
    ("POST", "/v1/customers/{customer_id}/favourites"),
    ("POST", "/admin/reload"),
}
# an id in a path (customer, artwork): the same alphabet as in bodies (an id outside it cannot
# exist: 422, not 404)
PathId = Annotated[str, Path(pattern=ID_PATTERN, max_length=ID_MAX_LENGTH, description=ID_RULE)]
MANIFEST_PATHS = ("run", "dataset")  # host paths in a manifest, shown by their last part only


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if service.catalogue is None:  # `curator serve` loads it before uvicorn starts
            await asyncio.to_thread(service.reload)  # fails the start-up on a broken export
        # TensorFlow leaves millions of long-lived objects; without this, every full garbage
        # collection walks them all and stalls requests for tens of milliseconds
        gc.collect()
        gc.freeze()
        watcher = asyncio.create_task(_watch(service)) if settings.watch_seconds else None
        syncer = asyncio.create_task(_sync(service)) if settings.sync_seconds else None
        yield
        for task in (watcher, syncer):
            if task:
                task.cancel()
        bodies.close()
        service.store.close()

    app = FastAPIOffline(
        title="Curator",
        summary="Visually-aware art recommendations (CuratorNet towers, TFRS, ScaNN)",
        version="1",
        lifespan=lifespan,
        static_url="/docs-assets",
    )
    batcher = MicroBatcher(
        service.answer, settings.max_batch, on_batch=service.metrics.batch_size.observe
    )
    bodies = BodyValidator()
    app.state.service, app.state.batcher = service, batcher
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # behind the key guard
    app.add_middleware(ApiKeyGuard, key=settings.api_key, guarded=GUARDED)
    app.add_middleware(RequestMetrics, metrics=service.metrics)  # outermost: counts the 401s

    @app.exception_handler(RequestError)
    async def request_error(request: Request, error: RequestError):
        return _problem(error.status, str(error))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        # path and query parameters (bodies are read by serving/bodies.py)
        return _problem(422, describe_errors(error.errors(), skip=1))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, error: ClientDisconnect):
        # nobody reads this answer: it is counted as a 400, not logged as the service's fault
        return _problem(400, "body: the client closed the connection before sending all of it")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        headers = error.headers
        if error.status_code == 405:  # Starlette lists the first route's methods only
            headers = {**(headers or {}), "Allow": ", ".join(_methods(app, request.url.path))}
        return _problem(error.status_code, str(error.detail), headers)

    reads = error_responses(400, 404, 413, 415, 422, e404="unknown item ids")
    writes = error_responses(
        400, 401, 404, 409, 413, 415, 422,
        e401="missing or wrong X-API-Key",
        e404="unknown item ids",
        e409="an artwork id that exists, or a one-of-a-kind artwork already sold",
    )  # fmt: skip
    not_ready = error_responses(503, e503="no model loaded yet")

    @app.post(
        "/v1/recommendations",
        response_model=Recommendations,
        responses={**reads, **not_ready},
        openapi_extra=body_spec(RecommendationRequest),
    )
    async def recommendations(request: Request) -> Response:
        body = await bodies.read(request, RecommendationRequest)
        # a body the response model describes, serialised once without re-validation
        return _json(await batcher.submit(service.resolve(body)))

    @app.post(
        "/v1/recommendations:batch",
        response_model=BatchResponse,
        responses={**reads, **not_ready},
        openapi_extra=body_spec(BatchRequest),
    )
    async def recommendations_batch(request: Request) -> Response:
        body = await bodies.read(request, BatchRequest)
        if len(body.requests) > settings.max_batch:
            raise RequestError(
                f"requests: {len(body.requests)} requests, at most {settings.max_batch} per call"
            )
        queries = [service.resolve(r, f"requests[{i}].") for i, r in enumerate(body.requests)]
        # submitted together, they are answered by one batch (one model call)
        return _json({"results": await asyncio.gather(*map(batcher.submit, queries))})

    @app.get(
        "/v1/items/{item_id}/similar",
        response_model=Recommendations,
        responses={**error_responses(404, 422, e404="unknown item id"), **not_ready},
    )
    async def similar(item_id: PathId, k: int = Query(10, ge=1, le=settings.max_k)) -> Response:
        return _json(await asyncio.to_thread(service.similar, item_id, k))

    @app.post(
        "/v1/items",
        response_model=Accepted,
        responses={**writes, **not_ready},
        openapi_extra=body_spec(NewArtworks),
    )
    async def add_items(request: Request) -> Accepted:
        body = await bodies.read(request, NewArtworks)
        return await asyncio.to_thread(service.add_items, body)

    @app.post(
        "/v1/items/image",
        response_model=Accepted,
        responses={
            **writes,
            **error_responses(
                404,
                409,
                413,
                415,
                e404="unknown item ids, or image uploads not enabled (no --image-extractor)",
                e409="an artwork id that exists, or an extractor that does not fit the model",
                e413="the body is larger than max_body_bytes or the image than max_image_bytes",
                e415="the Content-Type is not multipart/form-data, or the body is compressed",
            ),
            **not_ready,
        },
        openapi_extra=multipart_spec(),
        include_in_schema=service.extractor is not None,  # documented where it works
    )
    async def add_item_image(request: Request) -> Accepted:
        """An artwork from its photograph: the service computes its features with the image
        extractor it was started with, then adds it as `POST /v1/items` does. Without one the
        route answers 404 saying so, and is not in the schema."""
        artwork, image = await read_image_upload(request, settings.max_image_bytes)
        return await asyncio.to_thread(service.add_image_item, artwork, image)

    @app.post(
        "/v1/purchases",
        response_model=Accepted,
        responses={**writes, **not_ready},
        openapi_extra=body_spec(Purchases),
    )
    async def add_purchases(request: Request) -> Accepted:
        body = await bodies.read(request, Purchases)
        return await asyncio.to_thread(service.add_purchases, body)

    @app.post(
        "/v1/customers/{customer_id}/favourites",
        response_model=Favourites,
        responses={**writes, **not_ready},
        openapi_extra=body_spec(FavouritesChange),
    )
    async def change_favourites(request: Request, customer_id: PathId) -> Favourites:
        """Add and remove favourites (`remove` first); they join the customer's profile."""
        body = await bodies.read(request, FavouritesChange)
        return await asyncio.to_thread(service.change_favourites, customer_id, body)

    @app.get(
        "/v1/customers/{customer_id}/favourites",
        response_model=Favourites,
        responses={**error_responses(422), **not_ready},
    )
    async def favourites(customer_id: PathId) -> Favourites:
        return service.favourites(customer_id)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "no model loaded yet"}},
    )
    async def readyz() -> JSONResponse:
        if service.catalogue is None:
            return JSONResponse({"status": "loading", "model_version": None}, status_code=503)
        return JSONResponse({"status": "ready", "model_version": service.catalogue.model.version})

    @app.get("/v1/model", responses=not_ready)
    async def model() -> dict:
        """The served export's manifest (its file hashes counted, not listed); paths are
        relative to the export root."""
        catalogue = service.current()
        manifest = dict(catalogue.model.manifest)
        manifest["files"] = len(manifest.get("files", {}))  # the hashes stay in the export
        for key in MANIFEST_PATHS:
            if manifest.get(key):
                manifest[key] = manifest[key].replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        return {"path": catalogue.model.path.name, **manifest}

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus text exposition format."""
        if service.catalogue is not None:
            catalogue = service.catalogue
            service.metrics.catalogue_items.set(catalogue.size)
            service.metrics.available_items.set(int(catalogue.available(catalogue.size).sum()))
        return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/admin/reload",
        response_model=ReloadResult,
        responses=error_responses(
            401, 409, e401="missing or wrong X-API-Key", e409="the export was refused"
        ),
    )
    async def reload() -> ReloadResult:
        try:
            return await asyncio.to_thread(service.reload)
        except ExportError as error:
            raise Conflict(f"refused, still serving the previous model: {error}") from None

    app.openapi = schema_builder(
        app,
        settings,
        [RecommendationRequest, BatchRequest, NewArtworks, Purchases, FavouritesChange],
        GUARDED,
        feature_dim=lambda: service.catalogue.model.feature_dim if service.catalogue else None,
    )
    return app


def _methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route of `app` answers at `path`."""
    methods = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods |= route.methods
    return sorted(methods)


def _json(body: dict) -> Response:
    return Response(json.dumps(body, allow_nan=False), media_type="application/json")


def _problem(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _sync(service: Service) -> None:
    """Applies other replicas' writes every `sync_seconds` (the database's change feed)."""
    while True:
        await asyncio.sleep(service.settings.sync_seconds)
        try:
            await asyncio.to_thread(service.sync)
        except Exception:
            log.exception("reading the change feed failed this round; it keeps reading")


async def _watch(service: Service) -> None:
    """Loads a newer export when one appears under the export root. A broken one is logged and
    skipped (not retried); a newer good one is still picked up. Nothing stops the watcher."""
    while True:
        await asyncio.sleep(service.settings.watch_seconds)
        try:
            await asyncio.to_thread(service.load_newer)
        except ExportError as error:
            log.error("not switching: %s", error)
        except Exception:
            log.exception("the export watcher failed this round; it keeps watching")
