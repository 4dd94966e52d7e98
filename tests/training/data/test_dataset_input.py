"""Hostile dataset input: bytes that are not UTF-8, ids outside the one alphabet, purchases before
their artwork's upload. Each error names file, line and field."""

import codecs
import os

import numpy as np
import pandas as pd
import pytest

from tests.conftest import TINY_ITEMS, TINY_PURCHASES, write_dataset
from training.data.columns import DatasetError, read_csv, read_text
from training.data.dataset import load_dataset, save_dataset
from training.data.ids import ID_RULE
from training.data.importers import import_ugallery, import_ugallery_release


def _write_bytes(tmp_path, items: bytes = TINY_ITEMS.encode(), purchases=None, **extra: bytes):
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    (root / "items.csv").write_bytes(items)
    if purchases is not None:
        (root / "purchases.csv").write_bytes(purchases)
    for name, content in extra.items():
        (root / f"{name}.csv").write_bytes(content)
    return root


def _error(root) -> str:
    with pytest.raises(DatasetError) as caught:
        load_dataset(root)
    return str(caught.value)


# --- UTF-8 ---------------------------------------------------------------------------------


def test_non_utf8_byte_in_items_names_line_field_and_column(tmp_path):
    items = TINY_ITEMS.encode().replace(b"d,y,2020-02-01", b"d,y\xff,2020-02-01")
    message = _error(_write_bytes(tmp_path, items))
    assert message == (
        "items.csv, line 5, field 'artist_id': not valid UTF-8 (byte 0xff at column 4)"
    )


def test_non_utf8_byte_in_purchases_names_line_field_and_column(tmp_path):
    purchases = TINY_PURCHASES.encode().replace(b"u1,e,2020-04-01", b"u1,e,2020-04-\xfe1")
    message = _error(_write_bytes(tmp_path, purchases=purchases))
    assert message == (
        "purchases.csv, line 7, field 'timestamp': not valid UTF-8 (byte 0xfe at column 14)"
    )


def test_non_utf8_byte_at_start_of_a_line_is_the_first_field(tmp_path):
    purchases = TINY_PURCHASES.encode().replace(b"u2,b,", b"\xc0u2,b,")
    message = _error(_write_bytes(tmp_path, purchases=purchases))
    assert message == (
        "purchases.csv, line 3, field 'user_id': not valid UTF-8 (byte 0xc0 at column 1)"
    )


def test_non_utf8_column_counts_characters_and_quoted_commas(tmp_path):
    # "É" is two bytes but one column; the quoted comma does not start a new field.
    items = TINY_ITEMS.encode() + 'f,"É, y",2020-'.encode() + b"\x80\n"
    message = _error(_write_bytes(tmp_path, items))
    assert message == (
        "items.csv, line 7, field 'upload_time': not valid UTF-8 (byte 0x80 at column 15)"
    )


def test_non_utf8_inside_a_multiline_quoted_field_names_its_field(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b'user_id,note,item_id\nu1,"two\nlines, \xff",a\n')
    with pytest.raises(DatasetError) as caught:
        read_text(path, "x.csv")
    assert str(caught.value) == (
        "x.csv, line 3, field 'note': not valid UTF-8 (byte 0xff at column 8)"
    )


def test_non_utf8_in_header_names_line_1(tmp_path):
    items = TINY_ITEMS.encode().replace(b"artist_id", b"artist\xff_id")
    message = _error(_write_bytes(tmp_path, items))
    assert message == "items.csv, line 1: not valid UTF-8 (byte 0xff at column 15)"


def test_non_utf8_in_split_file(tmp_path):
    root = _write_bytes(tmp_path, valid=b"user_id,item_id\nu1,a\nu1,\xe9\n")
    assert _error(root) == (
        "valid.csv, line 3, field 'item_id': not valid UTF-8 (byte 0xe9 at column 4)"
    )


