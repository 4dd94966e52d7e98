"""Turn a Recommender's scores into per-test ranks of the ground truth.

Tests are scored in batches of consecutive tests against the union of their candidates (replay
inventories of neighbouring tests are nearly the same, so the union is barely larger), then each
test keeps its own candidates. Ties are broken by a random order seeded per test, the same for
every method, so a constant score ranks like a random one rather than by catalogue order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from training.evaluation.interface import QueryBatch, Recommender
from training.evaluation.protocols import Case

TOP_N = 100


@dataclass(frozen=True)
class RankedCase:
    ranks: np.ndarray  # [n_truth] 0-based positions of the ground truth
    n_candidates: int
    top: np.ndarray  # [min(TOP_N, n_candidates)] catalogue rows ranked first


def rank_one(
    scores: np.ndarray, candidates: np.ndarray, truth_positions: np.ndarray, tiebreak: np.ndarray
) -> RankedCase:
    """Rank `candidates` by (score descending, tiebreak ascending).

    scores, tiebreak: [n_candidates]; truth_positions: [n_truth] indices into candidates.
    """
    truth_scores = scores[truth_positions][:, None]  # [n_truth, 1]
    truth_ties = tiebreak[truth_positions][:, None]
    ranks = np.count_nonzero(scores[None, :] > truth_scores, axis=1) + np.count_nonzero(
        (scores[None, :] == truth_scores) & (tiebreak[None, :] < truth_ties), axis=1
    )
    n_top = min(TOP_N, scores.size)
    threshold = np.partition(scores, scores.size - n_top)[scores.size - n_top]
    pool = np.flatnonzero(scores >= threshold)  # the top n_top and everything tied with them
    order = pool[np.lexsort((tiebreak[pool], -scores[pool]))][:n_top]
    return RankedCase(ranks.astype(np.int64), int(scores.size), candidates[order])


def rank_cases(
    recommender: Recommender,
    cases: Sequence[Case],
    n_items: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
) -> list[RankedCase]:
    results: list[RankedCase] = []
    for start in range(0, len(cases), batch_size):
        batch_cases = cases[start : start + batch_size]
        candidate_lists = [case.candidates(n_items) for case in batch_cases]
        union = np.unique(np.concatenate(candidate_lists))
        batch = QueryBatch(
            query_ids=np.array([case.query_id for case in batch_cases]),
            user_ids=np.array([case.user_id for case in batch_cases]),
            times=np.array([case.time for case in batch_cases]),
            profiles=[case.profile for case in batch_cases],
        )
        scores = np.asarray(recommender.score(batch, union), dtype=np.float64)
        if scores.shape != (len(batch_cases), union.size):
            raise ValueError(
                f"{recommender.name}: score() returned shape {scores.shape}, "
                f"expected {(len(batch_cases), union.size)}"
            )
        if not np.isfinite(scores).all():
            raise ValueError(f"{recommender.name}: score() returned NaN or inf")
        for case, candidates, row in zip(batch_cases, candidate_lists, scores, strict=True):
            tiebreak = np.random.default_rng([seed, case.query_id]).random(candidates.size)
            results.append(
                rank_one(
                    row[np.searchsorted(union, candidates)],
                    candidates,
                    np.searchsorted(candidates, case.ground_truth),
                    tiebreak,
                )
            )
    return results
