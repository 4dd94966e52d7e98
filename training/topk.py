"""Top k by score in numpy: the one exact top-k and the one merge that training and serving share.

Every function here returns the k highest *finite* scores, best first; NaN and +-inf are dropped
(the service marks sold or excluded artworks with -inf), so fewer than k come back when fewer are
finite. Equal scores are ordered by the lower row first, also at the k-th place: of three rows
tied for the last two places, the two lowest are kept. The result is therefore a function of the
scores alone, the same whichever index found them and in whatever order.

(`training/index.py`'s `PriorSplitTopK` merges in TensorFlow: it is a Keras layer inside the
exported SavedModel, so it cannot call numpy.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

QUERY_CHUNK = 256  # queries scored at once by `exact_top_k`: [256, n] float32 at a time


def top_k(
    scores: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows [m], scores [m]) of the k highest finite `scores` [n], best first, m = min(k,
    number finite). `rows` [n] (distinct) names each score's row, and breaks ties (lower first);
    by default a score's row is its position. O(n), plus O(k log k) to order the k."""
    scores = np.asarray(scores)
    if scores.ndim != 1:
        raise ValueError(f"top_k: scores must be 1-d, got shape {scores.shape}")
    if rows is None:
        rows = np.arange(scores.size)
    else:
        rows = np.asarray(rows)
        if rows.shape != scores.shape:
            raise ValueError(f"top_k: rows {rows.shape} and scores {scores.shape} differ")
    n = scores.size
    if k <= 0 or n == 0:
        return rows[:0], scores[:0]
    top = scores.max()
    if np.isnan(top) or top == np.inf:  # else -inf (sold, excluded) partitions as it is
        work = np.where(np.isfinite(scores), scores, -np.inf)
    else:
        work = scores
    if k < n:
        # positions n-k-1 and n-k in place: the best score left out and the k-th best
        part = np.argpartition(work, (n - k - 1, n - k))
        chosen, threshold = part[n - k :], work[part[n - k]]
        if threshold == -np.inf:  # fewer than k finite: all of them are among the chosen
            chosen = chosen[work[chosen] > -np.inf]
        elif work[part[n - k - 1]] == threshold:
            # argpartition kept some of the rows tied at the k-th score: keep the lowest
            above = chosen[work[chosen] > threshold]
            tied = np.flatnonzero(work == threshold)
            tied = tied[np.argsort(rows[tied], kind="stable")[: k - above.size]]
            chosen = np.concatenate([above, tied])
    else:
        chosen = np.flatnonzero(work > -np.inf)
    order = np.lexsort((rows[chosen], -work[chosen]))
    chosen = chosen[order]
    return rows[chosen], scores[chosen]


GROUPS = 32  # top_k_rows first reads the maximum of each of n // 32 groups of 32 scores


def top_k_rows(scores: np.ndarray, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`top_k` of every row of `scores` [b, n] (positions as rows), for the service's batches.

    A full partition of each row costs about 100 us at 13k scores. Instead: split a row into
    groups of GROUPS scores (positions j, j + m, j + 2m, ...: the maximum over them is one
    elementwise pass); the k-th highest group maximum is at most the row's k-th best score (k
    groups hold k distinct scores at least that high), so the scores at or above it are a
    superset of the top k, ties at the k-th place included, and barely more than k of them
    (163 for k=20 of 13k random scores). The candidates of the whole batch are ordered by one
    sort (row, then score descending, then position), and each row keeps its first k. A row
    where they hold fewer than k finite scores (NaN or +inf among the maxima, a row mostly
    -inf) goes through `top_k` whole, as do short rows."""
    scores = np.asarray(scores)
    b, n = scores.shape
    k = min(k, n)
    m = n // GROUPS  # groups
    if k <= 0 or m < 4 * k:
        return [top_k(row, k) for row in scores]
    maxima = scores[:, : m * GROUPS].reshape(b, GROUPS, m).max(axis=1)  # [b, m]
    thresholds = np.partition(maxima, m - k, axis=1)[:, m - k]
    with np.errstate(invalid="ignore"):
        flat = np.flatnonzero(scores >= thresholds[:, None])
    query, position = np.divmod(flat, n)
    found = scores[query, position]
    finite = np.isfinite(found)
    query, position, found = query[finite], position[finite], found[finite]
    order = np.lexsort((position, -found, query))
    query, position, found = query[order], position[order], found[order]
    starts = np.searchsorted(query, np.arange(b + 1))
    results = []
    for i, row in enumerate(scores):
        start, stop = starts[i], starts[i + 1]
        if stop - start < k:
            results.append(top_k(row, k))
        else:
            results.append((position[start : start + k], found[start : start + k]))
    return results


def merge_top_k(
    parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The top k of several searches over disjoint rows, each `(rows, scores)` in any order:
    (rows, scores), best first, as `top_k` orders them (finite only, ties: lower row first)."""
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    rows = np.concatenate([np.asarray(r, np.int64) for r, _ in parts])
    scores = np.concatenate([np.asarray(s) for _, s in parts])
    return top_k(scores, k, rows)


def exact_top_k(queries: np.ndarray, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute force by dot product: (scores [q, k], rows [q, k]), best first, each row as
    `top_k` orders it, k = min(k, n). Every query must have at least k finite scores (else
    ValueError: the result would be ragged; use `top_k` per query for that)."""
    queries, vectors = np.asarray(queries), np.asarray(vectors)
    k = min(k, vectors.shape[0])
    out_scores = np.zeros((queries.shape[0], k), np.result_type(queries, vectors))
    out_rows = np.zeros((queries.shape[0], k), np.int64)
    for start in range(0, queries.shape[0], QUERY_CHUNK):
        block = queries[start : start + QUERY_CHUNK] @ vectors.T  # [chunk, n]
        for i, row_scores in enumerate(block):
            rows, scores = top_k(row_scores, k)
            if rows.size < k:
                raise ValueError(
                    f"exact_top_k: query {start + i} has {rows.size} finite scores, fewer than "
                    f"k={k}"
                )
            out_rows[start + i], out_scores[start + i] = rows, scores
    return out_scores, out_rows


def crowd(groups: np.ndarray, k: int, per_group: int) -> np.ndarray:
    """Positions of the first k of `groups` [n] (candidates best first) taking at most
    `per_group` of each group; a negative group (no artist) is never limited. Greedy, so the
    answer is the best list that keeps the limit: a candidate is passed over only when its
    group is full."""
    taken: dict[int, int] = {}
    chosen = []
    for position, group in enumerate(groups.tolist()):
        if group >= 0:
            count = taken.get(group, 0)
            if count >= per_group:
                continue
            taken[group] = count + 1
        chosen.append(position)
        if len(chosen) == k:
            break
    return np.asarray(chosen, np.int64)