def test_utf8_byte_order_mark_is_accepted(tmp_path):
    bom = codecs.BOM_UTF8
    root = _write_bytes(
        tmp_path,
        bom + TINY_ITEMS.encode(),
        bom + TINY_PURCHASES.encode(),
        test=bom + b"user_id,item_id\nu1,a\n",
    )
    dataset = load_dataset(root)
    assert dataset.items.columns[0] == "item_id" and dataset.items["item_id"].iloc[0] == "a"
    assert dataset.purchases["user_id"].iloc[0] == "u1"
    assert dataset.test["user_id"].tolist() == ["u1"]


def test_non_utf8_after_a_byte_order_mark_counts_columns_without_it(tmp_path):
    items = codecs.BOM_UTF8 + TINY_ITEMS.encode().replace(b"item_id,", b"item\xffid,")
    assert _error(_write_bytes(tmp_path, items)) == (
        "items.csv, line 1: not valid UTF-8 (byte 0xff at column 5)"
    )


def test_non_utf8_in_ugallery_source_names_the_source_file(tmp_path):
    (tmp_path / "art.csv").write_bytes(
        b"id,artist_id,upload_date,original,medium_id\n1,7,2015-01-01,t,0\n2,8,2015-01-01,t,\xff\n"
    )
    (tmp_path / "sales.csv").write_text("id,customer_id,artwork_id,order_date\n1,5,1,2015-02-01\n")
    with pytest.raises(DatasetError) as caught:
        import_ugallery(tmp_path / "sales.csv", tmp_path / "art.csv")
    assert str(caught.value) == (
        "art.csv, line 3, field 'medium_id': not valid UTF-8 (byte 0xff at column 18)"
    )


# --- ids -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["..", "a/b", "a b", ".hidden", "x%2F", "a?b", "é" * 201])
def test_item_id_outside_the_alphabet_is_refused(tmp_path, bad):
    items = TINY_ITEMS.replace("c,y,", f"{bad},y,")
    root = write_dataset(tmp_path / "d", items, TINY_PURCHASES.replace(",c,", f",{bad},"))
    message = _error(root)
    shown = repr(bad) if len(bad) <= 60 else f"{bad[:60]!r}... ({len(bad)} characters)"
    assert message == (
        f"items.csv, line 4, field 'item_id': {shown} is not a valid id "
        f"({ID_RULE}; 1 row(s) with invalid ids in all)"
    )


def test_empty_item_id_is_refused(tmp_path):
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS.replace("c,y,", ",y,"), ""))
    assert message == "items.csv, line 4, field 'item_id': empty value"


@pytest.mark.parametrize("bad", ["..", "a/b", ".hidden", "a#b"])
def test_artist_id_outside_the_alphabet_is_refused(tmp_path, bad):
    items = TINY_ITEMS.replace("e,z,", f"e,{bad},")
    message = _error(write_dataset(tmp_path / "d", items, TINY_PURCHASES))
    assert message.startswith(f"items.csv, line 6, field 'artist_id': {bad!r} is not a valid id")


@pytest.mark.parametrize(
    ("field", "before", "after", "line"),
    [
        ("user_id", "u2,c,", "a b,c,", 6),
        ("user_id", "u3,c,", "..,c,", 8),
        ("item_id", "u1,e,", "u1,a/b,", 7),
        ("item_id", "u2,b,", "u2,.hidden,", 3),
    ],
)
def test_purchase_ids_outside_the_alphabet_are_refused(tmp_path, field, before, after, line):
    purchases = TINY_PURCHASES.replace(before, after)
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    bad = after.split(",")[0 if field == "user_id" else 1]
    assert message == (
        f"purchases.csv, line {line}, field '{field}': {bad!r} is not a valid id "
        f"({ID_RULE}; 1 row(s) with invalid ids in all)"
    )


def test_empty_user_id_is_refused(tmp_path):
    purchases = TINY_PURCHASES.replace("u1,d,", ",d,")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 5, field 'user_id': empty value"


