"""Publish a native dataset as a versioned TensorFlow Datasets (TFDS) dataset, and load it back.

What a user gains over copying the directory: a prepared, versioned dataset
(`<data_dir>/curator_dataset/<name>-<table>/1.0.0/`) that is never changed once written, with
TFRecord shards (each record carries a CRC), per-split row counts and the SHA-256 of the
features recorded in its `dataset_info.json` and `metadata.json`; it can be copied or shared as
it is. In a notebook no Curator code is needed to read it (as TFRS tutorials read MovieLens):

    items = tfds.load("curator_dataset/ugallery-items", split="items", data_dir=DIR)
    purchases = tfds.load("curator_dataset/ugallery-purchases", split="purchases", data_dir=DIR)

and `load_published("curator_dataset/ugallery", data_dir=DIR)` gives Curator's training the
same `Dataset` that `load_dataset` gives for the native directory (same row order, features
bit-identical), re-validated.

TFDS gives every split of a config one feature spec, so each table is its own config, the
MovieLens way (`movielens/100k-movies`, `movielens/100k-ratings`); `curator_dataset/<name>`
names the group:

    <name>-items        split `items`: row, item_id, artist_id ("" = none), upload_time
                        (float64 unix seconds), one_of_a_kind, features [d] float32
    <name>-purchases    splits `purchases`, and `valid`, `test` where the native dataset has
                        them: row, user_id, item_id, timestamp (float64 unix seconds; NaN when
                        the purchases are untimed, and always NaN in `valid` and `test`)
    <name>-truth_users  only for simulator data (truth.npz): split `users`: row, user_id,
                        vector [r] float32
    <name>-truth_items  split `items`: row (catalogue row), vector [r] float32, bias float32

`row` is the row in the native file: splits are written and read in that order (TFDS's
`disable_shuffling`), and loading checks it. The items config's metadata lists the tables and
splits, whether purchases are timed, the features' SHA-256 and `data_fingerprint` (the digest
that training records for the native directory).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow_datasets as tfds  # ~0.5 s; tensorflow itself is imported on first use

from training.atomic import directory_lock
from training.data.columns import (
    DatasetError,
    lookup_items,
    require_after_upload,
    require_ids,
    require_unique,
)
from training.data.dataset import Dataset, SimulatorTruth, check_features, load_dataset

BUILDER = "curator_dataset"
FORMAT_VERSION = "1.0.0"
NAME_RULE = "1-64 lowercase letters, digits or _, starting with a letter or digit"
_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,63}")
_VERSION = re.compile(r"\d+\.\d+\.\d+")
_SPEC = re.compile(rf"(?:{BUILDER}/)?(?P<name>[^/:]+)(?::(?P<version>\d+\.\d+\.\d+))?")
# Items go last when publishing: a name is published once its items config exists.
TABLES = ("purchases", "truth_users", "truth_items", "items")


@dataclasses.dataclass(eq=False)
class CuratorConfig(tfds.core.BuilderConfig):
    """One table of a published dataset: config name `<name>-<table>`; `dim` is the feature
    dimension (items) or the truth dimension r (truth tables)."""

    table: str = "items"
    dim: int = 0


class CuratorDataset(tfds.core.GeneratorBasedBuilder):
    """A native Curator dataset (docs/datasets.md) read from `manual_dir`; see the module."""

    VERSION = tfds.core.Version(FORMAT_VERSION)
    RELEASE_NOTES = {
        FORMAT_VERSION: "Curator's native format: one config per table, rows in order."
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = "manual_dir is a native dataset directory (docs/datasets.md)."
    # TFDS locates a checksums file next to the code through `code_path`, which on Python >= 3.9
    # needs the importlib_resources backport that TFDS 4.9 does not install
    # (tensorflow/datasets#11212). Nothing is downloaded, so there are no checksums to find.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        config = self.builder_config
        name = config.name.removesuffix(f"-{config.table}")
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"The {config.table} table of Curator dataset `{BUILDER}/{name}`.",
            features=_features(config.table, config.dim),
            disable_shuffling=True,  # rows stay in native order (int keys = row numbers)
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        native = Path(dl_manager.manual_dir)
        dataset = load_dataset(native, mmap=True)
        table = self.builder_config.table
        if table == "items":
            name = self.builder_config.name.removesuffix("-items")
            self.info.metadata.update(_summary(dataset, name))
        return {
            split: self._generate_examples(_columns(dataset, table, split))
            for split in _table_splits(dataset)[table]
        }

    def _generate_examples(self, columns: dict):
        n_rows = len(next(iter(columns.values())))
        for row in range(n_rows):
            yield row, {"row": row, **{key: values[row] for key, values in columns.items()}}


def _features(table: str, dim: int) -> tfds.features.FeaturesDict:
    # Numbers are stored as raw bytes (tf.train.Example would keep float64 as float32); the
    # features compressed (zlib: half the size on pooled-CNN-like features, ~1 s per 63 MB).
    def exact(dtype, shape=(), doc=None, encoding="bytes"):
        return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=encoding, doc=doc)

    text = tfds.features.Text
    columns = {"row": tfds.features.Scalar(np.int64, doc="Row in the native file.")}
    if table == "items":
        columns |= {
            "item_id": text(),
            "artist_id": text(doc="Empty when the artwork has no artist."),
            "upload_time": exact(np.float64, doc="Unix seconds (0 when unknown)."),
            "one_of_a_kind": tfds.features.Scalar(np.bool_),
            "features": exact(np.float32, (dim,), "Row of features.npy.", encoding="zlib"),
        }
    elif table == "purchases":
        doc = "Unix seconds; NaN when the purchases are untimed, and in valid and test."
        columns |= {"user_id": text(), "item_id": text(), "timestamp": exact(np.float64, doc=doc)}
    elif table == "truth_users":
        columns |= {"user_id": text(), "vector": exact(np.float32, (dim,))}
    else:
        columns |= {"vector": exact(np.float32, (dim,)), "bias": exact(np.float32)}
    return tfds.features.FeaturesDict(columns)


def _table_splits(dataset: Dataset) -> dict[str, list[str]]:
    """{table: its splits} for the tables this dataset has."""
    splits = {"items": ["items"], "purchases": ["purchases"]}
    splits["purchases"] += [
        name for name in ("valid", "test") if getattr(dataset, name) is not None
    ]
    if dataset.truth is not None:
        splits |= {"truth_users": ["users"], "truth_items": ["items"]}
    return splits


def _columns(dataset: Dataset, table: str, split: str) -> dict:
    """The columns of one split, each indexable by row."""
    if table == "items":
        items = dataset.items
        columns = {name: items[name].to_numpy() for name in items.columns}
        return columns | {"features": dataset.features}  # [n_items, d], maybe memory-mapped
    if table == "purchases":
        frame = getattr(dataset, split)
        timestamps = frame["timestamp"] if "timestamp" in frame else np.full(len(frame), np.nan)
        return {
            "user_id": frame["user_id"].to_numpy(),
            "item_id": frame["item_id"].to_numpy(),
            "timestamp": np.asarray(timestamps, dtype=np.float64),
        }
    truth = dataset.truth
    if table == "truth_users":
        return {"user_id": truth.user_ids, "vector": truth.user_vectors}  # [n_users, r]
    return {"vector": truth.item_vectors, "bias": truth.item_bias}  # [n_items, r], [n_items]


def _summary(dataset: Dataset, name: str) -> dict:
    """The items config's metadata: what the other configs hold, and digests."""
    from training.train import data_fingerprint  # imports tensorflow, as preparing does anyway

    features = hashlib.sha256()
    for start in range(0, dataset.n_items, 65_536):
        features.update(np.ascontiguousarray(dataset.features[start : start + 65_536]).data)
    return {
        "name": name,
        "tables": _table_splits(dataset),
        "has_timestamps": dataset.has_timestamps,
        "features_sha256": features.hexdigest(),
        "data_fingerprint": data_fingerprint(dataset),
    }


