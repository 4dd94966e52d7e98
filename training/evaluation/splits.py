"""What a learned method may fit on, and the validation tests it is tuned on.

One function decides it for every learned method (the towers, EASE, item-kNN, VBPR), so they
are tuned on the same validation and never see the test:

- a holdout dataset (valid.csv present): fit on purchases.csv, validate on valid.csv (holdout);
- timed purchases: the paper's split. Each customer's last basket is the test (never seen);
  of the rest, each customer's last basket is the validation, scored by the replay protocol on
  those last sessions, and the model is fitted on what remains;
- untimed purchases without valid.csv: for each customer with at least `MIN_HOLDOUT_ITEMS`
  distinct artworks, one of them (seeded) is the validation; the rest is fitted on.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.data.dataset import Dataset
from training.data.history import paper_split
from training.evaluation.protocols import Case, holdout_cases, replay_cases

MIN_HOLDOUT_ITEMS = 3


def training_split(dataset: Dataset, *, seed: int = 0) -> tuple[pd.DataFrame, list[Case]]:
    """(purchases to fit on, validation cases); see the module docstring. The cases may be
    none (the learned baselines then keep their defaults; training refuses such data:
    `require_validation_tests`)."""
    if dataset.valid is not None:
        return dataset.purchases, holdout_cases(dataset, "valid")
    if not dataset.has_timestamps:
        fit, valid = untimed_validation_split(dataset.purchases, seed=seed)
        return fit, holdout_cases(with_purchases(dataset, fit, valid=valid), "valid")
    train_purchases, _test = paper_split(dataset.purchases)
    fit_purchases, _valid = paper_split(train_purchases)
    replay = replay_cases(with_purchases(dataset, train_purchases))
    return fit_purchases, [case for case in replay if case.is_last]


def require_validation_tests(dataset: Dataset, cases: list[Case]) -> None:
    """ValueError, saying why, where `training_split` gave no validation case: training
    chooses its epochs, terms and configuration on them."""
    if cases:
        return
    if dataset.valid is not None:
        why = (
            "no customer in valid.csv has a training purchase and a held-out artwork not "
            "bought in training nor sold out"
        )
    elif not dataset.has_timestamps:
        why = (
            f"no customer has {MIN_HOLDOUT_ITEMS} or more distinct artworks of which one can be "
            "held out and tested (give a valid.csv, or more purchases)"
        )
    else:
        why = "the training period's last sessions have no customer who had bought before"
    raise ValueError(f"no validation tests in {dataset.location}: {why}")


def untimed_validation_split(
    purchases: pd.DataFrame, *, seed: int = 0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fit, valid): one distinct artwork of each customer with at least MIN_HOLDOUT_ITEMS
    moves (every purchase of it by that customer) to valid."""
    rng = np.random.default_rng(seed)
    distinct = purchases.drop_duplicates(["user_id", "item"])
    sizes = distinct.groupby("user_id")["item"].transform("size").to_numpy()
    eligible = distinct[sizes >= MIN_HOLDOUT_ITEMS]
    # a random key per row, then the row with the smallest key of each customer
    keyed = eligible.assign(_key=rng.random(len(eligible)))
    chosen = keyed.loc[keyed.groupby("user_id")["_key"].idxmin(), ["user_id", "item_id", "item"]]
    held = pd.MultiIndex.from_frame(chosen[["user_id", "item"]])
    is_held = pd.MultiIndex.from_frame(purchases[["user_id", "item"]]).isin(held)
    return purchases[~is_held].reset_index(drop=True), chosen.reset_index(drop=True)


def with_purchases(
    dataset: Dataset, purchases: pd.DataFrame, *, valid: pd.DataFrame | None = None
) -> Dataset:
    """The same catalogue with other purchases (and valid split); test and truth are kept."""
    return Dataset(
        dataset.items,
        dataset.features,
        purchases,
        valid=valid,
        test=dataset.test,
        truth=dataset.truth,
        path=dataset.path,
        source=dataset.source,
        fingerprint=dataset.fingerprint,
    )
