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
    neighbour_recall,
    searcher_recall,
)
from training.topk import merge_top_k, top_k, top_k_rows


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


def reference(scores: np.ndarray, k: int, rows: np.ndarray | None = None):
    """Brute force: every finite score sorted by (-score, row), the first k."""
    rows = np.arange(scores.size) if rows is None else rows
    finite = np.flatnonzero(np.isfinite(scores))
    order = finite[np.lexsort((rows[finite], -scores[finite]))][:k]
    return rows[order], scores[order]


def tied_scores(rng, n: int) -> np.ndarray:
    """Few distinct values (many ties, also at the k-th place), some -inf, +inf and NaN."""
    scores = rng.integers(-5, 6, n).astype(np.float32) / 4
    special = rng.choice(n, size=n // 5, replace=False)
    scores[special] = rng.choice([-np.inf, np.inf, np.nan], size=special.size)
    return scores


@pytest.mark.parametrize("n", [1, 7, 50, 1_000])
def test_top_k_equals_argsort_brute_force_with_ties_and_non_finite_scores(n):
    rng = np.random.default_rng(n)
    for trial in range(30):
        scores = tied_scores(rng, n) if trial % 2 else rng.normal(size=n)
        for k in {0, 1, 3, n // 2, n - 1, n, n + 5}:
            rows, found = top_k(scores, k)
            want_rows, want_scores = reference(scores, k)
            np.testing.assert_array_equal(rows, want_rows)
            np.testing.assert_array_equal(found, want_scores)
            assert np.isfinite(found).all()


def test_top_k_breaks_ties_by_the_given_rows_not_by_position():
    rng = np.random.default_rng(11)
    scores = tied_scores(rng, 300)
    rows = rng.permutation(10_000)[:300]
    for k in (1, 10, 100, 300):
        got = top_k(scores, k, rows)
        want = reference(scores, k, rows)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
    assert top_k(np.array([1.0, 1.0, 1.0]), 2, np.array([9, 4, 7]))[0].tolist() == [4, 7]
    assert top_k(np.full(4, -np.inf), 2)[0].size == 0  # nothing finite: nothing returned


def test_merge_top_k_equals_top_k_over_the_union_of_disjoint_parts():
    rng = np.random.default_rng(12)
    for _ in range(50):
        scores = tied_scores(rng, 400)
        rows = rng.permutation(400)
        cuts = np.sort(rng.integers(0, 400, 2))
        parts = [
            (rows[a:b], scores[a:b]) for a, b in ((0, cuts[0]), (cuts[0], cuts[1]), (cuts[1], 400))
        ]
        for k in (1, 10, 64, 500):
            got = merge_top_k(parts, k)
            want = reference(scores, k, rows)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
    empty = merge_top_k([], 5)
    assert empty[0].size == empty[1].size == 0


def test_exact_top_k_breaks_ties_by_lower_row_and_refuses_a_ragged_answer():
    rng = np.random.default_rng(13)
    vectors = rng.integers(-2, 3, size=(500, 3)).astype(np.float32)  # many equal scores
    queries = rng.integers(-2, 3, size=(300, 3)).astype(np.float32)
    scores, rows = exact_top_k(queries, vectors, 20)
    full = queries @ vectors.T
    for q in range(300):
        want_rows, want_scores = reference(full[q], 20)
        np.testing.assert_array_equal(rows[q], want_rows)
        np.testing.assert_array_equal(scores[q], want_scores)
    assert exact_top_k(queries[:2], vectors[:5], 10)[1].shape == (2, 5)  # k beyond n: n
    vectors[:, 0] = np.inf
    with pytest.raises(ValueError, match="fewer than k"):
        exact_top_k(np.ones((1, 3), np.float32), vectors, 10)


def test_serving_recall_is_the_searchers_recall_against_brute_force():
    rng = np.random.default_rng(14)
    n = 2_000
    vectors = marketplace_like_vectors(n, 16, rng)
    queries = unit_rows(vectors[rng.choice(n, size=(100, 3))].mean(axis=1))
    exact_scores = np.sort(queries @ vectors.T, axis=1)[:, ::-1][:, :10]  # brute force
    # ScaNN forced on a small catalogue, as the export measures it (a tree, 8 of 45 leaves)
    config = IndexConfig(k=10, scann_min_items=100)
    assert config.uses_scann(n)
    searcher = ScannSearcher(vectors, config)
    recall = searcher_recall(searcher, queries, exact_scores, vectors)
    hits = 0
    for query in queries:
        rows, scores = searcher.search(query, 10, vectors)
        np.testing.assert_allclose(vectors[rows] @ query, scores, atol=1e-4)
        hits += np.isin(rows, np.argsort(-(vectors @ query))[:10]).sum()
    assert recall == pytest.approx(hits / 1_000, abs=0.02)  # by score vs by row: ties aside
    assert 0.5 < recall <= 1.0
    # configured exact (every leaf, every candidate re-scored): the searcher is brute force
    exact = IndexConfig(k=10, scann_min_items=100, leaves_to_search_share=1.0, reorder=n)
    assert searcher_recall(ScannSearcher(vectors, exact), queries, exact_scores, vectors) == 1.0


def test_recall_counts_ties_as_hits_and_misses_as_misses():
    exact = np.array([[3.0, 2.0, 1.0]])
    assert neighbour_recall(np.array([[3.0, 2.0, 1.0]]), exact) == 1.0
    assert neighbour_recall(np.array([[3.0, 1.0, 1.0]]), exact) == 1.0  # a tie at the k-th score
    assert neighbour_recall(np.array([[3.0, 2.0, 0.5]]), exact) == pytest.approx(2 / 3)


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
    assert neighbour_recall(scores.numpy(), want_scores) == 1.0
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
    recall = neighbour_recall(scores.numpy(), exact_top_k(queries, vectors, 10)[0])
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
        rows, scores = searcher.search(query, 10, vectors)
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
    found = np.stack([searcher.search(query, 10, vectors)[1] for query in queries])
    assert neighbour_recall(found, exact_scores) >= 0.97
    scores, _ = build_index(vectors, np.arange(n).astype(str), config)(queries, k=10)
    assert neighbour_recall(scores.numpy(), exact_scores) >= 0.97


@pytest.mark.parametrize(("k", "n"), [(1, 40), (5, 40), (37, 40), (40, 40), (1, 3000), (20, 3000)])
def test_top_k_rows_answers_every_row_as_top_k_does(k, n):
    """The group-maximum threshold against the per-row reference on random blocks with ties at
    the k-th place, -inf (sold, excluded), rows holding +inf or NaN, rows whose group maxima
    give no finite threshold, and a row that is almost all -inf (fewer than k finite scores)."""
    rng = np.random.default_rng(k + n)
    for _ in range(30):
        scores = rng.integers(0, 6, (12, n)).astype(np.float32)  # many ties
        scores[rng.random(scores.shape) < 0.3] = -np.inf
        scores[3, 7] = np.inf
        scores[5, 2] = np.nan
        scores[8] = rng.normal(size=n)  # no ties
        scores[9, 3:] = -np.inf
        scores[10, : (n // 32) * 32] = np.nan  # every group maximum is NaN: no threshold
        scores[11, :k] = np.inf  # the k highest group maxima are +inf (not finite)
        batched = top_k_rows(scores, k)
        for row, (rows, found) in zip(scores, batched, strict=True):
            want_rows, want_scores = top_k(row, k)
            np.testing.assert_array_equal(rows, want_rows)
            np.testing.assert_array_equal(found, want_scores)


def test_batched_search_equals_brute_force_when_configured_exact():
    """One ScaNN call for a batch of queries, merged per query with the searcher apart: with
    every leaf searched and every candidate re-scored it is numpy's brute force."""
    rng = np.random.default_rng(21)
    vectors = with_prior(marketplace_like_vectors(3_000, 16, rng), 0.03, rng)
    exact = IndexConfig(
        k=10, scann_min_items=1, leaves_to_search_share=1.0, reorder=3_000, prior_slot=True
    )
    searcher = ScannSearcher(vectors, exact)
    assert searcher.apart is not None
    queries = profile_queries(vectors, rng, 20)
    want_scores, want_rows = exact_top_k(queries, vectors, 15)
    batched = searcher.search_batched(queries, 15, vectors)
    assert len(batched) == 20
    for query, (rows, scores), want in zip(queries, batched, want_scores, strict=True):
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(vectors[rows] @ query, scores, atol=1e-4)
    # the default settings (approximate): each answer's scores are its rows' exact scores,
    # best first, with no row twice
    searcher = ScannSearcher(vectors, IndexConfig(k=10, scann_min_items=1, prior_slot=True))
    for query, (rows, scores) in zip(
        queries, searcher.search_batched(queries, 15, vectors), strict=True
    ):
        assert rows.size == 15 == np.unique(rows).size and np.all(np.diff(scores) <= 0)
        np.testing.assert_allclose(vectors[rows] @ query, scores, atol=1e-4)


def test_batched_search_drops_the_padding_when_the_leaves_hold_fewer_than_k():
    rng = np.random.default_rng(22)
    vectors = marketplace_like_vectors(3_000, 16, rng)
    # 8 leaves of about 55 searched, 2,000 asked: ScaNN pads the answer with NaN scores
    narrow = IndexConfig(k=10, scann_min_items=1, leaves_to_search_share=0.0, reorder=2_000)
    searcher = ScannSearcher(vectors, narrow)
    answers = searcher.search_batched(vectors[:5], 2_000, vectors)
    for query, (rows, scores) in zip(vectors[:5], answers, strict=True):
        assert 0 < rows.size < 2_000 and np.isfinite(scores).all()
        assert rows.size == np.unique(rows).size
        np.testing.assert_allclose(vectors[rows] @ query, scores, atol=1e-4)


@pytest.mark.parametrize("saved", [False, True])
def test_added_rows_are_searched_as_if_built_with_them(saved, tmp_path):
    """Rows added after the build (ScaNN's upsert, no docids) come back under their own row
    numbers; with every leaf searched and every candidate re-scored, the searcher equals brute
    force over old and new rows; rows with a prior go to the searcher apart."""
    rng = np.random.default_rng(23)
    vectors = with_prior(unit_rows(rng.normal(size=(3_000, 16))), 0.03, rng)
    exact = IndexConfig(
        k=10, scann_min_items=1, leaves_to_search_share=1.0, reorder=4_000, prior_slot=True
    )
    searcher = ScannSearcher(vectors[:2_500], exact)
    if saved:
        searcher.save(tmp_path)
        searcher = ScannSearcher.load(tmp_path, exact)
    apart_before = searcher.apart_rows.size
    searcher.add(vectors[2_500:2_800], np.arange(2_500, 2_800))
    searcher.add(vectors[2_800:], np.arange(2_800, 3_000))
    assert searcher.size == 3_000
    assert searcher.apart_rows.size - apart_before == (vectors[2_500:, -1] > 0).sum()
    assert np.array_equal(np.sort(np.concatenate([searcher.tree_rows, searcher.apart_rows])),
                          np.arange(3_000))  # fmt: skip
    queries = profile_queries(vectors, rng, 30)
    queries[:10, :-1] = vectors[2_500:2_510, :-1]  # customers whose best match was added
    want_scores, want_rows = exact_top_k(queries, vectors, 10)
    assert np.isin(want_rows, np.arange(2_500, 3_000)).any()
    for query, (rows, scores), want in zip(
        queries, searcher.search_batched(queries, 10, vectors), want_scores, strict=True
    ):
        np.testing.assert_allclose(scores, want, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(vectors[rows] @ query, scores, atol=1e-4)


def test_rows_the_callers_vectors_do_not_hold_yet_are_left_out():
    """A search given the vectors as read before an upload grew them (the service reads them,
    then another thread adds artworks): rows past their end are not answered, not an error."""
    rng = np.random.default_rng(24)
    vectors = unit_rows(rng.normal(size=(2_000, 16)))
    exact = IndexConfig(k=10, scann_min_items=1, leaves_to_search_share=1.0, reorder=2_000)
    searcher = ScannSearcher(vectors[:1_500], exact)
    searcher.add(vectors[1_500:], np.arange(1_500, 2_000))
    queries = vectors[1_500:1_510]  # each one's best match is itself, an added row
    for query, (rows, scores) in zip(
        queries, searcher.search_batched(queries, 10, vectors[:1_500]), strict=True
    ):
        want_scores, want_rows = exact_top_k(query[None], vectors[:1_500], 10)
        np.testing.assert_array_equal(rows, want_rows[0])
        np.testing.assert_allclose(scores, want_scores[0], rtol=1e-5)


def test_the_serialized_searcher_holds_no_copy_of_the_vectors_and_old_ones_still_load(
    tmp_path, monkeypatch
):
    """ScaNN keeps only the hashed artworks (the searcher re-orders from the caller's vectors):
    no dataset.npy is written. A searcher serialized with ScaNN's own re-ordering (exports
    before this) still loads and answers the same exact top k."""
    import training.index as index_module

    rng = np.random.default_rng(25)
    vectors = unit_rows(rng.normal(size=(2_000, 16)))
    exact = IndexConfig(k=10, scann_min_items=1, leaves_to_search_share=1.0, reorder=2_000)
    ScannSearcher(vectors, exact).save(tmp_path / "now")
    assert not list((tmp_path / "now").rglob("dataset.npy"))
    hashed = index_module._hashed
    monkeypatch.setattr(
        index_module,
        "_hashed",
        lambda builder, params: hashed(builder, params).reorder(
            params["num_reordering_candidates"]
        ),
    )
    ScannSearcher(vectors, exact).save(tmp_path / "before")
    monkeypatch.undo()
    assert list((tmp_path / "before").rglob("dataset.npy"))
    queries = unit_rows(rng.normal(size=(20, 16)))
    want_scores, want_rows = exact_top_k(queries, vectors, 10)
    for saved in ("now", "before"):
        searcher = ScannSearcher.load(tmp_path / saved, exact)
        for (rows, scores), row_want, score_want in zip(
            searcher.search_batched(queries, 10, vectors), want_rows, want_scores, strict=True
        ):
            np.testing.assert_array_equal(rows, row_want)
            np.testing.assert_allclose(scores, score_want, rtol=1e-5)
