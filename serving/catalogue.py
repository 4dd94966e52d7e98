"""What is for sale and who bought what, in memory, and the ranking over it.

Built from an export (its catalogue and purchase log) plus the live state in the database
(artworks added and purchases recorded since, re-embedded by this model's item tower). Reads are
lock-free: arrays only grow, and a reader uses the first `size` rows it saw. Writes are
serialised by the service and applied only after the database committed them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from serving.errors import Conflict, RequestError, UnknownItems
from serving.export_loader import ServingModel
from serving.store import NewItem, Purchase
from training.data.columns import format_seconds
from training.index import IndexConfig, ScannSearcher
from training.topk import merge_top_k, top_k_rows
from training.trained_towers import pad_profiles

RERANK_FETCH = 200  # ScaNN candidates fetched past k for the nearest-purchase term to re-rank
# Profile artworks (the most recent) whose closest artworks are searched as candidates for the
# nearest-purchase term: each is one ScaNN search over the match vectors.
TERM_SEARCH_PROFILE = 16
TERM_FETCH = 50  # closest artworks fetched per profile artwork


@dataclass(frozen=True)
class Ranked:
    rows: np.ndarray  # [n <= k] catalogue rows, best first
    scores: np.ndarray  # [n]


class Catalogue:
    """`index` (default: the export's settings). From `index.scann_min_items` artworks on, the
    export's artworks are searched with ScaNN (over-fetching past exclusions and sold ones) and
    the artworks added live exactly; below, everything is searched exactly."""

    def __init__(self, model: ServingModel, index: IndexConfig | None = None):
        self.model = model
        n, dim = model.vectors.shape
        self.index = index or model.index
        self.indexed = n  # rows 0..indexed-1 are in the ScaNN searcher, if any
        self.searcher = (
            ScannSearcher(model.vectors, self.index) if self.index.uses_scann(n) else None
        )
        self.item_ids: list[str] = list(model.items["item_id"].astype(str))
        self.artist_ids: list[str] = list(model.items["artist_id"])
        self.row_of = {item_id: row for row, item_id in enumerate(self.item_ids)}
        capacity = max(16, n + n // 4)
        self.vectors = np.zeros((capacity, dim), np.float32)
        self.vectors[:n] = model.vectors
        # the same vectors, one column per artwork: scoring reads them in memory order
        # (1.5-2x faster than multiplying by the transposed view)
        self.columns = np.zeros((dim, capacity), np.float32)
        self.columns[:, :n] = model.vectors.T
        # the nearest-purchase term (training/nearest_purchase.py): match vectors, as columns
        self.nearest_weight = model.nearest.weight if model.nearest is not None else 0.0
        self.match_columns = None
        if model.match_vectors is not None:
            self.match_columns = np.zeros((model.match_vectors.shape[1], capacity), np.float32)
            self.match_columns[:, :n] = model.match_vectors.T
        # the term's own candidates: the exported artworks closest to a profile artwork
        self.match_searcher = None
        if self.searcher is not None and self.nearest_weight and model.match_vectors is not None:
            self.match_searcher = ScannSearcher(
                model.match_vectors, replace(self.index, prior_slot=False)
            )
        self.one_of_a_kind = np.zeros(capacity, bool)
        self.one_of_a_kind[:n] = model.items["one_of_a_kind"].to_numpy()
        self.upload_time = np.zeros(capacity)
        self.upload_time[:n] = model.items["upload_time"].to_numpy()
        self.sold = np.zeros(capacity, bool)  # one-of-a-kind artworks bought
        self.sold_penalty = np.zeros(capacity, np.float32)  # -inf where sold: added to scores
        self.sales = np.zeros(capacity, np.int64)
        self.size = n
        self.profiles: dict[str, list[int]] = {}
        self._seen_purchases: set[tuple[str, str, float]] = set()
        base = model.purchases[["user_id", "item_id", "timestamp"]].itertuples(index=False)
        self._apply_purchases([Purchase(str(u), str(i), float(t)) for u, i, t in base])

    # -- the live state ---------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        model: ServingModel,
        live_items: list[NewItem],
        live_purchases: list[Purchase],
        index: IndexConfig | None = None,
    ):
        """The export's catalogue, then the live state, replayed through this model."""
        catalogue = cls(model, index)
        new = [item for item in live_items if item.item_id not in catalogue.row_of]
        if new:  # artworks the export already has keep the export's vectors
            catalogue._apply_items(new, catalogue.embed(new))
        catalogue._apply_purchases(live_purchases)
        return catalogue

    def embed(self, items: Sequence[NewItem]) -> np.ndarray:
        """The item tower's vectors [n, dim] of `items`; RequestError naming the first item
        whose vector is not finite (finite features the tower still overflows on)."""
        features = np.stack([item.features for item in items]).astype(np.float32)
        vectors = self.model.embed(
            features, [i.item_id for i in items], [i.artist_id for i in items]
        )
        _check_vectors(items, vectors)
        return vectors

    def check_new_items(self, items: Sequence[NewItem]) -> None:
        ids = [item.item_id for item in items]
        seen, repeated = set(), []
        for item_id in ids:
            if item_id in seen:
                repeated.append(item_id)
            seen.add(item_id)
        if repeated:
            raise Conflict(f"items: item id(s) given twice: {sorted(set(repeated))[:10]}")
        existing = [i for i in ids if i in self.row_of]
        if existing:
            raise Conflict(f"items: item id(s) already in the catalogue: {existing[:10]}")
        dim = self.model.feature_dim
        for position, item in enumerate(items):
            if item.features.shape != (dim,):
                raise RequestError(
                    f"items[{position}].features: {item.features.size} values, expected {dim}"
                )
            bad = _non_finite_float32(item.features)
            if bad:
                raise RequestError(f"items[{position}].features{bad}")

    def check_purchases(self, purchases: Sequence[Purchase]) -> None:
        unknown = [p.item_id for p in purchases if p.item_id not in self.row_of]
        if unknown:
            raise UnknownItems("purchases", unknown)
        taken: set[int] = set()
        for position, purchase in enumerate(purchases):
            row = self.row_of[purchase.item_id]
            if self.one_of_a_kind[row] and (self.sold[row] or row in taken):
                raise Conflict(
                    f"purchases[{position}]: {purchase.item_id!r} is a one-of-a-kind artwork "
                    "that is already sold"
                )
            if purchase.timestamp < self.upload_time[row]:  # the artwork's state, not the body's
                raise Conflict(
                    f"purchases[{position}].timestamp: {format_seconds(purchase.timestamp)} is "
                    f"before {purchase.item_id!r} was uploaded "
                    f"({format_seconds(self.upload_time[row])})"
                )
            taken.add(row)

    def _apply_items(self, items: Sequence[NewItem], vectors: np.ndarray) -> None:
        start, end = self.size, self.size + len(items)
        if end > self.vectors.shape[0]:
            capacity = max(end, 2 * self.vectors.shape[0])
            self.vectors = _grown(self.vectors, capacity)
            self.columns = _grown_columns(self.columns, capacity)
            if self.match_columns is not None:
                self.match_columns = _grown_columns(self.match_columns, capacity)
            self.one_of_a_kind = _grown(self.one_of_a_kind, capacity)
            self.upload_time = _grown(self.upload_time, capacity)
            self.sold = _grown(self.sold, capacity)
            self.sold_penalty = _grown(self.sold_penalty, capacity)
            self.sales = _grown(self.sales, capacity)
        self.vectors[start:end] = vectors
        self.columns[:, start:end] = vectors.T
        if self.match_columns is not None:
            features = np.stack([item.features for item in items]).astype(np.float32)
            self.match_columns[:, start:end] = self.model.match(features).T
        self.one_of_a_kind[start:end] = [item.one_of_a_kind for item in items]
        self.upload_time[start:end] = [item.upload_time for item in items]
        for item in items:
            self.row_of[item.item_id] = len(self.item_ids)
            self.item_ids.append(item.item_id)
            self.artist_ids.append(item.artist_id)
        self.size = end  # published last: readers never see a half-written row

    def _apply_purchases(self, purchases: Sequence[Purchase]) -> None:
        for purchase in purchases:
            key = (purchase.customer_id, purchase.item_id, purchase.timestamp)
            if key in self._seen_purchases:  # in the export's log and in the database
                continue
            self._seen_purchases.add(key)
            row = self.row_of[purchase.item_id]
            profile = self.profiles.setdefault(purchase.customer_id, [])
            if row not in profile:
                profile.append(row)
            self.sales[row] += 1
            if self.one_of_a_kind[row]:
                self.sold[row] = True
                self.sold_penalty[row] = -np.inf

    def add_items(self, items: Sequence[NewItem], vectors: np.ndarray, store) -> None:
        """Checked, committed to the database, then searchable (the caller serialises writes)."""
        self.check_new_items(items)
        _check_vectors(items, vectors)
        store.add_items(items)
        self._apply_items(items, vectors)

    def add_purchases(self, purchases: Sequence[Purchase], store) -> None:
        self.check_purchases(purchases)
        store.add_purchases(purchases)
        self._apply_purchases(purchases)

    # -- ranking ----------------------------------------------------------------------------

    def rows(self, field: str, item_ids: Sequence[str]) -> np.ndarray:
        unknown = [i for i in item_ids if i not in self.row_of]
        if unknown:
            raise UnknownItems(field, unknown)
        return np.array([self.row_of[i] for i in item_ids], np.int64)

    def available(self, size: int) -> np.ndarray:
        return ~self.sold[:size]

    def user_vectors(self, profiles: Sequence[np.ndarray]) -> np.ndarray:
        """[b, dim] for profiles of catalogue rows (each non-empty)."""
        rows, mask = pad_profiles(profiles)
        return self.model.user_tower(self.vectors[rows], mask)

    def top_k(
        self,
        queries: np.ndarray,
        k: int,
        *,
        exclude: Sequence[np.ndarray],
        available_only: Sequence[bool],
        profiles: Sequence[np.ndarray] | None = None,
    ) -> list[Ranked]:
        """Top k of `queries @ vectors.T` over the catalogue, per query, skipping its `exclude`
        rows and, where `available_only`, sold one-of-a-kind artworks; with `profiles` (one
        non-empty array of rows per query) and a nearest-purchase term, plus its weight x each
        artwork's cosine to the closest profile artwork. Exact (ties: lower row first) unless
        the catalogue has a ScaNN searcher, whose candidates the term then re-ranks."""
        if self.nearest_weight == 0:
            profiles = None
        if self.searcher is not None:
            return self._approximate_top_k(queries, k, exclude, available_only, profiles)
        size = self.size
        scores = queries @ self.columns[:, :size]  # [b, size]
        if profiles is not None:
            scores += self.nearest_weight * self._closest_purchase(profiles, size)
        only = np.asarray(available_only, bool)
        if only.any():
            scores[only] += self.sold_penalty[:size]
        for row_scores, excluded in zip(scores, exclude, strict=True):
            row_scores[excluded[excluded < size]] = -np.inf
        return [Ranked(rows, found) for rows, found in top_k_rows(scores, k)]

    def _approximate_top_k(self, queries, k, exclude, available_only, profiles) -> list[Ranked]:
        """ScaNN over the indexed artworks, fetching past the rows a query must skip (doubling
        the fetch until k survive, exact search if it comes to that), merged with exact scores
        of the artworks added since the export. With `profiles`, the candidates are RERANK_FETCH
        more by the query plus the TERM_FETCH closest (match vectors) to each of the last
        TERM_SEARCH_PROFILE profile artworks, all scored exactly with the term."""
        size, indexed = self.size, self.indexed
        live_rows = np.arange(indexed, size)
        live = queries @ self.columns[:, indexed:size]  # [b, size - indexed]
        extra = max(RERANK_FETCH, 4 * k) if profiles is not None else 64
        results = []
        for i, query in enumerate(queries):
            excluded = exclude[i][exclude[i] < size]
            fetch = min(indexed, k + excluded.size + extra)
            while True:
                rows, scores = self.searcher.search(query, fetch)
                keep = ~self._skipped(rows, excluded, available_only[i])
                if keep.sum() >= k or fetch >= indexed:
                    break
                fetch = min(indexed, fetch * 4)
            rows, scores = rows[keep], scores[keep]
            skip_live = self._skipped(live_rows, excluded, available_only[i])
            live_scores = np.where(skip_live, -np.inf, live[i])
            if profiles is not None:
                rows = self._with_term_candidates(rows, profiles[i], excluded, available_only[i])
                match = self.match_columns.T[profiles[i]]  # [p, m]
                scores = query @ self.columns[:, rows] + self.nearest_weight * (
                    match @ self.match_columns[:, rows]
                ).max(axis=0)
                live_scores = live_scores + self.nearest_weight * (
                    match @ self.match_columns[:, indexed:size]
                ).max(axis=0, initial=-np.inf)
            results.append(Ranked(*merge_top_k([(rows, scores), (live_rows, live_scores)], k)))
        return results

    def _with_term_candidates(self, rows, profile, excluded, available_only) -> np.ndarray:
        """`rows` plus the indexed artworks closest to the profile's last TERM_SEARCH_PROFILE
        artworks that the query does not skip, each once (sorted)."""
        candidates = [rows]
        indexed = profile[profile < self.indexed]
        recent = indexed[max(0, indexed.size - TERM_SEARCH_PROFILE) :]
        fetch = min(self.indexed, TERM_FETCH + excluded.size)
        for row in recent:
            match = np.ascontiguousarray(self.match_columns[:, row])
            closest, _ = self.match_searcher.search(match, fetch)
            candidates.append(closest[~self._skipped(closest, excluded, available_only)])
        return np.unique(np.concatenate(candidates))

    def _closest_purchase(self, profiles: Sequence[np.ndarray], size: int) -> np.ndarray:
        """[b, size]: each artwork's cosine to the closest artwork of each profile (match
        vectors); artworks shared by the batch's profiles are multiplied once."""
        stacked = np.concatenate(profiles)
        distinct, position = np.unique(stacked, return_inverse=True)
        similarity = self.match_columns[:, distinct].T @ self.match_columns[:, :size]
        offsets = np.cumsum([0] + [len(p) for p in profiles[:-1]])
        return np.maximum.reduceat(similarity[position], offsets, axis=0)

    def _skipped(self, rows: np.ndarray, excluded: np.ndarray, available_only: bool):
        """Which of `rows` a query skips: excluded, or sold where `available_only`. Checked on
        the candidates only (not a catalogue-wide mask: at 1M artworks that cost more)."""
        skip = np.isin(rows, excluded)
        return skip | self.sold[rows] if available_only else skip

    def popular(self, k: int, *, exclude: np.ndarray, available_only: bool) -> Ranked:
        """Most purchases first, then the newest upload."""
        size = self.size
        keep = self.available(size) if available_only else np.ones(size, bool)
        keep[exclude[exclude < size]] = False
        rows = np.flatnonzero(keep)
        order = np.lexsort((-self.upload_time[rows], -self.sales[rows]))[:k]
        return Ranked(rows[order], self.sales[rows[order]].astype(np.float64))


def _non_finite_float32(values: np.ndarray) -> str:
    """'' if `values` are all finite as float32, else '[i]: <problem>' for the first that is
    not: finite in JSON but past float32's range (1e39 becomes inf), or a NaN or infinity that
    came some other way. Either would make the item's vector NaN."""
    raw = np.asarray(values)
    with np.errstate(over="ignore", invalid="ignore"):
        bad = np.flatnonzero(~np.isfinite(raw.astype(np.float32)))
    if not bad.size:
        return ""
    value = float(raw[bad[0]])
    limit = f"|x| > {np.finfo(np.float32).max:.4g}"
    if np.isnan(value):
        problem = "NaN, not a finite float32"
    elif np.isinf(value):  # the original value is gone: it was converted before
        problem = f"beyond the float32 range ({limit}), not a finite float32"
    else:
        problem = f"{value:g} is beyond the float32 range ({limit}), not a finite float32"
    more = f"; {bad.size} such values" if bad.size > 1 else ""
    return f"[{bad[0]}]: {problem}{more}"


def _check_vectors(items: Sequence[NewItem], vectors: np.ndarray) -> None:
    """RequestError naming the first item whose vector is not finite."""
    broken = np.flatnonzero(~np.isfinite(vectors).all(axis=1))
    if broken.size:  # finite features the item tower still overflows on
        raise RequestError(
            f"items[{broken[0]}].features: the item tower's output for "
            f"{items[broken[0]].item_id!r} is not finite (values too large for the model); "
            f"{broken.size} such item(s)"
        )


def _grown_columns(columns: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((columns.shape[0], capacity), columns.dtype)
    grown[:, : columns.shape[1]] = columns
    return grown


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
    grown[: array.shape[0]] = array
    return grown