@pytest.mark.parametrize("split", ["valid", "test"])
def test_split_user_id_outside_the_alphabet_is_refused(tmp_path, split):
    root = write_dataset(
        tmp_path / "d", TINY_ITEMS, TINY_PURCHASES, **{split: "user_id,item_id\nu1,a\na/b,c\n"}
    )
    assert _error(root).startswith(
        f"{split}.csv, line 3, field 'user_id': 'a/b' is not a valid id ({ID_RULE}"
    )


def test_punctuated_ids_are_accepted(tmp_path):
    items = TINY_ITEMS.replace("a,x,", "Emile-1,x~1,").replace("b,x,", "b:2@v+1,x~1,")
    items = items.replace("c,y,", "s.c_3,,")  # an empty artist is allowed
    purchases = (
        TINY_PURCHASES.replace("u1,a,", "user_1,Emile-1,")
        .replace(",b,", ",b:2@v+1,")
        .replace(",c,", ",s.c_3,")
    )
    dataset = load_dataset(write_dataset(tmp_path / "d", items, purchases))
    assert dataset.item_ids[:3].tolist() == ["Emile-1", "b:2@v+1", "s.c_3"]
    assert dataset.items["artist_id"].iloc[2] == ""
    assert dataset.purchases["user_id"].iloc[0] == "user_1"
    assert dataset.purchases["item"].tolist() == [0, 1, 1, 3, 2, 4, 2]


@pytest.mark.parametrize("bad", ["Émile-1", "用户-1", "x²", "art-7\u200d", "e\u0301"])
def test_ids_outside_ascii_are_refused_as_the_http_api_refuses_them(tmp_path, bad):
    """Letters of other scripts, superscripts, an invisible joiner, a combining accent: the
    HTTP API (whose published pattern JSON Schema reads as ASCII) and every checker agree."""
    from serving.schemas import PurchaseIn

    purchases = TINY_PURCHASES.replace("u1,a,", f"{bad},a,")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message.startswith(f"purchases.csv, line 2, field 'user_id': {bad!r} is not a valid id")
    with pytest.raises(ValueError, match="customer_id"):
        PurchaseIn.model_validate({"customer_id": bad, "item_id": "a"})


def test_ugallery_import_refuses_bad_customer_id(tmp_path):
    (tmp_path / "art.csv").write_text(
        "id,artist_id,upload_date,original,medium_id\n1,7,2015-01-01,t,0\n"
    )
    (tmp_path / "sales.csv").write_text(
        "id,customer_id,artwork_id,order_date\n1,5,1,2015-02-01\n2,5/6,1,2015-03-01\n"
    )
    with pytest.raises(DatasetError) as caught:
        import_ugallery(tmp_path / "sales.csv", tmp_path / "art.csv")
    assert str(caught.value).startswith(
        "sales.csv, line 3, field 'customer_id': '5/6' is not a valid id"
    )


# --- purchases after upload ----------------------------------------------------------------


def test_purchase_before_upload_is_refused_naming_line_item_and_upload(tmp_path):
    # d is uploaded on 2020-02-01 (items.csv line 5); line 5 of purchases.csv buys it on 02-10
    purchases = TINY_PURCHASES.replace("u1,d,2020-02-10", "u1,d,2020-01-31T23:59:59.5")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == (
        "purchases.csv, line 5, field 'timestamp': purchase of 'd' at 2020-01-31T23:59:59.500Z "
        "is before the artwork's upload at 2020-02-01T00:00:00Z (items.csv line 5; "
        "1 purchase(s) before their upload in all)"
    )


def test_purchase_at_the_upload_instant_and_untimed_purchases_are_accepted(tmp_path):
    purchases = TINY_PURCHASES.replace("u1,d,2020-02-10", "u1,d,1580515200")
    assert load_dataset(write_dataset(tmp_path / "d", TINY_ITEMS, purchases)).has_timestamps
    untimed = "user_id,item_id\nu1,e\nu2,d\n"
    assert not load_dataset(write_dataset(tmp_path / "u", TINY_ITEMS, untimed)).has_timestamps


