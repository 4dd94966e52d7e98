"""Every metric against values computed by hand on three users; restricting the ground truth to
one kind against re-ranking without the other kind."""

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    auc,
    case_metrics,
    ndcg_at_k,
    ndcg_hits_at_k,
    precision_at_k,
    recall_at_k,
    restrict_ranks,
)

# Three users ranking 10 candidates; the 0-based positions of their ground truth:
#   alice: one item, ranked 1st             bob: two items, ranked 2nd and 5th
#   carol: three items, ranked 3rd, 8th and 10th (last)
ALICE, BOB, CAROL = np.array([0]), np.array([1, 4]), np.array([2, 7, 9])
N = 10


def test_auc_by_hand():
    assert auc(ALICE, N) == 1.0  # all 9 negatives below
    # bob: rank 1 has 8 below, 1 of them relevant -> 7/8; rank 4 has 5 below -> 5/8
    assert auc(BOB, N) == pytest.approx((7 / 8 + 5 / 8) / 2)
    # carol: 7 negatives; rank 2: 7 below, 2 relevant -> 5/7; rank 7: 2 below, 1 relevant -> 1/7
    assert auc(CAROL, N) == pytest.approx((5 / 7 + 1 / 7 + 0 / 7) / 3)


def test_auc_ignores_order_of_ranks_and_is_half_for_middle():
    assert auc(np.array([4, 1]), N) == auc(BOB, N)
    assert auc(np.array([1]), 3) == 0.5


def test_precision_and_recall_by_hand():
    assert precision_at_k(ALICE, 5) == 1 / 5
    assert precision_at_k(BOB, 5) == 2 / 5
    assert precision_at_k(CAROL, 5) == 1 / 5
    assert recall_at_k(ALICE, 5) == 1.0
    assert recall_at_k(BOB, 2) == 1 / 2
    assert recall_at_k(CAROL, 8) == 2 / 3


def test_ndcg_by_hand():
    assert ndcg_at_k(ALICE, 5) == 1.0
    bob_dcg = 1 / math.log2(3) + 1 / math.log2(6)
    assert ndcg_at_k(BOB, 5) == pytest.approx(bob_dcg / (1 + 1 / math.log2(3)))
    carol_dcg = 1 / math.log2(4)
    assert ndcg_at_k(CAROL, 5) == pytest.approx(carol_dcg / (1 + 1 / math.log2(3) + 1 / 2))


def test_reference_ndcg_normalises_by_hits_not_ground_truth():
    # carol has 1 hit in the top 5, at position 3: DCG 1/log2(4), ideal for 1 hit = 1
    assert ndcg_hits_at_k(CAROL, 5) == pytest.approx(1 / math.log2(4))
    assert ndcg_hits_at_k(np.array([0, 50]), 10) == 1.0  # one hit, first: perfect here
    assert ndcg_at_k(np.array([0, 50]), 10) < 1.0  # but not by the standard definition
    assert ndcg_hits_at_k(np.array([20]), 10) == 0.0


def test_case_metrics_keys_and_values():
    values = case_metrics(BOB, N, ks=(5,))
    assert set(values) == {"auc", "r@5", "p@5", "ndcg@5", "ndcg_hits@5"}
    assert values["p@5"] == 2 / 5 and values["r@5"] == 1.0


def test_degenerate_cases_are_nan_not_errors():
    assert math.isnan(auc(np.array([0, 1]), 2))  # no negatives
    assert math.isnan(recall_at_k(np.array([], dtype=int), 5))


def test_restricted_ranks_skip_removed_ground_truth_by_hand():
    # bob without his 2nd-ranked item: the 5th moves up to 4th among 9 candidates
    ranks, n = restrict_ranks(BOB, N, np.array([False, True]))
    assert ranks.tolist() == [3] and n == 9
    # carol without her 8th: the 3rd stays 3rd (nothing removed above), the 10th becomes 9th
    ranks, n = restrict_ranks(CAROL, N, np.array([True, False, True]))
    assert ranks.tolist() == [2, 8] and n == 9
    # 7 negatives; rank 2: 6 below, 1 relevant -> 5/7; rank 8: nothing below -> 0
    assert auc(ranks, n) == pytest.approx((5 / 7 + 0) / 2)
    assert recall_at_k(ranks, 5) == 1 / 2
    # alice keeping nothing: no ground truth, nothing removed
    ranks, n = restrict_ranks(ALICE, N, np.array([False]))
    assert ranks.size == 0 and n == 9


def _position_in(order, items):
    position = np.empty(order.size, dtype=np.int64)
    position[order] = np.arange(order.size)
    return position[items]


@pytest.mark.parametrize("seed", range(20))
def test_subset_metrics_equal_reranking_without_other_kind(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 300))
    scores = rng.integers(0, 5, n).astype(float)  # ties, broken by `tiebreak`
    tiebreak = rng.random(n)
    truth = rng.choice(n, int(rng.integers(1, min(n, 40))), replace=False)
    keep = rng.random(truth.size) < 0.5
    full_ranks = _position_in(np.lexsort((tiebreak, -scores)), truth)

    remaining = np.setdiff1d(np.arange(n), truth[~keep])  # drop the other kind, re-rank
    order = np.lexsort((tiebreak[remaining], -scores[remaining]))
    expected = _position_in(order, np.searchsorted(remaining, truth[keep]))

    ranks, n_candidates = restrict_ranks(full_ranks, n, keep)
    np.testing.assert_array_equal(ranks, expected)
    assert n_candidates == remaining.size
    got = case_metrics(ranks, n_candidates)
    want = case_metrics(expected, remaining.size)
    np.testing.assert_allclose(list(got.values()), list(want.values()), equal_nan=True)
