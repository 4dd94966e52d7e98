"""Retrieval indexes against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from training.index import (
    MAX_PRIOR_SHARE,
    IndexConfig,
    PriorSplitTopK,
    ScannSearcher,
    build_index,
    exact_top_k,
    recall_at_k,
)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def marketplace_like_vectors(n: int, dim: int, rng) -> np.ndarray:
    """Item vectors shaped like a trained tower's: styles > artists > artworks, a low-dimensional
    latent space seen through a non-linear map, unit length."""
    styles = unit_rows(rng.normal(size=(40, 32)))
    n_artists = max(1, n // 25)
    artists = styles[rng.integers(0, 40, n_artists)] + 0.1 * rng.normal(size=(n_artists, 32))
    latent = artists[rng.integers(0, n_artists, n)] + 0.08 * rng.normal(size=(n, 32))
    return unit_rows(np.tanh(latent @ rng.normal(size=(32, dim))) + 0.1 * rng.normal(size=(n, dim)))


def test_exact_top_k_is_the_sorted_brute_force_reference():
    rng = np.random.default_rng(0)
    vectors, queries = rng.normal(size=(300, 8)), rng.normal(size=(5, 8))
    scores, rows = exact_top_k(queries, vectors, 7)
    full = queries @ vectors.T
    for q in range(5):
        want = np.argsort(-full[q])[:7]
        np.testing.assert_array_equal(rows[q], want)
        np.testing.assert_allclose(scores[q], full[q, want])


def test_recall_counts_ties_as_hits_and_misses_as_misses():
    exact = np.array([[3.0, 2.0, 1.0]])
    assert recall_at_k(np.array([[3.0, 2.0, 1.0]]), exact) == 1.0
    assert recall_at_k(np.array([[3.0, 1.0, 1.0]]), exact) == 1.0  # a tie at the k-th score
    assert recall_at_k(np.array([[3.0, 2.0, 0.5]]), exact) == pytest.approx(2 / 3)


def test_brute_force_index_equals_numpy():
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(2_000, 16)).astype(np.float32)
    queries = rng.normal(size=(20, 16)).astype(np.float32)
    ids = np.array([f"item-{i}" for i in range(2_000)])
    index = build_index(vectors, ids, IndexConfig(k=10, scann_min_items=10_000))
    scores, found = index(queries)
    want_scores, want_rows = exact_top_k(queries, vectors, 10)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(found.numpy().astype(str), ids[want_rows])


def test_scann_configured_exact_equals_numpy_brute_force():
    rng = np.random.default_rng(2)
    n = 3_000
    vectors = rng.normal(size=(n, 16)).astype(np.float32)
    queries = rng.normal(size=(30, 16)).astype(np.float32)
    ids = np.arange(n).astype(str)
    # Every leaf searched and every candidate re-scored exactly: ScaNN must equal brute force.
    exact = IndexConfig(k=10, scann_min_items=1, leaves_to_search_share=1.0, reorder=n)
    index = build_index(vectors, ids, exact)
    assert type(index).__name__ == "ScaNN"
    scores, found = index(queries)
    want_scores, want_rows = exact_top_k(queries, vectors, 10)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-4, atol=1e-4)
    assert recall_at_k(scores.numpy(), want_scores) == 1.0
    found_rows = found.numpy().astype(int)
    np.testing.assert_allclose(
        np.take_along_axis(queries @ vectors.T, found_rows, axis=1), want_scores, atol=1e-4
    )


def test_scann_default_configuration_keeps_recall_at_100k_items():
    rng = np.random.default_rng(3)
    n = 100_000
    vectors = marketplace_like_vectors(n, 200, rng)
    profiles = rng.choice(n, size=(300, 3))
    queries = unit_rows(vectors[profiles].mean(axis=1))  # a customer: the mean of 3 artworks
    config = IndexConfig(k=10)
    assert config.uses_scann(n)
    index = build_index(vectors, np.arange(n).astype(str), config)
    scores, _ = index(queries)
    recall = recall_at_k(scores.numpy(), exact_top_k(queries, vectors, 10)[0])
    assert recall >= 0.95, recall


def with_prior(vectors: np.ndarray, share: float, rng) -> np.ndarray:
    """A bias slot: `share` of the rows get an additive prior in (0, 0.4], the rest 0."""
    prior = np.where(rng.random(len(vectors)) < share, rng.uniform(0.01, 0.4, len(vectors)), 0)
    return np.hstack([vectors, prior[:, None]]).astype(np.float32)


def profile_queries(vectors: np.ndarray, rng, n: int) -> np.ndarray:
    """Users as the towers make them: a unit mean of 3 artworks' directions, then the 1 that
    weighs the prior."""
    directions = vectors[rng.choice(len(vectors), size=(n, 3)), :-1].mean(axis=1)
    return np.hstack([unit_rows(directions), np.ones((n, 1))]).astype(np.float32)


def test_prior_rows_are_the_positive_ones_unless_they_are_too_many():
    rng = np.random.default_rng(4)
    vectors = with_prior(rng.normal(size=(1_000, 8)), 0.05, rng)
    vectors[:10, -1] = -0.3  # a negative prior cannot lift an artwork: it stays in the tree
    config = IndexConfig(scann_min_items=1, prior_slot=True)
    np.testing.assert_array_equal(config.prior_rows(vectors), np.flatnonzero(vectors[:, -1] > 0))
    assert IndexConfig(scann_min_items=1).prior_rows(vectors).size == 0  # no bias slot
    crowded = with_prior(rng.normal(size=(1_000, 8)), MAX_PRIOR_SHARE + 0.1, rng)
    assert config.prior_rows(crowded).size == 0


def test_split_index_configured_exact_equals_numpy_brute_force(tmp_path):
    rng = np.random.default_rng(5)
    n = 3_000
    vectors = with_prior(unit_rows(rng.normal(size=(n, 16))), 0.03, rng)
    queries = profile_queries(vectors, rng, 30)
    exact = IndexConfig(
        k=10, scann_min_items=1, leaves_to_search_share=1.0, reorder=n, prior_slot=True
    )
    want_scores, want_rows = exact_top_k(queries, vectors, 10)
    assert np.isin(want_rows, exact.prior_rows(vectors)).any()  # the case the split is for

    index = build_index(vectors, np.arange(n).astype(str), exact)
    assert isinstance(index, PriorSplitTopK)
    scores, found = index(queries)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-4, atol=1e-4)
    found_rows = found.numpy().astype(int)
    np.testing.assert_allclose(
        np.take_along_axis(queries @ vectors.T, found_rows, axis=1), want_scores, atol=1e-4
    )

    # Saved and loaded as the export saves it (ScaNN ops in the graph), it answers the same.
    module = tf.Module()
    module.index = index
    module.serve = tf.function(
        lambda q: dict(zip(("scores", "ids"), index(q, k=10), strict=True)),
        input_signature=[tf.TensorSpec([None, vectors.shape[1]], tf.float32)],
    )
    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"])
    tf.saved_model.save(module, tmp_path / "index", signatures=module.serve, options=options)
    loaded = tf.saved_model.load(tmp_path / "index").signatures["serving_default"]
    answer = loaded(q=tf.constant(queries))
    np.testing.assert_allclose(answer["scores"].numpy(), want_scores, rtol=1e-4, atol=1e-4)

    searcher = ScannSearcher(vectors, exact)
    for query, scores_row in zip(queries, want_scores, strict=True):
        rows, scores = searcher.search(query, 10)
        np.testing.assert_allclose(scores, scores_row, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(vectors[rows] @ query, scores, atol=1e-4)


def test_split_index_keeps_recall_where_priors_decide_the_top_10():
    rng = np.random.default_rng(6)
    n = 60_000
    vectors = with_prior(marketplace_like_vectors(n, 64, rng), 0.01, rng)
    queries = profile_queries(vectors, rng, 200)
    config = IndexConfig(k=10, prior_slot=True)
    assert config.uses_scann(n)
    exact_scores, exact_rows = exact_top_k(queries, vectors, 10)
    apart = config.prior_rows(vectors)
    assert np.isin(exact_rows, apart).mean() > 0.5  # 1% of the artworks, most of the top 10

    searcher = ScannSearcher(vectors, config)
    found = np.stack([searcher.search(query, 10)[1] for query in queries])
    assert recall_at_k(found, exact_scores) >= 0.97
    scores, _ = build_index(vectors, np.arange(n).astype(str), config)(queries, k=10)
    assert recall_at_k(scores.numpy(), exact_scores) >= 0.97