def test_purchase_of_an_item_without_upload_time_is_accepted(tmp_path):
    items = TINY_ITEMS.replace("e,z,2020-03-15,", "e,z,,")
    purchases = TINY_PURCHASES.replace("u1,e,2020-04-01", "u1,e,2000-01-01")
    dataset = load_dataset(write_dataset(tmp_path / "d", items, purchases))
    assert dataset.items["upload_time"].iloc[4] == 0.0


def test_save_refuses_purchase_before_upload_and_writes_nothing(tiny_dataset_dir, tmp_path):
    dataset = load_dataset(tiny_dataset_dir)
    purchases = dataset.purchases.copy()
    purchases.loc[5, "timestamp"] = dataset.items["upload_time"].iloc[4] - 86_400.0
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match=r"^purchases.csv, line 7, field 'timestamp': .*'e'"):
        save_dataset(type(dataset)(dataset.items, dataset.features, purchases), out)
    assert not out.exists()


def test_ugallery_sale_before_upload_names_the_source_files(tmp_path):
    (tmp_path / "art.csv").write_text(
        "id,artist_id,upload_date,original,medium_id\n"
        "1,7,2015-01-01 10:00:00,t,0\n2,7,2015-06-01 00:00:00,t,0\n"
    )
    (tmp_path / "sales.csv").write_text(
        "id,customer_id,artwork_id,order_date\n1,5,1,2015-02-01\n2,6,2,2015-05-31 12:00:00\n"
    )
    with pytest.raises(DatasetError) as caught:
        import_ugallery(tmp_path / "sales.csv", tmp_path / "art.csv")
    assert str(caught.value) == (
        "sales.csv, line 3, field 'order_date': purchase of '2' at 2015-05-31T12:00:00Z is "
        "before the artwork's upload at 2015-06-01T00:00:00Z (art.csv line 3; "
        "1 purchase(s) before their upload in all)"
    )


def test_release_purchase_before_upload_names_the_source_files(tmp_path):
    root = tmp_path / "rel"
    root.mkdir()
    pd.DataFrame(
        {
            "artwork_id_hash": ["h1", "h2"],
            "artist_id_hash": ["A", "B"],
            "upload_timestamp": [10, 20],
        }
    ).to_csv(root / "inv.csv", index=False)
    pd.DataFrame(
        {
            "user_id_hash": ["u1", "u2"],
            "purchase_timestamp": [30, 19],
            "artwork_id_hash": ["h1", "h2"],
        }
    ).to_csv(root / "pur.csv", index=False)
    rows = np.empty(2, dtype=object)
    rows[0], rows[1] = ("h1", np.ones(4)), ("h2", np.ones(4))
    np.save(root / "emb.npy", rows, allow_pickle=True)
    with pytest.raises(DatasetError) as caught:
        import_ugallery_release(
            root / "inv.csv", root / "pur.csv", root / "emb.npy", trust_pickle=True
        )
    assert str(caught.value).startswith(
        "pur.csv, line 3, field 'purchase_timestamp': purchase of 'h2' at 1970-01-01T00:00:19Z "
        "is before the artwork's upload at 1970-01-01T00:00:20Z (inv.csv line 3;"
    )


def test_non_utf8_after_an_unbalanced_quote_still_names_line_and_column(tmp_path):
    # The open quote swallows the rest of the file into one field, past the csv module's limit.
    path = tmp_path / "x.csv"
    path.write_bytes(b'user_id,item_id\nu1,"a\n' + b"u2,b\n" * 40_000 + b"u3,\xff\n")
    with pytest.raises(DatasetError) as caught:
        read_text(path, "x.csv")
    assert str(caught.value) == "x.csv, line 40003: not valid UTF-8 (byte 0xff at column 4)"


def test_non_utf8_in_a_field_beyond_the_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"user_id,item_id\nu1,a,\xff\n")
    with pytest.raises(DatasetError) as caught:
        read_text(path, "x.csv")
    assert str(caught.value) == (
        "x.csv, line 2: not valid UTF-8 (byte 0xff at column 6), in field 3 of a header with 2"
    )


