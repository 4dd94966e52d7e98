"""Summary rows: the cold and warm subsets on hand-built tests, and their order in evaluate()."""

import numpy as np
import pytest

from training.data.dataset import load_dataset
from training.evaluation.baselines import RandomRecommender
from training.evaluation.evaluate import evaluate
from training.evaluation.metrics import case_metrics
from training.evaluation.protocols import Case
from training.evaluation.ranking import RankedCase
from training.evaluation.report import markdown_table, summary_rows

# Three tests ranking 10 candidates; (0-based ranks of the ground truth, which of it had sold):
#   q0: ranks 0 (cold), 3 (warm)   q1: rank 5 (cold), the last session   q2: rank 2 (warm)
RANKS = [np.array([0, 3]), np.array([5]), np.array([2])]
SOLD = [np.array([False, True]), np.array([False]), np.array([True])]
N = 10


def _tests(sold=SOLD):
    cases = [
        Case(q, f"u{q}", float(q), np.array([0]), np.arange(r.size) + 1, q == 1, None, None, s)
        for q, (r, s) in enumerate(zip(RANKS, sold, strict=True))
    ]
    return cases, [RankedCase(r, N, np.arange(N)) for r in RANKS]


def _row(rows, subset):
    return next(row for row in rows if row["subset"] == subset)


def test_cold_rows_count_tests_with_cold_truth():
    cases, ranked = _tests()
    rows = summary_rows("m", cases, ranked, ["all", "all:cold", "all:warm", "last:cold"])
    assert [row["n_tests"] for row in rows] == [3, 2, 2, 1]
    # cold: q0 keeps rank 0 of 9 candidates (its warm item removed), q1 keeps rank 5 of 10
    cold = _row(rows, "all:cold")
    assert cold["auc"] == pytest.approx((1.0 + 4 / 9) / 2)
    assert cold["r@10"] == 1.0
    # warm: q0's warm item moves from rank 3 to 2 once its cold item (rank 0) is removed
    warm = _row(rows, "all:warm")
    expected = np.mean([case_metrics(np.array([2]), 9)["auc"], case_metrics(RANKS[2], N)["auc"]])
    assert warm["auc"] == pytest.approx(expected)
    assert _row(rows, "last:cold")["auc"] == pytest.approx(4 / 9)


def test_plain_subsets_need_no_recorded_sales():
    cases, ranked = _tests()
    unrecorded = [
        Case(c.query_id, c.user_id, c.time, c.profile, c.ground_truth, c.is_last) for c in cases
    ]
    (row,) = summary_rows("m", unrecorded, ranked, ["all"])
    assert row["n_tests"] == 3
    assert row["auc"] == pytest.approx(np.mean([case_metrics(r, N)["auc"] for r in RANKS]))
    assert summary_rows("m", cases, ranked, ["all"]) == [row]
    with pytest.raises(ValueError, match="has no ground_truth_sold"):
        summary_rows("m", unrecorded, ranked, ["all:cold"])


def test_subset_without_tests_has_no_metrics():
    cases, ranked = _tests(sold=[np.array([False, False]), np.array([False]), np.array([False])])
    (row,) = summary_rows("m", cases, ranked, ["last:warm"])
    assert row["n_tests"] == 0 and row["auc"] is None
    assert markdown_table([row]).splitlines()[-1].startswith("| m | last:warm | 0 | - | - |")


def test_unknown_subset_is_refused():
    cases, ranked = _tests()
    with pytest.raises(ValueError, match="unknown subset 'all:new'"):
        summary_rows("m", cases, ranked, ["all:new"])


def test_rows_come_by_subset_then_method(tiny_dataset_dir):
    result = evaluate(load_dataset(tiny_dataset_dir), baselines=["oracle", "random"])
    subsets = ["last", "last:cold", "last:warm", "all", "all:cold", "all:warm"]
    assert [(row["subset"], row["method"]) for row in result.rows] == [
        (subset, method) for subset in subsets for method in ("oracle", "random")
    ]
    # tiny store: Feb 10 truth {b warm, d cold}, Apr 1 truth {e cold} (the last session)
    assert [result.row("oracle", s)["n_tests"] for s in subsets] == [1, 1, 0, 2, 2, 1]


def test_methods_sharing_a_name_are_refused(tiny_dataset_dir):
    """Tables, comparisons and --out files are keyed by name: two runs both called t1 (or a
    run called like a baseline) would show one's figures under the other's name."""
    dataset = load_dataset(tiny_dataset_dir)
    twins = [RandomRecommender(1, name="t1"), RandomRecommender(2, name="t1")]
    with pytest.raises(ValueError, match="two methods are named 't1'"):
        evaluate(dataset, baselines=["random"], models=twins)
    with pytest.raises(ValueError, match="two methods are named 'random'"):
        evaluate(dataset, baselines=["random"], models=[RandomRecommender(1)])
    result = evaluate(dataset, baselines=["random"], models=[twins[0]])
    assert [row["method"] for row in result.rows][:2] == ["random", "t1"]
