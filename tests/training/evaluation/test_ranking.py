"""Ranking against brute-force numpy on random data, ties included."""

import numpy as np
import pytest

from training.evaluation.protocols import Case
from training.evaluation.ranking import TOP_N, rank_cases, rank_one


def brute_force(scores, candidates, truth_positions, tiebreak):
    order = np.lexsort((tiebreak, -scores))  # score descending, then tiebreak ascending
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    return position[truth_positions], candidates[order[:TOP_N]]


@pytest.mark.parametrize("seed", range(20))
def test_rank_one_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 400))
    scores = rng.integers(0, 6, n).astype(float)  # many ties on purpose
    if seed % 2:
        scores = rng.normal(size=n)
    candidates = np.sort(rng.choice(10_000, n, replace=False))
    truth = rng.choice(n, int(rng.integers(1, min(n, 30))), replace=False)
    tiebreak = rng.random(n)
    ranked = rank_one(scores, candidates, truth, tiebreak)
    expected_ranks, expected_top = brute_force(scores, candidates, truth, tiebreak)
    np.testing.assert_array_equal(ranked.ranks, expected_ranks)
    np.testing.assert_array_equal(ranked.top, expected_top)
    assert ranked.n_candidates == n


class FixedScores:
    """Scores each item by a fixed random value per (query, item)."""

    name = "fixed"

    def __init__(self, table):
        self.table = table  # [n_queries, n_items]

    def score(self, batch, candidates):
        return self.table[batch.query_ids][:, candidates]


def test_batching_over_candidate_unions_changes_nothing():
    rng = np.random.default_rng(1)
    n_items, n_cases = 300, 50
    cases = []
    for q in range(n_cases):
        inventory = np.sort(rng.choice(n_items, int(rng.integers(20, 200)), replace=False))
        truth = np.sort(rng.choice(inventory, int(rng.integers(1, 5)), replace=False))
        cases.append(Case(q, f"u{q}", float(q), np.array([0]), truth, q % 3 == 0, inventory))
    method = FixedScores(rng.integers(0, 4, (n_cases, n_items)).astype(float))
    one_by_one = rank_cases(method, cases, n_items, batch_size=1)
    batched = rank_cases(method, cases, n_items, batch_size=16)
    for a, b in zip(one_by_one, batched, strict=True):
        np.testing.assert_array_equal(a.ranks, b.ranks)
        np.testing.assert_array_equal(a.top, b.top)


def test_bad_scores_are_refused():
    case = Case(0, "u", 0.0, np.array([0]), np.array([1]), True, np.array([1, 2]))

    class Broken:
        name = "broken"

        def score(self, batch, candidates):
            return np.full((1, candidates.size), np.nan)

    with pytest.raises(ValueError, match="broken: score\\(\\) returned NaN"):
        rank_cases(Broken(), [case], 3)
