"""The native dataset: a directory that every Curator command reads.

    items.csv       item_id, then optional columns (an absent column or an empty cell takes the
                    default): artist_id (""), upload_time (ISO 8601 or unix seconds; 0, the unix
                    epoch: always available), one_of_a_kind (true/false; false)
    features.npy    float32 [n_items, d]; row i belongs to items.csv row i
    purchases.csv   user_id, item_id, [timestamp]; same user and timestamp = one basket; a
                    timestamp is never before the artwork's upload_time
    valid.csv       optional, user_id, item_id: fixed split for the holdout protocol
    test.csv        optional, user_id, item_id
    truth.npz       optional, written by the marketplace simulator only (see SimulatorTruth)

CSV files are UTF-8 (a byte order mark is allowed). Every id (item_id, artist_id, user_id) is of
the one alphabet of training/data/ids.py. Loading validates everything and raises DatasetError
naming file, line and field. Writing goes through a temporary directory, so bad input never
leaves a half-written dataset behind.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training.atomic import atomic_directory
from training.data.columns import (
    DatasetError,
    line_of,
    lookup_items,
    parse_booleans,
    parse_timestamps,
    read_csv,
    reading,
    require_after_upload,
    require_ids,
    require_unique,
    show_value,
    show_values,
)

FEATURE_CHECK_ROWS = 65_536  # rows per chunk when scanning (possibly memory-mapped) features


@dataclass(frozen=True)
class SimulatorTruth:
    """The marketplace simulator's true preference: utility = user_vectors[u] . item_vectors[i]
    + item_bias[i]. Only generated data has it; it gives the evaluation its `ideal` row."""

    user_ids: np.ndarray  # [n_users] str
    user_vectors: np.ndarray  # [n_users, r]
    item_vectors: np.ndarray  # [n_items, r]
    item_bias: np.ndarray  # [n_items]

    def save(self, path: Path) -> None:
        np.savez(
            path,
            user_ids=self.user_ids.astype(str),
            user_vectors=self.user_vectors,
            item_vectors=self.item_vectors,
            item_bias=self.item_bias,
        )

    @classmethod
    def load(cls, path: Path, *, n_items: int, users: UserColumns = ()) -> SimulatorTruth:
        """The arrays `save` wrote, as `check` wants them for a catalogue of `n_items` and the
        customers of `users`; anything else under that name is a DatasetError naming it."""
        name = path.name
        with reading(path, name):
            with open(path, "rb") as file:
                if not file.read(len(ZIP_MAGIC)).startswith(ZIP_MAGIC):
                    raise DatasetError(name, "not an .npz archive (it does not start as a zip)")
            with _npz_errors(name), np.load(path, allow_pickle=False) as arrays:
                found = sorted(arrays.files)
                if found != sorted(TRUTH_ARRAYS):
                    raise DatasetError(
                        name, f"holds arrays {show_values(found)}, expected {TRUTH_ARRAYS}"
                    )
                truth = cls(**{key: arrays[key] for key in TRUTH_ARRAYS})
        truth.check(n_items=n_items, users=users, name=name)
        return truth

    def check(self, *, n_items: int, users: UserColumns = (), name: str = "truth.npz") -> None:
        """What the `ideal` baseline relies on, as the simulator writes it: user_ids distinct
        strings [n_users]; user_vectors float32 [n_users, r]; item_vectors float32 [n_items, r]
        (one row per catalogue item); item_bias float32 [n_items]; all finite; and a user vector
        for every customer of `users`, (file, its user_id column) pairs. Otherwise a
        DatasetError naming `name` and the array. Linear in the arrays and the columns."""
        ids = self.user_ids
        if ids.dtype.kind != "U" or ids.ndim != 1:
            raise DatasetError(name, f"array 'user_ids' is {_described(ids)}, expected str [n]")
        for array_name, ndim in TRUTH_FLOAT_ARRAYS.items():
            array = getattr(self, array_name)
            if array.dtype != np.float32 or array.ndim != ndim:
                layout = ["[n]", "[n, r]"][ndim - 1]
                raise DatasetError(
                    name, f"array '{array_name}' is {_described(array)}, expected float32 {layout}"
                )
        rows = {
            "user_vectors": (len(ids), "'user_ids' has {} ids"),
            "item_vectors": (n_items, "items.csv has {} items"),
            "item_bias": (n_items, "items.csv has {} items"),
        }
        for array_name, (expected, other) in rows.items():
            found = len(getattr(self, array_name))
            if found != expected:
                raise DatasetError(
                    name, f"array '{array_name}' has {found} rows but {other.format(expected)}"
                )
        r, item_r = self.user_vectors.shape[1], self.item_vectors.shape[1]
        if item_r != r:
            raise DatasetError(
                name, f"array 'item_vectors' has {item_r} columns but 'user_vectors' has {r}"
            )
        for array_name in TRUTH_FLOAT_ARRAYS:
            array = getattr(self, array_name)
            bad = np.flatnonzero(~np.isfinite(array).all(axis=tuple(range(1, array.ndim))))
            if bad.size:
                raise DatasetError(
                    name, f"array '{array_name}' row {int(bad[0])} has NaN or inf values"
                )
        index = pd.Index(ids)
        if not index.is_unique:
            row = int(np.flatnonzero(index.duplicated())[0])
            first = int(np.flatnonzero(ids == ids[row])[0])
            raise DatasetError(
                name, f"array 'user_ids' holds {show_value(ids[row])} twice (rows {first}, {row})"
            )
        for file, user_ids in users:
            missing = np.flatnonzero(~user_ids.isin(index).to_numpy())
            if missing.size:
                row = int(missing[0])
                raise DatasetError(
                    name,
                    f"array 'user_ids' lacks {show_value(user_ids.iloc[row])}, the customer on "
                    f"{file} line {line_of(row)}: the ideal baseline needs a vector for every "
                    f"customer ({missing.size} row(s) of {file} without one in all)",
                )


UserColumns = Sequence[tuple[str, pd.Series]]  # (file, its user_id column)
TRUTH_FLOAT_ARRAYS = {"user_vectors": 2, "item_vectors": 2, "item_bias": 1}  # name: ndim


def _described(array: np.ndarray) -> str:
    return f"{array.dtype} of shape {array.shape}"


TRUTH_ARRAYS = ["user_ids", "user_vectors", "item_vectors", "item_bias"]


@contextmanager
def _npz_errors(name: str) -> Iterator[None]:
    """numpy's errors on a damaged .npz (a broken zip, an array of Python objects, a cut-off
    member) as a DatasetError naming the file; a DatasetError passes as it is."""
    try:
        yield
    except DatasetError:
        raise
    except (zipfile.BadZipFile, ValueError, EOFError) as error:
        raise DatasetError(name, f"cannot read as .npz ({error})") from None


@dataclass(frozen=True)
class Dataset:
    """A validated dataset. `purchases.item` and split frames' `item` are catalogue rows."""

    items: pd.DataFrame  # item_id, artist_id, upload_time (float s), one_of_a_kind (bool)
    features: np.ndarray  # [n_items, d] float32, possibly memory-mapped
    purchases: pd.DataFrame  # user_id, item_id, item, timestamp (float s, NaN if absent)
    valid: pd.DataFrame | None = None  # user_id, item_id, item
    test: pd.DataFrame | None = None
    truth: SimulatorTruth | None = None
    path: Path | None = field(default=None, compare=False)
    # a published dataset (training/data/tfds_format.py): "tfds:<name>:<version>", and the
    # digest training recorded for its native directory
    source: str | None = field(default=None, compare=False)
    fingerprint: str | None = field(default=None, compare=False)

    @property
    def location(self) -> str | None:
        """What `open_dataset` reopens it from: the directory (absolute) or the tfds: name."""
        return str(Path(self.path).resolve()) if self.path is not None else self.source

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def item_ids(self) -> np.ndarray:
        return self.items["item_id"].to_numpy()

    @property
    def has_timestamps(self) -> bool:
        return bool(np.isfinite(self.purchases["timestamp"].to_numpy()).all())


