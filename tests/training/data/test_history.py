"""Baskets, the paper's split, artists, visual clusters, the holdout split."""

import numpy as np
import pytest

from training.data.dataset import load_dataset
from training.data.history import (
    artist_index,
    artist_sell_through,
    baskets,
    holdout_split,
    paper_split,
    visual_clusters,
)
from training.evaluation.splits import with_purchases


def test_baskets_group_same_user_and_time_in_time_order(tiny_dataset_dir):
    table = baskets(load_dataset(tiny_dataset_dir).purchases)
    assert list(table["user_id"]) == ["u3", "u1", "u2", "u1", "u2", "u1"]
    assert [list(items) for items in table["items"]] == [[2], [0], [1], [1, 3], [2], [4]]
    assert list(table["number"]) == [0, 0, 0, 1, 1, 2]
    assert list(table["n_baskets"]) == [1, 3, 2, 3, 2, 3]


def test_paper_split_hides_last_basket_of_users_with_two_or_more(tiny_dataset_dir):
    train, hidden = paper_split(load_dataset(tiny_dataset_dir).purchases)
    assert sorted(zip(hidden["user_id"], hidden["item_id"], strict=True)) == [
        ("u1", "e"),
        ("u2", "c"),
    ]
    assert len(train) == 5 and "u3" in set(train["user_id"])  # one basket: nothing hidden


def test_artist_index_codes_and_missing_artist():
    import pandas as pd

    items = pd.DataFrame({"artist_id": ["x", "y", "", "x"]})
    codes, artists = artist_index(items)
    assert codes.tolist() == [0, 1, -1, 0] and artists.tolist() == ["x", "y"]


def test_artist_sell_through_counts_sales_per_listed_artwork_up_to_the_cutoff():
    import pandas as pd

    items = pd.DataFrame(
        {
            "artist_id": ["x", "x", "x", "y", "y", "x"],
            "upload_time": [0.0, 0.0, 0.0, 0.0, 0.0, 99.0],  # the last is listed after the cutoff
        }
    )
    purchases = pd.DataFrame({"item": [0, 1, 3], "timestamp": [5.0, 6.0, 7.0]})
    prior = artist_sell_through(items, purchases, ["x", "y", "z"])
    rate = np.log([(2 + 1) / (3 + 1), (1 + 1) / (2 + 1), 1.0])  # z: never listed, never sold
    centre = (3 * rate[0] + 2 * rate[1]) / 5  # the average listed artwork
    np.testing.assert_allclose(prior, rate - centre)


def test_visual_clusters_recover_artist_styles(small_marketplace):
    dataset = load_dataset(small_marketplace)
    labels = visual_clusters(dataset, n_clusters=15, seed=0)
    assert labels.shape == (dataset.n_items,) and set(labels) == set(range(15))
    # artworks of one artist share a style: their clusters are far purer than chance
    artists = dataset.items["artist_id"].to_numpy()
    purity = [
        np.bincount(labels[artists == a]).max() / np.sum(artists == a)
        for a in np.unique(artists)
        if np.sum(artists == a) >= 10
    ]
    assert np.mean(purity) > 0.6


def test_holdout_split_moves_items_out_of_training(small_marketplace):
    dataset = load_dataset(small_marketplace)
    split = holdout_split(dataset, fraction=0.2, seed=1)
    assert len(split.purchases) + len(split.valid) + len(split.test) >= len(dataset.purchases) - 50
    train_pairs = set(zip(split.purchases["user_id"], split.purchases["item"], strict=True))
    for held in (split.valid, split.test):
        assert len(held) > 0
        assert not train_pairs & set(zip(held["user_id"], held["item"], strict=True))
    assert set(split.test["user_id"]) <= set(split.purchases["user_id"])


def test_holdout_split_refuses_a_dataset_split_already_or_with_nothing_to_hold_out(
    small_marketplace,
):
    split = holdout_split(load_dataset(small_marketplace), fraction=0.2, seed=1)
    with pytest.raises(ValueError, match="already has a holdout split"):
        holdout_split(split, seed=2)  # its valid/test purchases would be lost
    few = split.purchases.drop_duplicates("user_id")  # one artwork per customer
    with pytest.raises(ValueError, match="nothing to hold out: no customer has 3 or more"):
        holdout_split(with_purchases(load_dataset(small_marketplace), few), seed=1)
