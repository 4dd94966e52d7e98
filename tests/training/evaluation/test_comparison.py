"""The paired bootstrap against brute force and known truths, and its place in evaluate()."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training.data.dataset import load_dataset
from training.evaluation.baselines import OracleRecommender, build_baselines
from training.evaluation.comparison import (
    comparison_rows,
    comparison_table,
    paired_bootstrap,
    sign_flip_p,
    verdict,
)
from training.evaluation.evaluate import evaluate
from training.evaluation.protocols import replay_cases


def test_the_bootstrap_matches_a_brute_force_resampling():
    rng = np.random.default_rng(3)
    a, b = rng.random(40), rng.random(40)
    difference, low, high = paired_bootstrap(a, b, resamples=600, seed=11)
    # the same draws (in the chunks of 250 the implementation takes), one resample at a time
    draws = np.random.default_rng(11)
    means = []
    for size in (250, 250, 100):
        for row in draws.integers(0, 40, size=(size, 40)):
            means.append(sum(a[i] - b[i] for i in row) / 40)
    assert difference == pytest.approx(np.mean(a - b))
    assert (low, high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))


def test_the_interval_covers_the_true_difference_about_95_times_in_100():
    """Tests whose hit probability is .10 for one method and .06 for the other: over 200
    simulated test sets the interval holds the true .04 in 88-99% of them."""
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(200):
        a = (rng.random(500) < 0.10).astype(float)
        b = (rng.random(500) < 0.06).astype(float)
        _, low, high = paired_bootstrap(a, b, resamples=400, seed=trial)
        covered += low <= 0.04 <= high
    assert 176 <= covered <= 198, covered


def test_the_sign_flip_test_against_the_binomial_test():
    """On 0/1 hits the sign-flip test is the exact two-sided sign test over the tests that
    differ: 4 won, 0 lost gives 2/16; 20 won, 6 lost the binomial's .0094 (random flips)."""
    from scipy.stats import binomtest

    model, baseline = np.zeros(728), np.zeros(728)
    model[:4] = 1.0
    assert sign_flip_p(model, baseline) == pytest.approx(0.125)
    model[:20], baseline[20:26] = 1.0, 1.0
    exact = binomtest(20, 26).pvalue
    assert sign_flip_p(model, baseline) == pytest.approx(exact, abs=0.006)
    assert sign_flip_p(np.ones(1), np.zeros(1)) == 1.0
    assert sign_flip_p(np.zeros(5), np.zeros(5)) == 1.0


def test_equal_methods_are_within_noise_and_nan_tests_are_left_out():
    values = np.array([0.0, 1.0, np.nan, 1.0, 0.0])
    difference, low, high = paired_bootstrap(values, values)
    assert (difference, low, high) == (0.0, 0.0, 0.0)
    assert np.isnan(paired_bootstrap(np.array([np.nan]), np.array([1.0]))[0])
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap(np.zeros(3), np.zeros(4))


def test_rows_verdicts_and_table():
    """The model hits every "last" test and half of the others; the weak baseline none; a
    second model and the oracle are not baselines."""
    is_last = [True] * 50 + [False] * 50
    ours = [1.0] * 50 + [1.0, 0.0] * 25
    frames = {
        "model": pd.DataFrame({"is_last": is_last, "r@20": ours}),
        "other-model": pd.DataFrame({"is_last": is_last, "r@20": [0.0] * 100}),
        "weak": pd.DataFrame({"is_last": is_last, "r@20": [0.0] * 99 + [np.nan]}),
        "oracle": pd.DataFrame({"is_last": is_last, "r@20": [1.0] * 100}),
    }
    rows = comparison_rows(frames, ["model", "other-model"], ["last", "all"], metrics=["r@20"])
    assert [(r["model"], r["baseline"], r["subset"], r["n_tests"]) for r in rows] == [
        ("model", "weak", "last", 50),
        ("model", "weak", "all", 99),  # the NaN test is left out
        ("other-model", "weak", "last", 50),
        ("other-model", "weak", "all", 99),
    ]
    last, whole = rows[0], rows[1]
    assert last["difference"] == 1.0 and whole["difference"] == pytest.approx(75 / 99)
    assert verdict(last) == verdict(whole) == "ahead"
    assert verdict(rows[2]) == "within noise" and rows[2]["p"] == 1.0
    assert verdict({**last, "difference": -0.5}) == "behind"
    assert verdict({**last, "p": 0.2}) == "within noise"
    table = comparison_table(rows)
    assert "| model | weak | last | R@20 | 50 | 1.0000 | 0.0000 | +1.0000 |" in table


def test_evaluate_compares_each_model_with_each_baseline(small_marketplace, tmp_path):
    """The oracle passed as a model: ahead of random on R@20 with an interval above 0."""
    dataset = load_dataset(small_marketplace)
    cases = replay_cases(dataset)
    (model,) = build_baselines(["oracle"], dataset, cases)
    model.name = "model"
    result = evaluate(dataset, baselines=["random"], models=[model], out=tmp_path / "eval")
    assert isinstance(model, OracleRecommender)
    assert {(r["baseline"], r["subset"], r["metric"]) for r in result.comparisons} == {
        ("random", subset, metric) for subset in ("last", "all") for metric in ("auc", "r@20")
    }
    recall = next(r for r in result.comparisons if r["subset"] == "all" and r["metric"] == "r@20")
    assert recall["n_tests"] == len(cases) and recall["low"] > 0
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["comparisons"] == json.loads(json.dumps(result.comparisons))
