"""Top-k retrieval indexes over item vectors (TFRS factorized_top_k), and their recall.

Brute force is exact and fine for small catalogues. From `scann_min_items` artworks on, ScaNN:
a tree of about sqrt(n) leaves, asymmetric hashing, and exact re-ordering of the best candidates
(REFERENCE.md's guidance). Its recall@10 against exact search is measured, not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs


@dataclass(frozen=True)
class IndexConfig:
    k: int = 100
    scann_min_items: int = 20_000
    leaves_to_search_share: float = 0.1
    dimensions_per_block: int = 2
    reorder: int = 200

    def uses_scann(self, n_items: int) -> bool:
        return n_items >= self.scann_min_items

    def scann_parameters(self, n_items: int) -> dict:
        leaves = max(1, int(round(np.sqrt(n_items))))
        return {
            "num_leaves": leaves,
            "num_leaves_to_search": max(1, int(round(leaves * self.leaves_to_search_share))),
            "dimensions_per_block": self.dimensions_per_block,
            "num_reordering_candidates": max(self.reorder, self.k),
        }

    def describe(self, n_items: int) -> dict:
        if not self.uses_scann(n_items):
            return {"kind": "brute_force", "k": self.k}
        return {"kind": "scann", "k": self.k, **self.scann_parameters(n_items)}


def build_index(
    vectors: np.ndarray,
    identifiers: np.ndarray,
    config: IndexConfig,
    query_model: tf.keras.Model | None = None,
) -> tfrs.layers.factorized_top_k.TopK:
    """An index over `vectors` [n, dim] returning (scores, identifiers) of the top k."""
    k = min(config.k, vectors.shape[0])
    if config.uses_scann(vectors.shape[0]):
        import scann  # noqa: F401  (registers the ScaNN ops)

        index = tfrs.layers.factorized_top_k.ScaNN(
            query_model, k=k, **config.scann_parameters(vectors.shape[0])
        )
    else:
        index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=k)
    index.index(tf.constant(vectors, tf.float32), tf.constant(identifiers))
    return index


def scann_searcher(vectors: np.ndarray, config: IndexConfig):
    """A ScaNN searcher (its pybind API: numpy in, numpy out, no TensorFlow call per query)
    over `vectors` [n, dim], with the parameters the export's index uses. Dot product."""
    from scann.scann_ops.py import scann_ops_pybind

    params = config.scann_parameters(vectors.shape[0])
    return (
        scann_ops_pybind.builder(np.ascontiguousarray(vectors, np.float32), config.k, "dot_product")
        .tree(
            num_leaves=params["num_leaves"],
            num_leaves_to_search=params["num_leaves_to_search"],
            training_sample_size=min(vectors.shape[0], 250_000),
        )
        .score_ah(params["dimensions_per_block"], anisotropic_quantization_threshold=0.2)
        .reorder(params["num_reordering_candidates"])
        .build()
    )


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force numpy reference: (scores [q, k], rows [q, k]) by dot product, best first."""
    scores = queries @ vectors.T  # [q, n]
    rows = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    top = np.take_along_axis(scores, rows, axis=1)
    order = np.argsort(-top, axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(rows, order, axis=1)


def recall_at_k(found_scores: np.ndarray, exact_scores: np.ndarray, tolerance=1e-4) -> float:
    """Share of the exact top-k found, compared by score so that ties do not count as misses:
    a found item counts if it scores at least the exact k-th score (minus tolerance)."""
    threshold = exact_scores[:, -1:] - tolerance * np.maximum(1.0, np.abs(exact_scores[:, -1:]))
    hits = np.minimum((found_scores >= threshold).sum(axis=1), exact_scores.shape[1])
    return float(hits.mean() / exact_scores.shape[1])
