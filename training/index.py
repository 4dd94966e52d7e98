"""Top-k retrieval indexes over item vectors (TFRS factorized_top_k), and their recall.

Brute force is exact and fine for small catalogues. From `scann_min_items` artworks on, ScaNN:
a tree of about sqrt(n) leaves, asymmetric hashing, and exact re-ordering of the best candidates
(ScaNN's recommended setup for this size). Its recall@10 against exact search is measured.

The service's `ScannSearcher` re-orders itself: ScaNN keeps only the hashed artworks, and the
best `reorder` of them by asymmetric hashing are scored exactly from the caller's own item
vectors. ScaNN's re-ordering would hold a second copy of every vector: at 1M artworks 0.8 GB for
the towers' and 0.5 GB for the match vectors, in memory and in the export, hashed and read at
every start while holding the GIL (loading both searchers of the 1M export: 3.0-7.6 s with
ScaNN's copy, 0.7 s without; docs/benchmarks.md).

Artworks with a positive prior are searched apart. With a bias slot (`prior_slot`), an item
vector's last column is an additive prior (the calibrated artist sell-through, an id bias) and
the query's is 1. The tree partitions by direction, but a prior of +0.3 outweighs the gap
between a customer's 10th and 200th best artwork (0.13 on the 1M marketplace), so the few
artworks that have one win from anywhere: there, 1% of the artworks held 97% of the exact
top 10, and one tree over everything reached recall@10 .90 searching 10% of its leaves. So when
such artworks are at most `MAX_PRIOR_SHARE` of the catalogue, they get a searcher of their own
(ScaNN without a tree: asymmetric hashing over all of them, then exact re-ordering; exact in the
TFRS layer) and the two results are merged by score.

The service's `ScannSearcher` takes artworks added after the export (ScaNN's `upsert`): they
join the tree, or the searcher apart when they have a prior and the export has one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from training.topk import exact_top_k as exact_top_k  # re-exported: the numpy reference
from training.topk import top_k

MAX_PRIOR_SHARE = 0.2
# Fewest leaves searched: a share of a small tree is too few (4,000 artworks: 63 leaves, 5% = 3,
# recall@10 .94-1.0 from build to build, ScaNN's k-means not being deterministic).
MIN_LEAVES_SEARCHED = 8
UPSERT_CHUNK = 256  # rows added to a searcher per hold of its lock


@dataclass(frozen=True)
class IndexConfig:
    k: int = 100
    scann_min_items: int = 20_000
    leaves_to_search_share: float = 0.05
    dimensions_per_block: int = 2
    reorder: int = 200
    prior_slot: bool = False  # the last column is an additive prior (the query's is 1)

    def uses_scann(self, n_items: int) -> bool:
        return n_items >= self.scann_min_items

    def scann_parameters(self, n_items: int) -> dict:
        leaves = max(1, int(round(np.sqrt(n_items))))
        return {
            "num_leaves": leaves,
            "num_leaves_to_search": min(
                leaves, max(MIN_LEAVES_SEARCHED, int(round(leaves * self.leaves_to_search_share)))
            ),
            "dimensions_per_block": self.dimensions_per_block,
            "num_reordering_candidates": max(self.reorder, self.k),
        }

    def prior_rows(self, vectors: np.ndarray) -> np.ndarray:
        """Rows searched apart: those with a positive prior, if at most MAX_PRIOR_SHARE of all
        (more, and they are the catalogue: one index). Sorted row numbers."""
        if not self.prior_slot:
            return np.zeros(0, np.int64)
        rows = np.flatnonzero(vectors[:, -1] > 0)
        return rows if rows.size <= MAX_PRIOR_SHARE * vectors.shape[0] else np.zeros(0, np.int64)

    def split_rows(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows for the tree, rows searched apart), each sorted."""
        apart = self.prior_rows(vectors)
        return np.setdiff1d(np.arange(vectors.shape[0]), apart), apart

    def describe(self, n_items: int) -> dict:
        if not self.uses_scann(n_items):
            return {"kind": "brute_force", "k": self.k}
        return {"kind": "scann", "k": self.k, **self.scann_parameters(n_items)}


def build_index(
    vectors: np.ndarray,
    identifiers: np.ndarray,
    config: IndexConfig,
    query_model: tf.keras.Model | None = None,
) -> tf.keras.layers.Layer:
    """An index over `vectors` [n, dim] returning (scores, identifiers) of the top k: a TFRS
    factorized_top_k layer, or a `PriorSplitTopK` of two when some rows have a prior."""
    k = min(config.k, vectors.shape[0])
    if not config.uses_scann(vectors.shape[0]):
        brute_force = tfrs.layers.factorized_top_k.BruteForce(query_model, k=k)
        return _indexed(brute_force, vectors, identifiers)
    import scann  # noqa: F401  (registers the ScaNN ops)

    rest, apart = config.split_rows(vectors)
    tree = tfrs.layers.factorized_top_k.ScaNN(
        None if apart.size else query_model, k=k, **config.scann_parameters(rest.size)
    )
    tree = _indexed(tree, vectors[rest], identifiers[rest])
    if not apart.size:
        return tree
    exact = tfrs.layers.factorized_top_k.BruteForce(k=min(k, apart.size))
    apart_index = _indexed(exact, vectors[apart], identifiers[apart])
    return PriorSplitTopK(tree, apart_index, k, apart.size, query_model)


