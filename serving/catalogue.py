"""What is for sale and who bought what, in memory, and the ranking over it.

Built from an export (its catalogue and purchase log) plus the live state in the database
(artworks added and purchases recorded since, re-embedded by this model's item tower). Reads are
lock-free: arrays only grow, and a reader uses the first `size` rows it saw. Writes are
serialised by the service and applied only after the database committed them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from serving.errors import Conflict, RequestError, UnknownItems
from serving.export_loader import ServingModel
from serving.store import Changes, FavouriteEvent, NewItem, Purchase
from training.copurchase import profile_scores
from training.data.columns import format_seconds
from training.index import IndexConfig, ScannSearcher
from training.nearest_purchase import (
    TermWeights,
    closest_per_profile,
    era_closeness,
    freshness,
    profile_means,
    upload_days,
)
from training.topk import crowd, merge_top_k, top_k, top_k_rows
from training.trained_towers import pad_profiles

log = logging.getLogger("curator.serving")

RERANK_FETCH = 200  # ScaNN candidates fetched past k for the profile terms to re-rank
# Profile artworks (the most recent) whose closest artworks are searched as candidates for the
# nearest-purchase term: each is one ScaNN search over the match vectors.
TERM_SEARCH_PROFILE = 16
# closest artworks fetched per profile artwork, and to the profile's mean match vector; with a
# popularity term, as many best-selling artworks join the candidates
TERM_FETCH = 50
# with a freshness term, the newest artworks for sale that join the candidates: more than
# TERM_FETCH, since freshness lifts every recent artwork a little, not a few by much (in the
# tests, 200 left the top 10 of a four-term mix at recall .98, 500 at 1.0)
FRESH_FETCH = 500
# with an era term, the artworks whose upload days are closest to each of the profile's last
# TERM_SEARCH_PROFILE artworks' that join the candidates (in the tests, 100 left the top 10 of a
# five-term mix at recall .96, 300 at 1.0)
ERA_FETCH = 300


@dataclass(frozen=True)
class Ranked:
    rows: np.ndarray  # [n <= k] catalogue rows, best first
    scores: np.ndarray  # [n]


@dataclass(frozen=True)
class ArtistRule:
    """A query's rules on artists, as artist codes (`Catalogue.artist_rule`): only `allowed`
    (None: any), never `denied`, at most `max_per_artist` of one artist (None: no limit;
    artworks without an artist are never limited)."""

    allowed: np.ndarray | None
    denied: np.ndarray
    max_per_artist: int | None

    @property
    def filters(self) -> bool:
        return self.allowed is not None or self.denied.size > 0

    def refused(self, codes: np.ndarray) -> np.ndarray:
        """Which artworks of artist `codes` the rule leaves out."""
        out = np.isin(codes, self.denied) if self.denied.size else np.zeros(codes.shape, bool)
        if self.allowed is not None:
            out |= ~np.isin(codes, self.allowed)
        return out


class Catalogue:
    """`index` (default: the export's settings). From `index.scann_min_items` artworks on, the
    artworks are searched with ScaNN (over-fetching past exclusions and sold ones); those added
    live join the searchers as they are added (`_index_rows`). Below, everything is searched
    exactly."""

    def __init__(self, model: ServingModel, index: IndexConfig | None = None):
        self.model = model
        n, dim = model.vectors.shape
        self.index = index or model.index
        self.indexed = n  # rows 0..indexed-1 are in the ScaNN searcher, if any
        # the export's own searchers fit if built with this index, and serve the first
        # catalogue that claims them (it adds its live artworks to them)
        same_index = index is None or index == model.index
        self.searcher = None
        if self.index.uses_scann(n):
            serialized = model.searcher if same_index else None
            owned = serialized is not None and serialized.claim()
            self.searcher = serialized if owned else ScannSearcher(model.vectors, self.index)
        self.item_ids: list[str] = model.items["item_id"].astype(str).tolist()
        self.artist_ids: list[str] = model.items["artist_id"].tolist()
        self.artist_code_of: dict[str, int] = {}  # "" (no artist) has none: code -1
        self.row_of = dict(zip(self.item_ids, range(n), strict=True))
        capacity = max(16, n + n // 4)
        # the export's own array while no artwork is added (no copy: at 1M artworks, 0.8 GB);
        # the first upload moves the rows to a grown one, so the export's are never written
        self.vectors = np.ascontiguousarray(model.vectors, np.float32)
        # exact search: the same vectors, one column per artwork, so that scoring the whole
        # catalogue reads them in memory order (1.5-2x faster than the transposed view). With
        # ScaNN only candidates are scored exactly, from their rows: no copy (at 1M artworks
        # it took 2 s of the start and 1 GB)
        self.columns = None
        if self.searcher is None:
            self.columns = np.zeros((dim, capacity), np.float32)
            self.columns[:, :n] = model.vectors.T
        # the profile terms (training/nearest_purchase.py): match vectors, kept like the item
        # vectors (the export's rows until the first upload; columns for exact search only:
        # at 1M artworks the transposed copy took 1.9 s of the start and 0.5 GB)
        self.terms = model.nearest.weights if model.nearest is not None else TermWeights()
        self.match_vectors = model.match_vectors
        self.match_columns = None
        if model.match_vectors is not None and self.searcher is None:
            self.match_columns = np.zeros((model.match_vectors.shape[1], capacity), np.float32)
            self.match_columns[:, :n] = model.match_vectors.T
        # the terms' own candidates: the exported artworks closest to a profile artwork or to
        # the profile's mean look
        self.match_searcher = None
        if (
            self.searcher is not None
            and self.terms.uses_profile
            and model.match_vectors is not None
        ):
            serialized = model.match_searcher if same_index else None
            owned = serialized is not None and serialized.claim()
            self.match_searcher = (
                serialized
                if owned
                else ScannSearcher(model.match_vectors, replace(self.index, prior_slot=False))
            )
        # the co-purchase terms' matrices (training/copurchase.py: item-kNN's and EASE's) over
        # the exported artworks' rows, by the TermWeights field that weights each, where the
        # export has one with a weight above 0 (`_item_item` pairs them with `terms` at scoring)
        self.item_item_matrices = {
            name: matrix.on_catalogue(self.item_ids)
            for name, matrix in (("copurchase", model.copurchase), ("ease", model.ease))
            if matrix is not None and getattr(self.terms, name) > 0
        }
        self.one_of_a_kind = np.zeros(capacity, bool)
        self.one_of_a_kind[:n] = model.items["one_of_a_kind"].to_numpy()
        self.upload_time = np.zeros(capacity)
        self.upload_time[:n] = model.items["upload_time"].to_numpy()
        self.sold = np.zeros(capacity, bool)  # one-of-a-kind artworks bought
        self.sold_penalty = np.zeros(capacity, np.float32)  # -inf where sold: added to scores
        self.sales = np.zeros(capacity, np.int64)
        self.popularity = np.zeros(capacity, np.float32)  # w_pop x log(1 + sales): the term
        # per ranking key ("sales", "upload_time"): ((purchases applied, rows indexed), rows)
        self._leaders: dict[str, tuple[tuple[int, int], np.ndarray]] = {}
        # the era term's tables: (rows, their distinct upload days, each row's day's index)
        self._day_table: tuple[int, np.ndarray, np.ndarray] | None = None
        # (rows indexed, those rows ordered by upload time, their upload times in that order)
        self._upload_order: tuple[int, np.ndarray, np.ndarray] | None = None
        self._purchases_applied = 0
        self.artist_codes = np.full(capacity, -1, np.int64)
        self.artist_codes[:n] = self._artist_codes(model.items["artist_id"])
        self.size = n
        self.profiles: dict[str, list[int]] = {}
        self.favourites: dict[str, list[int]] = {}  # rows, in the order added
        # Purchases are counted per (customer, artwork, time) where they come from: the
        # export's log, the database (the feed), and what is applied here. A database row is
        # applied only while the database holds more of its key than were applied (own writes
        # come back through the feed, a later export's log may hold live purchases); two
        # identical purchases in one request still count twice.
        self._in_export: Counter[tuple[str, str, float]] = Counter()
        self._in_database: Counter[tuple[str, str, float]] = Counter()
        self._applied: Counter[tuple[str, str, float]] = Counter()
        base = model.purchases[["user_id", "item_id", "timestamp"]].itertuples(index=False)
        logged = [Purchase(str(u), str(i), float(t)) for u, i, t in base]
        self._in_export.update(_key(p) for p in logged)
        self._apply_purchases(logged)

    # -- the live state ---------------------------------------------------------------------

    @classmethod
    def build(cls, model: ServingModel, live: Changes, index: IndexConfig | None = None):
        """The export's catalogue, then the live state (`Store.changes_since()`), replayed
        through this model."""
        catalogue = cls(model, index)
        catalogue.apply_changes(live)
        return catalogue

    def apply_changes(self, changes: Changes) -> None:
        """Rows from the database (the live state at load, or another replica's writes since):
        artworks this catalogue lacks are embedded and added (those it has keep their
        vectors), then purchases and favourite events. Each is idempotent, so a replica's own
        writes coming back through the feed change nothing."""
        new = [item for item in changes.items if item.item_id not in self.row_of]
        if new:
            try:
                self._apply_items(new, self.embed(new))
            except (RequestError, ValueError):  # one by one: the rows this model can take
                for item in new:
                    try:
                        self._apply_items([item], self.embed([item]))
                    except (RequestError, ValueError) as error:
                        log.error("live artwork %r skipped by this model: %s", item.item_id, error)
        fresh = []
        for purchase in changes.purchases:
            if purchase.item_id not in self.row_of:
                continue  # its artwork was skipped above
            key = _key(purchase)
            self._in_database[key] += 1
            if max(self._in_export[key], self._in_database[key]) > self._applied[key]:
                fresh.append(purchase)
        self._apply_purchases(fresh)
        for event in changes.favourites:
            if event.item_id in self.row_of:
                self._apply_favourite(event)

    def embed(self, items: Sequence[NewItem]) -> np.ndarray:
        """The item tower's vectors [n, dim] of `items`; RequestError naming the first item
        whose features are not of the model's dimension, or whose vector is not finite (finite
        features the tower still overflows on)."""
        dim = self.model.feature_dim
        for item in items:  # a live artwork another replica's model took (another dimension)
            if item.features.shape != (dim,):
                raise RequestError(
                    f"{item.item_id!r} has {item.features.size} features; this model takes {dim}"
                )
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
            if self._in_export[_key(purchase)]:  # a replay counts it once: so must this answer
                raise Conflict(
                    f"purchases[{position}]: the model's purchase log already holds this "
                    f"purchase ({purchase.customer_id!r}, {purchase.item_id!r}, "
                    f"{format_seconds(purchase.timestamp)})"
                )
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
        if end > self.vectors.shape[0]:  # the export's own arrays at first
            self.vectors = _grown(self.vectors, end + end // 4)
            if self.match_vectors is not None:
                self.match_vectors = _grown(self.match_vectors, end + end // 4)
        if end > self.one_of_a_kind.shape[0]:
            capacity = max(end, 2 * self.one_of_a_kind.shape[0])
            if self.columns is not None:
                self.columns = _grown_columns(self.columns, capacity)
            if self.match_columns is not None:
                self.match_columns = _grown_columns(self.match_columns, capacity)
            self.one_of_a_kind = _grown(self.one_of_a_kind, capacity)
            self.upload_time = _grown(self.upload_time, capacity)
            self.sold = _grown(self.sold, capacity)
            self.sold_penalty = _grown(self.sold_penalty, capacity)
            self.sales = _grown(self.sales, capacity)
            self.popularity = _grown(self.popularity, capacity)
            self.artist_codes = _grown(self.artist_codes, capacity)
        self.vectors[start:end] = vectors
        if self.columns is not None:
            self.columns[:, start:end] = vectors.T
        if self.match_vectors is not None:
            features = np.stack([item.features for item in items]).astype(np.float32)
            self.match_vectors[start:end] = self.model.match(features)
            if self.match_columns is not None:
                self.match_columns[:, start:end] = self.match_vectors[start:end].T
        self.one_of_a_kind[start:end] = [item.one_of_a_kind for item in items]
        self.upload_time[start:end] = [item.upload_time for item in items]
        self.artist_codes[start:end] = [self._artist_code(item.artist_id) for item in items]
        for item in items:
            self.row_of[item.item_id] = len(self.item_ids)
            self.item_ids.append(item.item_id)
            self.artist_ids.append(item.artist_id)
        self.size = end  # published last: readers never see a half-written row
        self._index_rows(start, end)

    def _index_rows(self, start: int, end: int) -> None:
        """Rows start..end-1, just published, join the ScaNN searchers (the terms' first);
        `indexed` moves last, so a reader searches them either exactly or through ScaNN."""
        if self.searcher is None or start != self.indexed:
            return
        rows = np.arange(start, end)
        try:
            if self.match_searcher is not None:
                self.match_searcher.add(self.match_vectors[start:end], rows)
            self.searcher.add(self.vectors[start:end], rows)
        except Exception:  # the rows are published: they stay searched exactly, from now on
            log.exception("artworks %d..%d not added to the ScaNN searchers", start, end - 1)
            return
        self.indexed = end

    def _artist_codes(self, artist_ids: pd.Series) -> np.ndarray:
        """The export's artists' codes in order of first appearance ("": -1), in one pass."""
        codes, artists = pd.factorize(artist_ids, sort=False)
        named = artists != ""
        self.artist_code_of = {a: n for n, a in enumerate(artists[named])}
        remap = np.full(len(artists) + 1, -1, np.int64)  # codes of -1 (none) stay -1
        remap[np.flatnonzero(named)] = np.arange(named.sum())
        return remap[codes]

    def _artist_code(self, artist_id: str) -> int:
        if not artist_id:
            return -1
        return self.artist_code_of.setdefault(artist_id, len(self.artist_code_of))

    def artist_rule(
        self,
        artists: Sequence[str] | None,
        exclude_artists: Sequence[str],
        max_per_artist: int | None,
    ) -> ArtistRule | None:
        """The rule for these request fields (None when they ask for nothing). Artists the
        catalogue does not know match no artwork."""
        if artists is None and not exclude_artists and max_per_artist is None:
            return None
        codes = self.artist_code_of

        def known(ids):
            return np.array([codes[a] for a in ids if a in codes], np.int64)

        allowed = None if artists is None else known(artists)
        return ArtistRule(allowed, known(exclude_artists), max_per_artist)

    def _apply_purchases(self, purchases: Sequence[Purchase]) -> None:
        for purchase in purchases:
            self._applied[_key(purchase)] += 1
            row = self.row_of[purchase.item_id]
            profile = self.profiles.setdefault(purchase.customer_id, [])
            if row not in profile:
                profile.append(row)
            self.sales[row] += 1
            self.popularity[row] = self.terms.popularity * np.log1p(self.sales[row])
            self._purchases_applied += 1
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
        """Checked here, then by the database (one sale per original, whichever replica sold
        it: AlreadySold), then applied."""
        self.check_purchases(purchases)
        originals = [p.item_id for p in purchases if self.one_of_a_kind[self.row_of[p.item_id]]]
        store.add_purchases(purchases, originals)
        self._apply_purchases(purchases)

    def change_favourites(self, customer_id: str, add: Sequence[str], remove: Sequence[str], store):
        """Checked (every id known), committed to the database, then applied."""
        self.rows("add", add)
        self.rows("remove", remove)
        store.change_favourites(customer_id, list(add), list(remove))
        for item_id in remove:
            self._apply_favourite(FavouriteEvent(customer_id, item_id, False))
        for item_id in add:
            self._apply_favourite(FavouriteEvent(customer_id, item_id, True))

    def _apply_favourite(self, event: FavouriteEvent) -> None:
        """As `favourites_after` replays them: an addition moves the artwork to the end."""
        row = self.row_of[event.item_id]
        rows = [r for r in self.favourites.get(event.customer_id, []) if r != row]
        if event.added:
            rows.append(row)
        self.favourites[event.customer_id] = rows  # replaced whole: readers never see half

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
        rules: Sequence[ArtistRule | None] | None = None,
        now: float | None = None,
    ) -> list[Ranked]:
        """Top k of `queries @ vectors.T` over the catalogue, per query, skipping its `exclude`
        rows, where `available_only` sold one-of-a-kind artworks, and what its artist `rules`
        leave out, keeping at most their `max_per_artist` of one artist (filters apply before
        the top k is cut: the search fetches further until k survive or none is left). With
        `profiles` (one non-empty array of rows per query), plus the profile terms
        (training/nearest_purchase.py): each artwork's cosine to the closest profile artwork and
        its mean cosine to them, its popularity, its co-purchase score, its freshness at `now`
        (unix seconds; default: the current time) and its era term, each times its weight.
        Exact (ties: lower row first) unless the catalogue has a ScaNN searcher, whose
        candidates the terms then re-rank. Without `profiles` (similar artworks), the towers
        alone."""
        if not self.terms.any:
            profiles = None
        now = time.time() if now is None else float(now)
        rules = rules if rules is not None else [None] * len(queries)
        if self.searcher is not None:
            return self._approximate_top_k(
                queries, k, exclude, available_only, profiles, rules, now
            )
        size = self.size
        scores = queries @ self.columns[:, :size]  # [b, size]
        if profiles is not None:
            if self.terms.nearest:
                scores += self.terms.nearest * self._closest_purchase(profiles, size)
            if self.terms.mean:
                means = self.terms.mean * profile_means(self.match_vectors, profiles)  # [b, m]
                scores += means @ self.match_columns[:, :size]
            if self.terms.popularity:
                scores += self.popularity[:size]
            if self._item_item():
                bought = self._copurchase_scores(profiles).tocoo()
                keep = bought.col < size
                np.add.at(scores, (bought.row[keep], bought.col[keep]), bought.data[keep])
            if self.terms.freshness:
                scores += self._freshness(np.s_[:size], now)
            if self.terms.era:  # per distinct upload day, then one gather for the batch
                distinct, day_of_row = self._days(size)
                scores += np.take(self._era(profiles, distinct), day_of_row, axis=1)
        only = np.asarray(available_only, bool)[:, None]
        np.add(scores, self.sold_penalty[:size], out=scores, where=only)  # in place, no copy
        for row_scores, excluded, rule in zip(scores, exclude, rules, strict=True):
            row_scores[excluded[excluded < size]] = -np.inf
            if rule is not None and rule.filters:
                row_scores[rule.refused(self.artist_codes[:size])] = -np.inf
        limits = [rule.max_per_artist if rule is not None else None for rule in rules]
        # one pass for the batch; with crowding, a window wide enough for most crowded rows
        crowding = any(limit is not None for limit in limits)
        fetch = min(size, max(4 * k, 64)) if crowding else k
        results = []
        for i, (rows, found) in enumerate(top_k_rows(scores, fetch)):
            if limits[i] is None:
                results.append(Ranked(rows[:k], found[:k]))
            else:
                results.append(self._crowded_exact(scores[i], k, limits[i], fetch, (rows, found)))
        return results

    def _crowded_exact(self, scores, k: int, per_artist: int, fetch: int, first) -> Ranked:
        """The top k of `scores` [size] with at most `per_artist` of one artist: the best
        candidates in growing windows until k are found or every finite score was seen.
        `first`: the first window, `top_k(scores, fetch)`."""
        rows, found = first
        while True:
            chosen = crowd(self.artist_codes[rows], k, per_artist)
            if chosen.size == k or rows.size < fetch or fetch == scores.size:
                return Ranked(rows[chosen], found[chosen])
            fetch = min(scores.size, fetch * 4)
            rows, found = top_k(scores, fetch)

    def _approximate_top_k(
        self, queries, k, exclude, available_only, profiles, rules, now
    ) -> list[Ranked]:
        """ScaNN over the indexed artworks, fetching past the rows a query must skip (growing
        the fetch until k survive its filters and crowding, exact search if it comes to that),
        merged with exact scores of any rows not yet in the searchers (an upload in flight, or
        rows the searchers refused). With profile terms,
        the candidates are RERANK_FETCH more by the query plus the terms' own (`_with_term_
        candidates`), all scored exactly with the terms."""
        indexed = self.indexed  # read first: rows past it are searched exactly (size >= it)
        size = self.size
        live_rows = np.arange(indexed, size)
        live = queries @ self.vectors[indexed:size].T  # [b, size - indexed]
        with_terms = profiles is not None
        extra = max(RERANK_FETCH, 4 * k) if with_terms else 64
        excludes = [excluded[excluded < size] for excluded in exclude]
        fetch = min(indexed, k + max((e.size for e in excludes), default=0) + extra)
        # one ScaNN call for all (the vectors read after `indexed`: they hold every row below it)
        first_round = self.searcher.search_batched(queries, fetch, self.vectors)
        results = []
        for i, query in enumerate(queries):
            excluded, rule = excludes[i], rules[i]
            per_artist = rule.max_per_artist if rule is not None else None
            rows, scores = self._indexed_candidates(
                query, k, excluded, available_only[i], rule, indexed, first_round[i], fetch
            )
            skip_live = self._skipped(live_rows, excluded, available_only[i], rule)
            live_scores = np.where(skip_live, -np.inf, live[i])
            if with_terms:
                bought = self._copurchase_scores([profiles[i]]) if self._item_item() else None
                rows = self._with_term_candidates(
                    rows, profiles[i], excluded, available_only[i], rule, indexed, bought
                )
                terms = self._term_scores(profiles[i], rows, now, bought)
                scores = self.vectors[rows] @ query + terms
                live_scores = live_scores + self._term_scores(profiles[i], live_rows, now, bought)
            parts = [(rows, scores), (live_rows, live_scores)]
            if per_artist is None:
                results.append(Ranked(*merge_top_k(parts, k)))
                continue
            merged_rows, merged_scores = merge_top_k(parts, rows.size + live_rows.size)
            chosen = crowd(self.artist_codes[merged_rows], k, per_artist)
            results.append(Ranked(merged_rows[chosen], merged_scores[chosen]))
        return results

    def _indexed_candidates(self, query, k, excluded, available_only, rule, indexed, found, fetch):
        """(rows, scores) of the first `indexed` artworks that the query may get, best first
        from ScaNN, enough for k of them to survive its filters and crowding. `found`: the
        batch's first search for it, `fetch` long; then the fetch grows 4x at a time; when the
        leaves searched hold no more (a narrow filter, a long crowding tail, or no finite score
        at all), or the query allows only some artists, every indexed artwork it may get is
        scored exactly. (Rows added to the searcher after `indexed` was read are left to the
        caller's exact search.)"""
        per_artist = rule.max_per_artist if rule is not None else None
        exact = rule is not None and rule.allowed is not None
        while not exact:
            rows, scores = found
            returned = rows.size
            keep = ~self._skipped(rows, excluded, available_only, rule) & (rows < indexed)
            rows, scores = rows[keep], scores[keep]
            if per_artist is None:
                kept = rows.size
            else:
                kept = crowd(self.artist_codes[rows], k, per_artist).size
            if kept >= k:
                return rows, scores
            exact = returned < fetch or fetch >= indexed
            fetch = min(indexed, fetch * 4)
            if not exact:
                found = self.searcher.search(query, fetch, self.vectors)
        rows = np.flatnonzero(~self._skipped(np.arange(indexed), excluded, available_only, rule))
        return rows, self.vectors[rows] @ query

    def _with_term_candidates(
        self, rows, profile, excluded, available_only, rule, indexed, bought=None
    ) -> np.ndarray:
        """`rows` plus the first `indexed` artworks that the query does not skip among: the
        TERM_FETCH closest (match vectors) to each of the profile's last TERM_SEARCH_PROFILE
        artworks (the nearest-purchase term), to the profile's mean match vector (the mean
        term), the TERM_FETCH best sellers (the popularity term) and the TERM_FETCH highest of
        `bought` (the co-purchase term's [1, n] row); each once (sorted)."""
        candidates = [rows]
        fetch = min(indexed, TERM_FETCH + excluded.size)
        queries = []
        if self.terms.nearest:
            searched = profile[profile < indexed]
            recent = searched[max(0, searched.size - TERM_SEARCH_PROFILE) :]
            queries += list(self.match_vectors[recent])
        if self.terms.mean:
            queries.append(profile_means(self.match_vectors, [profile])[0])
        if queries:
            closest = self.match_searcher.search_batched(
                np.stack(queries), fetch, self.match_vectors
            )
            candidates += [rows for rows, _ in closest]
        if self.terms.popularity:
            candidates.append(self._leading_indexed("sales", fetch))
        if self.terms.freshness:
            candidates.append(self._leading_indexed("upload_time", FRESH_FETCH + excluded.size))
        if self.terms.era:
            searched = profile[profile < indexed]
            recent = searched[max(0, searched.size - TERM_SEARCH_PROFILE) :]
            candidates.append(self._listed_near(recent, indexed, ERA_FETCH + excluded.size))
        if bought is not None and bought.nnz:  # the highest above 0 (EASE's may be negative)
            order = np.argsort(-bought.data, kind="stable")[:fetch]
            order = order[bought.data[order] > 0]
            candidates.append(bought.indices[order].astype(np.int64))
        found = np.unique(np.concatenate(candidates))
        found = found[found < indexed]
        return found[~self._skipped(found, excluded, available_only, rule)]

    def _leading_indexed(self, key: str, n: int) -> np.ndarray:
        """The n indexed artworks still for sale with the highest `key` ("sales": the best
        sellers; "upload_time": the newest), ties: lower row (a sold original never returns),
        recomputed only after purchases were applied or rows indexed."""
        cached, state = self._leaders.get(key), (self._purchases_applied, self.indexed)
        if cached is None or cached[0] != state or cached[1].size < n:
            values = getattr(self, key)[: state[1]]
            rows, _ = top_k(np.where(self.sold[: state[1]], -np.inf, values), max(n, TERM_FETCH))
            cached = self._leaders[key] = (state, rows)
        return cached[1][:n]

    def _listed_near(self, rows: np.ndarray, indexed: int, n: int) -> np.ndarray:
        """Of the first `indexed` artworks, the n (or so) whose upload times are closest to each
        of `rows`' (about n/2 on either side, in upload order), recomputed when rows are
        indexed."""
        cached = self._upload_order
        if cached is None or cached[0] != indexed:
            order = np.argsort(self.upload_time[:indexed], kind="stable")
            cached = self._upload_order = (indexed, order, self.upload_time[order])
        _, order, times = cached
        found = []
        for at in np.searchsorted(times, self.upload_time[rows]):
            start = max(0, min(at - n // 2, order.size - n))
            found.append(order[start : start + n])
        return np.concatenate(found) if found else np.zeros(0, np.int64)

    def _days(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `size` rows' distinct upload days and each row's index into them (the era
        term is a function of the day: computed per distinct day, then gathered), recomputed
        when rows were added."""
        table = self._day_table
        if table is None or table[0] != size:
            distinct, day_of_row = np.unique(
                upload_days(self.upload_time[:size]), return_inverse=True
            )
            table = self._day_table = (size, distinct, day_of_row)
        return table[1], table[2]

    def _era(self, profiles: Sequence[np.ndarray], days: np.ndarray) -> np.ndarray:
        """[len(profiles), days.size]: w_era x the era term of upload `days` for each profile
        (catalogue rows)."""
        bought = [upload_days(self.upload_time[profile]) for profile in profiles]
        return self.terms.era * era_closeness(days, bought, self.terms.era_days)

    def _freshness(self, rows, now: float) -> np.ndarray:
        """w_new x the freshness of `rows` (an index or slice) at `now`."""
        ages = now - self.upload_time[rows]
        return self.terms.freshness * freshness(ages, self.terms.freshness_days)

    def _item_item(self) -> list[tuple[float, sp.csr_matrix]]:
        """(weight, matrix) of each co-purchase term whose weight in `terms` is above 0."""
        pairs = ((getattr(self.terms, name), m) for name, m in self.item_item_matrices.items())
        return [(weight, matrix) for weight, matrix in pairs if weight > 0]

    def _copurchase_scores(self, profiles: Sequence[np.ndarray]):
        """[b, n_exported] sparse csr: per profile (its exported artworks), the co-purchase
        terms, each times its weight, summed."""
        item_item = self._item_item()
        exported = item_item[0][1].shape[0]
        profiles = [p[p < exported] for p in profiles]
        total = sum(weight * profile_scores(matrix, profiles) for weight, matrix in item_item)
        return sp.csr_matrix(total)

    def _term_scores(
        self, profile: np.ndarray, rows: np.ndarray, now: float, bought=None
    ) -> np.ndarray:
        """[rows.size]: the profile terms' weighted sum for one query at `now` (`bought`: its
        co-purchase row from `_copurchase_scores`, where those terms have a weight)."""
        total = np.zeros(rows.size, np.float32)
        if self.terms.uses_profile:
            match = self.match_vectors[profile]  # [p, m]
            similarity = match @ self.match_vectors[rows].T  # [p, n]
            if self.terms.nearest:
                total += self.terms.nearest * similarity.max(axis=0)
            if self.terms.mean:
                total += self.terms.mean * similarity.mean(axis=0)
        if self.terms.popularity:
            total += self.popularity[rows]
        if bought is not None:
            exported = rows < bought.shape[1]
            values = bought[:, rows[exported]].toarray()[0]
            total[exported] += values
        if self.terms.freshness:
            total += self._freshness(rows, now)
        if self.terms.era:
            total += self._era([profile], upload_days(self.upload_time[rows]))[0]
        return total

    def closest_in_profiles(
        self, shown: Sequence[np.ndarray], profiles: Sequence[np.ndarray]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query, (profile row, cosine) for each artwork of its `shown` rows: the artwork of
        its profile closest to it in the towers' item space (the bias slot left out, as for
        similar artworks), the one that contributes most to its score through the pooled
        profile. Ties: the earlier purchase. The batch's vectors are normalised together."""
        dims = self.vectors.shape[1] - (1 if self.model.item_tower.bias_slot else 0)
        recommended = _unit(self.vectors[np.concatenate(shown), :dims])
        bought = _unit(self.vectors[np.concatenate(profiles), :dims])
        # [all shown, all profile artworks]; float32 rounding can pass 1 by an ulp: clipped
        similarity = np.clip(recommended @ bought.T, -1.0, 1.0)
        answers, row, column = [], 0, 0
        for rows, profile in zip(shown, profiles, strict=True):
            block = similarity[row : row + rows.size, column : column + profile.size]
            best = np.argmax(block, axis=1)
            answers.append((profile[best], block[np.arange(rows.size), best]))
            row, column = row + rows.size, column + profile.size
        return answers

    def _closest_purchase(self, profiles: Sequence[np.ndarray], size: int) -> np.ndarray:
        """[b, size]: each artwork's cosine to the closest artwork of each profile (match
        vectors); artworks shared by the batch's profiles are multiplied once."""
        stacked = np.concatenate(profiles)
        distinct, position = np.unique(stacked, return_inverse=True)
        similarity = self.match_vectors[distinct] @ self.match_columns[:, :size]
        return closest_per_profile(similarity, position, [len(p) for p in profiles])

    def _skipped(
        self,
        rows: np.ndarray,
        excluded: np.ndarray,
        available_only: bool,
        rule: ArtistRule | None = None,
    ) -> np.ndarray:
        """Which of `rows` a query skips: excluded, sold where `available_only`, or left out by
        its artist rule. Checked on the candidates only (not a catalogue-wide mask: at 1M
        artworks that cost more)."""
        skip = np.isin(rows, excluded)
        if available_only:
            skip |= self.sold[rows]
        if rule is not None and rule.filters:
            skip |= rule.refused(self.artist_codes[rows])
        return skip

    def popular(
        self,
        k: int,
        *,
        exclude: np.ndarray,
        available_only: bool,
        rule: ArtistRule | None = None,
    ) -> Ranked:
        """Most purchases first, then the newest upload; `rule` as in `top_k`."""
        size = self.size
        keep = self.available(size) if available_only else np.ones(size, bool)
        keep[exclude[exclude < size]] = False
        if rule is not None and rule.filters:
            keep &= ~rule.refused(self.artist_codes[:size])
        rows = np.flatnonzero(keep)
        order = np.lexsort((-self.upload_time[rows], -self.sales[rows]))
        if rule is not None and rule.max_per_artist is not None:
            order = order[crowd(self.artist_codes[rows[order]], k, rule.max_per_artist)]
        order = order[:k]
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


def _key(purchase: Purchase) -> tuple[str, str, float]:
    return purchase.customer_id, purchase.item_id, purchase.timestamp


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def _grown_columns(columns: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((columns.shape[0], capacity), columns.dtype)
    grown[:, : columns.shape[1]] = columns
    return grown


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    grown = np.zeros((capacity, *array.shape[1:]), array.dtype)
    grown[: array.shape[0]] = array
    return grown