def _dims(dataset: Dataset) -> dict[str, int]:
    """{table: dim} for the tables this dataset has."""
    dims = {"items": dataset.features.shape[1], "purchases": 0}
    truth = dataset.truth
    if truth is not None:
        arrays = [truth.user_vectors, truth.item_vectors, truth.item_bias]
        if any(array.dtype != np.float32 for array in arrays):  # as the simulator writes them
            raise DatasetError("truth.npz", "vectors and bias must be float32 to be published")
        dims |= dict.fromkeys(["truth_users", "truth_items"], truth.user_vectors.shape[1])
    return dims


def _table_dir(data_dir: Path, name: str, table: str, version: str = FORMAT_VERSION) -> Path:
    return data_dir / BUILDER / f"{name}-{table}" / version


def publish(native_dir: Path | str, *, name: str, data_dir: Path | str) -> str:
    """Validate the native dataset in `native_dir` (DatasetError, as `load_dataset`) and prepare
    it as `curator_dataset/<name>` under `data_dir`; returns "curator_dataset/<name>:1.0.0".

    A published name and version is never overwritten (FileExistsError). The tables are
    prepared in a temporary directory inside `data_dir` and renamed into place, items last (a
    name is published once its items are there), so a failure while preparing leaves nothing
    behind and a reader never sees part of a table.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid dataset name ({NAME_RULE})")
    native_dir, data_dir = Path(native_dir), Path(data_dir)
    dataset = load_dataset(native_dir, mmap=True)  # bad data fails here, before any write
    dims = _dims(dataset)
    # one publisher at a time under a data directory: two of one name would race to rename
    # their tables into place (the second waits, then is told the name is taken)
    with directory_lock(data_dir, wait=True):
        existing = [str(p) for t in TABLES if (p := _table_dir(data_dir, name, t)).exists()]
        if existing:
            raise FileExistsError(
                f"{BUILDER}/{name}:{FORMAT_VERSION} is already published under {data_dir} "
                "(published datasets do not change: choose another name, or delete "
                f"{', '.join(existing)})"
            )
        data_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{BUILDER}-{name}.tmp-", dir=data_dir))
        download_config = tfds.download.DownloadConfig(
            manual_dir=os.fspath(native_dir), try_download_gcs=False
        )
        try:
            tables = [table for table in TABLES if table in dims]
            for table in tables:
                config = CuratorConfig(name=f"{name}-{table}", table=table, dim=dims[table])
                with _quiet():
                    builder = CuratorDataset(config=config, data_dir=staging)
                    builder.download_and_prepare(
                        download_dir=staging / "downloads", download_config=download_config
                    )
            for table in tables:
                target = _table_dir(data_dir, name, table)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.rename(_table_dir(staging, name, table), target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return f"{BUILDER}/{name}:{FORMAT_VERSION}"


@contextlib.contextmanager
def _quiet():
    """Silences TFDS while it works: progress bars and prints naming the staging directory, and
    absl warnings below ERROR (a custom config is "used", its own deprecation notices). Errors
    still raise."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        absl.setLevel(level)


