"""The simulated marketplace: seeded, UGallery-shaped, and truthful about its preferences."""

import json

import numpy as np
import pytest

from training.data.dataset import load_dataset
from training.data.marketplace import MarketplaceConfig, generate_marketplace


def test_small_marketplace_is_a_valid_dataset_with_truth(small_marketplace):
    dataset = load_dataset(small_marketplace)
    assert dataset.n_items == 1_500 and dataset.features.shape == (1_500, 2048)
    assert dataset.truth is not None and dataset.truth.item_vectors.shape[0] == 1_500
    assert set(dataset.purchases["user_id"]) <= set(dataset.truth.user_ids)
    assert (small_marketplace / "README.md").exists()
    stats = json.loads((small_marketplace / "marketplace.json").read_text())["statistics"]
    assert stats["artworks"] == 1_500


def test_features_look_like_pooled_cnn_activations(small_marketplace):
    features = load_dataset(small_marketplace).features
    assert (features >= 0).all()
    assert 0.3 < (features == 0).mean() < 0.8  # sparse-ish


def test_one_of_a_kind_artworks_sell_once_and_never_before_upload(small_marketplace):
    dataset = load_dataset(small_marketplace)
    purchases = dataset.purchases
    upload = dataset.items["upload_time"].to_numpy()[purchases["item"]]
    assert (purchases["timestamp"].to_numpy() >= upload).all()
    originals = purchases[dataset.items["one_of_a_kind"].to_numpy()[purchases["item"]]]
    assert originals["item"].is_unique
    assert 0.74 < dataset.items["one_of_a_kind"].mean() < 0.82


def test_same_seed_same_store_other_seed_other_store(tmp_path):
    config = MarketplaceConfig.at_scale(300, seed=5)
    generate_marketplace(config, tmp_path / "a")
    generate_marketplace(config, tmp_path / "b")
    generate_marketplace(MarketplaceConfig.at_scale(300, seed=6), tmp_path / "c")
    for name in ("items.csv", "purchases.csv", "features.npy"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "purchases.csv").read_bytes() != (
        tmp_path / "c" / "purchases.csv"
    ).read_bytes()


def test_customers_buy_what_they_truly_prefer(small_marketplace):
    """Bought artworks score higher under the customer's true utility than random ones."""
    dataset = load_dataset(small_marketplace)
    truth = dataset.truth
    row = {user: i for i, user in enumerate(truth.user_ids)}
    users = np.array([row[u] for u in dataset.purchases["user_id"]])
    items = dataset.purchases["item"].to_numpy()
    utility = np.einsum("ij,ij->i", truth.user_vectors[users], truth.item_vectors[items])
    random_items = np.random.default_rng(0).integers(0, dataset.n_items, items.size)
    random_utility = np.einsum(
        "ij,ij->i", truth.user_vectors[users], truth.item_vectors[random_items]
    )
    assert utility.mean() > random_utility.mean() + 1.0


@pytest.mark.parametrize("scale", ["tiny", "5", "-3"])
def test_bad_scale_is_refused(scale):
    with pytest.raises(ValueError, match="scale must"):
        MarketplaceConfig.at_scale(scale)


def test_refuses_to_overwrite_without_force(small_marketplace):
    with pytest.raises(FileExistsError):
        generate_marketplace(MarketplaceConfig.at_scale("small"), small_marketplace)
