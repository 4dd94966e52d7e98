"""Looking at a trained model: a customer's purchases beside their recommendations, and a 2-D
map of item vectors. The notebooks call these; they hold no logic of their own."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from training.data.dataset import Dataset
from training.data.history import sold_originals
from training.evaluation.interface import QueryBatch
from training.trained_towers import TowerRecommender


def customer_purchases(dataset: Dataset, user_id: str) -> np.ndarray:
    """Catalogue rows the customer bought, oldest first."""
    bought = dataset.purchases[dataset.purchases["user_id"] == user_id]
    rows = bought.sort_values("timestamp", kind="stable")["item"].to_numpy()
    if rows.size == 0:
        raise ValueError(f"customer {user_id!r} bought nothing in {dataset.path}")
    return pd.unique(rows)


def recommend(
    recommender: TowerRecommender, dataset: Dataset, user_id: str, k: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, scores) of the k best artworks for sale that the customer did not buy."""
    profile = customer_purchases(dataset, user_id)
    candidates = np.flatnonzero(~sold_originals(dataset))
    candidates = np.setdiff1d(candidates, profile)
    batch = QueryBatch(np.array([0]), np.array([user_id]), np.array([np.inf]), [profile])
    scores = recommender.score(batch, candidates)[0]
    best = np.argsort(-scores, kind="stable")[:k]
    return candidates[best], scores[best]


def artwork_table(
    dataset: Dataset, rows: np.ndarray, clusters: np.ndarray, scores: np.ndarray | None = None
) -> pd.DataFrame:
    """item_id, artist_id, style cluster (and score) of the given catalogue rows."""
    table = pd.DataFrame(
        {
            "item_id": dataset.item_ids[rows],
            "artist_id": dataset.items["artist_id"].to_numpy()[rows],
            "style cluster": clusters[rows],
        }
    )
    if scores is not None:
        table["score"] = np.round(scores, 4)
    return table


def item_map(vectors: np.ndarray, seed: int = 0) -> np.ndarray:
    """[n, 2] PCA coordinates of item vectors (the bias slot, if any, included)."""
    return PCA(n_components=2, random_state=seed).fit_transform(vectors)
