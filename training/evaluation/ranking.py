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
    ranks = truth_ranks(scores, truth_positions, tiebreak)
    n_top = min(TOP_N, scores.size)
    threshold = np.partition(scores, scores.size - n_top)[scores.size - n_top]
    pool = np.flatnonzero(scores >= threshold)  # the top n_top and everything tied with them
    order = pool[np.lexsort((tiebreak[pool], -scores[pool]))][:n_top]
    return RankedCase(ranks, int(scores.size), candidates[order])


def truth_ranks(
    scores: np.ndarray, truth_positions: np.ndarray, tiebreak: np.ndarray
) -> np.ndarray:
    """[..., n_truth] 0-based ranks of the ground truth among `scores` [..., n_candidates] (ties:
    `tiebreak` [n_candidates] ascending); leading axes are independent rankings."""
    truth_scores = scores[..., truth_positions][..., :, None]  # [..., n_truth, 1]
    truth_ties = tiebreak[truth_positions][:, None]  # [n_truth, 1]
    every = scores[..., None, :]  # [..., 1, n_candidates]
    ranks = np.count_nonzero(every > truth_scores, axis=-1) + np.count_nonzero(
        (every == truth_scores) & (tiebreak < truth_ties), axis=-1
    )
    return ranks.astype(np.int64)


@dataclass(frozen=True)
class ScoredBatch:
    """Consecutive tests scored together: their candidates, the union scored, the query."""

    cases: Sequence[Case]
    candidates: list[np.ndarray]  # per test, sorted catalogue rows
    union: np.ndarray  # sorted union of `candidates`
    query: QueryBatch

    def positions(self) -> list[np.ndarray]:
        """Per test, where its candidates sit in `union`."""
        return [np.searchsorted(self.union, c) for c in self.candidates]


def batches(cases: Sequence[Case], n_items: int, batch_size: int = 64):
    """ScoredBatch after ScoredBatch over `cases`, in order."""
    for start in range(0, len(cases), batch_size):
        batch_cases = cases[start : start + batch_size]
        candidate_lists = [case.candidates(n_items) for case in batch_cases]
        yield ScoredBatch(
            batch_cases,
            candidate_lists,
            np.unique(np.concatenate(candidate_lists)),
            QueryBatch(
                query_ids=np.array([case.query_id for case in batch_cases]),
                user_ids=np.array([case.user_id for case in batch_cases]),
                times=np.array([case.time for case in batch_cases]),
                profiles=[case.profile for case in batch_cases],
            ),
        )


def case_tiebreak(case: Case, n_candidates: int, seed: int = 0) -> np.ndarray:
    """The random order that breaks a test's ties, the same for every method."""
    return np.random.default_rng([seed, case.query_id]).random(n_candidates)


def rank_cases(
    recommender: Recommender,
    cases: Sequence[Case],
    n_items: int,
    *,
    batch_size: int = 64,
    seed: int = 0,
) -> list[RankedCase]:
    results: list[RankedCase] = []
    for scored in batches(cases, n_items, batch_size):
        union = scored.union
        scores = np.asarray(recommender.score(scored.query, union), dtype=np.float64)
        if scores.shape != (len(scored.cases), union.size):
            raise ValueError(
                f"{recommender.name}: score() returned shape {scores.shape}, "
                f"expected {(len(scored.cases), union.size)}"
            )
        if not np.isfinite(scores).all():
            raise ValueError(f"{recommender.name}: score() returned NaN or inf")
        for case, candidates, positions, row in zip(
            scored.cases, scored.candidates, scored.positions(), scores, strict=True
        ):
            results.append(
                rank_one(
                    row[positions],
                    candidates,
                    np.searchsorted(candidates, case.ground_truth),
                    case_tiebreak(case, candidates.size, seed),
                )
            )
    return results
