"""Publishing a native dataset with TFDS and loading it back: the same Dataset, bit for bit."""

import dataclasses
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tests.conftest import TINY_ITEMS, TINY_PURCHASES, write_dataset
from training.data.columns import DatasetError
from training.data.dataset import SimulatorTruth, load_dataset, save_dataset
from training.data.tfds_format import list_published, load_published, publish

HOLDOUT = {"valid": "user_id,item_id\nu2,a\nu3,e\n", "test": "user_id,item_id\nu1,c\n"}


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """The tiny timed dataset, published once as `tiny` for the read-only tests."""
    root = tmp_path_factory.mktemp("tfds")
    native = write_dataset(root / "native", TINY_ITEMS, TINY_PURCHASES)
    spec = publish(native, name="tiny", data_dir=root / "published")
    return native, root / "published", spec


def assert_same_dataset(loaded, native):
    pd.testing.assert_frame_equal(loaded.items, native.items, check_exact=True)
    assert loaded.features.dtype == native.features.dtype == np.float32
    assert loaded.features.shape == native.features.shape
    assert loaded.features.tobytes() == np.asarray(native.features).tobytes()
    pd.testing.assert_frame_equal(loaded.purchases, native.purchases, check_exact=True)
    for split in ("valid", "test"):
        expected, got = getattr(native, split), getattr(loaded, split)
        assert (got is None) == (expected is None)
        if expected is not None:
            pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert (loaded.truth is None) == (native.truth is None)
    if native.truth is not None:
        for field in dataclasses.fields(SimulatorTruth):
            expected, got = getattr(native.truth, field.name), getattr(loaded.truth, field.name)
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)


def test_timed_dataset_round_trips_exactly(published):
    native, data_dir, spec = published
    assert spec == "curator_dataset/tiny:1.0.0"
    loaded = load_published(spec, data_dir=data_dir)
    assert_same_dataset(loaded, load_dataset(native))
    assert loaded.has_timestamps and loaded.path is None


def test_name_without_version_loads_the_latest(published):
    native, data_dir, _ = published
    assert list_published(data_dir) == {"tiny": ["1.0.0"]}
    for spec in ("curator_dataset/tiny", "tiny", "tiny:1.0.0"):
        assert_same_dataset(load_published(spec, data_dir=data_dir), load_dataset(native))


def test_untimed_purchases_round_trip_as_nan(tmp_path):
    native = write_dataset(tmp_path / "n", TINY_ITEMS, "user_id,item_id\nu1,a\nu2,b\nu1,e\n")
    loaded = load_published(
        publish(native, name="untimed", data_dir=tmp_path / "p"), data_dir=tmp_path / "p"
    )
    assert_same_dataset(loaded, load_dataset(native))
    assert not loaded.has_timestamps and np.isnan(loaded.purchases["timestamp"]).all()


def test_fixed_holdout_split_round_trips(tmp_path):
    native = write_dataset(tmp_path / "n", TINY_ITEMS, TINY_PURCHASES, **HOLDOUT)
    data_dir = tmp_path / "p"
    loaded = load_published(publish(native, name="holdout", data_dir=data_dir), data_dir=data_dir)
    assert_same_dataset(loaded, load_dataset(native))
    assert loaded.valid["item"].tolist() == [0, 4] and loaded.test["item_id"].tolist() == ["c"]
    splits = tfds.builder("curator_dataset/holdout-purchases", data_dir=os.fspath(data_dir))
    assert set(splits.info.splits) == {"purchases", "valid", "test"}


def test_simulator_truth_round_trips(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "raw", TINY_ITEMS, TINY_PURCHASES))
    rng = np.random.default_rng(1)
    truth = SimulatorTruth(
        user_ids=np.array(["u1", "u2", "u3"]),
        user_vectors=rng.normal(size=(3, 2)).astype(np.float32),
        item_vectors=rng.normal(size=(5, 2)).astype(np.float32),
        item_bias=rng.normal(size=5).astype(np.float32),
    )
    save_dataset(dataclasses.replace(dataset, truth=truth), tmp_path / "n")
    loaded = load_published(
        publish(tmp_path / "n", name="sim", data_dir=tmp_path / "p"), data_dir=tmp_path / "p"
    )
    assert_same_dataset(loaded, load_dataset(tmp_path / "n"))


