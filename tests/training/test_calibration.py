"""The calibration's grid figures against the metric functions, test by test."""

import numpy as np
import pytest

from training.calibration import GridFigures, validation_figures
from training.evaluation.metrics import auc, ndcg_at_k, recall_at_k
from training.evaluation.ranking import RankedCase


def _reference(per_test: list[tuple[np.ndarray, int]]) -> dict:
    rows = np.array(
        [
            (auc(r, n), recall_at_k(r, 20), recall_at_k(r, 100), ndcg_at_k(r, 20))
            for r, n in per_test
        ]
    )
    auc_, r20, r100, ndcg = np.nanmean(rows, axis=0)
    return {"auc": auc_, "r@20": r20, "r@100": r100, "ndcg@20": ndcg}


def test_grid_figures_equal_the_metric_functions_for_every_ranking():
    rng = np.random.default_rng(3)
    n_rankings, tests = 7, []
    for _ in range(300):
        n_candidates = int(rng.integers(1, 400))
        n_truth = int(rng.integers(1, min(n_candidates, 5) + 1))
        # distinct ranks per ranking, as a ranking gives; small ones so that hits happen
        ranks = np.stack([rng.permutation(n_candidates)[:n_truth] % 150 for _ in range(n_rankings)])
        tests.append((ranks, n_candidates))
    tests.append((np.arange(3)[None].repeat(n_rankings, 0), 3))  # no negative: AUC undefined
    grid = GridFigures(n_rankings)
    for ranks, n_candidates in tests:
        grid.add(ranks, n_candidates)
    figures = grid.figures()
    for i, row in enumerate(figures):
        expected = _reference([(ranks[i], n) for ranks, n in tests])
        for name, value in expected.items():
            assert row[name] == pytest.approx(round(value, 6), abs=1e-6), (i, name)
        assert row["mean_recall"] == pytest.approx((row["r@20"] + row["r@100"]) / 2, abs=1e-6)
        assert row["auc_recall"] == pytest.approx(row["auc"] + row["mean_recall"] / 2, abs=1e-6)
    # one ranking through validation_figures gives the same row
    ranked = [RankedCase(ranks[2], n, np.zeros(0, np.int64)) for ranks, n in tests]
    assert validation_figures(None, ranked) == figures[2]
