"""The paper's baselines, the two ceilings, and the learned baselines (EASE^R, item-kNN, VBPR:
training/evaluation/learned_baselines.py and vbpr.py) as Recommenders."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from training.data.dataset import Dataset, SimulatorTruth
from training.data.features import unit_rows, zscore
from training.evaluation.interface import QueryBatch
from training.evaluation.learned_baselines import fit_ease, fit_item_knn
from training.evaluation.protocols import Case
from training.evaluation.splits import training_split
from training.evaluation.vbpr import VBPRConfig, fit_vbpr
from training.nearest_purchase import max_similarity

BASELINES = (
    "oracle",
    "ideal",
    "ease",
    "item-knn",
    "vbpr",
    "visrank-mean",
    "visrank-max",
    "popular",
    "newest",
    "random",
)


class RandomRecommender:
    """Uniform random scores, seeded per query: the same test gets the same ranking."""

    def __init__(self, seed: int = 0, name: str = "random"):
        self.name, self.seed = name, seed

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                np.random.default_rng([self.seed, int(q)]).random(candidates.size)
                for q in batch.query_ids
            ]
        )


class PopularRecommender:
    """Number of purchases of each item strictly before the query's time (no look ahead)."""

    def __init__(self, items: np.ndarray, times: np.ndarray, n_items: int, name: str = "popular"):
        order = np.argsort(times, kind="stable")
        self.name, self.n_items = name, n_items
        self.items, self.times = items[order], times[order]

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> PopularRecommender:
        return cls.from_purchases(dataset.purchases, dataset.n_items)

    @classmethod
    def from_purchases(cls, purchases, n_items: int) -> PopularRecommender:
        """From a purchase log (columns "item", catalogue rows, and "timestamp")."""
        times = purchases["timestamp"].to_numpy(dtype=np.float64)
        times = np.where(np.isfinite(times), times, -np.inf)  # untimed: before every query
        return cls(purchases["item"].to_numpy(), times, n_items)

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        scores = np.empty((len(batch), candidates.size))
        for row, time in enumerate(batch.times):
            seen = int(np.searchsorted(self.times, time, side="left"))
            scores[row] = np.bincount(self.items[:seen], minlength=self.n_items)[candidates]
        return scores


class NewestRecommender:
    """The most recently uploaded artworks first: the gallery's "new arrivals" page, the
    baseline for the freshness term (training/nearest_purchase.py)."""

    name = "newest"

    def __init__(self, upload_times: np.ndarray):
        self.upload_times = np.asarray(upload_times, np.float64)

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        return np.repeat(self.upload_times[candidates][None], len(batch), axis=0)


class VisRank:
    """Cosine similarity of each candidate to the profile's artworks on z-scored features,
    pooled by mean (one vector per profile) or max (best-matching profile artwork)."""

    def __init__(self, features: np.ndarray, pooling: str = "mean"):
        if pooling not in ("mean", "max"):
            raise ValueError(f"pooling must be 'mean' or 'max', got {pooling!r}")
        self.name, self.pooling = f"visrank-{pooling}", pooling
        self.vectors = unit_rows(zscore(features))  # [n_items, d]

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        if self.pooling == "mean":
            profile_means = np.stack([self.vectors[p].mean(axis=0) for p in batch.profiles])
            return profile_means @ self.vectors[candidates].T  # [B, n_candidates]
        # Profiles of one batch overlap (a customer's profile recurs, growing, in consecutive
        # tests): max_similarity scores each distinct profile artwork once.
        return max_similarity(self.vectors, batch.profiles, candidates)


class OracleRecommender:
    """Knows each test's ground truth: the ceiling of every metric."""

    name = "oracle"

    def __init__(self, cases: Sequence[Case]):
        self.truth = {case.query_id: case.ground_truth for case in cases}

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        return np.stack([np.isin(candidates, self.truth[int(q)]) for q in batch.query_ids]) * 1.0


class IdealRecommender:
    """The marketplace simulator's true preference: the best any model can hope to learn."""

    name = "ideal"

    def __init__(self, truth: SimulatorTruth):
        self.truth = truth
        self.user_row = {user: row for row, user in enumerate(truth.user_ids)}

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        users = [self.user_row[str(user)] for user in batch.user_ids]
        user_vectors = self.truth.user_vectors[users]  # [B, r]
        item_vectors = self.truth.item_vectors[candidates]  # [n_candidates, r]
        return user_vectors @ item_vectors.T + self.truth.item_bias[candidates]


def default_baselines(dataset: Dataset) -> list[str]:
    """Every baseline that can run: `ideal` needs the simulator's truth, `newest` artworks with
    different upload times (without, it would be `random`)."""
    uploads = dataset.items["upload_time"].to_numpy()
    runs = {"ideal": dataset.truth is not None, "newest": uploads.size > 0 and np.ptp(uploads) > 0}
    return [name for name in BASELINES if runs.get(name, True)]


def build_baselines(names: Sequence[str], dataset: Dataset, cases: Sequence[Case], seed: int = 0):
    """Recommenders for `names` (see BASELINES), in that order. The learned ones are fitted
    here, on `training_split(dataset)` (computed once)."""
    unknown = [name for name in names if name not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINES)}")
    if "ideal" in names and dataset.truth is None:
        raise ValueError("the ideal baseline needs the simulator's truth.npz (marketplace only)")

    @cache
    def split():
        return training_split(dataset)  # (fit purchases, validation cases)

    makers = {
        "oracle": lambda: OracleRecommender(cases),
        "ideal": lambda: IdealRecommender(dataset.truth),
        "ease": lambda: fit_ease(*split(), dataset.n_items),
        "item-knn": lambda: fit_item_knn(*split(), dataset.n_items),
        "vbpr": lambda: fit_vbpr(dataset.features, *split(), VBPRConfig(seed=seed)),
        "visrank-mean": lambda: VisRank(dataset.features, "mean"),
        "visrank-max": lambda: VisRank(dataset.features, "max"),
        "popular": lambda: PopularRecommender.from_dataset(dataset),
        "newest": lambda: NewestRecommender(dataset.items["upload_time"].to_numpy()),
        "random": lambda: RandomRecommender(seed),
    }
    return [makers[name]() for name in names]
