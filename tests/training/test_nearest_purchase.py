"""The profile terms: their arithmetic against numpy loops, their file, their calibration."""

import json
from dataclasses import asdict, fields, replace

import numpy as np
import pandas as pd
import pytest

from training.calibration import validate_recommender
from training.config import load_config
from training.copurchase import EASE_FILE_NAME as EASE_FILE
from training.copurchase import FILE_NAME as COPURCHASE_FILE
from training.copurchase import CoPurchase, profile_scores
from training.data.dataset import load_dataset
from training.data.features import unit_rows, zscore
from training.evaluation.baselines import PopularRecommender
from training.evaluation.interface import QueryBatch
from training.evaluation.learned_baselines import fit_ease
from training.evaluation.splits import training_split
from training.nearest_purchase import (
    FILE_NAME,
    NearestPurchase,
    TermWeights,
    era_closeness,
    max_similarity,
    mean_similarity,
)
from training.trained_towers import (
    TowerRecommender,
    combine,
    combine_grid,
    load_run_recommender,
    load_towers,
)


def test_max_similarity_equals_a_loop_over_profiles():
    rng = np.random.default_rng(0)
    vectors = unit_rows(rng.normal(size=(60, 5)))
    profiles = [rng.choice(60, size, replace=False) for size in (1, 3, 7, 3)]
    profiles[3] = profiles[1]  # shared profile artworks are scored once, gathered per query
    candidates = rng.choice(60, 25, replace=False)
    expected = np.array(
        [[max(vectors[p] @ vectors[c]) for c in candidates] for p in profiles]
    )  # fmt: skip
    np.testing.assert_allclose(max_similarity(vectors, profiles, candidates), expected, atol=1e-12)


def test_mean_similarity_equals_a_loop_over_profiles():
    rng = np.random.default_rng(4)
    vectors = unit_rows(rng.normal(size=(50, 6)))
    profiles = [rng.choice(50, size, replace=False) for size in (1, 4, 9)]
    candidates = rng.choice(50, 20, replace=False)
    expected = np.array(
        [[np.mean(vectors[p] @ vectors[c]) for c in candidates] for p in profiles]
    )  # fmt: skip
    np.testing.assert_allclose(mean_similarity(vectors, profiles, candidates), expected, atol=1e-12)


def test_combine_grid_gives_combine_to_the_bit():
    rng = np.random.default_rng(5)
    parts = {
        "towers": rng.normal(size=(3, 40)).astype(np.float32),
        "nearest": rng.uniform(-1, 1, (3, 40)).astype(np.float32),
        "mean": rng.uniform(-1, 1, (3, 40)).astype(np.float32),
        "popularity": np.log1p(rng.integers(0, 9, (3, 40))).astype(np.float64),
    }
    grid = [TermWeights(*w) for w in [(0, 0, 0), (0.5, 0, 0.03), (0, 3, 0.1), (5, 0.5, 0.01)]]
    together = combine_grid(parts, grid)
    for row, weights in zip(together, grid, strict=True):
        np.testing.assert_array_equal(row, combine(parts, weights))


def test_with_every_component_the_match_vectors_keep_the_z_scored_cosines():
    rng = np.random.default_rng(1)
    features = rng.gamma(2.0, size=(80, 12)) * rng.uniform(0.1, 5, 12)
    term = NearestPurchase.fit(features, dim=12)
    projection = term.projection.astype(np.float64)
    np.testing.assert_allclose(projection.T @ projection, np.eye(12), atol=1e-5)
    match = term.vectors(features)
    np.testing.assert_allclose(np.linalg.norm(match, axis=1), 1.0, atol=1e-5)
    full = unit_rows(zscore(features).astype(np.float64))
    np.testing.assert_allclose(match @ match.T, full @ full.T, atol=1e-4)


def test_fewer_components_than_asked_when_the_data_has_fewer():
    features = np.random.default_rng(2).normal(size=(5, 30))
    assert NearestPurchase.fit(features, dim=64).dim == 5


