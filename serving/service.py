"""The service behind the HTTP API: the settings, the database, the catalogue being served,
recommendation queries resolved and answered, writes, and model swaps.

Nothing here knows HTTP: serving/app.py maps requests onto these methods and RequestError
(serving/catalogue.py) onto 4xx answers.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from serving.catalogue import ArtistRule, Catalogue, Ranked
from serving.errors import Conflict, NotEnabled, NotReady, RequestError
from serving.export_loader import ExportError, load_serving_model, newest_version
from serving.image_uploads import ImageArtwork
from serving.schemas import (
    Accepted,
    Favourites,
    FavouritesChange,
    NewArtworks,
    Purchases,
    RecommendationRequest,
    ReloadResult,
)
from serving.settings import Settings
from serving.store import Cursor, NewItem, Purchase, Store
from serving.telemetry import Metrics
from training.data.columns import TIME_RULE, format_seconds, within_time_range

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
        self.cursor = Cursor()  # how far the catalogue has read the database
        self.failed_version: Path | None = None  # the watcher does not retry a broken export
        self.extractor = None  # the image feature extractor of POST /v1/items/image
        if settings.image_extractor is not None:
            from training.images.extractor import FeatureExtractor

            self.extractor = FeatureExtractor.load(settings.image_extractor)

    def reload(self, path: Path | None = None) -> ReloadResult:
        """Loads `path` (default: the newest export) and switches to it; on any ExportError
        the current catalogue keeps serving."""
        started = time.perf_counter()
        try:
            path = path or newest_version(self.settings.model_dir)
            model = load_serving_model(path)
            with self.write_lock:
                try:
                    live = self.store.changes_since()
                    catalogue = Catalogue.build(model, live)
                except Exception as error:  # (artworks of another dimension are skipped, logged)
                    raise ExportError(
                        f"{path}: cannot apply the live state to this export: {error}"
                    ) from error
                # counted before the switch: whoever sees the new version sees it counted
                self.metrics.reloads.labels("loaded").inc()
                self.metrics.model_version.set(model.version)
                self.catalogue, self.cursor = catalogue, live.cursor
        except ExportError:
            self.metrics.reloads.labels("refused").inc()
            self.failed_version = path
            raise
        log.info("serving %s (version %d)", path, model.version)
        return ReloadResult(
            model_version=model.version,
            path=path.name,
            seconds=round(time.perf_counter() - started, 3),
        )

    def sync(self) -> int:
        """Applies what other replicas wrote to the database since the last read (the change
        feed: store.py); returns how many rows. Own writes come back too, and change nothing."""
        if self.catalogue is None:
            return 0
        with self.write_lock:
            changes = self.store.changes_since(self.cursor)
            if changes:
                self.catalogue.apply_changes(changes)
            self.cursor = changes.cursor
        rows = len(changes.items) + len(changes.purchases) + len(changes.favourites)
        if rows:
            self.metrics.synced_rows.inc(rows)
        return rows

    def load_newer(self) -> ReloadResult | None:
        """Switches to the newest export if it is neither the one served nor one refused."""
        try:
            newest = newest_version(self.settings.model_dir)
        except ExportError:
            return None  # no export at all (yet)
        current = self.catalogue.model.path if self.catalogue else None
        if newest in (current, self.failed_version):
            return None
        return self.reload(newest)

    def current(self) -> Catalogue:
        if self.catalogue is None:
            raise NotReady("no model loaded yet")
        return self.catalogue

    def resolve(self, request: RecommendationRequest, where: str = "") -> ResolvedQuery:
        """Checks a request against the catalogue now served and finds its profile: the
        customer's purchases, then the given item_ids; the most recent `max_profile` count.
        `where` prefixes the fields named in errors (e.g. "requests[3].")."""
        catalogue, settings = self.current(), self.settings
        if request.k > settings.max_k:
            raise RequestError(f"{where}k: {request.k} is out of range [1, {settings.max_k}]")
        given = catalogue.rows(f"{where}item_ids", request.item_ids).tolist()
        never = catalogue.rows(f"{where}exclude_item_ids", request.exclude_item_ids)
        customer = request.customer_id
        bought = catalogue.profiles.get(customer, []) if customer else []
        liked = catalogue.favourites.get(customer, []) if customer else []
        # favourites first: a profile longer than max_profile loses them before purchases
        ordered = [*liked, *bought, *given]  # an artwork named twice keeps its later place
        profile = np.array(list(dict.fromkeys(reversed(ordered)))[::-1], np.int64)
        excluded = profile if request.exclude_purchased else profile[:0]
        return ResolvedQuery(
            catalogue,
            profile[-settings.max_profile :],
            np.union1d(excluded, never) if never.size else excluded,
            request.k,
            request.available_only,
            catalogue.artist_rule(request.artists, request.exclude_artists, request.max_per_artist),
            request.explain,
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
                    profiles=[queries[i].profile for i in modelled],
                    rules=[queries[i].rule for i in modelled],
                )
                explained = [n for n, i in enumerate(modelled) if queries[i].explain]
                reasons = [None] * len(modelled)
                if explained:  # the whole batch's explanations in one product
                    shown = [ranked[n].rows[: queries[modelled[n]].k] for n in explained]
                    profiles = [queries[modelled[n]].profile for n in explained]
                    found = catalogue.closest_in_profiles(shown, profiles)
                    for n, reason in zip(explained, found, strict=True):
                        reasons[n] = reason
                for n, (i, result) in enumerate(zip(modelled, ranked, strict=True)):
                    answers[i] = _recommendations(
                        catalogue, "model", result, queries[i].k, reasons[n]
                    )
            for i in set(mine) - set(modelled):
                query = queries[i]
                result = catalogue.popular(
                    query.k,
                    exclude=query.excluded,
                    available_only=query.available_only,
                    rule=query.rule,
                )
                because = (np.full(len(result.rows), -1), None) if query.explain else None
                answers[i] = _recommendations(catalogue, "popular", result, query.k, because)
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
                _seconds(item.upload_time, now, f"items[{n}].upload_time"),
                np.asarray(item.features, np.float32),
            )
            for n, item in enumerate(body.items)
        ]
        return self._add_items(items)

    def add_image_item(self, artwork: ImageArtwork, image: bytes) -> Accepted:
        """An artwork whose features the image extractor computes from its photograph (the
        same decoding and model as `curator features`)."""
        from training.images.decode import ImageError, load_image

        if self.extractor is None:
            raise NotEnabled(
                "image uploads are not enabled: start the service with --image-extractor "
                "(or CURATOR_IMAGE_EXTRACTOR) set to a directory `curator features` wrote"
            )
        expected = self.current().model.feature_dim
        if self.extractor.dim != expected:
            raise Conflict(
                f"the image extractor gives {self.extractor.dim}-d features "
                f"({self.extractor.backbone.name}) but the model served takes {expected}"
            )
        try:
            pixels = load_image(image, self.extractor.image_size, "image")
        except ImageError as error:
            raise RequestError(str(error)) from None
        features = self.extractor(pixels[None])[0]
        item = NewItem(
            artwork.item_id,
            artwork.artist_id,
            artwork.one_of_a_kind,
            _seconds(artwork.upload_time, time.time(), "upload_time"),
            features,
        )
        return self._add_items([item])

    def _add_items(self, items: list[NewItem]) -> Accepted:
        with self.write_lock:
            catalogue = self.current()
            catalogue.check_new_items(items)
            vectors = catalogue.embed(items)
            catalogue.add_items(items, vectors, self.store)
            return Accepted(accepted=len(items), catalogue_size=catalogue.size)

    def change_favourites(self, customer_id: str, change: FavouritesChange) -> Favourites:
        with self.write_lock:
            catalogue = self.current()
            catalogue.change_favourites(customer_id, change.add, change.remove, self.store)
            return self.favourites(customer_id)

    def favourites(self, customer_id: str) -> Favourites:
        catalogue = self.current()
        rows = catalogue.favourites.get(customer_id, [])
        return Favourites(
            customer_id=customer_id, item_ids=[catalogue.item_ids[row] for row in rows]
        )

    def add_purchases(self, body: Purchases) -> Accepted:
        now = time.time()
        records = [
            Purchase(
                p.customer_id, p.item_id, _seconds(p.timestamp, now, f"purchases[{n}].timestamp")
            )
            for n, p in enumerate(body.purchases)
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
    rule: ArtistRule | None = None  # artist filters and crowding
    explain: bool = False


def _recommendations(
    catalogue: Catalogue,
    strategy: str,
    result: Ranked,
    k: int,
    because: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> dict:
    """A `Recommendations` body as plain data (the request path skips pydantic objects).
    `because`: (profile row or -1, similarity) per recommended artwork, for `explain`."""
    item_ids, artist_ids = catalogue.item_ids, catalogue.artist_ids
    rows, scores = result.rows[:k].tolist(), result.scores[:k].tolist()
    items = [
        {"item_id": item_ids[row], "score": score, "artist_id": artist_ids[row]}
        for row, score in zip(rows, scores, strict=True)
    ]
    if because is not None:
        closest, similarity = because
        for n, item in enumerate(items):
            row = int(closest[n])
            item["because"] = (
                None if row < 0 else {"item_id": item_ids[row], "similarity": float(similarity[n])}
            )
    return {"model_version": catalogue.model.version, "strategy": strategy, "items": items}


# how far ahead of the service's clock an upload or purchase time may be (clock skew): a later
# one is refused, since an upload time in the future would keep the freshness term at its
# maximum until then
CLOCK_SKEW_SECONDS = 300.0


def _seconds(moment: datetime | None, now: float, field: str) -> float:
    """`moment` in unix seconds (naive times are UTC; None: `now`); Conflict naming `field` if
    it is outside the range datasets take (TIME_RULE) or more than CLOCK_SKEW_SECONDS after
    `now` (a conflict with the service's clock). Both are bounds the schema cannot express
    (a date-time has no range in JSON Schema), answered like a purchase dated before its
    artwork's upload."""
    if moment is None:
        return now
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = moment.timestamp()
    if not within_time_range(seconds):
        raise Conflict(f"{field}: {moment.isoformat()} is not {TIME_RULE}")
    if seconds > now + CLOCK_SKEW_SECONDS:
        raise Conflict(
            f"{field}: {format_seconds(seconds)} is in the future (the service's clock says "
            f"{format_seconds(now)}); record uploads and purchases when they happen"
        )
    return seconds