TFDS_PREFIX = "tfds:"


def open_dataset(reference: Path | str, *, mmap: bool = False) -> Dataset:
    """A dataset directory, or `tfds:<name>[:<version>]`: one published with
    `curator data publish-tfds` under $TFDS_DATA_DIR (default ~/tensorflow_datasets)."""
    text = str(reference)
    if text.startswith(TFDS_PREFIX):
        from training.data.tfds_format import load_published

        return load_published(text[len(TFDS_PREFIX) :], data_dir=tfds_data_dir())
    return load_dataset(reference, mmap=mmap)


def tfds_data_dir() -> Path:
    """Where TFDS keeps prepared datasets: $TFDS_DATA_DIR, else ~/tensorflow_datasets."""
    return Path(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets").expanduser()


def load_dataset(path: Path | str, *, mmap: bool = False) -> Dataset:
    """Load and validate a dataset directory. `mmap` maps features.npy instead of reading it."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(str(path), "not a dataset directory")
    items = load_items_table(path / "items.csv")
    features = _load_features(path / "features.npy", n_items=len(items), mmap=mmap)
    index = pd.Index(items["item_id"])
    purchases = load_purchases_table(path / "purchases.csv", index, items=items)
    splits = {
        name: _load_split(path / f"{name}.csv", index) if _present(path / f"{name}.csv") else None
        for name in ("valid", "test")
    }
    truth = None
    if _present(path / "truth.npz"):
        users = [("purchases.csv", purchases["user_id"])] + [
            (f"{name}.csv", split["user_id"]) for name, split in splits.items() if split is not None
        ]
        truth = SimulatorTruth.load(path / "truth.npz", n_items=len(items), users=users)
    return Dataset(items, features, purchases, splits["valid"], splits["test"], truth, path)


def _present(path: Path) -> bool:
    """Whether an optional file is there, in any form: a directory or a symbolic link that
    loops or leads nowhere in its place is an error when read, not an absent file."""
    return path.is_symlink() or path.exists()


def load_items_table(path: Path) -> pd.DataFrame:
    """items.csv -> item_id, artist_id, upload_time (float s), one_of_a_kind (bool); only
    item_id is required (see the module docstring for the defaults of the others)."""
    name = "items.csv"
    optional = ["artist_id", "upload_time", "one_of_a_kind"]
    frame = read_csv(path, name, ["item_id"], optional)
    require_ids(frame["item_id"], name, "item_id")
    require_unique(frame["item_id"], name, "item_id")
    if "artist_id" in frame.columns:
        require_ids(frame["artist_id"], name, "artist_id", allow_empty=True)
    # Defaults are written as cell text, so the parsers keep each row's line number.
    for column, default in zip(optional, ["", "0", "false"], strict=True):
        if column not in frame.columns:
            frame[column] = default
        else:
            frame[column] = frame[column].mask(frame[column] == "", default)
    return pd.DataFrame(
        {
            "item_id": frame["item_id"],
            "artist_id": frame["artist_id"],
            "upload_time": parse_timestamps(frame["upload_time"], name, "upload_time"),
            "one_of_a_kind": parse_booleans(frame["one_of_a_kind"], name, "one_of_a_kind"),
        }
    )


NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGIC = b"PK\x03\x04"  # an .npz archive
NPY_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def read_npy(path: Path, *, mmap: bool = False) -> np.ndarray:
    """A plain numeric .npy array; object arrays (pickles) are refused, never unpickled, and so
    is a header that declares other than the data the file holds (before anything is
    allocated: a 40-byte file may declare terabytes)."""
    name = path.name
    with reading(path, name):
        _check_npy_header(path, name)
        try:
            return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
        except ValueError as error:
            raise DatasetError(name, f"not a plain numeric .npy array ({error})") from None
        except EOFError as error:
            raise DatasetError(name, f"cannot read as .npy ({error})") from None


def require_npy_magic(start: bytes, name: str) -> None:
    """DatasetError unless `start`, a file's first bytes, opens a .npy array (an .npz archive
    is named as such)."""
    if start.startswith(ZIP_MAGIC):
        raise DatasetError(name, "is a zip archive (an .npz?), not a .npy array")
    if start != NPY_MAGIC:
        raise DatasetError(name, "not a .npy file (it does not start with numpy's magic)")


def _check_npy_header(path: Path, name: str) -> None:
    """DatasetError unless `path` starts with a .npy header of a plain (no Python objects) array
    whose declared size is the size of the data after it."""
    with open(path, "rb") as file:
        require_npy_magic(file.read(len(NPY_MAGIC)), name)
        file.seek(0)
        try:
            version = np.lib.format.read_magic(file)
            if version not in NPY_HEADER_READERS:
                raise ValueError(f"unsupported .npy version {version[0]}.{version[1]}")
            shape, _, dtype = NPY_HEADER_READERS[version](file)
        except ValueError as error:
            raise DatasetError(name, f"not a valid .npy header ({error})") from None
        held = os.fstat(file.fileno()).st_size - file.tell()
    if dtype.hasobject:
        raise DatasetError(
            name,
            "not a plain numeric .npy array (it holds Python objects, which are never unpickled)",
        )
    if any(size < 0 for size in shape):
        raise DatasetError(name, f"the header declares a negative dimension, shape {shape}")
    declared = math.prod(shape) * dtype.itemsize
    if declared != held:
        raise DatasetError(
            name,
            f"the header declares a {dtype} array of shape {shape} ({declared:,} bytes) but "
            f"the file holds {held:,} bytes after it",
        )


def _load_features(path: Path, *, n_items: int, mmap: bool) -> np.ndarray:
    features = read_npy(path, mmap=mmap)
    check_features(features, n_items=n_items, name=path.name)
    return features


def check_features(
    features: np.ndarray,
    *,
    n_items: int,
    name: str = "features.npy",
    items_file: str | None = "items.csv",
) -> None:
    """float32, [n_items, d], finite; raises DatasetError naming the first bad row and its
    item's line in `items_file` (None: the rows are the items, as in the MMRec layout)."""
    if features.dtype != np.float32:
        raise DatasetError(name, f"dtype is {features.dtype}, expected float32")
    if features.ndim != 2:
        raise DatasetError(name, f"shape is {features.shape}, expected [n_items, d]")
    if features.shape[0] != n_items:
        raise DatasetError(
            name, f"has {features.shape[0]} rows but {items_file} has {n_items} items"
        )
    if features.shape[1] == 0:
        raise DatasetError(name, "has zero feature columns")
    for start in range(0, n_items, FEATURE_CHECK_ROWS):
        chunk = np.asarray(features[start : start + FEATURE_CHECK_ROWS])
        bad_rows = np.flatnonzero(~np.isfinite(chunk).all(axis=1))
        if bad_rows.size:
            row = start + int(bad_rows[0])
            item = f" (the item on {items_file} line {line_of(row)})" if items_file else ""
            raise DatasetError(name, f"row {row}{item} has NaN or inf values")