def test_the_saved_term_loads_back_and_a_damaged_one_is_refused(tmp_path):
    features = np.random.default_rng(3).normal(size=(40, 6))
    term = NearestPurchase.fit(features, dim=4).with_weights(TermWeights(1.5, 2.0, 0.03))
    path = term.save(tmp_path)
    assert path.name == FILE_NAME
    loaded = NearestPurchase.load(path)
    assert loaded.weights == TermWeights(1.5, 2.0, 0.03)
    np.testing.assert_array_equal(loaded.vectors(features), term.vectors(features))

    def saved(**arrays):
        target = tmp_path / "bad.npz"
        np.savez(target, **{"mean": term.mean, "scale": term.scale, "weight": 1.0,
                            "projection": term.projection, **arrays})  # fmt: skip
        return target

    with pytest.raises(ValueError, match="not a nearest-purchase file"):
        NearestPurchase.load(saved(projection=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(ValueError, match="projection is not all finite"):
        NearestPurchase.load(saved(projection=term.projection * np.nan))
    with pytest.raises(ValueError, match="inconsistent shapes"):
        NearestPurchase.load(saved(scale=term.scale[:3]))
    with pytest.raises(ValueError, match="weight -1.0 is negative"):
        NearestPurchase.load(saved(weight=-1.0))
    with pytest.raises(ValueError, match="popularity_weight -0.5 is negative"):
        NearestPurchase.load(saved(popularity_weight=-0.5))
    with pytest.raises(ValueError, match="mean_weight is not all finite"):
        NearestPurchase.load(saved(mean_weight=np.inf))
    with pytest.raises(ValueError, match="freshness_weight above 0 needs freshness_days"):
        NearestPurchase.load(saved(freshness_weight=1.0, freshness_days=0.0))
    with pytest.raises(ValueError, match="era_weight above 0 needs era_days"):
        NearestPurchase.load(saved(era_weight=0.5))
    with pytest.raises(ValueError, match="era_days is not all finite"):
        NearestPurchase.load(saved(era_days=np.nan))
    with pytest.raises(ValueError, match="freshness_days -3.0 is negative"):
        NearestPurchase.load(saved(freshness_days=-3.0))
    # a file written before the mean and popularity terms: those weights are 0
    assert NearestPurchase.load(saved()).weights == TermWeights(1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="expected \\[n, 6\\]"):
        term.vectors(np.zeros((2, 5)))


def weights_of(row: dict) -> TermWeights:
    """The weighting a calibration grid row names."""
    return TermWeights(**{field.name: row[field.name] for field in fields(TermWeights)})


def test_the_run_keeps_the_weights_that_validate_best_and_evaluation_scores_with_them(
    trained_run, small_marketplace
):
    summary = json.loads((trained_run / "summary.json").read_text())
    terms = summary["nearest_purchase"]
    grid = terms["grid"]
    config = load_config("curator")
    first = (
        len(config.nearest_purchase_weights)
        * len(config.profile_mean_weights)
        * len(config.popularity_weights)
    )
    second = len(config.popularity_weights) * (len(config.copurchase_weights) - 1)
    ease = len(config.ease_weights) - 1
    third = len(config.freshness_days) * (len(config.freshness_weights) - 1)
    assert len(grid) == first + second + ease + third  # replay validation: freshness, never era
    assert all(row["era"] == 0 for row in grid)
    assert all(row["ease"] == 0 for row in grid[: first + second])
    assert all(row["copurchase"] == 0 and row["freshness"] == 0 for row in grid[:first])
    # the second stage keeps the first stage's best profile weights
    first_best = max(grid[:first], key=lambda row: row["auc_recall"])
    assert all(row["copurchase"] > 0 for row in grid[first : first + second])
    assert {(row["nearest"], row["mean"]) for row in grid[first : first + second]} == {
        (first_best["nearest"], first_best["mean"])
    }
    # the EASE stage keeps the second stage's best weights
    second_best = max(grid[: first + second], key=lambda row: row["auc_recall"])
    eased = grid[first + second : first + second + ease]
    assert all(row["ease"] > 0 for row in eased)
    assert {replace(weights_of(row), ease=0.0) for row in eased} == {weights_of(second_best)}
    # curator.yaml calibrates by auc_recall, then freshness by mean_recall
    before = max(grid[: first + second + ease], key=lambda row: row["auc_recall"])
    fresh = grid[first + second + ease :]
    assert all(row["freshness"] > 0 and row["freshness_days"] > 0 for row in fresh)
    unfresh = {replace(weights_of(row), freshness=0.0, freshness_days=0.0) for row in fresh}
    assert unfresh == {weights_of(before)}
    best = max([before, *fresh], key=lambda row: row["mean_recall"])
    chosen = TermWeights(
        terms["weight"],
        terms["mean_weight"],
        terms["popularity_weight"],
        terms["copurchase_weight"],
        terms["freshness_weight"],
        terms["freshness_days"],
        terms["era_weight"],
        terms["era_days"],
        terms["ease_weight"],
    )
    assert chosen == weights_of(best)
    assert (trained_run / "model" / COPURCHASE_FILE).exists() == (chosen.copurchase > 0)
    assert (trained_run / "model" / EASE_FILE).exists() == (chosen.ease > 0)
    assert summary["best_validation"] == terms["validation"]
    saved = NearestPurchase.load(trained_run / "model" / FILE_NAME)
    assert saved.weights == chosen

    dataset = load_dataset(small_marketplace)
    # the calibration's fast re-ranking gives the figures a full evaluation of the same
    # weights gives (the fitted purchases counted for the popularity term, as there)
    fit, cases = training_split(dataset)
    towers = load_towers(trained_run)
    sales = PopularRecommender.from_purchases(fit, dataset.n_items)
    bought = CoPurchase.fit(fit, dataset.item_ids)
    # EASE's L2 weight: the one the `ease` baseline chooses on the same validation
    assert terms["ease_lambda"] == fit_ease(fit, cases, dataset.n_items).chosen["lambda"]
    instead = CoPurchase.fit_ease(fit, dataset.item_ids, terms["ease_lambda"])
    plain = TowerRecommender("v", *towers, dataset, saved, sales, bought, instead)
    rows = (grid[0], best, grid[first - 1], grid[first + second], eased[-1], grid[-1])
    for row in rows:
        figures = validate_recommender(plain.with_weights(weights_of(row)), dataset, cases)
        assert figures == {k: v for k, v in row.items() if k not in asdict(chosen)}

    recommender = load_run_recommender(trained_run, dataset)
    assert recommender.weights == chosen
    # the scores of the run's recommender, and of one with every term above 0, as numpy
    # computes them (the run's popularity counts every purchase; `plain`'s the fitted ones)
    every = TermWeights(0.5, 0.7, 0.1, 0.3, 0.4, 90.0, 0.6, 30.0, 0.8)
    towers_only = TowerRecommender("t", *towers, dataset)
    profiles = [np.array([0, 5, 9]), np.array([3])]
    uploads = dataset.items["upload_time"].to_numpy()
    times = np.array([np.median(uploads), np.inf])  # the second has no age: freshness 0
    batch = QueryBatch(np.arange(2), np.array(["a", "b"]), times, profiles)
    candidates = np.arange(dataset.n_items)
    ages = np.maximum(times[:, None] - uploads[None, :], 0)
    upload_day = np.floor(uploads / 86_400.0)
    apart = np.stack(  # days to the closest upload day of each profile's artworks
        [np.abs(upload_day[:, None] - upload_day[p][None]).min(axis=1) for p in profiles]
    )
    match = saved.vectors(dataset.features)
    co_bought = profile_scores(bought.on_catalogue(dataset.item_ids), profiles).toarray()
    # EASE's term by hand: its saved W summed over each profile, over the largest |sum|
    ease_w = instead.on_catalogue(dataset.item_ids).toarray()
    summed = np.stack([ease_w[p].sum(axis=0) for p in profiles])
    ease_scores = summed / np.abs(summed).max(axis=1, keepdims=True)

    def expected(weights: TermWeights, sold: pd.DataFrame) -> np.ndarray:
        counts = np.stack(  # each query's sales so far (strictly before its time)
            [
                np.bincount(sold["item"][sold["timestamp"] < t], minlength=dataset.n_items)
                for t in times
            ]
        )
        fresh = np.exp(-ages / (86_400.0 * max(weights.freshness_days, 1e-9)))
        era = np.exp(-apart / max(weights.era_days, 1e-9))
        return (
            towers_only.score(batch, candidates)
            + weights.nearest * max_similarity(match, profiles, candidates)
            + weights.mean
            * np.stack([[np.mean(match[p] @ match[c]) for c in candidates] for p in profiles])
            + weights.popularity * np.log1p(counts)
            + weights.copurchase * co_bought
            + weights.ease * ease_scores
            + weights.freshness * fresh
            + weights.era * era
        )

    np.testing.assert_allclose(
        recommender.score(batch, candidates), expected(chosen, dataset.purchases), atol=1e-5
    )
    np.testing.assert_allclose(
        plain.with_weights(every).score(batch, candidates), expected(every, fit), atol=1e-5
    )


def test_the_projection_and_ease_are_fitted_once_for_every_trial_on_one_dataset(
    trained_run, small_marketplace, tmp_path, monkeypatch
):
    import training.calibration as calibration

    fits, ease_fits = [], []
    original = NearestPurchase.fit
    monkeypatch.setattr(calibration, "_last_fit", None)
    monkeypatch.setattr(calibration, "_last_ease", None)
    original_ease = calibration.fit_ease
    monkeypatch.setattr(
        calibration, "fit_ease", lambda *a, **k: ease_fits.append(1) or original_ease(*a, **k)
    )
    monkeypatch.setattr(
        NearestPurchase, "fit", staticmethod(lambda *a, **k: fits.append(1) or original(*a, **k))
    )
    dataset = load_dataset(small_marketplace)
    fit, cases = training_split(dataset)
    config = load_config("curator")
    for trial in range(2):  # as the search's trials do: the same dataset object
        out = tmp_path / str(trial)
        out.mkdir()
        calibration.calibrate_terms(*load_towers(trained_run), dataset, fit, cases, config, out)
    assert len(fits) == 1
    other = load_dataset(small_marketplace)  # another array: fitted again
    calibration.calibrate_terms(*load_towers(trained_run), other, fit, cases, config, tmp_path)
    assert len(fits) == 2
    # EASE's fit is keyed on the purchases and tests, not the array: the same ones, once
    assert len(ease_fits) == 1
    calibration.calibrate_terms(*load_towers(trained_run), other, fit[1:], cases, config, tmp_path)
    assert len(ease_fits) == 2


def test_era_closeness_equals_brute_force_per_profile():
    rng = np.random.default_rng(9)
    candidates = rng.integers(15_000, 15_400, 300).astype(float)
    profiles = [rng.integers(15_000, 15_600, size).astype(float) for size in (1, 3, 7, 2)]
    profiles[2][:3] = profiles[2][3]  # repeated days in a profile
    profiles.append(np.array([14_000.0]))  # every candidate after the profile's only day
    found = era_closeness(candidates, profiles, 30.0)
    assert found.shape == (5, 300) and found.dtype == np.float32
    for row, profile in zip(found, profiles, strict=True):
        gap = np.abs(candidates[:, None] - profile[None, :]).min(axis=1)
        np.testing.assert_allclose(row, np.exp(-gap / 30.0), rtol=1e-6)
    with pytest.raises(ValueError, match="at least one upload day"):
        era_closeness(candidates, [np.array([])], 30.0)
