"""The interface every ranked method implements: baselines and trained models alike."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class QueryBatch:
    """B queries to score. Profiles are catalogue rows of what each user bought before."""

    query_ids: np.ndarray  # [B] int, unique per test of one evaluation
    user_ids: np.ndarray  # [B] str
    times: np.ndarray  # [B] float seconds; +inf means after every known purchase
    profiles: list[np.ndarray]  # B arrays [n_profile_b] of catalogue rows, none empty

    def __len__(self) -> int:
        return len(self.profiles)


class Recommender(Protocol):
    """Scores a batch of profiles against candidate items; higher ranks first."""

    name: str

    def score(self, batch: QueryBatch, candidates: np.ndarray) -> np.ndarray:
        """[B, n_candidates] float scores of `candidates` (catalogue rows) for each query."""
        ...
