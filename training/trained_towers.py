"""Trained towers as an evaluation Recommender, and loading a finished run."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf

from towers.item_tower import ItemTower, item_inputs
from towers.user_tower import UserTower
from training.atomic import write_text_atomic
from training.data.dataset import Dataset
from training.evaluation.interface import QueryBatch
from training.nearest_purchase import NearestPurchase, load_if_present, max_similarity

ITEM_CHUNK = 8_192
MODEL_DIR = "model"  # a run's final model: weights and, if calibrated, the nearest-purchase term
MODEL_PREFIX = f"{MODEL_DIR}/towers"  # its final weights (best/towers: the selected epoch's)


def embed_items(
    item_tower: ItemTower, features: np.ndarray, item_ids: np.ndarray, artist_ids: np.ndarray
) -> np.ndarray:
    """Item vectors [n_items, dim] float32, in chunks (features may be memory-mapped)."""
    item_ids, artist_ids = np.asarray(item_ids).astype(str), np.asarray(artist_ids).astype(str)
    chunks = []
    for start in range(0, features.shape[0], ITEM_CHUNK):
        block = tf.constant(np.asarray(features[start : start + ITEM_CHUNK], dtype=np.float32))
        if item_tower.uses_ids:
            chunk = slice(start, start + ITEM_CHUNK)
            block = item_inputs(block, item_ids[chunk], artist_ids[chunk])
        chunks.append(item_tower(block).numpy())
    return np.concatenate(chunks)


def pad_profiles(profiles: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(rows [batch, max_profile] padded with 0, mask [batch, max_profile]) for profiles of
    catalogue rows, each non-empty: the user tower's input, in training, export and serving."""
    profiles = [np.asarray(p, np.int64) for p in profiles]
    width = max(p.size for p in profiles)
    rows = np.zeros((len(profiles), width), dtype=np.int64)
    mask = np.zeros((len(profiles), width), dtype=bool)
    for i, profile in enumerate(profiles):
        rows[i, : profile.size], mask[i, : profile.size] = profile, True
    return rows, mask


class TowerRecommender:
    """Scores with trained towers: item vectors once per catalogue, user vectors per batch;
    plus the run's nearest-purchase term where it has one with a weight above 0."""

    def __init__(
        self,
        name: str,
        item_tower: ItemTower,
        user_tower: UserTower,
        dataset: Dataset,
        nearest: NearestPurchase | None = None,
    ):
        self.name, self.user_tower = name, user_tower
        self.item_vectors = embed_items(
            item_tower, dataset.features, dataset.item_ids, dataset.items["artist_id"]
        )
        self.match_vectors = None
        self.nearest_weight = 0.0
        if nearest is not None:
            self.match_vectors = nearest.vectors(dataset.features)
            self.nearest_weight = nearest.weight

    def with_nearest_weight(self, weight: float) -> TowerRecommender:
        """The same scores with another nearest-purchase weight (the calibration's grid)."""
        if self.match_vectors is None:
            raise ValueError("this recommender has no nearest-purchase term")
        other = copy.copy(self)
        other.nearest_weight = float(weight)
        return other

    def user_vectors(self, profiles: list[np.ndarray]) -> np.ndarray:
        rows, mask = pad_profiles(profiles)
        vectors = self.item_vectors[rows]  # [batch, max_profile, dim]
        return self.user_tower((tf.constant(vectors), tf.constant(mask))).numpy()

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        users = self.user_vectors(batch.profiles)  # [batch, dim]
        scores = users @ self.item_vectors[candidates].T  # [batch, n_candidates]
        if self.nearest_weight > 0:
            scores += self.nearest_weight * max_similarity(
                self.match_vectors, batch.profiles, candidates
            )
        return scores


def save_towers(run_dir: Path, item_tower: ItemTower, user_tower: UserTower, prefix: str) -> None:
    """Tower configs (towers.json, written once) and weights (`prefix` checkpoint)."""
    configs = run_dir / "towers.json"
    if not configs.exists():
        write_text_atomic(
            configs,
            json.dumps(
                {"item_tower": item_tower.get_config(), "user_tower": user_tower.get_config()}
            ),
        )
    tf.train.Checkpoint(item_tower=item_tower, user_tower=user_tower).write(str(run_dir / prefix))


def load_towers(run_dir: Path | str, prefix: str = MODEL_PREFIX) -> tuple[ItemTower, UserTower]:
    """The towers of a run, rebuilt from towers.json and restored from its final weights
    (`prefix`: best/towers for the selected epoch's, before calibration)."""
    run_dir = Path(run_dir)
    for needed in ("towers.json", f"{prefix}.index"):
        if not (run_dir / needed).exists():
            raise ValueError(f"{run_dir} is not a finished training run (no {needed})")
    configs = json.loads((run_dir / "towers.json").read_text())
    item_tower = ItemTower.from_config(configs["item_tower"])
    user_tower = UserTower.from_config(configs["user_tower"])
    features = tf.zeros([1, item_tower.feature_dim])
    if item_tower.uses_ids:
        features = item_inputs(features, [""], [""])
    vectors = item_tower(features)[:, None, :]  # build the variables before restoring them
    user_tower((vectors, tf.ones([1, 1], tf.bool)))
    checkpoint = tf.train.Checkpoint(item_tower=item_tower, user_tower=user_tower)
    checkpoint.read(str(run_dir / prefix)).assert_existing_objects_matched().expect_partial()
    return item_tower, user_tower


def load_run_recommender(run_dir: Path | str, dataset: Dataset) -> TowerRecommender:
    """A finished run's final model: its towers and, if calibrated, its nearest-purchase term."""
    item_tower, user_tower = load_towers(run_dir)
    nearest = load_if_present(Path(run_dir) / MODEL_DIR)
    return TowerRecommender(Path(run_dir).name, item_tower, user_tower, dataset, nearest)
