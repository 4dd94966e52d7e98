"""Importing the MMRec layout: splits by x_label, image + text features, one test per bad row."""

import warnings

import numpy as np
import pandas as pd
import pytest

from training.data.columns import DatasetError
from training.data.dataset import load_dataset, save_dataset
from training.data.ids import ID_RULE
from training.data.mmrec import import_mmrec

HEADER = "userID\titemID\trating\ttimestamp\tx_label"
# (userID, itemID, x_label) for 6 users and 8 items; line 2 of the file is the first row
ROWS = [
    (0, 0, 0),
    (0, 1, 0),
    (1, 2, 0),
    (1, 3, 0),
    (2, 4, 0),
    (3, 5, 0),
    (4, 6, 0),
    (5, 7, 0),
    (5, 0, 0),
    (0, 2, 1),
    (1, 4, 1),
    (2, 5, 1),
    (0, 3, 2),
    (1, 5, 2),
    (3, 6, 2),
    (4, 7, 2),
    (5, 1, 2),
]
N_ITEMS, IMAGE_DIM, TEXT_DIM = 8, 4, 3


def inter_lines(rows=ROWS) -> list[str]:
    return [HEADER] + [f"{u}\t{i}\t5\t{1_400_000_000 + n}\t{x}" for n, (u, i, x) in enumerate(rows)]


