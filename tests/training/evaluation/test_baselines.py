"""Baselines against brute-force numpy, and the evaluation end to end on a simulated store."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from training.data.dataset import load_dataset
from training.evaluation.baselines import (
    IdealRecommender,
    NewestRecommender,
    PopularRecommender,
    RandomRecommender,
    VisRank,
    build_baselines,
    default_baselines,
)
from training.evaluation.evaluate import evaluate
from training.evaluation.interface import QueryBatch
from training.evaluation.metrics import case_metrics


def _batch(profiles, times=None, users=None):
    n = len(profiles)
    return QueryBatch(
        query_ids=np.arange(n),
        user_ids=np.array(users or [f"u{i}" for i in range(n)]),
        times=np.array(times if times is not None else [np.inf] * n, dtype=float),
        profiles=[np.asarray(p) for p in profiles],
    )


def _cosine_brute_force(features, profile, candidates):
    z = (features - features.mean(0)) / features.std(0)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z[candidates] @ z[profile].T  # [n_candidates, n_profile]


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_visrank_matches_brute_force(pooling):
    rng = np.random.default_rng(0)
    features = rng.random((60, 16), dtype=np.float32)
    profiles = [rng.choice(60, k, replace=False) for k in (1, 3, 7, 3)]
    profiles[3] = profiles[1]  # repeated profiles in one batch
    candidates = np.sort(rng.choice(60, 40, replace=False))
    scores = VisRank(features, pooling).score(_batch(profiles), candidates)
    for row, profile in enumerate(profiles):
        similarity = _cosine_brute_force(features.astype(np.float64), profile, candidates)
        expected = similarity.mean(1) if pooling == "mean" else similarity.max(1)
        np.testing.assert_allclose(scores[row], expected, atol=1e-5)


def test_popular_counts_only_purchases_before_the_query():
    items = np.array([3, 3, 1, 3, 2])
    times = np.array([10.0, 20.0, 30.0, 40.0, 40.0])
    popular = PopularRecommender(items, times, n_items=5)
    scores = popular.score(_batch([[0], [0], [0]], times=[20.0, 40.0, 41.0]), np.arange(5))
    np.testing.assert_array_equal(scores[0], [0, 0, 0, 1, 0])  # time 20: only the first sale
    np.testing.assert_array_equal(scores[1], [0, 1, 0, 2, 0])  # sales at 40 are not "before"
    np.testing.assert_array_equal(scores[2], [0, 1, 1, 3, 0])


def test_newest_ranks_the_latest_upload_first_for_everyone():
    uploads = np.array([50.0, 10.0, 90.0, 30.0, 70.0])
    scores = NewestRecommender(uploads).score(_batch([[0], [3, 4]]), np.array([1, 2, 4]))
    for row in scores:  # the same for every profile: 2 (uploaded at 90), then 4, then 1
        np.testing.assert_array_equal(np.argsort(-row), [1, 2, 0])


def test_newest_is_a_default_baseline_only_where_upload_times_differ(small_marketplace):
    dataset = load_dataset(small_marketplace)
    assert "newest" in default_baselines(dataset)
    undated = replace(dataset, items=dataset.items.assign(upload_time=0.0))
    assert "newest" not in default_baselines(undated)
    assert set(default_baselines(undated)) == set(default_baselines(dataset)) - {"newest"}


def test_random_is_seeded_per_query():
    method = RandomRecommender(seed=7)
    a = method.score(_batch([[0], [1]]), np.arange(10))
    b = method.score(_batch([[0], [1]]), np.arange(10))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])


def test_ideal_is_the_simulators_utility(small_marketplace):
    truth = load_dataset(small_marketplace).truth
    candidates = np.arange(0, 1_500, 7)
    users = [str(truth.user_ids[4]), str(truth.user_ids[9])]
    scores = IdealRecommender(truth).score(_batch([[0], [0]], users=users), candidates)
    expected = (
        truth.user_vectors[9] @ truth.item_vectors[candidates].T + truth.item_bias[candidates]
    )
    np.testing.assert_allclose(scores[1], expected, rtol=1e-5, atol=1e-6)


def test_unknown_baseline_and_ideal_without_truth_are_refused(tiny_dataset_dir):
    dataset = load_dataset(tiny_dataset_dir)
    with pytest.raises(ValueError, match=r"unknown baseline\(s\) \['best'\]"):
        build_baselines(["best"], dataset, [])
    with pytest.raises(ValueError, match="ideal baseline needs the simulator's truth"):
        build_baselines(["ideal"], dataset, [])


@pytest.fixture(scope="module")
def marketplace_report(small_marketplace, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "replay"
    return evaluate(load_dataset(small_marketplace), out=out), out


def test_per_case_frames_average_to_the_table(marketplace_report):
    result, _ = marketplace_report
    for method, frame in result.per_case.items():
        last = frame[frame["is_last"]]
        row = result.row(method, "last")
        assert len(last) == row["n_tests"]
        assert last["auc"].mean() == pytest.approx(row["auc"], abs=1e-6)
        assert last["r@20"].mean() == pytest.approx(row["r@20"], abs=1e-6)
        assert (frame["profile_size"] >= 1).all() and (frame["n_truth"] >= 1).all()


def test_marketplace_table_orders_as_it_should(marketplace_report):
    result, _ = marketplace_report
    auc = {row["method"]: row["auc"] for row in result.rows if row["subset"] == "all"}
    assert auc["oracle"] == 1.0
    assert auc["ideal"] > max(auc["visrank-mean"], auc["visrank-max"]) + 0.05
    assert min(auc["visrank-mean"], auc["visrank-max"]) > auc["random"] + 0.1
    assert auc["popular"] > auc["random"]
    assert abs(auc["random"] - 0.5) < 0.05


def test_metrics_json_and_per_test_csvs_rescore_to_the_table(marketplace_report):
    result, out = marketplace_report
    written = json.loads((out / "metrics.json").read_text())
    assert written["protocol"] == "replay" and written["rows"] == result.rows
    tests = pd.read_csv(out / "replay-visrank-mean.csv", keep_default_na=False)
    assert list(tests.columns) == [
        "timestamp",
        "user_id",
        "is_last",
        "top100",
        "ground_truth",
        "ground_truth_ranks",
        "inventory_size",
    ]
    rescored = [
        case_metrics(np.array(ranks.split(), dtype=int) - 1, size)["auc"]
        for ranks, size in zip(tests["ground_truth_ranks"], tests["inventory_size"], strict=True)
    ]
    expected = result.row("visrank-mean", "all")["auc"]
    assert np.mean(rescored) == pytest.approx(expected, abs=1e-6)
    assert all(
        len(top.split()) == min(100, size)
        for top, size in zip(tests["top100"], tests["inventory_size"], strict=True)
    )


def test_holdout_evaluation_on_a_split_store(small_marketplace):
    from training.data.history import holdout_split

    dataset = holdout_split(load_dataset(small_marketplace), seed=0)
    result = evaluate(dataset, protocol="holdout", baselines=["oracle", "visrank-mean", "random"])
    subsets = ["all"] * 3 + ["all:cold"] * 3 + ["all:warm"] * 3
    assert [row["subset"] for row in result.rows] == subsets
    assert result.row("oracle", "all")["r@20"] == 1.0
    assert result.row("visrank-mean", "all")["auc"] > result.row("random", "all")["auc"]