def test_item_order_and_features_are_kept_bit_for_bit(tmp_path):
    # Ids in an order that neither sorting nor TFDS's key hashing would give back.
    rng = np.random.default_rng(0)
    ids = [f"art-{k}" for k in rng.permutation(300)] + ["Emile.1~x"]
    items = "item_id,artist_id,upload_time,one_of_a_kind\n" + "".join(
        f"{item},{'' if i % 3 else 'x'},{1.5e9 + i * 0.001},{'true' if i % 2 else 'false'}\n"
        for i, item in enumerate(ids)
    )
    features = rng.normal(size=(len(ids), 6)).astype(np.float32)
    features[0, 0], features[1, 1] = -0.0, np.float32(1e-45)  # signed zero, subnormal
    purchases = "user_id,item_id,timestamp\n" + "".join(
        f"u{k % 7},{ids[k]},{1.6e9 + k}\n" for k in rng.permutation(len(ids))[:120]
    )
    native = write_dataset(tmp_path / "n", items, purchases, features)
    data_dir = tmp_path / "p"
    loaded = load_published(publish(native, name="order", data_dir=data_dir), data_dir=data_dir)
    assert loaded.items["item_id"].tolist() == ids
    assert_same_dataset(loaded, load_dataset(native))
    # TFDS itself keeps the native order (the loader would also sort by `row`).
    stream = tfds.load("curator_dataset/order-items", split="items", data_dir=os.fspath(data_dir))
    assert [example["row"] for example in tfds.as_numpy(stream)] == list(range(len(ids)))


def test_tfds_load_by_name_gives_the_items_pipeline(published):
    _, data_dir, _ = published
    items = tfds.load("curator_dataset/tiny-items", split="items", data_dir=os.fspath(data_dir))
    assert isinstance(items, tf.data.Dataset)
    assert items.element_spec == {
        "row": tf.TensorSpec((), tf.int64),
        "item_id": tf.TensorSpec((), tf.string),
        "artist_id": tf.TensorSpec((), tf.string),
        "upload_time": tf.TensorSpec((), tf.float64),
        "one_of_a_kind": tf.TensorSpec((), tf.bool),
        "features": tf.TensorSpec((4,), tf.float32),
    }
    rows = list(tfds.as_numpy(items))
    assert [row["item_id"] for row in rows] == [b"a", b"b", b"c", b"d", b"e"]
    assert [row["row"] for row in rows] == [0, 1, 2, 3, 4]


def test_unknown_name_or_version_lists_what_is_published(published):
    _, data_dir, _ = published
    with pytest.raises(
        FileNotFoundError,
        match=r"curator_dataset/nope is not published under .*published there: tiny \(1\.0\.0\)",
    ):
        load_published("curator_dataset/nope", data_dir=data_dir)
    with pytest.raises(FileNotFoundError, match=r"curator_dataset/tiny:2\.0\.0 is not published"):
        load_published("tiny:2.0.0", data_dir=data_dir)


def test_empty_data_dir_says_nothing_is_published(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing is published there"):
        load_published("tiny", data_dir=tmp_path)


def test_invalid_native_data_fails_as_load_dataset_does_and_writes_nothing(tmp_path):
    features = np.ones((5, 4), np.float32)
    features[3, 2] = np.nan
    native = write_dataset(tmp_path / "n", TINY_ITEMS, TINY_PURCHASES, features)
    data_dir = tmp_path / "p"
    with pytest.raises(DatasetError) as caught:
        publish(native, name="bad", data_dir=data_dir)
    assert (
        str(caught.value)
        == "features.npy: row 3 (the item on items.csv line 5) has NaN or inf values"
    )
    assert not data_dir.exists()


def test_invalid_name_is_refused_before_anything_is_written(tmp_path, tiny_dataset_dir):
    for name in ("UGallery", "a-b", "../x", ""):
        with pytest.raises(ValueError, match="is not a valid dataset name"):
            publish(tiny_dataset_dir, name=name, data_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_publishing_a_name_twice_is_refused_and_keeps_the_first(published):
    native, data_dir, spec = published
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))
    with pytest.raises(FileExistsError, match=r"curator_dataset/tiny:1\.0\.0 is already published"):
        publish(native, name="tiny", data_dir=data_dir)
    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    assert_same_dataset(load_published(spec, data_dir=data_dir), load_dataset(native))


def test_features_that_differ_from_their_published_digest_are_refused(tmp_path, tiny_dataset_dir):
    data_dir = tmp_path / "p"
    spec = publish(tiny_dataset_dir, name="tiny", data_dir=data_dir)
    metadata = data_dir / "curator_dataset" / "tiny-items" / "1.0.0" / "metadata.json"
    summary = json.loads(metadata.read_text())
    metadata.write_text(json.dumps(summary | {"features_sha256": "0" * 64}))
    with pytest.raises(
        DatasetError, match=r"features.npy \(in curator_dataset/tiny:1\.0\.0\): SHA-256 differs"
    ):
        load_published(spec, data_dir=data_dir)


def test_a_failure_while_preparing_leaves_nothing_behind(tmp_path, tiny_dataset_dir, monkeypatch):
    from training.data import tfds_format

    columns = tfds_format._columns

    def failing_on_items(dataset, table, split):  # items are prepared after purchases
        if table == "items":
            raise OSError("disk full")
        return columns(dataset, table, split)

    monkeypatch.setattr(tfds_format, "_columns", failing_on_items)
    with pytest.raises(OSError, match="disk full"):
        publish(tiny_dataset_dir, name="tiny", data_dir=tmp_path / "p")
    assert not (tmp_path / "p").exists()  # made for it, and left empty: removed