def write_mmrec(root, lines=None, *, name="tiny", text=True):
    """An MMRec directory: <name>.inter, seeded image_feat.npy [8, 4] and text_feat.npy [8, 3]."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}.inter").write_text("\n".join(inter_lines() if lines is None else lines) + "\n")
    rng = np.random.default_rng(0)
    np.save(root / "image_feat.npy", rng.normal(size=(N_ITEMS, IMAGE_DIM)))  # float64, as MMRec
    if text:
        np.save(root / "text_feat.npy", rng.normal(size=(N_ITEMS, TEXT_DIM)).astype(np.float32))
    return root


def test_splits_follow_x_label_and_purchases_have_no_timestamps(tmp_path):
    dataset, _ = import_mmrec(write_mmrec(tmp_path / "mm"))
    train = [(u, i) for u, i, x in ROWS if x == 0]
    assert dataset.purchases["user_id"].tolist() == [str(u) for u, _ in train]
    assert dataset.purchases["item"].tolist() == [i for _, i in train]
    assert dataset.purchases["item_id"].tolist() == [str(i) for _, i in train]
    assert dataset.purchases["timestamp"].isna().all() and not dataset.has_timestamps
    assert dataset.valid[["user_id", "item"]].values.tolist() == [["0", 2], ["1", 4], ["2", 5]]
    assert dataset.test["user_id"].tolist() == ["0", "1", "3", "4", "5"]
    assert dataset.test["item"].tolist() == [3, 5, 6, 7, 1]
    assert list(dataset.valid.columns) == ["user_id", "item_id", "item"]


def test_every_feature_row_is_an_item_without_artist_upload_or_flag(tmp_path):
    dataset, _ = import_mmrec(write_mmrec(tmp_path / "mm"))
    assert dataset.item_ids.tolist() == [str(i) for i in range(N_ITEMS)]
    assert (dataset.items["artist_id"] == "").all()
    assert (dataset.items["upload_time"] == 0.0).all()
    assert not dataset.items["one_of_a_kind"].any()


def test_features_are_image_then_text_as_float32(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    dataset, readme = import_mmrec(root)
    expected = np.hstack([np.load(root / "image_feat.npy"), np.load(root / "text_feat.npy")])
    assert dataset.features.dtype == np.float32
    assert dataset.features.shape == (N_ITEMS, IMAGE_DIM + TEXT_DIM)
    np.testing.assert_allclose(dataset.features, expected, rtol=1e-6)
    assert "image_feat.npy (4-d); text_feat.npy (3-d)" in readme and "(7-d, float32)" in readme


def test_no_text_uses_image_features_only(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    dataset, readme = import_mmrec(root, text=False)
    np.testing.assert_allclose(dataset.features, np.load(root / "image_feat.npy"), rtol=1e-6)
    assert "text_feat.npy was present but left out on request" in readme


def test_missing_text_file_uses_image_features_only(tmp_path):
    dataset, readme = import_mmrec(write_mmrec(tmp_path / "mm", text=False))
    assert dataset.features.shape == (N_ITEMS, IMAGE_DIM)
    assert "there is no text_feat.npy" in readme


def test_save_then_load_round_trips_with_holdout_splits(tmp_path):
    dataset, readme = import_mmrec(write_mmrec(tmp_path / "mm"))
    save_dataset(dataset, tmp_path / "out", readme=readme)
    again = load_dataset(tmp_path / "out")
    assert again.items.equals(dataset.items)
    np.testing.assert_array_equal(again.features, dataset.features)
    pd.testing.assert_frame_equal(again.purchases, dataset.purchases)
    pd.testing.assert_frame_equal(again.valid, dataset.valid)
    pd.testing.assert_frame_equal(again.test, dataset.test)
    assert "--protocol holdout" in (tmp_path / "out" / "README.md").read_text()


def test_empty_valid_split_is_left_out_and_still_saves(tmp_path):
    rows = [(u, i, 0 if x == 1 else x) for u, i, x in ROWS]
    dataset, _ = import_mmrec(write_mmrec(tmp_path / "mm", inter_lines(rows)))
    assert dataset.valid is None and len(dataset.test) == 5
    save_dataset(dataset, tmp_path / "out")
    assert not (tmp_path / "out" / "valid.csv").exists()


def test_leading_zeros_name_the_same_user_and_item(tmp_path):
    lines = inter_lines()
    lines[1] = "000\t00\t5\t1\t0"  # user 0, item 0
    dataset, _ = import_mmrec(write_mmrec(tmp_path / "mm", lines))
    first = dataset.purchases.iloc[0]
    assert (first["user_id"], first["item_id"], first["item"]) == ("0", "0", 0)


def test_name_picks_one_of_several_inter_files(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    (root / "other.inter").write_text(HEADER + "\n0\t0\t5\t1\t0\n")
    with pytest.raises(
        DatasetError,
        match=r"expected exactly one \*\.inter file, found 2 \['other.inter', 'tiny.inter'\]",
    ):
        import_mmrec(root)
    dataset, readme = import_mmrec(root, name="other")
    assert len(dataset.purchases) == 1 and readme.startswith("# other (MMRec layout)")


def test_directory_without_inter_file_is_an_error(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    (root / "tiny.inter").unlink()
    with pytest.raises(DatasetError, match=r"expected exactly one \*\.inter file, found 0 \[\]"):
        import_mmrec(root)


def _error(tmp_path, line: str, number: int = 3) -> str:
    """The message for a file whose line `number` (header = 1) is replaced by `line`."""
    lines = inter_lines()
    lines[number - 1] = line
    with pytest.raises(DatasetError) as caught:
        import_mmrec(write_mmrec(tmp_path / "mm", lines))
    return str(caught.value)


def test_a_column_named_twice_in_the_header_is_refused(tmp_path):
    """Once the first of the two was used silently."""
    header = "userID\titemID\titemID\ttimestamp\tx_label"
    assert _error(tmp_path, header, number=1) == (
        "tiny.inter, line 1: column 'itemID' appears twice in the header"
    )


def test_wrong_number_of_columns_names_the_line(tmp_path):
    assert _error(tmp_path, "0\t1\t5\t1400000001") == (
        "tiny.inter, line 3: 4 tab-separated fields, expected 5 as in the header"
    )


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("u0\t1\t5\t1\t0", "field 'userID': 'u0' is not a non-negative integer"),
        ("0\t-1\t5\t1\t0", "field 'itemID': '-1' is not a non-negative integer"),
        ("0\t1.0\t5\t1\t0", "field 'itemID': '1.0' is not a non-negative integer"),
        ("\t1\t5\t1\t0", "field 'userID': empty value"),
        (
            "0\t8\t5\t1\t0",
            "field 'itemID': item '8' has no feature row (image_feat.npy has 8 rows; "
            "1 row(s) out of range in all)",
        ),
        ("0\t1\t5\t1\t3", "field 'x_label': '3' is not a split label (0 train, 1 valid, 2 test)"),
    ],
)
def test_bad_value_names_file_line_and_field(tmp_path, line, problem):
    assert _error(tmp_path, line) == f"tiny.inter, line 3, {problem}"


def test_huge_item_id_is_out_of_range_not_an_overflow(tmp_path):
    message = _error(tmp_path, "0\t123456789012345678901234567890\t5\t1\t0", number=5)
    assert message.startswith("tiny.inter, line 5, field 'itemID': item '1234567")


def test_non_utf8_file_names_file_line_and_field(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    good = (HEADER + "\n0\t0\t5\t1\t0\n").encode()
    (root / "tiny.inter").write_bytes(good + b"1\t\xff\t5\t1\t0\n")
    with pytest.raises(
        DatasetError,
        match=r"^tiny.inter, line 3, field 'itemID': not valid UTF-8 \(byte 0xff at column 3\)$",
    ):
        import_mmrec(root)


def test_missing_header_field_is_an_error_on_line_1(tmp_path):
    message = _error(tmp_path, "user\titemID\trating\ttimestamp\tx_label", number=1)
    assert message.startswith("tiny.inter, line 1: missing column(s) ['userID']")


def test_empty_train_split_is_an_error(tmp_path):
    rows = [(u, i, 1 if x == 0 else x) for u, i, x in ROWS]
    with pytest.raises(
        DatasetError, match=r"^tiny.inter: no training interactions \(no row has x_label 0\)$"
    ):
        import_mmrec(write_mmrec(tmp_path / "mm", inter_lines(rows)))


def test_pickled_feature_array_is_refused_without_unpickling(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    np.save(root / "image_feat.npy", np.array([("a", [1.0])] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(DatasetError, match="^image_feat.npy: not a plain numeric .npy array"):
        import_mmrec(root)


def test_text_rows_must_match_image_rows(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    np.save(root / "text_feat.npy", np.ones((7, TEXT_DIM), np.float32))
    with pytest.raises(DatasetError, match=r"^text_feat.npy: has 7 rows but image_feat.npy has 8$"):
        import_mmrec(root)


def test_non_finite_feature_row_is_refused(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    text = np.ones((N_ITEMS, TEXT_DIM), np.float32)
    text[5, 1] = np.nan
    np.save(root / "text_feat.npy", text)
    with pytest.raises(DatasetError, match=r"^text_feat.npy: row 5 has NaN or inf values$"):
        import_mmrec(root)


def test_a_user_id_too_long_for_an_id_names_the_inter_file_and_line(tmp_path):
    """Once accepted here, then refused on saving as if it were in purchases.csv (its line
    there, not the .inter file's)."""
    long = "1" * 201
    assert _error(tmp_path, f"{long}\t1\t5\t1\t0", number=4) == (
        f"tiny.inter, line 4, field 'userID': {long[:60]!r}... (201 characters) is not a valid "
        f"id ({ID_RULE}; 1 row(s) with invalid ids in all)"
    )


def test_a_non_finite_image_feature_names_its_row_and_no_items_csv(tmp_path):
    """Once "row 3 (the item on items.csv line 5)": there is no items.csv in the layout."""
    root = write_mmrec(tmp_path / "mm")
    image = np.ones((N_ITEMS, IMAGE_DIM))
    image[3, 0] = np.inf
    np.save(root / "image_feat.npy", image)
    with pytest.raises(DatasetError) as caught:
        import_mmrec(root)
    assert str(caught.value) == "image_feat.npy: row 3 has NaN or inf values"


def test_a_finite_float64_feature_beyond_float32_names_its_row_without_a_warning(tmp_path):
    """Once numpy's "RuntimeWarning: overflow encountered in cast", then "row 2 has NaN or inf
    values" about a file that holds none."""
    root = write_mmrec(tmp_path / "mm")
    image = np.ones((N_ITEMS, IMAGE_DIM))
    image[2, 1], image[6, 0] = -1e300, np.nan  # the overflow comes first, and is named
    np.save(root / "image_feat.npy", image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetError) as caught:
            import_mmrec(root)
    assert str(caught.value) == (
        "image_feat.npy: row 2 has a value beyond float32's range (-1e+300 in column 1; float32 "
        "holds magnitudes up to 3.40282e+38)"
    )


def test_float64_features_at_float32s_limit_are_kept(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    image = np.ones((N_ITEMS, IMAGE_DIM))
    image[0, 0] = float(np.finfo(np.float32).max)
    np.save(root / "image_feat.npy", image)
    dataset, _ = import_mmrec(root)
    assert dataset.features[0, 0] == np.finfo(np.float32).max


def test_cr_only_line_endings_are_refused_as_such(tmp_path):
    """Once "line 1: column '5' appears twice in the header": the whole file read as one line."""
    root = write_mmrec(tmp_path / "mm")
    (root / "tiny.inter").write_bytes(("\r".join(inter_lines()) + "\r").encode())
    with pytest.raises(DatasetError) as caught:
        import_mmrec(root)
    assert str(caught.value) == (
        "tiny.inter: lines end in CR (\\r) alone, with no LF (\\n) anywhere (classic Mac line "
        "endings): convert them to LF or CRLF"
    )


def test_a_carriage_return_inside_a_line_names_the_line(tmp_path):
    lines = inter_lines()
    lines[3] = lines[3] + "\r" + lines[4]  # a CR-only ending among LF ones
    del lines[4]
    root = write_mmrec(tmp_path / "mm", lines)
    with pytest.raises(DatasetError) as caught:
        import_mmrec(root)
    assert str(caught.value) == (
        "tiny.inter, line 4: a carriage return (\\r) that does not end the line: lines must end "
        "in LF (\\n) or CRLF (\\r\\n)"
    )


def test_crlf_line_endings_are_read(tmp_path):
    root = write_mmrec(tmp_path / "mm")
    (root / "tiny.inter").write_bytes(("\r\n".join(inter_lines())).encode())  # no final newline
    expected, _ = import_mmrec(write_mmrec(tmp_path / "lf"))
    dataset, _ = import_mmrec(root)
    assert dataset.purchases.equals(expected.purchases) and dataset.test.equals(expected.test)