# --- the time range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [("-1", "'-1'"), ("1e300", "'1e300'"), ("7258118400", "'7258118400'"),
     ("1969-12-31T23:59:59Z", "'1969-12-31T23:59:59Z'")],
)  # fmt: skip
def test_times_outside_1970_to_2200_are_refused_naming_line_and_field(tmp_path, value, shown):
    """The range the HTTP API takes too; 1e300 seconds once reached format_seconds and failed."""
    purchases = TINY_PURCHASES.replace("u1,d,2020-02-10", f"u1,d,{value}")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == (
        f"purchases.csv, line 5, field 'timestamp': {shown} is not between "
        "1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z"
    )


def test_format_seconds_writes_what_iso_8601_can_and_never_fails():
    from training.data.columns import format_seconds

    assert format_seconds(0) == "1970-01-01T00:00:00Z"
    assert format_seconds(1580515199.5) == "2020-01-31T23:59:59.500Z"
    assert format_seconds(-62135596800) == "0001-01-01T00:00:00Z"  # four digits, padded
    for unwritable in (-62135683140.0, 253402387139.0, float("nan"), float("inf"), 1e300):
        assert format_seconds(unwritable) == f"{unwritable!r} unix seconds"


# --- NUL characters and repeated columns ------------------------------------------------------


def test_a_nul_character_is_refused_naming_line_field_and_column(tmp_path):
    """Once the csv parser ended the field there: 'u1\\0zzz' became user 'u1', silently merging
    two customers' purchases."""
    purchases = TINY_PURCHASES.replace("u2,b,", "u1\x00zzz,b,").encode()
    message = _error(_write_bytes(tmp_path, purchases=purchases))
    assert message == (
        "purchases.csv, line 3, field 'user_id': a NUL character, which no field may hold "
        "(byte 0x00 at column 3)"
    )


@pytest.mark.parametrize(
    ("file", "header"),
    [
        ("items", "item_id,item_id,upload_time,one_of_a_kind"),
        ("purchases", "user_id,item_id,item_id"),
        ("purchases", "user_id,item_id, timestamp,timestamp"),
    ],
)
def test_a_column_named_twice_is_refused(tmp_path, file, header):
    """Once accepted: the second copy was dropped (a purchases file lost its times)."""
    text = {"items": TINY_ITEMS, "purchases": TINY_PURCHASES}[file]
    text = header + text[text.index("\n") :]
    items = text if file == "items" else TINY_ITEMS
    purchases = text if file == "purchases" else TINY_PURCHASES
    message = _error(write_dataset(tmp_path / "d", items, purchases))
    repeated = "item_id" if "item_id,item_id" in header else "timestamp"
    assert message == f"{file}.csv, line 1: column {repeated!r} appears twice in the header"


# --- files that are not what their names say ------------------------------------------------

DATASET_FILES = ["items.csv", "purchases.csv", "features.npy", "valid.csv", "truth.npz"]


@pytest.mark.parametrize("name", DATASET_FILES)
def test_a_directory_in_place_of_a_dataset_file_is_refused_naming_it(tmp_path, name):
    """Once a traceback (IsADirectoryError) for the CSV files."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    (root / name).unlink(missing_ok=True)
    (root / name).mkdir()
    assert _error(root) == f"{name}: is a directory, expected a file"


@pytest.mark.parametrize("name", DATASET_FILES)
def test_a_symbolic_link_loop_in_place_of_a_dataset_file_is_refused_naming_it(tmp_path, name):
    """Once a traceback for the CSV files, 'file not found' for features.npy, and an optional
    file (valid.csv, truth.npz) that loops was taken for absent."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    (root / name).unlink(missing_ok=True)
    (root / name).symlink_to(name)
    assert _error(root) == f"{name}: is a symbolic link loop"