def _indexed(layer, vectors: np.ndarray, identifiers: np.ndarray):
    layer.index(tf.constant(vectors, tf.float32), tf.constant(identifiers))
    return layer


class PriorSplitTopK(tf.keras.layers.Layer):
    """Two top-k indexes over disjoint artworks (the tree over most, an exact one over those
    with a prior: `apart_size` of them), queried with the same vectors and merged by score."""

    def __init__(self, tree, apart, k: int, apart_size: int, query_model=None):
        super().__init__()
        self.tree, self.apart, self.query_model = tree, apart, query_model
        self.k, self.apart_size = k, apart_size

    def call(self, queries, k: int | None = None):
        k = k or self.k
        if self.query_model is not None:
            queries = self.query_model(queries)
        tree_scores, tree_ids = self.tree(queries, k=k)
        apart_scores, apart_ids = self.apart(queries, k=min(k, self.apart_size))
        scores = tf.concat([tree_scores, apart_scores], axis=1)
        identifiers = tf.concat([tree_ids, apart_ids], axis=1)
        best_scores, best = tf.math.top_k(scores, k=k)
        return best_scores, tf.gather(identifiers, best, batch_dims=1)


class ScannSearcher:
    """ScaNN through its pybind API (numpy in, numpy out, no TensorFlow call per query) over
    `vectors` [n, dim], dot product, with the export's parameters; rows with a prior searched
    apart (see the module doc). `search_batched(queries, k, vectors)` -> one (rows, scores)
    per query, best first, re-ordered exactly from `vectors` (row r's vector at vectors[r]: the
    caller's array, not a copy); `add(vectors, rows)` puts more rows in (ScaNN's upsert).
    Searches and adds take one lock: ScaNN does not promise that a search sees a concurrent
    upsert whole."""

    def __init__(self, vectors: np.ndarray, config: IndexConfig):
        vectors = np.ascontiguousarray(vectors, np.float32)
        self.config = config
        self.lock = threading.Lock()
        self.claimed = False
        self.tree_rows, self.apart_rows = config.split_rows(vectors)
        params = config.scann_parameters(self.tree_rows.size)
        tree = _pybind_builder(vectors[self.tree_rows], config.k).tree(
            num_leaves=params["num_leaves"],
            num_leaves_to_search=params["num_leaves_to_search"],
            training_sample_size=min(self.tree_rows.size, 250_000),
        )
        self.tree = _hashed(tree, params).build()
        self.apart = None
        if self.apart_rows.size:
            self.apart = _hashed(
                _pybind_builder(vectors[self.apart_rows], config.k), params
            ).build()

    @property
    def size(self) -> int:
        return self.tree_rows.size + self.apart_rows.size

    def claim(self) -> bool:
        """True for the first caller only: the one catalogue that may add rows to it (a
        second catalogue over the same export builds its own)."""
        with self.lock:
            first, self.claimed = not self.claimed, True
        return first

    def save(self, directory: Path) -> None:
        """ScaNN's own serialization (protobuf and .npy files, paths relative; no docids, so
        no pickle) of the tree and the searcher apart, and which rows each holds."""
        for part, searcher in (("tree", self.tree), ("apart", self.apart)):
            if searcher is not None:
                (directory / part).mkdir(parents=True)
                searcher.serialize(str(directory / part), relative_path=True)
        np.savez(directory / "rows.npz", tree=self.tree_rows, apart=self.apart_rows)

    @classmethod
    def load(cls, directory: Path, config: IndexConfig) -> ScannSearcher:
        """A searcher `save` wrote, without building anything. A pickle anywhere under
        `directory` is refused (ScaNN's loader would unpickle a docids file)."""
        from scann.scann_ops.py import scann_ops_pybind

        pickles = sorted(str(p.relative_to(directory)) for p in directory.rglob("*.pkl"))
        if pickles:
            raise ValueError(f"{directory}: pickles are refused: {pickles}")
        searcher = cls.__new__(cls)
        searcher.config, searcher.lock, searcher.claimed = config, threading.Lock(), False
        with np.load(directory / "rows.npz", allow_pickle=False) as rows:
            searcher.tree_rows, searcher.apart_rows = rows["tree"], rows["apart"]
        searcher.tree = scann_ops_pybind.load_searcher(str(directory / "tree"))
        searcher.apart = None
        if searcher.apart_rows.size:
            searcher.apart = scann_ops_pybind.load_searcher(str(directory / "apart"))
        return searcher

    def search(
        self, query: np.ndarray, k: int, vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(rows, exact scores) of the (approximately) best k, best first; ties: lower row
        first. `vectors`: every row's vector (row r at vectors[r]); rows past its end (added
        after the caller read it) are left out."""
        return self.search_batched(query[None, :], k, vectors)[0]

    def search_batched(
        self, queries: np.ndarray, k: int, vectors: np.ndarray
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """`search` of every row of `queries` [b, dim]: the best max(k, reorder) of each part
        by asymmetric hashing (one ScaNN call per part for them all), scored exactly."""
        queries = np.ascontiguousarray(queries, np.float32)
        candidates = max(k, self.config.reorder)
        with self.lock:
            parts = [_batched(self.tree, self.tree_rows, queries, candidates)]
            if self.apart is not None:
                parts.append(_batched(self.apart, self.apart_rows, queries, candidates))
        results = []
        for i, query in enumerate(queries):
            rows = np.concatenate([part[i] for part in parts])
            rows = rows[rows < len(vectors)]
            results.append(top_k(vectors[rows] @ query, k, rows))
        return results

    def add(self, vectors: np.ndarray, rows: np.ndarray) -> None:
        """Rows `rows` with `vectors` [n, dim] become searchable: a row with a prior goes to
        the searcher apart if there is one, every other to the tree."""
        vectors = np.ascontiguousarray(vectors, np.float32)
        rows = np.asarray(rows, np.int64)
        to_apart = np.zeros(rows.size, bool)
        if self.apart is not None and self.config.prior_slot:
            to_apart = vectors[:, -1] > 0
        # in chunks, the lock released between them: a search waits for one chunk at most
        for start in range(0, rows.size, UPSERT_CHUNK):
            part = slice(start, start + UPSERT_CHUNK)
            tree, apart = ~to_apart[part], to_apart[part]
            with self.lock:
                if tree.any():
                    self.tree_rows = _upserted(
                        self.tree, self.tree_rows, vectors[part][tree], rows[part][tree]
                    )
                if apart.any():
                    self.apart_rows = _upserted(
                        self.apart, self.apart_rows, vectors[part][apart], rows[part][apart]
                    )


def _batched(searcher, rows: np.ndarray, queries: np.ndarray, candidates: int) -> list:
    """The rows of the best `candidates` per query of one ScaNN searcher over `rows` (by its
    asymmetric hashing; searchers serialized with ScaNN's own re-ordering, before it was
    dropped, re-order them first); its padding (fewer found than asked: NaN scores) dropped."""
    wanted = min(candidates, rows.size)
    found, scores = searcher.search_batched(
        queries, final_num_neighbors=wanted, pre_reorder_num_neighbors=wanted
    )
    return [
        rows[positions[~np.isnan(values)]] for positions, values in zip(found, scores, strict=True)
    ]


def _upserted(searcher, rows: np.ndarray, vectors: np.ndarray, new_rows: np.ndarray):
    """`rows` (ScaNN's datapoint i is row rows[i]) after inserting `vectors` as `new_rows`.
    Through the pybind searcher: the wrapper's `upsert` needs docids, which ScaNN serializes as
    a pickle; without them, upsert takes None for "a new datapoint" and returns where it went."""
    positions = np.asarray(searcher.searcher.upsert([None] * len(new_rows), vectors, len(new_rows)))
    grown = np.concatenate([rows, np.full(max(0, positions.max() + 1 - rows.size), -1)])
    grown[positions] = new_rows
    return grown


def searcher_recall(
    searcher: ScannSearcher, queries: np.ndarray, exact_scores: np.ndarray, vectors: np.ndarray
) -> float:
    """`neighbour_recall` of `searcher.search(query, k, vectors)` against `exact_scores`
    [q, k] (the exact top-k scores over `vectors`, which it indexes: `exact_top_k`): the recall
    of what the service serves."""
    k = exact_scores.shape[1]
    found = np.full((len(queries), k), -np.inf)
    for i, query in enumerate(np.asarray(queries, np.float32)):
        scores = searcher.search(query, k, vectors)[1]
        found[i, : scores.size] = scores
    return neighbour_recall(found, exact_scores)


def _pybind_builder(vectors: np.ndarray, k: int):
    from scann.scann_ops.py import scann_ops_pybind

    return scann_ops_pybind.builder(vectors, k, "dot_product")


def _hashed(builder, params: dict):
    """Asymmetric hashing (anisotropic, for dot product); no re-ordering in ScaNN (the
    searcher re-orders from the caller's vectors: module doc)."""
    return builder.score_ah(params["dimensions_per_block"], anisotropic_quantization_threshold=0.2)


def neighbour_recall(found_scores: np.ndarray, exact_scores: np.ndarray, tolerance=1e-4) -> float:
    """Share of the exact top-k found, compared by score so that ties do not count as misses:
    a found item counts if it scores at least the exact k-th score (minus tolerance)."""
    threshold = exact_scores[:, -1:] - tolerance * np.maximum(1.0, np.abs(exact_scores[:, -1:]))
    hits = np.minimum((found_scores >= threshold).sum(axis=1), exact_scores.shape[1])
    return float(hits.mean() / exact_scores.shape[1])
