"""One export version, loaded for serving: the towers, the catalogue and its purchase log.

The item tower (Keras, TensorFlow) embeds artworks added live, in batches. The user tower runs
on the request path as a numpy kernel (`serving/user_kernel.py`). Catalogue vectors come from
the export's `item_vectors.npy`, exactly what `curator evaluate` scores with.

Nothing of an export is trusted before it is checked: the manifest against a strict schema
(`Manifest`), every file against the size and sha256 the manifest lists (and no file besides),
then the towers, the catalogue and the vectors against the manifest and each other. The index
settings come from the manifest's `index.settings`, never from today's `TrainConfig`, so that
an export loads the same whatever the training config has become since.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from serving.user_kernel import NumpyUserTower
from towers.item_tower import ItemTower
from training.copurchase import FILE_NAMES as COPURCHASE_FILES
from training.copurchase import WEIGHT_FIELDS as COPURCHASE_WEIGHTS
from training.copurchase import CoPurchase
from training.data.dataset import load_items_table, load_purchases_table
from training.export import (
    FORMAT_VERSION,
    MANIFEST,
    MATCH_SEARCHER_DIR,
    SEARCHER_DIR,
    export_versions,
    sha256_file,
    version_entries,
)
from training.index import IndexConfig, ScannSearcher
from training.nearest_purchase import FILE_NAME as NEAREST_FILE
from training.nearest_purchase import NearestPurchase
from training.trained_towers import MODEL_DIR, embed_items, load_towers

MATCH_VECTORS = "catalogue/match_vectors.npy"  # the profile terms' (with the nearest-purchase term)
# files every version has (towers.json and model/towers.* are what the service loads)
REQUIRED_FILES = (
    "towers.json",
    "model/towers.index",
    "catalogue/items.csv",
    "catalogue/item_vectors.npy",
    "catalogue/purchases.csv",
    "item_tower/saved_model.pb",
    "user_tower/saved_model.pb",
    "retrieval/saved_model.pb",
)


class ExportError(ValueError):
    """An export that cannot be served; the message names the directory and the problem."""


@dataclass(frozen=True)
class ServingModel:
    path: Path
    manifest: dict
    item_tower: ItemTower
    user_tower: NumpyUserTower
    items: pd.DataFrame  # item_id, artist_id, upload_time (s), one_of_a_kind
    vectors: np.ndarray  # [n_items, dim] float32
    purchases: pd.DataFrame  # user_id, item_id, item (row), timestamp (s)
    index: IndexConfig  # the export's index settings: exact or ScaNN search, and its parameters
    # the calibrated nearest-purchase term and the catalogue's match vectors [n_items, m], or None
    nearest: NearestPurchase | None = None
    match_vectors: np.ndarray | None = None
    # the service's ScaNN searchers as the export serialized them (None: built at load)
    searcher: ScannSearcher | None = None
    match_searcher: ScannSearcher | None = None
    # the co-purchase terms' matrices (training/copurchase.py), each when its weight is above 0
    copurchase: CoPurchase | None = None
    ease: CoPurchase | None = None

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def feature_dim(self) -> int:
        return self.item_tower.feature_dim

    def embed(self, features: np.ndarray, item_ids, artist_ids) -> np.ndarray:
        return embed_items(self.item_tower, features, item_ids, artist_ids)

    def match(self, features: np.ndarray) -> np.ndarray | None:
        """Match vectors of new artworks' features, or None without a nearest-purchase term."""
        return None if self.nearest is None else self.nearest.vectors(features)


# -- the manifest, validated strictly: no coercion ("2" is not 2), no unknown fields ----------


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class IndexSettings(_Strict):
    """manifest["index"]["settings"]: the `IndexConfig` fields, within the ranges
    `TrainConfig` allows."""

    k: int = Field(ge=1)
    scann_min_items: int = Field(ge=1)
    leaves_to_search_share: float = Field(gt=0.0, le=1.0)
    dimensions_per_block: int = Field(ge=1)
    reorder: int = Field(ge=1)
    prior_slot: bool