def list_published(data_dir: Path | str) -> dict[str, list[str]]:
    """{name: versions, oldest first} of the datasets published under `data_dir`."""
    published: dict[str, list[str]] = {}
    for info in sorted(Path(data_dir).glob(f"{BUILDER}/*-items/*/dataset_info.json")):
        name, version = info.parent.parent.name.removesuffix("-items"), info.parent.name
        if _NAME.fullmatch(name) and _VERSION.fullmatch(version):
            published.setdefault(name, []).append(version)
    for versions in published.values():
        versions.sort(key=lambda v: tuple(int(part) for part in v.split(".")))
    return published


def load_published(spec: str, *, data_dir: Path | str) -> Dataset:
    """The `Dataset` published as `spec` ("curator_dataset/<name>[:version]" or
    "<name>[:version]"; the latest version by default) under `data_dir`: the one `load_dataset`
    gives for the native directory, re-validated (`path` is None: there is no native
    directory). A name or version not published there is a FileNotFoundError listing those
    that are."""
    data_dir = Path(data_dir)
    match = _SPEC.fullmatch(spec)
    if match is None or not _NAME.fullmatch(match["name"]):
        raise ValueError(f"{spec!r} is not curator_dataset/<name>[:version] ({NAME_RULE})")
    name, version = match["name"], match["version"]
    published = list_published(data_dir)
    versions = published.get(name, [])
    if version is None and versions:
        version = versions[-1]
    if version not in versions:
        there = "; ".join(f"{n} ({', '.join(vs)})" for n, vs in published.items())
        raise FileNotFoundError(
            f"{BUILDER}/{name}{':' + version if version else ''} is not published under "
            f"{data_dir} ({'published there: ' + there if there else 'nothing is published there'})"
        )
    with _quiet():
        builders = {"items": _builder(name, "items", version, data_dir)}
        summary = dict(builders["items"].info.metadata)
        tables = {}
        for table, splits in summary["tables"].items():
            builder = builders.get(table) or _builder(name, table, version, data_dir)
            tables[table] = {split: _read_split(builder, split) for split in splits}
    return _rebuild(tables, summary, f"{BUILDER}/{name}:{version}")


