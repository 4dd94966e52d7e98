"""Retrieval indexes against a brute-force numpy reference."""

from __future__ import annotations

import numpy as np
import pytest

from training.index import IndexConfig, build_index, exact_top_k, recall_at_k


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