class IndexManifest(_Strict):
    kind: Literal["brute_force", "scann"]
    k: int = Field(ge=1)
    num_leaves: int | None = Field(default=None, ge=1)
    num_leaves_to_search: int | None = Field(default=None, ge=1)
    dimensions_per_block: int | None = Field(default=None, ge=1)
    num_reordering_candidates: int | None = Field(default=None, ge=1)
    settings: IndexSettings
    prior_rows_apart: int = Field(ge=0)
    recall_at_10: float = Field(ge=0.0, le=1.0)
    serving_recall_at_10: float = Field(ge=0.0, le=1.0)
    recall_queries: int = Field(ge=0)


class CatalogueManifest(_Strict):
    items: int = Field(ge=1)
    feature_dim: int = Field(ge=1)
    vector_dim: int = Field(ge=1)


class TrainingManifest(_Strict):
    best_epoch: int = Field(ge=0)
    best_validation: dict[str, Any]
    epochs_run: int = Field(ge=0)
    seconds: float = Field(ge=0.0)
    artist_prior_weight: float | None


class NearestPurchaseManifest(_Strict):
    """The profile terms' weights (training/nearest_purchase.py); exports written before the
    mean and popularity terms have only `weight`."""

    weight: float = Field(ge=0.0, allow_inf_nan=False)
    mean_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    popularity_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    copurchase_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    freshness_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    freshness_days: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    era_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    era_days: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    ease_weight: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    dim: int = Field(ge=1)

    @model_validator(mode="after")
    def _some_weight(self) -> NearestPurchaseManifest:
        weights = (
            self.weight,
            self.mean_weight,
            self.popularity_weight,
            self.copurchase_weight,
            self.freshness_weight,
            self.era_weight,
            self.ease_weight,
        )
        if not any(w > 0 for w in weights):
            raise ValueError("every weight is 0: the export should have no terms (null)")
        if self.freshness_weight > 0 and self.freshness_days <= 0:
            raise ValueError("freshness_weight above 0 needs freshness_days above 0")
        if self.era_weight > 0 and self.era_days <= 0:
            raise ValueError("era_weight above 0 needs era_days above 0")
        return self


