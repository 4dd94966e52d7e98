"""The nearest-purchase term: its arithmetic against numpy loops, its file, its calibration."""

import json

import numpy as np
import pytest

from training.data.dataset import load_dataset
from training.data.features import unit_rows, zscore
from training.evaluation.interface import QueryBatch
from training.nearest_purchase import FILE_NAME, NearestPurchase, max_similarity
from training.trained_towers import TowerRecommender, load_run_recommender, load_towers


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
    term = NearestPurchase.fit(features, dim=4).with_weight(1.5)
    path = term.save(tmp_path)
    assert path.name == FILE_NAME
    loaded = NearestPurchase.load(path)
    assert loaded.weight == 1.5
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
    with pytest.raises(ValueError, match="negative"):
        NearestPurchase.load(saved(weight=-1.0))
    with pytest.raises(ValueError, match="expected \\[n, 6\\]"):
        term.vectors(np.zeros((2, 5)))


def test_the_run_keeps_the_weight_that_validates_best_and_evaluation_scores_with_it(
    trained_run, small_marketplace
):
    summary = json.loads((trained_run / "summary.json").read_text())
    grid = summary["nearest_purchase"]["grid"]
    assert [row["weight"] for row in grid] == [0.0, 0.5, 1.0, 2.0, 3.0]
    best = max(grid, key=lambda row: row["mean_recall"])  # curator.yaml selects by it
    assert summary["nearest_purchase"]["weight"] == best["weight"]
    assert summary["best_validation"] == summary["nearest_purchase"]["validation"]
    saved = NearestPurchase.load(trained_run / "model" / FILE_NAME)
    assert saved.weight == best["weight"]

    dataset = load_dataset(small_marketplace)
    recommender = load_run_recommender(trained_run, dataset)
    assert recommender.nearest_weight == best["weight"]
    towers_only = TowerRecommender("t", *load_towers(trained_run), dataset)
    profiles = [np.array([0, 5, 9]), np.array([3])]
    batch = QueryBatch(np.arange(2), np.array(["a", "b"]), np.zeros(2), profiles)
    candidates = np.arange(dataset.n_items)
    expected = towers_only.score(batch, candidates) + best["weight"] * max_similarity(
        saved.vectors(dataset.features), profiles, candidates
    )
    np.testing.assert_allclose(recommender.score(batch, candidates), expected, atol=1e-5)