def load_purchases_table(
    path: Path, index: pd.Index, *, items: pd.DataFrame | None = None
) -> pd.DataFrame:
    """purchases.csv -> user_id, item_id, item (catalogue row), timestamp (float s, NaN when the
    file has none). With `items` (the table `index` was made from), a purchase before its
    artwork's upload is an error."""
    name = "purchases.csv"
    frame = read_csv(path, name, ["user_id", "item_id"], ["timestamp"])
    _require_user_and_item_ids(frame, name)
    result = pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "item_id": frame["item_id"],
            "item": lookup_items(frame["item_id"], index, name),
        }
    )
    if "timestamp" in frame.columns:
        result["timestamp"] = parse_timestamps(frame["timestamp"], name, "timestamp")
        if items is not None:
            require_after_upload(result["timestamp"], result["item"].to_numpy(), items, name)
    else:
        result["timestamp"] = np.nan
    return result


def _require_user_and_item_ids(frame: pd.DataFrame, name: str) -> None:
    require_ids(frame["user_id"], name, "user_id")
    require_ids(frame["item_id"], name, "item_id")


def _load_split(path: Path, index: pd.Index) -> pd.DataFrame:
    name = path.name
    frame = read_csv(path, name, ["user_id", "item_id"])
    _require_user_and_item_ids(frame, name)
    return pd.DataFrame(
        {
            "user_id": frame["user_id"],
            "item_id": frame["item_id"],
            "item": lookup_items(frame["item_id"], index, name),
        }
    )


