"""Trained towers as an evaluation Recommender, and loading a finished run."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf

from towers.item_tower import ItemTower, item_inputs
from towers.user_tower import UserTower
from training.atomic import write_text_atomic
from training.copurchase import CoPurchase, profile_scores
from training.copurchase import load_if_present as load_copurchase
from training.data.dataset import Dataset
from training.evaluation.baselines import PopularRecommender
from training.evaluation.interface import QueryBatch
from training.nearest_purchase import (
    NearestPurchase,
    TermWeights,
    era_closeness,
    freshness,
    load_if_present,
    max_similarity,
    mean_similarity,
    sales_bonus,
    upload_days,
)
from training.run_files import read_json

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


class SalesSoFar(Protocol):
    """Purchases of each candidate strictly before each query's time (the `popular` baseline)."""

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray: ...


class TowerRecommender:
    """Scores with trained towers: item vectors once per catalogue, user vectors per batch;
    plus the run's profile terms (training/nearest_purchase.py) where their weights are above 0.
    The popularity term needs `sales`, each candidate's purchases before the query."""

    def __init__(
        self,
        name: str,
        item_tower: ItemTower,
        user_tower: UserTower,
        dataset: Dataset,
        nearest: NearestPurchase | None = None,
        sales: SalesSoFar | None = None,
        copurchase: CoPurchase | None = None,
        ease: CoPurchase | None = None,
    ):
        self.name, self.user_tower, self.sales = name, user_tower, sales
        # item-kNN's and EASE's W over the dataset's rows (training/copurchase.py)
        self.copurchase = None if copurchase is None else copurchase.on_catalogue(dataset.item_ids)
        self.ease = None if ease is None else ease.on_catalogue(dataset.item_ids)
        self.item_vectors = embed_items(
            item_tower, dataset.features, dataset.item_ids, dataset.items["artist_id"]
        )
        self.upload_times = dataset.items["upload_time"].to_numpy(np.float64)
        self.upload_days = upload_days(self.upload_times)  # the era term's days
        self.match_vectors = None
        self.weights = TermWeights()
        if nearest is not None:
            self.match_vectors = nearest.vectors(dataset.features)
            self.weights = nearest.weights
        if self.weights.popularity > 0 and sales is None:
            raise ValueError(f"{name}: a popularity weight needs the sales log")
        if self.weights.copurchase > 0 and copurchase is None:
            raise ValueError(f"{name}: a co-purchase weight needs the co-purchase matrix")
        if self.weights.ease > 0 and ease is None:
            raise ValueError(f"{name}: an EASE weight needs EASE's matrix")

    def with_weights(self, weights: TermWeights) -> TowerRecommender:
        """The same scores with other term weights (the calibration's grid)."""
        if self.match_vectors is None and weights.uses_profile:
            raise ValueError("this recommender has no match vectors")
        if self.sales is None and weights.popularity > 0:
            raise ValueError("this recommender has no sales log")
        if self.copurchase is None and weights.copurchase > 0:
            raise ValueError("this recommender has no co-purchase matrix")
        if self.ease is None and weights.ease > 0:
            raise ValueError("this recommender has no EASE matrix")
        other = copy.copy(self)
        other.weights = weights
        return other

    def user_vectors(self, profiles: list[np.ndarray]) -> np.ndarray:
        rows, mask = pad_profiles(profiles)
        vectors = self.item_vectors[rows]  # [batch, max_profile, dim]
        return self.user_tower((tf.constant(vectors), tf.constant(mask))).numpy()

    def components(
        self, batch: QueryBatch, candidates: np.ndarray, weights: TermWeights | None = None
    ) -> dict[str, np.ndarray]:
        """[B, n_candidates] each: "towers", and the terms that `weights` (default: this
        recommender's) use: "nearest", "mean", "popularity", "copurchase", "ease", "freshness",
        "era" (unweighted; freshness at each query's time)."""
        weights = weights or self.weights
        users = self.user_vectors(batch.profiles)  # [batch, dim]
        parts = {"towers": users @ self.item_vectors[candidates].T}
        if weights.nearest > 0:
            parts["nearest"] = max_similarity(self.match_vectors, batch.profiles, candidates)
        if weights.mean > 0:
            parts["mean"] = mean_similarity(self.match_vectors, batch.profiles, candidates)
        if weights.popularity > 0:
            parts["popularity"] = sales_bonus(self.sales.score(batch, candidates))
        if weights.copurchase > 0:
            scores = profile_scores(self.copurchase, batch.profiles)
            parts["copurchase"] = scores[:, candidates].toarray()
        if weights.ease > 0:
            parts["ease"] = profile_scores(self.ease, batch.profiles)[:, candidates].toarray()
        if weights.freshness > 0:
            ages = np.asarray(batch.times, np.float64)[:, None] - self.upload_times[candidates]
            parts["freshness"] = freshness(ages, weights.freshness_days)
        if weights.era > 0:
            bought = [self.upload_days[profile] for profile in batch.profiles]
            parts["era"] = era_closeness(self.upload_days[candidates], bought, weights.era_days)
        return parts

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        return combine(self.components(batch, candidates), self.weights)


