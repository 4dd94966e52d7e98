"""The calibration's grid figures against the metric functions, test by test."""

from dataclasses import replace

import numpy as np
import pytest

from training.calibration import (
    GridFigures,
    dates_tell,
    era_grids,
    freshness_grids,
    time_term_grids,
    uploads_differ,
    validation_figures,
)
from training.config import load_config
from training.data.dataset import load_dataset
from training.evaluation.metrics import auc, ndcg_at_k, recall_at_k
from training.evaluation.protocols import replay_cases
from training.evaluation.ranking import RankedCase
from training.nearest_purchase import TermWeights


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


def test_the_time_terms_are_tried_only_where_times_and_upload_times_differ(small_marketplace):
    dataset = load_dataset(small_marketplace)
    replay = replay_cases(dataset)[:20]
    assert dates_tell(dataset, replay)
    holdout = [replace(case, time=np.inf) for case in replay]  # holdout tests have no time
    assert not dates_tell(dataset, holdout)
    assert uploads_differ(dataset)  # the era term needs no time: holdout tests can use it
    items = dataset.items.assign(upload_time=0.0)
    assert not dates_tell(replace(dataset, items=items), replay)
    assert not uploads_differ(replace(dataset, items=items))
    # one time term: freshness where validation has times, else era, else none
    config = load_config("curator")
    assert time_term_grids(config, dataset, replay) is freshness_grids
    assert time_term_grids(config, dataset, holdout) is era_grids
    assert time_term_grids(config, replace(dataset, items=items), holdout) is None
    assert time_term_grids(replace(config, era_weights=()), dataset, holdout) is None
    # one grid per tau, each the chosen weights with every freshness weight above 0
    chosen = TermWeights(0.5, 1.0, 0.1, 0.3)
    grids = freshness_grids(load_config("curator"), chosen)
    assert [{w.freshness_days for w in grid} for grid in grids] == [{30.0}, {90.0}, {365.0}]
    assert all([w.freshness for w in grid] == [0.1, 0.2, 0.3, 0.5, 1.0] for grid in grids)
    assert {replace(w, freshness=0.0, freshness_days=0.0) for g in grids for w in g} == {chosen}
    eras = era_grids(load_config("curator"), chosen)
    assert [{w.era_days for w in grid} for grid in eras] == [{30.0}, {90.0}, {365.0}]
    assert {replace(w, era=0.0, era_days=0.0) for g in eras for w in g} == {chosen}
