"""Item-to-item weights from co-purchases, shared by the co-purchase terms of the towers
(training/copurchase.py) and the item-kNN and EASE baselines
(training/evaluation/learned_baselines.py): the customer x artwork matrix of the purchases a
method may fit on, item-kNN's cosine weights and EASE^R's weights over it, each row's strongest
entries, and the indicator matrix that sums a weight matrix's rows over each profile.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components


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
    return keep_strongest(similarity, neighbours)


def keep_strongest(
    matrix: sp.csr_matrix, per_row: int, by_magnitude: bool = False
) -> sp.csr_matrix:
    """`matrix` with each row keeping its `per_row` largest entries (`by_magnitude`: largest
    |w|, so that a strong negative weight stays; ties: the lower column), the rest dropped."""
    if per_row < 1:
        raise ValueError(f"per_row must be at least 1, got {per_row}")
    matrix = sp.csr_matrix(matrix, copy=True)
    matrix.sum_duplicates()
    matrix.sort_indices()
    keep = np.ones(matrix.nnz, dtype=bool)
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        if end - start > per_row:
            values = matrix.data[start:end]
            strength = np.abs(values) if by_magnitude else values
            ranked = np.lexsort((matrix.indices[start:end], -strength))
            keep[start + ranked[per_row:]] = False
    matrix.data[~keep] = 0.0
    matrix.eliminate_zeros()
    return matrix


# The largest block of G that EASE inverts: a dense [m, m] float64 inverse and its weights in
# COO form take about 44 m^2 bytes at the peak (4.4 GB at 10,000; benchmarks/bench_ease_fit.py)
EASE_MAX_BLOCK = 10_000


def ease_weights(
    matrix: sp.csr_matrix, l2: float, max_block: int = EASE_MAX_BLOCK
) -> sp.csr_matrix:
    """EASE^R's W [n_fit, n_fit] for X = `matrix` [n_customers, n_fit] (Steck, "Embarrassingly
    Shallow Autoencoders", WWW 2019): G = X^T X + lambda I, P = G^-1, W = -P / diag(P) (column
    j divided by P[j, j]), diag(W) = 0.

    G is block diagonal over the connected components of the co-purchase graph, so each block
    is inverted alone (exact, and fast when the graph is fragmented, as real stores' are); an
    artwork co-purchased with nothing has a zero row and column in W. A component of more than
    `max_block` artworks keeps its `max_block` most bought (ties: the lower column), EASE over
    them alone, and the rest of it get zero rows and columns, so memory stays bounded.
    """
    if l2 <= 0:
        raise ValueError(f"lambda must be positive, got {l2}")
    if max_block < 2:
        raise ValueError(f"max_block must be at least 2, got {max_block}")
    gram = (matrix.T @ matrix).tocsr()  # [n_fit, n_fit] co-purchase counts
    n = gram.shape[0]
    buyers = gram.diagonal()  # [n_fit] (X is binary)
    index_type = np.int32 if n < 2**31 else np.int64
    _, labels = connected_components(gram, directed=False)
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(labels))])
    rows, columns, values = [], [], []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        if end - start < 2:
            continue
        members = order[start:end]  # [m] one component's artworks, ascending
        if members.size > max_block:
            most_bought = np.lexsort((members, -buyers[members]))[:max_block]
            members = np.sort(members[most_bought])
        inverse = gram[members][:, members].toarray()  # [m, m]
        inverse[np.diag_indices_from(inverse)] += l2
        inverse = np.linalg.inv(inverse)
        inverse /= -np.diag(inverse)[None, :]  # W: column j divided by -P[j, j]
        np.fill_diagonal(inverse, 0.0)
        members = members.astype(index_type)
        rows.append(np.repeat(members, members.size))
        columns.append(np.tile(members, members.size))
        values.append(inverse.ravel())
        del inverse
    if not values:
        return sp.csr_matrix((n, n))
    return sp.csr_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(columns))), shape=(n, n)
    )
