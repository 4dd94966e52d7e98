"""One export version, loaded for serving: the towers, the catalogue and its purchase log.

The item tower (Keras, TensorFlow) embeds artworks added live, in batches. The user tower runs
on the request path as a numpy kernel (`serving/user_kernel.py`). Catalogue vectors come from
the export's `item_vectors.npy`, exactly what `curator evaluate` scores with.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from serving.user_kernel import NumpyUserTower
from towers.item_tower import ItemTower
from training.config import TrainConfig
from training.data.columns import DatasetError
from training.data.dataset import load_items_table, load_purchases_table
from training.export import FORMAT_VERSION, MANIFEST, export_versions, index_config
from training.index import IndexConfig
from training.recommender import embed_items, load_towers


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

    @property
    def version(self) -> int:
        return int(self.manifest["version"])

    @property
    def feature_dim(self) -> int:
        return self.item_tower.feature_dim

    def embed(self, features: np.ndarray, item_ids, artist_ids) -> np.ndarray:
        return embed_items(self.item_tower, features, item_ids, artist_ids)


def newest_version(root: Path) -> Path:
    versions = export_versions(root)
    if not versions:
        raise ExportError(f"{root}: no export found (run `curator export`)")
    return Path(root) / str(versions[-1])


def load_serving_model(path: Path | str) -> ServingModel:
    """Loads and checks one export version directory; ExportError says what is wrong."""
    path = Path(path)
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
        item_tower, user_tower = load_towers(path)
        kernel = NumpyUserTower(user_tower)
    except Exception as error:  # a missing or damaged checkpoint surfaces as many error types
        raise ExportError(f"{path}: cannot load the towers: {error}") from None
    catalogue = path / "catalogue"
    try:
        items = load_items_table(catalogue / "items.csv")
        purchases = load_purchases_table(catalogue / "purchases.csv", pd.Index(items["item_id"]))
        vectors = np.load(catalogue / "item_vectors.npy", allow_pickle=False)
    except (OSError, ValueError, DatasetError) as error:
        raise ExportError(f"{path}: bad catalogue: {error}") from None
    expected = (len(items), manifest.get("catalogue", {}).get("vector_dim"))
    if vectors.dtype != np.float32 or vectors.shape != expected:
        raise ExportError(
            f"{path}: catalogue/item_vectors.npy is {vectors.dtype} {vectors.shape}, "
            f"expected float32 {expected}"
        )
    if not np.isfinite(vectors).all():
        raise ExportError(f"{path}: catalogue/item_vectors.npy has non-finite values")
    probe = np.zeros((1, 1, vectors.shape[1]), np.float32)
    if kernel(probe, np.ones((1, 1), bool)).shape[1] != vectors.shape[1]:
        raise ExportError(f"{path}: the user tower's output does not match the item vectors")
    try:
        index = index_config(TrainConfig(**manifest["config"]))
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(f"{path}: bad config in {MANIFEST}: {error}") from None
    items["artist_id"] = items["artist_id"].fillna("").astype(str)
    return ServingModel(path, manifest, item_tower, kernel, items, vectors, purchases, index)