# TermWeights' fields, in the order they are added
TERMS = ("nearest", "mean", "popularity", "copurchase", "ease", "freshness", "era")


def combine(parts: dict[str, np.ndarray], weights: TermWeights) -> np.ndarray:
    """The towers' scores plus each term times its weight (`components`' parts)."""
    return combine_grid(parts, [weights])[0]


def combine_grid(parts: dict[str, np.ndarray], grid: Sequence[TermWeights]) -> np.ndarray:
    """[len(grid), *towers' shape]: the towers' scores plus each term times its weight, for every
    weighting of `grid` at once (the calibration's grid; `combine` is one row). A weighting's row
    does not depend on the others: a float32 term is multiplied by float32 weights, and a
    weight of 0 adds a zero product, which changes nothing."""
    towers = parts["towers"]
    scores = np.repeat(towers[None], len(grid), axis=0)
    for name in TERMS:
        weights = np.array([getattr(w, name) for w in grid])
        if not weights.any():
            continue
        term = parts[name]
        weights = weights.astype(term.dtype if term.dtype == np.float32 else np.float64)
        scores += weights.reshape(-1, *([1] * term.ndim)) * term[None]
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
    configs = read_json(run_dir / "towers.json", keys=("item_tower", "user_tower"))
    try:
        item_tower = ItemTower.from_config(configs["item_tower"])
        user_tower = UserTower.from_config(configs["user_tower"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{run_dir / 'towers.json'}: not the towers' configs ({error})") from None
    features = tf.zeros([1, item_tower.feature_dim])
    if item_tower.uses_ids:
        features = item_inputs(features, [""], [""])
    vectors = item_tower(features)[:, None, :]  # build the variables before restoring them
    user_tower((vectors, tf.ones([1, 1], tf.bool)))
    checkpoint = tf.train.Checkpoint(item_tower=item_tower, user_tower=user_tower)
    try:
        checkpoint.read(str(run_dir / prefix)).assert_existing_objects_matched().expect_partial()
    except (tf.errors.OpError, AssertionError, IndexError, ValueError) as error:
        # a truncated or missing weights file: TensorFlow's message runs to many lines
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ValueError(
            f"{run_dir / prefix}: the towers' weights cannot be read ({first_line})"
        ) from None
    return item_tower, user_tower


def check_feature_dim(run_dir: Path | str, item_tower: ItemTower, dataset: Dataset) -> None:
    """ValueError unless `dataset`'s features are of the dimension the run was trained on."""
    trained, given = item_tower.feature_dim, dataset.features.shape[1]
    if trained != given:
        if dataset.path is not None:
            features = Path(dataset.path) / "features.npy"
        else:
            features = f"features.npy of {dataset.source or 'the dataset'}"
        raise ValueError(f"{run_dir} was trained on {trained}-d features; {features} has {given}-d")


def load_run_recommender(run_dir: Path | str, dataset: Dataset) -> TowerRecommender:
    """A finished run's final model: its towers and, if calibrated, its profile terms (the
    popularity term counts `dataset`'s purchases before each query, as `popular` does; the
    co-purchase matrices are the run's, fitted on its training split)."""
    item_tower, user_tower = load_towers(run_dir)
    check_feature_dim(run_dir, item_tower, dataset)
    nearest = load_if_present(Path(run_dir) / MODEL_DIR)
    copurchase = load_copurchase(Path(run_dir) / MODEL_DIR)
    ease = load_copurchase(Path(run_dir) / MODEL_DIR, "ease")
    sales = PopularRecommender.from_dataset(dataset)
    name = Path(run_dir).name
    return TowerRecommender(name, item_tower, user_tower, dataset, nearest, sales, copurchase, ease)