class FileEntry(_Strict):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Manifest(_Strict):
    format: Literal[3]
    version: int = Field(ge=1)
    created_at: str
    run: str
    dataset: str
    data_fingerprint: str
    config: dict[str, Any]  # the training config, for the record: loading never reads it
    training: TrainingManifest
    catalogue: CatalogueManifest
    index: IndexManifest
    nearest_purchase: NearestPurchaseManifest | None
    uses_ids: bool
    tensorflow: str
    files: dict[str, FileEntry]

    @field_validator("files")
    @classmethod
    def _relative_paths(cls, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
        for name in files:
            parts = name.split("/")
            if (
                name == MANIFEST
                or name.startswith("/")
                or "\\" in name
                or ".." in parts
                or "" in parts
            ):
                raise ValueError(f"{name!r} is not a path inside the export")
            if name.endswith(".pkl"):  # ScaNN's loader would unpickle one
                raise ValueError(f"{name!r}: pickles are refused")
        missing = [name for name in REQUIRED_FILES if name not in files]
        if missing:
            raise ValueError(f"does not list {missing}")
        return files


def _field_errors(error: ValidationError) -> str:
    """'index.settings.k: Input should be ... (got 0); ...', at most 5."""
    shown = []
    for problem in error.errors()[:5]:
        where = ".".join(str(part) for part in problem["loc"]) or "(the manifest)"
        got = "" if problem["type"] == "missing" else f" (got {problem['input']!r:.80})"
        shown.append(f"{where}: {problem['msg']}{got}")
    more = error.error_count() - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def read_manifest(path: Path) -> tuple[dict, Manifest]:
    """The manifest of export version `path` (as written, and as checked): its format, every
    field's type and range, and that its version is the directory's name."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: cannot read {MANIFEST}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ExportError(
            f"{path}: export format {found!r}, this service reads {FORMAT_VERSION} "
            "(re-export the run with this version of `curator export`)"
        )
    try:
        checked = Manifest.model_validate(manifest)
    except ValidationError as error:
        raise ExportError(f"{path}: bad {MANIFEST}: {_field_errors(error)}") from None
    if not re.fullmatch(r"\d+", path.name) or int(path.name) != checked.version:
        raise ExportError(
            f"{path}: bad {MANIFEST}: version: {checked.version}, but the directory is "
            f"{path.name!r} (an export version lives in <exports>/<version>/)"
        )
    index = checked.index
    wanted = (
        "scann"
        if IndexConfig(**index.settings.model_dump()).uses_scann(checked.catalogue.items)
        else "brute_force"
    )
    if index.kind != wanted:
        raise ExportError(
            f"{path}: bad {MANIFEST}: index.kind: {index.kind!r}, but index.settings make "
            f"{wanted!r} for {checked.catalogue.items} artworks"
        )
    if index.prior_rows_apart > checked.catalogue.items:
        raise ExportError(
            f"{path}: bad {MANIFEST}: index.prior_rows_apart: {index.prior_rows_apart} of "
            f"{checked.catalogue.items} artworks"
        )
    return manifest, checked


def verify_files(path: Path, files: dict[str, FileEntry]) -> None:
    """Every file the manifest lists is there with its size and sha256, and nothing else is
    (but manifest.json)."""
    check_listing(path, files)
    check_digests(path, files)


def check_listing(path: Path, files: dict[str, FileEntry]) -> None:
    """The files the manifest lists are there with their sizes, and nothing else is."""
    present, others = version_entries(path)
    if others:
        raise ExportError(f"{path}: not regular files (links?): {others[:10]}")
    unlisted = sorted(set(present) - set(files))
    if unlisted:
        raise ExportError(f"{path}: file(s) not in {MANIFEST}: {unlisted[:10]}")
    missing = sorted(set(files) - set(present))
    if missing:
        raise ExportError(f"{path}: missing file(s): {missing[:10]}")
    for name, entry in files.items():
        size = (path / name).stat().st_size
        if size != entry.bytes:
            raise ExportError(f"{path}: {name} has {size:,} bytes, {MANIFEST} says {entry.bytes:,}")


def check_digests(path: Path, files: dict[str, FileEntry]) -> None:
    """Every listed file has the sha256 the manifest says."""
    # hashlib releases the GIL on large buffers: the files hash in parallel, one per core
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digests = dict(zip(files, pool.map(sha256_file, [path / n for n in files]), strict=True))
    for name, entry in files.items():
        if digests[name] != entry.sha256:
            raise ExportError(
                f"{path}: {name} is not the file exported (its sha256 differs from {MANIFEST}'s)"
            )


def newest_version(root: Path) -> Path:
    versions = export_versions(root)
    if not versions:
        raise ExportError(f"{root}: no export found (run `curator export`)")
    return Path(root) / str(versions[-1])


def load_serving_model(path: Path | str) -> ServingModel:
    """Loads and checks one export version directory; ExportError (and only ExportError) says
    what is wrong. The checks are listed in docs/serving.md ("What a reload checks before
    switching")."""
    path = Path(path)
    try:
        return _load(path)
    except ExportError:
        raise
    except Exception as error:  # anything else a damaged export raises, named
        raise ExportError(f"{path}: cannot load: {type(error).__name__}: {error}") from error


def _load(path: Path) -> ServingModel:
    """The manifest, the files it lists (names and sizes), then, while the files are hashed,
    what a plain parser reads (the CSV files here, the item vectors in a worker thread: numpy
    without pickles). Only files whose hashes match reach the loaders that trust their input's
    format (TensorFlow's checkpoint, ScaNN's protobuf); a changed file is named before any
    parse error. At 1M artworks, three loads each way: 7.9-9.0 s, against 8.0-9.9 s with the
    hashing first."""
    as_written, manifest = read_manifest(path)
    check_listing(path, manifest.files)
    described = manifest.catalogue
    catalogue = path / "catalogue"
    index = IndexConfig(**manifest.index.settings.model_dump())
    with ThreadPoolExecutor(max_workers=2) as pool:
        hashing = pool.submit(check_digests, path, manifest.files)
        vectors_read = pool.submit(np.load, catalogue / "item_vectors.npy", allow_pickle=False)
        match_read = None
        if MATCH_VECTORS in manifest.files:  # checked against the manifest below
            match_read = pool.submit(np.load, path / MATCH_VECTORS, allow_pickle=False)
        parse_error = None
        try:
            items = load_items_table(catalogue / "items.csv")
            purchases = load_purchases_table(
                catalogue / "purchases.csv", pd.Index(items["item_id"])
            )
        except Exception as error:  # reported once the hashes are known to match
            parse_error = error
        hashing.result()
        try:
            if parse_error is not None:
                raise parse_error
            vectors = vectors_read.result()
        except (OSError, ValueError) as error:  # DatasetError is a ValueError
            raise ExportError(f"{path}: bad catalogue: {error}") from None
        # verified: the searcher loads in a worker thread while this one loads the towers
        searcher_read = pool.submit(
            _load_searcher, path, manifest, SEARCHER_DIR, index, described.items
        )
        try:
            item_tower, user_tower = load_towers(path)
            kernel = NumpyUserTower(user_tower)
        except Exception as error:  # a missing or damaged checkpoint: many error types
            raise ExportError(f"{path}: cannot load the towers: {error}") from None
        searcher = searcher_read.result()
    towers = {
        "catalogue.feature_dim": (described.feature_dim, item_tower.feature_dim),
        "catalogue.vector_dim": (described.vector_dim, item_tower.output_dim),
        "uses_ids": (manifest.uses_ids, item_tower.uses_ids),
        "index.settings.prior_slot": (manifest.index.settings.prior_slot, item_tower.bias_slot),
    }
    for field, (said, found) in towers.items():
        if said != found:
            raise ExportError(f"{path}: {MANIFEST} {field} is {said!r}, the towers' is {found!r}")
    if len(items) != described.items:
        raise ExportError(
            f"{path}: catalogue/items.csv has {len(items):,} artworks, "
            f"{MANIFEST} catalogue.items says {described.items:,}"
        )
    expected = (described.items, described.vector_dim)
    if vectors.dtype != np.float32 or vectors.shape != expected:
        raise ExportError(
            f"{path}: catalogue/item_vectors.npy is {vectors.dtype} {vectors.shape}, "
            f"expected float32 {expected}"
        )
    if not np.isfinite(vectors).all():
        raise ExportError(f"{path}: catalogue/item_vectors.npy has non-finite values")
    probe = np.zeros((1, 1, vectors.shape[1]), np.float32)
    if kernel(probe, np.ones((1, 1), bool)).shape != (1, vectors.shape[1]):
        raise ExportError(f"{path}: the user tower's output does not match the item vectors")
    apart = index.prior_rows(vectors).size
    if apart != manifest.index.prior_rows_apart:
        raise ExportError(
            f"{path}: {MANIFEST} index.prior_rows_apart is {manifest.index.prior_rows_apart}, "
            f"the item vectors have {apart}"
        )
    nearest, match_vectors = _load_nearest_purchase(path, manifest, match_read)
    copurchase = _load_copurchase(path, manifest, "item-knn")
    ease = _load_copurchase(path, manifest, "ease")
    items["artist_id"] = items["artist_id"].fillna("").astype(str)
    match_searcher = None
    if match_vectors is not None:
        match_index = replace(index, prior_slot=False)
        match_searcher = _load_searcher(
            path, manifest, MATCH_SEARCHER_DIR, match_index, len(match_vectors)
        )
    return ServingModel(
        path, as_written, item_tower, kernel, items, vectors, purchases, index,
        nearest, match_vectors, searcher, match_searcher, copurchase, ease,
    )  # fmt: skip


def _load_searcher(
    path: Path, manifest: Manifest, directory: str, index: IndexConfig, n_rows: int
) -> ScannSearcher | None:
    """The serialized searcher under `directory`, if the export has one (exports before it
    have none: the service builds it). Its rows must be the catalogue's."""
    if not any(name.startswith(f"{directory}/") for name in manifest.files):
        return None
    try:
        searcher = ScannSearcher.load(path / directory, index)
    except Exception as error:  # ScaNN raises RuntimeError, numpy ValueError/OSError
        raise ExportError(f"{path}: {directory}: cannot load the searcher: {error}") from None
    if searcher.size != n_rows:
        raise ExportError(
            f"{path}: {directory} holds {searcher.size:,} rows, the catalogue {n_rows:,}"
        )
    return searcher


def _load_nearest_purchase(
    path: Path, manifest: Manifest, match_read: Future | None
) -> tuple[NearestPurchase | None, np.ndarray | None]:
    """The nearest-purchase term and match vectors the manifest announces, checked against it
    and the catalogue; (None, None) where it announces none. `match_read`: the match vectors'
    np.load, begun while the files were hashed (None where the manifest lists none)."""
    files = [f"{MODEL_DIR}/{NEAREST_FILE}", MATCH_VECTORS]
    described = manifest.nearest_purchase
    if described is None:
        present = [name for name in files if name in manifest.files]
        if present:
            raise ExportError(f"{path}: {present} present but {MANIFEST} nearest_purchase is null")
        return None, None
    missing = [name for name in files if name not in manifest.files]
    if missing:
        raise ExportError(f"{path}: {MANIFEST} nearest_purchase is set but lacks {missing}")
    try:
        nearest = NearestPurchase.load(path / files[0])
        match_vectors = match_read.result()
    except (OSError, ValueError) as error:
        raise ExportError(f"{path}: bad nearest-purchase term: {error}") from None
    said = (
        described.weight,
        described.mean_weight,
        described.popularity_weight,
        described.copurchase_weight,
        described.freshness_weight,
        described.freshness_days,
        described.era_weight,
        described.era_days,
        described.ease_weight,
        described.dim,
        manifest.catalogue.feature_dim,
    )
    found = (
        nearest.weight,
        nearest.mean_weight,
        nearest.popularity_weight,
        nearest.copurchase_weight,
        nearest.freshness_weight,
        nearest.freshness_days,
        nearest.era_weight,
        nearest.era_days,
        nearest.ease_weight,
        nearest.dim,
        nearest.feature_dim,
    )
    if said != found:
        raise ExportError(
            f"{path}: {MANIFEST} nearest_purchase (weight, mean_weight, popularity_weight, "
            "copurchase_weight, freshness_weight, freshness_days, era_weight, era_days, "
            "ease_weight, dim, "
            f"feature_dim) is {said}, {files[0]} has {found}"
        )
    expected = (manifest.catalogue.items, nearest.dim)
    if match_vectors.dtype != np.float32 or match_vectors.shape != expected:
        raise ExportError(
            f"{path}: {files[1]} is {match_vectors.dtype} {match_vectors.shape}, "
            f"expected float32 {expected}"
        )
    if not np.isfinite(match_vectors).all():
        raise ExportError(f"{path}: {files[1]} has non-finite values")
    return nearest, match_vectors


def _load_copurchase(path: Path, manifest: Manifest, kind: str) -> CoPurchase | None:
    """A co-purchase term's matrix of `kind` ("item-knn" or "ease"), present exactly when the
    manifest gives it a weight above 0."""
    name = f"{MODEL_DIR}/{COPURCHASE_FILES[kind]}"
    described = manifest.nearest_purchase
    weight = COPURCHASE_WEIGHTS[kind]
    wanted = described is not None and getattr(described, weight) > 0
    if not wanted:
        if name in manifest.files:
            raise ExportError(f"{path}: {name} present but {MANIFEST} gives it no weight")
        return None
    if name not in manifest.files:
        raise ExportError(f"{path}: {MANIFEST} gives {weight} above 0 but lacks {name}")
    try:
        return CoPurchase.load(path / name, kind)
    except ValueError as error:
        raise ExportError(f"{path}: bad co-purchase term: {error}") from None