@pytest.mark.parametrize("name", DATASET_FILES)
def test_a_named_pipe_in_place_of_a_dataset_file_is_refused_without_blocking(tmp_path, name):
    """Once the load blocked for ever, waiting for a writer on the pipe."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    (root / name).unlink(missing_ok=True)
    os.mkfifo(root / name)
    assert _error(root) == f"{name}: is not a regular file (a pipe, socket or device?)"


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (lambda path: path.write_bytes(b"PK\x03\x04 not really a zip"), "cannot read as .npz"),
        (lambda path: np.save(path.open("wb"), np.zeros(3)), "not an .npz archive"),
        (lambda path: path.write_text("user_ids\n"), "not an .npz archive"),
        (
            lambda path: np.savez(path.open("wb"), other=np.zeros(3)),
            "holds arrays ['other'], expected ['user_ids', 'user_vectors'",
        ),
    ],
)
def test_a_damaged_truth_file_is_refused_naming_it(tmp_path, write, problem):
    """Once tracebacks: BadZipFile, TypeError (an .npy has no context manager), and a
    constructor's TypeError for unexpected arrays."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    write(root / "truth.npz")
    error = _error(root)
    assert error.startswith("truth.npz: ") and problem in error


def test_an_npy_header_with_a_negative_dimension_is_refused(tmp_path):
    """(-5, -4) has the product of (5, 4): numpy's own message named no file and no shape."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    with open(root / "features.npy", "wb") as file:
        header = {"descr": "<f4", "fortran_order": False, "shape": (-5, -4)}
        np.lib.format.write_array_header_1_0(file, header)
        file.write(bytes(80))
    assert _error(root) == "features.npy: the header declares a negative dimension, shape (-5, -4)"


def test_a_header_of_many_columns_is_shown_cut_short(tmp_path):
    """Once every column was echoed: 200,000 columns made a 2 MB message."""
    header = ",".join(f"column{i}" for i in range(200_000))
    root = write_dataset(tmp_path / "d", TINY_ITEMS, header + "\n" + ",".join(["x"] * 200_000))
    error = _error(root)
    assert len(error) < 1_000
    assert error.endswith("'column9', ... (200,000 in all)]")


def test_an_npz_archive_named_features_npy_is_refused(tmp_path):
    """Once a traceback: np.load gave an NpzFile, which has no dtype."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    with open(root / "features.npy", "wb") as file:
        np.savez(file, features=np.zeros((5, 4), np.float32))
    assert _error(root) == ("features.npy: is a zip archive (an .npz?), not a .npy array")


@pytest.mark.parametrize("mmap", [False, True])
@pytest.mark.parametrize(
    ("shape", "declared"), [((5, 2**40), "21,990,232,555,520"), ((5, 4), "80")]
)
def test_an_npy_header_that_declares_more_data_than_the_file_holds_is_refused(
    tmp_path, mmap, shape, declared
):
    """Checked before allocating: a 20 TiB shape in a 40-byte file was a MemoryError."""
    root = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    with open(root / "features.npy", "wb") as file:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(file, header)
        file.write(bytes(40))
    with pytest.raises(DatasetError) as caught:
        load_dataset(root, mmap=mmap)
    assert str(caught.value) == (
        f"features.npy: the header declares a float32 array of shape {shape} ({declared} "
        "bytes) but the file holds 40 bytes after it"
    )


# --- huge values ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "line", "field", "problem"),
    [
        ("purchases", 9, "timestamp", "cannot parse {} as a timestamp (ISO 8601 or unix seconds)"),
        ("items", 7, "one_of_a_kind", "{} is not a boolean (true/false)"),
        ("items", 7, "item_id", "{} is not a valid id ({rule}; 1 row(s) with invalid ids in all)"),
    ],
)
def test_a_huge_bad_value_is_shown_cut_short_with_its_length(tmp_path, file, line, field, problem):
    """Once a 10 MB field was echoed whole in the one-line error."""
    huge = "2" * 10_000_000
    items = TINY_ITEMS + {"one_of_a_kind": f"f,x,2020-01-01,{huge}\n",
                          "item_id": f"f{huge},x,2020-01-01,true\n"}.get(field, "")  # fmt: skip
    purchases = TINY_PURCHASES + (f"u1,e,{huge}\n" if file == "purchases" else "")
    message = _error(write_dataset(tmp_path / "d", items, purchases))
    value = huge if field != "item_id" else "f" + huge
    shown = f"{value[:60]!r}... ({len(value):,} characters)"
    assert message == (
        f"{file}.csv, line {line}, field '{field}': " + problem.format(shown, rule=ID_RULE)
    )


