"""The live state survives a new Store on the same database file."""

import numpy as np
import pytest

from serving.store import ItemsExist, NewItem, Purchase, Store


def test_items_and_purchases_round_trip_through_the_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'live.db'}"
    store = Store(url)
    features = np.random.default_rng(0).random((2, 6), dtype=np.float32)
    store.add_items(
        [
            NewItem("n2", "x", True, 20.0, features[0]),
            NewItem("n1", "", False, 10.0, features[1]),
        ]
    )
    store.add_purchases([Purchase("c1", "n2", 30.0), Purchase("c1", "n1", 31.0)])
    store.close()

    reopened = Store(url)
    items = reopened.items()
    assert [(i.item_id, i.artist_id, i.one_of_a_kind, i.upload_time) for i in items] == [
        ("n2", "x", True, 20.0),  # in the order added, not by time
        ("n1", "", False, 10.0),
    ]
    np.testing.assert_array_equal(np.stack([i.features for i in items]), features)
    assert reopened.purchases() == [Purchase("c1", "n2", 30.0), Purchase("c1", "n1", 31.0)]


def test_a_failed_batch_writes_nothing(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'live.db'}")
    store.add_items([NewItem("a", "x", True, 1.0, np.zeros(3, np.float32))])
    duplicate = [
        NewItem("b", "x", True, 1.0, np.zeros(3, np.float32)),
        NewItem("a", "x", True, 1.0, np.zeros(3, np.float32)),
    ]
    with pytest.raises(ItemsExist, match=r"already in the catalogue: \['a'\]"):
        store.add_items(duplicate)
    assert [i.item_id for i in store.items()] == ["a"]
