"""Evaluation protocols: which profiles are ranked against which candidates, and what counts.

Replay (the CuratorNet paper's evaluation protocol): uploads put artworks into the
inventory; purchase sessions (baskets) are replayed in time order. Before a customer's session is
consumed, if the customer already bought something, the whole current inventory is ranked for
that customer's profile (everything bought so far); the ground truth is the artworks of this and
all later sessions of the customer that are in that inventory. Then the session is consumed: the
profile grows and sold one-of-a-kind artworks leave the inventory. At equal timestamps uploads
come before sessions, and sessions are taken in customer-id order. A ground-truth artwork is warm
if some customer bought it in a session consumed before the test's session, else cold.

Holdout: each user of test.csv (or valid.csv) with training purchases ranks every artwork for
sale, profile = the user's training purchases; the ground truth is the user's held-out artworks.
As in the replay, a one-of-a-kind artwork somebody bought is no longer for sale: the purchases a
split's tests may know of (purchases.csv; for test.csv, valid.csv too) take their one-of-a-kind
artworks out of the candidates and the ground truth, and the user's training purchases are not
candidates either. A ground-truth artwork is warm if it occurs in the training purchases
(purchases.csv), else cold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.data.dataset import Dataset
from training.data.history import baskets, sold_originals


@dataclass(frozen=True)
class Case:
    """One ranking test. Catalogue rows throughout; `inventory` is sorted."""

    query_id: int
    user_id: str
    time: float  # seconds; +inf in holdout (after every training purchase)
    profile: np.ndarray  # [n_profile] unique rows the user bought before
    ground_truth: np.ndarray  # [n_truth] unique rows, all among the candidates
    is_last: bool  # the user's last session (replay); always True in holdout
    inventory: np.ndarray | None = None  # candidates; None: every item but these two
    excluded: np.ndarray | None = None  # this test's own exclusions (the profile)
    ground_truth_sold: np.ndarray | None = None  # [n_truth] bool: warm; None: not recorded
    # rows no longer for sale, one array shared by every test of a split (not copied per test:
    # a large catalogue's sold originals times many tests would not fit in memory)
    unavailable: np.ndarray | None = None

    def truth_of_kind(self, kind: str) -> np.ndarray:
        """[n_truth] bool: which ground-truth artworks are `kind`, "cold" (never sold before the
        test) or "warm" (sold before)."""
        if kind not in ("cold", "warm"):
            raise ValueError(f"kind must be 'cold' or 'warm', got {kind!r}")
        if self.ground_truth_sold is None:
            raise ValueError(
                f"test {self.query_id} (user {self.user_id}) has no ground_truth_sold: "
                "cold/warm subsets need cases from replay_cases or holdout_cases"
            )
        return self.ground_truth_sold if kind == "warm" else ~self.ground_truth_sold

    def candidates(self, n_items: int) -> np.ndarray:
        if self.inventory is not None:
            return self.inventory
        keep = np.ones(n_items, dtype=bool)
        keep[self.excluded] = False
        if self.unavailable is not None:
            keep[self.unavailable] = False
        return np.flatnonzero(keep)


def replay_cases(dataset: Dataset) -> list[Case]:
    """The replay's tests, in time order."""
    if not dataset.has_timestamps:
        raise ValueError("the replay protocol needs purchase timestamps; purchases.csv has none")
    table = baskets(dataset.purchases)
    upload_order = np.argsort(dataset.items["upload_time"].to_numpy(), kind="stable")
    upload_times = dataset.items["upload_time"].to_numpy()[upload_order]
    one_of_a_kind = dataset.items["one_of_a_kind"].to_numpy()
    sessions_of_user: dict[str, list[np.ndarray]] = {}
    for user, items in zip(table["user_id"], table["items"], strict=True):
        sessions_of_user.setdefault(user, []).append(items)

    in_inventory = np.zeros(dataset.n_items, dtype=bool)
    sold = np.zeros(dataset.n_items, dtype=bool)  # bought in a session consumed so far
    uploaded = 0
    profiles: dict[str, list[np.ndarray]] = {}
    cases: list[Case] = []
    for user, time, items, number, n_baskets in table[
        ["user_id", "time", "items", "number", "n_baskets"]
    ].itertuples(index=False):
        new_uploads = int(np.searchsorted(upload_times, time, side="right"))
        in_inventory[upload_order[uploaded:new_uploads]] = True
        uploaded = new_uploads
        if user in profiles:
            future = np.unique(np.concatenate(sessions_of_user[user][number:]))
            ground_truth = future[in_inventory[future]]
            if ground_truth.size:
                cases.append(
                    Case(
                        query_id=len(cases),
                        user_id=user,
                        time=float(time),
                        profile=np.unique(np.concatenate(profiles[user])),
                        ground_truth=ground_truth,
                        is_last=bool(number == n_baskets - 1),
                        inventory=np.flatnonzero(in_inventory),
                        ground_truth_sold=sold[ground_truth],
                    )
                )
        profiles.setdefault(user, []).append(items)
        in_inventory[items[one_of_a_kind[items]]] = False
        sold[items] = True
    return cases


def holdout_cases(dataset: Dataset, split: str = "test") -> list[Case]:
    """The holdout tests of `split` ("test" or "valid"), one per user, in user order."""
    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', got {split!r}")
    held_out = dataset.test if split == "test" else dataset.valid
    if held_out is None:
        if dataset.path is not None:
            raise ValueError(
                f"the holdout protocol needs {split}.csv in {dataset.path}; it has none"
            )
        where = dataset.source or "the dataset"
        raise ValueError(f"the holdout protocol needs a {split} split; {where} has none")
    train = dataset.purchases.groupby("user_id")["item"].unique()
    sold = np.zeros(dataset.n_items, dtype=bool)
    sold[dataset.purchases["item"].to_numpy()] = True
    known = [dataset.purchases]
    if split == "test" and dataset.valid is not None:
        known.append(dataset.valid)
    sold_out = sold_originals(dataset, known)
    sold_out_rows = np.flatnonzero(sold_out)
    cases: list[Case] = []
    for user, rows in held_out.groupby("user_id", sort=True)["item"]:
        if user not in train.index:
            continue
        profile = np.sort(train[user].astype(np.int64))
        ground_truth = np.setdiff1d(rows.to_numpy(), profile)
        ground_truth = ground_truth[~sold_out[ground_truth]]
        if ground_truth.size:
            cases.append(
                Case(
                    query_id=len(cases),
                    user_id=user,
                    time=float("inf"),
                    profile=profile,
                    ground_truth=ground_truth,
                    is_last=True,
                    excluded=profile,
                    unavailable=sold_out_rows,
                    ground_truth_sold=sold[ground_truth],
                )
            )
    return cases