# --- records: one line each, of as many fields as the header -----------------------------------
# Errors elsewhere name line_of(row) = row + 2, one line per record: pandas skipped blank lines,
# joined a quoted value's lines into one record, took an extra field in the first row for an
# index column (shifting every column left) and read a short row's missing cells as empty.

QUOTE_AND_BREAK = "a quoted value runs on to line {} (no field may hold a line break; is a closing "
QUOTE_AND_BREAK += "quote missing?)"


@pytest.mark.parametrize("blank", ["", "  ", "\t", "\r"])
def test_a_blank_line_between_records_is_refused_naming_it(tmp_path, blank):
    """Once skipped: every later error named the line above the bad one."""
    purchases = TINY_PURCHASES.replace("u2,b,", f"{blank}\nu2,b,").replace(",e,", ",nope,")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 3: blank line (only the end of the file may have them)"


def test_a_blank_line_before_the_header_is_refused(tmp_path):
    """Once skipped: the header was taken from line 2."""
    message = _error(write_dataset(tmp_path / "d", "\n" + TINY_ITEMS, TINY_PURCHASES))
    assert message == "items.csv, line 1: blank line (only the end of the file may have them)"


def test_blank_lines_at_the_end_and_crlf_line_ends_are_accepted(tmp_path):
    purchases = TINY_PURCHASES.replace("\n", "\r\n") + "\r\n  \n\n"
    dataset = load_dataset(write_dataset(tmp_path / "d", TINY_ITEMS + "\n\n", purchases))
    assert len(dataset.items) == 5 and len(dataset.purchases) == 7


def test_a_quoted_value_over_two_lines_is_refused_naming_the_line_it_starts_on(tmp_path):
    """Once read as one record: every later error named the line above the bad one."""
    purchases = TINY_PURCHASES.replace("u2,b,2020-01-20", 'u2,b,"2020-01-20\n"')
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 3, field 'timestamp': " + QUOTE_AND_BREAK.format(4)


def test_a_quoted_value_over_lines_in_an_unread_column_is_refused(tmp_path):
    """Once accepted (the column is not read), with every later line number off by two."""
    items = TINY_ITEMS.replace("one_of_a_kind", "one_of_a_kind,title")
    items = items.replace("true\n", "true,t\n").replace("false\n", "false,f\n")
    items = items.replace("b,x,2020-01-01,false,f", 'b,x,2020-01-01,false,"one\ntwo\r\nthree"')
    message = _error(_write_bytes(tmp_path, items.encode()))
    assert message == "items.csv, line 3, field 'title': " + QUOTE_AND_BREAK.format(5)


def test_a_quote_never_closed_is_refused_naming_its_line(tmp_path):
    purchases = TINY_PURCHASES.replace("u2,b,", 'u2,"b,')
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 3, field 'item_id': " + QUOTE_AND_BREAK.format(8)
    last = TINY_PURCHASES.replace("u3,c,", 'u3,"c,')
    message = _error(write_dataset(tmp_path / "e", TINY_ITEMS, last))
    assert message == (  # once pandas' "EOF inside string starting at row 7"
        "purchases.csv, line 8, field 'item_id': a quoted value is never closed "
        "(is a closing quote missing?)"
    )


def test_a_quote_never_closed_past_the_csv_field_size_limit_names_its_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text('user_id,item_id\nu1,"a\n' + "u2,b\n" * 40_000)
    with pytest.raises(DatasetError) as caught:
        read_csv(path, "x.csv", ["user_id", "item_id"])
    assert str(caught.value) == "x.csv, line 2, field 'item_id': " + QUOTE_AND_BREAK.format(40002)