def _builder(name: str, table: str, version: str, data_dir: Path):
    return tfds.builder(f"{BUILDER}/{name}-{table}:{version}", data_dir=os.fspath(data_dir))


def _read_split(builder, split: str) -> dict[str, np.ndarray]:
    """One split as whole columns, in native row order."""
    dataset = builder.as_dataset(split=split, batch_size=-1, shuffle_files=False)
    columns = dict(tfds.as_numpy(dataset))
    rows = columns.pop("row")
    order = np.argsort(rows, kind="stable")  # written in order; sorting makes sure of it
    if not np.array_equal(rows[order], np.arange(rows.size)):
        where = f"{builder.info.full_name}, split {split}"
        raise DatasetError(where, "rows are not numbered 0 to n-1 (damaged dataset)")
    return {
        key: (
            np.array([v.decode("utf-8") for v in values], dtype=object)  # bytes -> str
            if values.dtype == object
            else values
        )[order]
        for key, values in columns.items()
    }


def _rebuild(tables: dict, summary: dict, spec: str) -> Dataset:
    """A validated Dataset from the published columns (errors name the native file)."""
    columns = tables["items"]["items"]
    items = pd.DataFrame({key: columns[key] for key in ("item_id", "artist_id", "upload_time")})
    items["one_of_a_kind"] = columns["one_of_a_kind"]
    features = columns["features"]  # [n_items, d] float32
    file = f"items.csv (in {spec})"
    require_ids(items["item_id"], file, "item_id")
    require_unique(items["item_id"], file, "item_id")
    require_ids(items["artist_id"], file, "artist_id", allow_empty=True)
    check_features(features, n_items=len(items), name=f"features.npy (in {spec})")
    digest = hashlib.sha256(np.ascontiguousarray(features).data).hexdigest()
    if digest != summary["features_sha256"]:
        raise DatasetError(f"features.npy (in {spec})", "SHA-256 differs from the published one")
    index = pd.Index(items["item_id"])
    frames = {}
    for split, columns in tables["purchases"].items():
        file = f"{split}.csv (in {spec})"
        frame = pd.DataFrame({"user_id": columns["user_id"], "item_id": columns["item_id"]})
        require_ids(frame["user_id"], file, "user_id")
        require_ids(frame["item_id"], file, "item_id")
        frame["item"] = lookup_items(frame["item_id"], index, file)
        if split == "purchases":
            frame["timestamp"] = timestamps = columns["timestamp"]
            if not np.all(np.isfinite(timestamps) == summary["has_timestamps"]):
                raise DatasetError(file, "timestamps are neither all set nor all absent")
            require_after_upload(timestamps, frame["item"].to_numpy(), items, file)
        frames[split] = frame
    truth = None
    if "truth_users" in tables:
        users, truth_items = tables["truth_users"]["users"], tables["truth_items"]["items"]
        truth = SimulatorTruth(
            user_ids=users["user_id"].astype(str),
            user_vectors=users["vector"],  # [n_users, r]
            item_vectors=truth_items["vector"],  # [n_items, r]
            item_bias=truth_items["bias"],  # [n_items]
        )
    return Dataset(
        items=items,
        features=features,
        purchases=frames["purchases"],
        valid=frames.get("valid"),
        test=frames.get("test"),
        truth=truth,
        source=f"tfds:{spec.removeprefix(BUILDER + '/')}",
        fingerprint=summary["data_fingerprint"],
    )
