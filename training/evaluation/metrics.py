"""Ranking metrics, each defined once, as functions of where the ground truth landed.

`ranks` are the 0-based positions of a test's ground-truth items in the ranking of its
candidates (0 = ranked first); `n_candidates` is the number of candidates ranked.
"""

from __future__ import annotations

import numpy as np

KS = (10, 20, 50, 100)


def auc(ranks: np.ndarray, n_candidates: int) -> float:
    """For each ground-truth item, the share of non-ground-truth candidates ranked below it;
    averaged over the ground-truth items (the paper's AUC)."""
    ranks = np.sort(np.asarray(ranks))
    n_relevant = ranks.size
    n_negative = n_candidates - n_relevant
    if n_relevant == 0 or n_negative == 0:
        return float("nan")
    below = n_candidates - 1 - ranks  # candidates ranked below each ground-truth item
    relevant_below = n_relevant - 1 - np.arange(n_relevant)  # ground truth among those
    return float(np.mean((below - relevant_below) / n_negative))


def hits_at_k(ranks: np.ndarray, k: int) -> int:
    return int(np.count_nonzero(np.asarray(ranks) < k))


def precision_at_k(ranks: np.ndarray, k: int) -> float:
    return hits_at_k(ranks, k) / k


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks)
    return hits_at_k(ranks, k) / ranks.size if ranks.size else float("nan")


def _dcg(ranks: np.ndarray, k: int) -> float:
    top = np.asarray(ranks)[np.asarray(ranks) < k]
    return float(np.sum(1.0 / np.log2(top + 2.0)))


def _ideal_dcg(n_relevant: int, k: int) -> float:
    return float(np.sum(1.0 / np.log2(np.arange(min(n_relevant, k)) + 2.0)))


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Standard nDCG@k: DCG over the ideal DCG of min(|ground truth|, k) hits."""
    ranks = np.asarray(ranks)
    if ranks.size == 0:
        return float("nan")
    return _dcg(ranks, k) / _ideal_dcg(ranks.size, k)


def ndcg_hits_at_k(ranks: np.ndarray, k: int) -> float:
    """The CuratorNet reference code's variant: DCG over the ideal DCG of the number of hits
    in the top k (so any ranking whose hits all sit first scores 1; no hits score 0)."""
    hits = hits_at_k(ranks, k)
    return _dcg(ranks, k) / _ideal_dcg(hits, k) if hits else 0.0


def restrict_ranks(
    ranks: np.ndarray, n_candidates: int, keep: np.ndarray
) -> tuple[np.ndarray, int]:
    """Ranks of the ground truth `keep` selects once the rest of the ground truth is removed
    from the candidates: each kept rank drops by the number of removed items ranked above it,
    exactly as re-ranking the remaining candidates would give.

    ranks, keep: [n_truth]; returns (ranks [n_kept], n_candidates - n_removed).
    """
    ranks, keep = np.asarray(ranks), np.asarray(keep, dtype=bool)
    removed = np.sort(ranks[~keep])  # [n_removed]
    kept = ranks[keep]  # [n_kept]
    return kept - np.searchsorted(removed, kept), n_candidates - removed.size


def case_metrics(ranks: np.ndarray, n_candidates: int, ks=KS) -> dict[str, float]:
    """Every metric of one test, keyed as in metrics.json (`auc`, `p@20`, `ndcg_hits@100`...)."""
    values = {"auc": auc(ranks, n_candidates)}
    for k in ks:
        values[f"r@{k}"] = recall_at_k(ranks, k)
        values[f"p@{k}"] = precision_at_k(ranks, k)
        values[f"ndcg@{k}"] = ndcg_at_k(ranks, k)
        values[f"ndcg_hits@{k}"] = ndcg_hits_at_k(ranks, k)
    return values