def format_time(seconds: np.ndarray) -> np.ndarray:
    """Float unix seconds -> ISO 8601 UTC strings with milliseconds."""
    stamps = pd.to_datetime(np.round(np.asarray(seconds) * 1000).astype("int64"), unit="ms")
    return stamps.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3].to_numpy() + "Z"


def write_tables(
    out: Path,
    items: pd.DataFrame,
    purchases: pd.DataFrame,
    *,
    valid: pd.DataFrame | None = None,
    test: pd.DataFrame | None = None,
) -> None:
    """Write the CSV files of a dataset into `out` (a directory being assembled)."""
    write_items_csv(out / "items.csv", items)
    write_purchases_csv(out / "purchases.csv", purchases)
    for split_name, split in (("valid", valid), ("test", test)):
        if split is not None:
            split[["user_id", "item_id"]].to_csv(out / f"{split_name}.csv", index=False)


def write_purchases_csv(path: Path, purchases: pd.DataFrame) -> None:
    """purchases.csv from a purchases table (load_purchases_table's columns): with the
    timestamp column where every purchase has a time, else without it (untimed data, which
    load_purchases_table reads back as NaN times)."""
    columns = {"user_id": purchases["user_id"], "item_id": purchases["item_id"]}
    if np.isfinite(purchases["timestamp"].to_numpy()).all():
        columns["timestamp"] = format_time(purchases["timestamp"].to_numpy())
    pd.DataFrame(columns).to_csv(path, index=False)


def write_items_csv(path: Path, items: pd.DataFrame) -> None:
    """items.csv from an items table (load_items_table's columns)."""
    pd.DataFrame(
        {
            "item_id": items["item_id"],
            "artist_id": items["artist_id"],
            "upload_time": format_time(items["upload_time"].to_numpy()),
            "one_of_a_kind": np.where(items["one_of_a_kind"], "true", "false"),
        }
    ).to_csv(path, index=False)


def save_dataset(
    dataset: Dataset, out: Path | str, *, overwrite: bool = False, readme: str = ""
) -> None:
    """Validate a dataset held in memory and write it atomically to `out`."""
    check_features(dataset.features, n_items=dataset.n_items)
    with atomic_directory(out, overwrite=overwrite) as tmp:
        write_tables(tmp, dataset.items, dataset.purchases, valid=dataset.valid, test=dataset.test)
        np.save(tmp / "features.npy", np.ascontiguousarray(dataset.features))
        if dataset.truth is not None:
            dataset.truth.save(tmp / "truth.npz")
        if readme:
            (tmp / "README.md").write_text(readme)
        # Reading back what was written is the final check, before the rename makes it visible.
        load_dataset(tmp, mmap=True)
