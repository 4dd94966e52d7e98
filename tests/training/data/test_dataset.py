"""Loading a native dataset, and one test per validation rule (each matches its message)."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_ITEMS, TINY_PURCHASES, write_dataset
from training.data.columns import DatasetError
from training.data.dataset import SimulatorTruth, load_dataset, save_dataset


def test_loads_items_features_and_purchases(tiny_dataset_dir):
    dataset = load_dataset(tiny_dataset_dir)
    assert dataset.n_items == 5 and dataset.features.shape == (5, 4)
    assert list(dataset.items["one_of_a_kind"]) == [True, False, True, True, True]
    assert dataset.purchases["item"].tolist() == [0, 1, 1, 3, 2, 4, 2]
    assert dataset.items["upload_time"].iloc[3] == pytest.approx(1580515200.0)  # 2020-02-01Z
    assert dataset.has_timestamps and dataset.valid is None and dataset.truth is None


def test_unix_seconds_and_iso_timestamps_agree(tmp_path):
    items = TINY_ITEMS.replace("2020-02-01", "1580515200")
    dataset = load_dataset(write_dataset(tmp_path / "d", items, TINY_PURCHASES))
    assert dataset.items["upload_time"].iloc[3] == pytest.approx(1580515200.0)


def test_purchases_without_timestamps_load_but_have_none(tmp_path):
    purchases = "user_id,item_id\nu1,a\nu1,b\n"
    dataset = load_dataset(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert not dataset.has_timestamps


def _error(tmp_path, items=TINY_ITEMS, purchases=TINY_PURCHASES, features=None, **extra) -> str:
    root = write_dataset(tmp_path / "bad", items, purchases, features, **extra)
    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    return str(caught.value)


def test_unknown_item_in_purchases_names_line_and_field(tmp_path):
    message = _error(tmp_path, purchases=TINY_PURCHASES + "u9,zzz,2020-05-01\n")
    assert message.startswith("purchases.csv, line 9, field 'item_id': unknown item 'zzz'")


def test_duplicate_item_ids_name_both_lines(tmp_path):
    items = TINY_ITEMS + "c,q,2020-01-01,true\n"
    message = _error(tmp_path, items=items, features=np.ones((6, 4), np.float32))
    assert message == "items.csv, line 7, field 'item_id': duplicate item_id 'c' (first on line 4)"


def test_feature_rows_must_match_items(tmp_path):
    message = _error(tmp_path, features=np.ones((4, 4), np.float32))
    assert message == "features.npy: has 4 rows but items.csv has 5 items"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_features_name_the_row(tmp_path, bad):
    features = np.ones((5, 4), np.float32)
    features[3, 2] = bad
    message = _error(tmp_path, features=features)
    assert message == "features.npy: row 3 (the item on items.csv line 5) has NaN or inf values"


def test_features_must_be_float32(tmp_path):
    message = _error(tmp_path, features=np.ones((5, 4), np.float64))
    assert message == "features.npy: dtype is float64, expected float32"


def test_object_feature_arrays_are_refused_without_unpickling(tmp_path):
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    np.save(root / "features.npy", np.array([("a", [1.0])] * 5, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="features.npy: not a plain numeric .npy array"):
        load_dataset(root)


def test_unparseable_timestamp_names_line_and_field(tmp_path):
    message = _error(tmp_path, purchases=TINY_PURCHASES.replace("2020-03-01", "last tuesday"))
    assert message == (
        "purchases.csv, line 6, field 'timestamp': cannot parse 'last tuesday' "
        "as a timestamp (ISO 8601 or unix seconds)"
    )


def test_unparseable_upload_time(tmp_path):
    message = _error(tmp_path, items=TINY_ITEMS.replace("2020-03-15", "2020-13-45"))
    assert message.startswith("items.csv, line 6, field 'upload_time': cannot parse '2020-13-45'")


def test_bad_boolean(tmp_path):
    message = _error(tmp_path, items=TINY_ITEMS.replace("x,2020-01-01,false", "x,2020-01-01,maybe"))
    assert (
        message == "items.csv, line 3, field 'one_of_a_kind': 'maybe' is not a boolean (true/false)"
    )


def test_empty_file(tmp_path):
    assert _error(tmp_path, purchases="") == "purchases.csv: file is empty"


def test_header_only_file(tmp_path):
    assert (
        _error(tmp_path, purchases="user_id,item_id\n")
        == "purchases.csv: no data rows (only a header)"
    )


def test_missing_column(tmp_path):
    message = _error(tmp_path, items=TINY_ITEMS.replace("item_id", "id"))
    assert message.startswith("items.csv, line 1: missing column(s) ['item_id']")


def test_empty_required_value(tmp_path):
    message = _error(tmp_path, purchases=TINY_PURCHASES.replace("u2,c,", ",c,"))
    assert message == "purchases.csv, line 6, field 'user_id': empty value"


def test_unknown_item_in_test_split(tmp_path):
    message = _error(tmp_path, test="user_id,item_id\nu1,a\nu1,nope\n")
    assert message.startswith("test.csv, line 3, field 'item_id': unknown item 'nope'")


def test_missing_features_file(tmp_path):
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    (root / "features.npy").unlink()
    with pytest.raises(DatasetError, match="^features.npy: file not found$"):
        load_dataset(root)


def test_save_refuses_bad_features_and_writes_nothing(tiny_dataset_dir, tmp_path):
    dataset = load_dataset(tiny_dataset_dir)
    broken = dataset.features.copy()
    broken[0, 0] = np.nan
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="NaN or inf"):
        save_dataset(type(dataset)(dataset.items, broken, dataset.purchases), out)
    assert not out.exists() and list(tmp_path.iterdir()) == [tiny_dataset_dir]


def test_save_then_load_round_trips(tiny_dataset_dir, tmp_path):
    dataset = load_dataset(tiny_dataset_dir)
    save_dataset(dataset, tmp_path / "copy")
    again = load_dataset(tmp_path / "copy")
    np.testing.assert_array_equal(again.features, dataset.features)
    assert again.items.equals(dataset.items)
    assert again.purchases.equals(dataset.purchases)


def test_save_does_not_replace_an_existing_directory_unless_asked(tiny_dataset_dir, tmp_path):
    dataset = load_dataset(tiny_dataset_dir)
    with pytest.raises(FileExistsError, match="already exists"):
        save_dataset(dataset, tiny_dataset_dir)
    save_dataset(dataset, tiny_dataset_dir, overwrite=True)
    assert load_dataset(tiny_dataset_dir).n_items == 5


def test_items_with_only_item_id_default_to_always_available_and_not_unique(tmp_path):
    items = "item_id\n" + "".join(f"{item}\n" for item in "abcde")
    dataset = load_dataset(write_dataset(tmp_path / "d", items, TINY_PURCHASES))
    assert dataset.item_ids.tolist() == list("abcde")
    assert (dataset.items["artist_id"] == "").all()
    assert (dataset.items["upload_time"] == 0.0).all()
    assert not dataset.items["one_of_a_kind"].any()


def test_empty_upload_time_and_one_of_a_kind_cells_take_the_defaults(tmp_path):
    items = TINY_ITEMS.replace("b,x,2020-01-01,false", "b,x,,").replace("d,y,2020-02-01,", "d,y,,")
    dataset = load_dataset(write_dataset(tmp_path / "d", items, TINY_PURCHASES))
    assert dataset.items["upload_time"].tolist()[:4] == [1577836800.0, 0.0, 1577836800.0, 0.0]
    assert dataset.items["one_of_a_kind"].tolist() == [True, False, True, True, True]


def test_bad_value_in_optional_column_still_names_line_and_field(tmp_path):
    items = "item_id,one_of_a_kind\na,true\nb,\nc,perhaps\nd,f\ne,t\n"
    message = _error(tmp_path, items=items)
    assert message == (
        "items.csv, line 4, field 'one_of_a_kind': 'perhaps' is not a boolean (true/false)"
    )


def test_items_with_only_item_id_round_trip_through_save(tmp_path):
    items = "item_id\n" + "".join(f"{item}\n" for item in "abcde")
    dataset = load_dataset(write_dataset(tmp_path / "d", items, TINY_PURCHASES))
    save_dataset(dataset, tmp_path / "copy")
    assert load_dataset(tmp_path / "copy").items.equals(dataset.items)


# --- truth.npz: the simulator's true preference, checked against itself and the dataset --------


def _truth(**change) -> dict[str, np.ndarray]:
    """The arrays of a consistent truth for the tiny dataset (users u1-u3, items a-e, r = 2),
    with `change`s."""
    rng = np.random.default_rng(0)
    arrays = {
        "user_ids": np.array(["u1", "u2", "u3"]),
        "user_vectors": rng.normal(size=(3, 2)).astype(np.float32),
        "item_vectors": rng.normal(size=(5, 2)).astype(np.float32),
        "item_bias": rng.normal(size=5).astype(np.float32),
    }
    for name, edit in change.items():
        arrays[name] = edit(arrays[name])
    return arrays


def _with_truth(tmp_path, arrays: dict[str, np.ndarray], **extra) -> Path:
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES, **extra)
    np.savez(root / "truth.npz", **arrays)
    return root


def _truth_error(tmp_path, **change) -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset(_with_truth(tmp_path, _truth(**change)))
    return str(caught.value)


def _set(index, value):
    def edit(array):
        array = array.copy()
        array[index] = value
        return array

    return edit


def test_a_consistent_truth_round_trips_through_save(tmp_path):
    dataset = load_dataset(write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES))
    save_dataset(replace(dataset, truth=SimulatorTruth(**_truth())), tmp_path / "copy")
    truth = load_dataset(tmp_path / "copy").truth
    for name, array in _truth().items():
        assert np.array_equal(getattr(truth, name), array)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (  # once IndexError: index 5 is out of bounds, in the ideal baseline
            {"item_vectors": lambda v: v[:3], "item_bias": lambda v: v[:3]},
            "array 'item_vectors' has 3 rows but items.csv has 5 items",
        ),
        ({"item_bias": lambda v: v[:4]}, "array 'item_bias' has 4 rows but items.csv has 5 items"),
        (
            {"user_vectors": lambda v: v[:2]},
            "array 'user_vectors' has 2 rows but 'user_ids' has 3 ids",
        ),
        (  # once numpy's "matmul: Input operand 1 has a mismatch in its core dimension"
            {"user_vectors": lambda v: v[:, :1]},
            "array 'item_vectors' has 2 columns but 'user_vectors' has 1",
        ),
        (
            {"item_vectors": lambda v: v.astype(np.float64)},
            "array 'item_vectors' is float64 of shape (5, 2), expected float32 [n, r]",
        ),
        (
            {"item_bias": lambda v: v[:, None]},
            "array 'item_bias' is float32 of shape (5, 1), expected float32 [n]",
        ),
        (
            {"user_ids": lambda v: np.arange(3)},
            "array 'user_ids' is int64 of shape (3,), expected str [n]",
        ),
        (  # once "ideal: score() returned NaN or inf", naming neither file nor array
            {"item_bias": _set(3, np.nan)},
            "array 'item_bias' row 3 has NaN or inf values",
        ),
        (
            {"user_vectors": _set((1, 0), np.inf)},
            "array 'user_vectors' row 1 has NaN or inf values",
        ),
        (
            {"user_ids": lambda v: np.array(["u1", "u2", "u1"])},
            "array 'user_ids' holds 'u1' twice (rows 0, 2)",
        ),
        (  # once KeyError: 'u3' in the ideal baseline
            {"user_ids": lambda v: v[:2], "user_vectors": lambda v: v[:2]},
            "array 'user_ids' lacks 'u3', the customer on purchases.csv line 8: the ideal "
            "baseline needs a vector for every customer (1 row(s) of purchases.csv without one "
            "in all)",
        ),
    ],
)
def test_a_truth_that_does_not_fit_names_the_array(tmp_path, change, message):
    assert _truth_error(tmp_path, **change) == f"truth.npz: {message}"


def test_a_truth_without_the_customer_of_a_split_is_refused(tmp_path):
    root = _with_truth(tmp_path, _truth(), test="user_id,item_id\nu1,c\nu4,a\n")
    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    assert str(caught.value) == (
        "truth.npz: array 'user_ids' lacks 'u4', the customer on test.csv line 3: the ideal "
        "baseline needs a vector for every customer (1 row(s) of test.csv without one in all)"
    )


def test_holdout_refuses_a_bad_truth_with_exit_2_and_writes_nothing(tmp_path):
    """Once `curator data holdout` copied a truth.npz with 3 item rows for 5 items, exit 0."""
    root = _with_truth(tmp_path, _truth(item_bias=lambda v: v[:3]))
    command = [sys.executable, "-c", "from training.cli import main; main()"]
    done = subprocess.run(
        [*command, "data", "holdout", "--data", str(root), "--out", str(tmp_path / "h")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: truth.npz: array 'item_bias' has 3 rows but items.csv has 5 items"
    )
    assert not (tmp_path / "h").exists()
