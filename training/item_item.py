"""Item-to-item weights from co-purchases, shared by the co-purchase term of the towers
(training/copurchase.py) and the item-kNN and EASE baselines
(training/evaluation/learned_baselines.py): the customer x artwork matrix of the purchases a
method may fit on, item-kNN's cosine weights over it, and the indicator matrix that sums a
weight matrix's rows over each profile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp


def profile_indicators(
    profiles: Sequence[np.ndarray], width: int, dtype=np.float64
) -> sp.csr_matrix:
    """[B, width] sparse: row b has 1 at each column of `profiles[b]` (an artwork listed twice
    counts twice), so that `indicators @ W` sums W's rows over each profile."""
    rows = np.concatenate([np.full(len(p), i) for i, p in enumerate(profiles)])
    columns = np.concatenate([np.asarray(p, np.int64) for p in profiles])
    return sp.csr_matrix(
        (np.ones(columns.size, dtype), (rows, columns)), shape=(len(profiles), width)
    )


def interactions(purchases: pd.DataFrame) -> tuple[sp.csr_matrix, np.ndarray]:
    """(X [n_customers, n_fit] binary csr, items [n_fit] sorted catalogue rows bought)."""
    items, columns = np.unique(purchases["item"].to_numpy(dtype=np.int64), return_inverse=True)
    users = pd.factorize(purchases["user_id"])[0]
    matrix = sp.csr_matrix(
        (np.ones(columns.size), (users, columns)), shape=(users.max(initial=-1) + 1, items.size)
    )
    matrix.data[:] = 1.0  # a customer who bought an artwork twice counts once
    return matrix, items


def knn_weights(matrix: sp.csr_matrix, neighbours: int | None) -> sp.csr_matrix:
    """Cosine similarity [n_fit, n_fit] of the columns of binary X = `matrix`, diagonal 0,
    each row keeping its `neighbours` largest entries (ties: the lower column); None keeps all."""
    if neighbours is not None and neighbours < 1:
        raise ValueError(f"neighbours must be at least 1 or None, got {neighbours}")
    counts = np.asarray(matrix.sum(axis=0)).ravel()  # [n_fit] buyers of each artwork
    scale = sp.diags(1.0 / np.sqrt(np.maximum(counts, 1.0)))
    similarity = (scale @ (matrix.T @ matrix) @ scale).tocsr()  # [n_fit, n_fit]
    similarity.setdiag(0.0)
    similarity.eliminate_zeros()
    similarity.sort_indices()
    if neighbours is None:
        return similarity
    keep = np.ones(similarity.nnz, dtype=bool)
    for row in range(similarity.shape[0]):
        start, end = similarity.indptr[row], similarity.indptr[row + 1]
        if end - start > neighbours:
            ranked = np.lexsort((similarity.indices[start:end], -similarity.data[start:end]))
            keep[start + ranked[neighbours:]] = False
    similarity.data[~keep] = 0.0
    similarity.eliminate_zeros()
    return similarity