def test_a_huge_quoted_value_is_still_refused_for_what_it_holds(tmp_path):
    """Past the csv module's field size limit (131,072 characters), as the checks that
    follow see it."""
    huge = "2" * 200_000
    purchases = TINY_PURCHASES + f'u1,e,"{huge}"\n'
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == (
        f"purchases.csv, line 9, field 'timestamp': cannot parse {huge[:60]!r}... "
        "(200,000 characters) as a timestamp (ISO 8601 or unix seconds)"
    )


@pytest.mark.parametrize("title", ['"Smith, John"', '"say ""hi"", twice"', 'a "b" c'])
def test_quoted_values_on_one_line_are_accepted_and_lines_stay_true(tmp_path, title):
    """Quotes around commas (split by the csv module) or none (counted by commas)."""
    items = TINY_ITEMS.replace("one_of_a_kind", "one_of_a_kind,title")
    items = items.replace("true\n", "true,t\n").replace("false\n", f"false,{title}\n")
    purchases = TINY_PURCHASES.replace("u2,b,2020-01-20", '"u2","b","2020-01-20"')
    dataset = load_dataset(_write_bytes(tmp_path, items.encode(), purchases.encode()))
    assert dataset.purchases["user_id"].iloc[1] == "u2"
    items = items.replace("e,z,", "e,z/z,")
    message = _error(_write_bytes(tmp_path / "e", items.encode(), purchases.encode()))
    assert message.startswith("items.csv, line 6, field 'artist_id': 'z/z' is not a valid id")


def test_an_extra_field_in_the_first_row_is_refused(tmp_path):
    """Once taken for an index column: every column shifted left, and the error was
    "field 'item_id': unknown item '2020-01-10'"."""
    purchases = TINY_PURCHASES.replace("u1,a,2020-01-10", "u1,a,2020-01-10,x")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 2: 4 fields, the header has 3"


def test_a_trailing_comma_on_every_row_is_refused(tmp_path):
    purchases = TINY_PURCHASES.replace("\n", ",\n").replace("timestamp,\n", "timestamp\n")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 2: 4 fields, the header has 3"


def test_an_extra_field_in_a_later_row_is_refused(tmp_path):
    """Once pandas' "Expected 3 fields in line 7, saw 4"."""
    purchases = TINY_PURCHASES.replace("u1,e,2020-04-01", "u1,e,2020-04-01,x")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 7: 4 fields, the header has 3"


@pytest.mark.parametrize(
    ("file", "before", "after", "expected"),
    [
        ("items", "c,y,2020-01-01,true", "c", "items.csv, line 4: 1 field, the header has 4"),
        (
            "purchases",
            "u1,d,2020-02-10",
            "u1,d",
            "purchases.csv, line 5: 2 fields, the header has 3",
        ),
        ("valid", "u1,c", "u1", "valid.csv, line 3: 1 field, the header has 2"),
    ],
)
def test_a_short_row_is_refused(tmp_path, file, before, after, expected):
    """Once its missing cells were read as empty: an artwork without artist or upload time."""
    texts = {
        "items": TINY_ITEMS,
        "purchases": TINY_PURCHASES,
        "valid": "user_id,item_id\nu1,a\nu1,c\n",
    }
    texts[file] = texts[file].replace(before, after)
    root = _write_bytes(tmp_path, texts["items"].encode(), texts["purchases"].encode(),
                        valid=texts["valid"].encode())  # fmt: skip
    assert _error(root) == expected


def test_lines_ended_by_cr_alone_are_counted_as_lines(tmp_path):
    """As pandas splits them (and editors show them)."""
    purchases = TINY_PURCHASES.replace(",e,", ",nope,").replace("\n", "\r")
    message = _error(write_dataset(tmp_path / "d", TINY_ITEMS, purchases))
    assert message.startswith("purchases.csv, line 7, field 'item_id': unknown item 'nope'")
    purchases = TINY_PURCHASES.replace("u2,b,", 'u2,"b\rb",')
    message = _error(write_dataset(tmp_path / "e", TINY_ITEMS, purchases))
    assert message == "purchases.csv, line 3, field 'item_id': " + QUOTE_AND_BREAK.format(4)
