"""Learned item-to-item baselines: EASE^R and item-based kNN on co-purchases.

Both are fitted on `training_split(dataset)[0]` (training/evaluation/splits.py: the purchases
every learned method may fit on, never the test) and score a candidate i for a profile as
sum over profile artworks j of W[j, i], for an item-to-item weight matrix W over the artworks
that were bought in those purchases. An artwork that never sold there has no row or column, so
it scores 0 and contributes nothing when it is in a profile: these two cannot recommend
artworks that never sold.

- `ease` (Steck, "Embarrassingly Shallow Autoencoders", WWW 2019): X is the binary
  customer x artwork matrix; G = X^T X + lambda I, P = G^-1, W = -P / diag(P) (column j divided
  by P[j, j]), diag(W) = 0. lambda is chosen from `EASE_LAMBDAS`.
- `item-knn`: W = cosine similarity between the artworks' columns of X, diagonal 0, each row
  keeping its `neighbours` largest entries; `neighbours` is chosen from `KNN_NEIGHBOURS`.

The hyper-parameter is the grid value whose fit has the best R@20 on the validation tests of
`training_split` (the first of equals); `chosen` and `validation` on the result record it.
Without validation tests the default is used and `chosen["validation_r@20"]` is None.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from training.evaluation.interface import QueryBatch, Recommender
from training.evaluation.protocols import Case
from training.evaluation.ranking import rank_cases
from training.evaluation.report import summary_rows
from training.item_item import ease_weights, interactions, knn_weights, profile_indicators

EASE_LAMBDAS = (1.0, 10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 3000.0)
EASE_DEFAULT_LAMBDA = 100.0
KNN_NEIGHBOURS = (10, 50, 200, None)  # None: every co-purchased artwork
KNN_DEFAULT_NEIGHBOURS = None


class ItemToItemRecommender:
    """score(profile, i) = sum over profile artworks j of weights[j, i]; 0 off `items`."""

    def __init__(self, name: str, items: np.ndarray, weights: sp.spmatrix):
        self.name = name
        self.items = items  # [n_fit] sorted catalogue rows that have a row/column
        self.weights = sp.csr_matrix(weights)  # [n_fit, n_fit]
        self.chosen: dict = {}
        self.validation: dict = {}

    def positions(self, rows: np.ndarray) -> np.ndarray:
        """[n] index into `items` of each catalogue row, -1 where it has none."""
        if self.items.size == 0:
            return np.full(rows.size, -1)
        found = np.minimum(np.searchsorted(self.items, rows), self.items.size - 1)
        return np.where(self.items[found] == rows, found, -1)

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        columns = self.positions(candidates)  # [n_candidates]
        scores = np.zeros((len(batch), candidates.size))
        known = columns >= 0
        if not known.any():
            return scores
        fitted = [self.positions(profile) for profile in batch.profiles]
        queries = profile_indicators([f[f >= 0] for f in fitted], self.items.size)
        summed = (queries @ self.weights).toarray()  # [B, n_fit]
        scores[:, known] = summed[:, columns[known]]
        return scores


def validation_recall(recommender: Recommender, cases: Sequence[Case], n_items: int) -> float:
    """Mean R@20 of `recommender` on `cases`, as training/train.py's `validate` scores."""
    ranked = rank_cases(recommender, cases, n_items)
    (row,) = summary_rows("validation", cases, ranked, ["all"])
    return float(row["r@20"])


def choose_on_validation(
    fit: Callable[[Hashable], ItemToItemRecommender],
    grid: Sequence[Hashable],
    default: Hashable,
    key: str,
    cases: Sequence[Case],
    n_items: int,
) -> ItemToItemRecommender:
    """`fit(value)` for each grid value; the best validation R@20 wins (the first of equals).
    Its `chosen` = {key: value, "validation_r@20": r}, `validation` = {value: r} for the grid."""
    if not cases:
        best = fit(default)
        best.chosen = {key: default, "validation_r@20": None}
        return best
    recorded: dict = {}
    best, best_recall = None, -np.inf
    for value in grid:
        candidate = fit(value)
        recorded[value] = validation_recall(candidate, cases, n_items)
        if recorded[value] > best_recall:
            best, best_recall = candidate, recorded[value]
            best.chosen = {key: value, "validation_r@20": best_recall}
    best.validation = recorded
    return best


def fit_ease(
    purchases: pd.DataFrame,
    cases: Sequence[Case],
    n_items: int,
    lambdas: Sequence[float] = EASE_LAMBDAS,
) -> ItemToItemRecommender:
    """EASE^R on `purchases`, lambda chosen on the validation `cases`."""
    matrix, items = interactions(purchases)
    return choose_on_validation(
        lambda l2: ItemToItemRecommender("ease", items, ease_weights(matrix, l2)),
        lambdas,
        EASE_DEFAULT_LAMBDA,
        "lambda",
        cases,
        n_items,
    )


def fit_item_knn(
    purchases: pd.DataFrame,
    cases: Sequence[Case],
    n_items: int,
    neighbours: Sequence[int | None] = KNN_NEIGHBOURS,
) -> ItemToItemRecommender:
    """Item-kNN on `purchases`, the number of neighbours chosen on the validation `cases`."""
    matrix, items = interactions(purchases)
    return choose_on_validation(
        lambda k: ItemToItemRecommender("item-knn", items, knn_weights(matrix, k)),
        neighbours,
        KNN_DEFAULT_NEIGHBOURS,
        "neighbours",
        cases,
        n_items,
    )
