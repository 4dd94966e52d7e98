"""After training: the validation figures, and the weights calibrated on them.

Two calibrations run on the selected epoch's towers, in this order:

- the artist prior (`artist_prior_weights`): each known artist's learned bias gets w x its
  centred log sell-through rate, w chosen by `selection_metric`;
- the profile terms (`nearest_purchase_weights`, `profile_mean_weights`, `popularity_weights`;
  training/nearest_purchase.py): every combination of the three grids is scored on the
  validation, and the best by `calibration_metric` is kept; then, with those profile weights,
  every combination of the popularity and co-purchase grids (`copurchase_weights`;
  training/copurchase.py); then, with those, each weight of `ease_weights` for the co-purchase
  term over EASE's weights (its L2 weight the one the `ease` baseline chooses on the same
  validation); then, with all of those, one time term (`time_term_grids`):
  freshness (`freshness_weights` x `freshness_days`) where the validation has times and the
  artworks more than one upload time, else the era term (`era_weights` x `era_days`) where
  the artworks have more than one upload time.
  The towers' scores and each term are computed once per batch of validation tests; a
  combination only re-ranks them.

Freshness and era are chosen by `selection_metric` (the metric the search picks epochs and
trials by), not `calibration_metric`: each re-orders the whole inventory by time, so it moves
AUC far more than the other terms, and AUC beside recall would buy AUC with top-20 recall (for
freshness on the real UGallery sales' validation: w 1.0 at tau 365 days gives AUC .775 and
R@20 .191, w 0.3 gives .725 and .222; a gallery page shows the top 20). docs/training.md has
the figures.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pandas as pd

from training.config import TrainConfig
from training.copurchase import EASE_FILE_NAME as EASE_FILE
from training.copurchase import EASE_NEIGHBOURS, EASE_WEIGHT_BUDGET, CoPurchase
from training.copurchase import FILE_NAME as COPURCHASE_FILE
from training.data.dataset import Dataset
from training.data.history import artist_sell_through
from training.evaluation.baselines import PopularRecommender
from training.evaluation.learned_baselines import EASE_LAMBDAS, fit_ease
from training.evaluation.ranking import (
    batches,
    case_tiebreak,
    rank_cases,
    truth_ranks,
)
from training.nearest_purchase import NearestPurchase, TermWeights
from training.trained_towers import TERMS, TowerRecommender, combine_grid

FIGURES = ("auc", "r@20", "r@100", "ndcg@20")  # validation_figures' order


def validation_figures(cases, ranked) -> dict:
    """AUC, R@20, R@100, nDCG@20 over every validation test (the means `curator evaluate`'s
    "all" rows give; only these four, as the grid scores them for every weighting), and the two
    combined metrics: `mean_recall` = (R@20 + R@100) / 2 and `auc_recall` = AUC +
    mean_recall / 2."""
    grid = GridFigures(1)
    for r in ranked:
        grid.add(np.asarray(r.ranks)[None], r.n_candidates)
    return grid.figures()[0]


class GridFigures:
    """`validation_figures` for many rankings of the same tests at once: `add` takes one test's
    ground-truth ranks under every weighting of a grid, [n_rankings, n_truth], and each metric
    is computed for all rankings in one array operation (the same arithmetic as
    training/evaluation/metrics.py, tested equal)."""

    def __init__(self, n_rankings: int):
        self.n_rankings = n_rankings
        self.per_test: list[np.ndarray] = []  # [n_rankings, len(FIGURES)] per test

    def add(self, ranks: np.ndarray, n_candidates: int) -> None:
        ranks = np.sort(np.asarray(ranks, np.int64), axis=1)  # [n_rankings, n_truth]
        n_relevant = ranks.shape[1]
        n_negative = n_candidates - n_relevant
        figures = np.full((self.n_rankings, len(FIGURES)), np.nan)
        if n_relevant and n_negative:
            below = n_candidates - 1 - ranks
            relevant_below = n_relevant - 1 - np.arange(n_relevant)
            figures[:, 0] = np.mean((below - relevant_below) / n_negative, axis=1)
        if n_relevant:
            figures[:, 1] = np.count_nonzero(ranks < 20, axis=1) / n_relevant
            figures[:, 2] = np.count_nonzero(ranks < 100, axis=1) / n_relevant
            gains = np.where(ranks < 20, 1.0 / np.log2(ranks + 2.0), 0.0)
            ideal = np.sum(1.0 / np.log2(np.arange(min(n_relevant, 20)) + 2.0))
            figures[:, 3] = gains.sum(axis=1) / ideal
        self.per_test.append(figures)

    def figures(self) -> list[dict]:
        """Per ranking, the figures `validation_figures` gives."""
        means = np.nanmean(np.stack(self.per_test), axis=0)  # [n_rankings, len(FIGURES)]
        return [_with_combined(row) for row in means]


def _with_combined(means: np.ndarray) -> dict:
    figures = {name: round(float(v), 6) for name, v in zip(FIGURES, means, strict=True)}
    # the selection metric of `curator.yaml`: R@20 alone moves by noise on a few hundred
    # validation tests (docs/training.md); with R@100 beside it, more hits decide
    figures["mean_recall"] = round((figures["r@20"] + figures["r@100"]) / 2, 6)
    # the calibration metric of `curator.yaml`: AUC and recall both count (docs/training.md
    # says how the weighting was chosen, and its caveat)
    figures["auc_recall"] = round(figures["auc"] + figures["mean_recall"] / 2, 6)
    return figures


def validate_recommender(recommender, dataset: Dataset, cases) -> dict:
    return validation_figures(cases, rank_cases(recommender, cases, dataset.n_items))


def validate(item_tower, user_tower, dataset: Dataset, cases) -> dict:
    return validate_recommender(
        TowerRecommender("validation", item_tower, user_tower, dataset), dataset, cases
    )


def calibrate_artist_prior(
    item_tower, user_tower, dataset: Dataset, fit_purchases, validation_cases, config
) -> dict:
    """Adds w x each artist's centred log sell-through rate (from the fitted purchases) to its
    learned bias, for the w of `config.artist_prior_weights` that scores best on the validation
    (the tower is left with that w). In-batch softmax leaves these biases near zero: an artist's
    sales put its artworks among the positives and the in-batch negatives alike."""
    prior = artist_sell_through(dataset.items, fit_purchases, item_tower.artist_vocabulary)
    learned = item_tower.id_bias("artist_id")
    scores = []
    for weight in config.artist_prior_weights:
        item_tower.set_id_bias("artist_id", learned + weight * prior)
        scores.append(
            {"weight": weight, **validate(item_tower, user_tower, dataset, validation_cases)}
        )
    chosen = max(scores, key=lambda row: row[config.selection_metric])
    item_tower.set_id_bias("artist_id", learned + chosen["weight"] * prior)
    return {
        "weight": chosen["weight"],
        "validation": {k: v for k, v in chosen.items() if k != "weight"},
        "grid": scores,
    }


# the last projection fitted: (the features array it was fitted on, (dim, seed), the term)
_last_fit: tuple[object, tuple[int, int], NearestPurchase] | None = None


def _fitted_term(dataset: Dataset, dim: int, seed: int) -> NearestPurchase:
    """The match vectors' projection, fitted once per features array and settings: every trial
    of a search passes the same dataset, and the SVD takes about 9 s at 13k artworks of 2,048
    features. The array itself is the key (held, so its identity cannot be reused)."""
    global _last_fit
    if _last_fit is None or _last_fit[0] is not dataset.features or _last_fit[1] != (dim, seed):
        term = NearestPurchase.fit(dataset.features, dim, seed=seed)
        _last_fit = (dataset.features, (dim, seed), term)
    return _last_fit[2]


def term_grid(config: TrainConfig) -> list[TermWeights]:
    """Every combination of the three profile terms' grids (a grid left empty is 0), all-zero
    first; the co-purchase weight 0 (it is chosen afterwards: `sales_grid`)."""
    grids = [
        config.nearest_purchase_weights or (0.0,),
        config.profile_mean_weights or (0.0,),
        config.popularity_weights or (0.0,),
    ]
    combos = {TermWeights(*weights) for weights in itertools.product(*grids)}
    return sorted(combos, key=lambda w: (w.any, w.nearest, w.mean, w.popularity))


def sales_grid(config: TrainConfig, chosen: TermWeights) -> list[TermWeights]:
    """The second stage: `chosen`'s profile weights with every combination of the popularity
    and co-purchase grids (both about what sold, so chosen together), except those the first
    stage scored (co-purchase 0)."""
    return [
        TermWeights(chosen.nearest, chosen.mean, popularity, copurchase)
        for popularity in config.popularity_weights or (0.0,)
        for copurchase in config.copurchase_weights
        if copurchase > 0
    ]


def ease_grid(config: TrainConfig, chosen: TermWeights) -> list[TermWeights]:
    """The third stage: `chosen` with each EASE weight above 0 (0 is `chosen`, scored before)."""
    return [replace(chosen, ease=w) for w in config.ease_weights if w > 0]


# the last EASE fit: (its purchases' and validation's key, (the term, its L2 weight))
_last_ease: tuple[str, tuple[CoPurchase, float]] | None = None


def _fitted_ease(dataset: Dataset, fit_purchases: pd.DataFrame, cases) -> tuple[CoPurchase, float]:
    """(EASE's W, its L2 weight) on the fitted purchases: the `ease` baseline's fit with the L2
    weight it chooses on the same validation tests (training/evaluation/learned_baselines.py),
    each row kept to its strongest weights; once per purchases, tests and catalogue: every
    trial of a search passes the same ones, and the choice scores eight fits (about 130 s at
    5,400 sold artworks)."""
    global _last_ease
    key = _ease_key(dataset, fit_purchases, cases)
    if _last_ease is None or _last_ease[0] != key:
        baseline = fit_ease(fit_purchases, cases, dataset.n_items)
        ids = np.asarray(dataset.item_ids).astype(str)[baseline.items]
        term = CoPurchase.of_ease(ids, baseline.weights)
        _last_ease = (key, (term, float(baseline.chosen["lambda"])))
    return _last_ease[1]


def _ease_key(dataset: Dataset, fit_purchases: pd.DataFrame, cases) -> str:
    """A digest of everything EASE's fit and choice read: the purchases, the catalogue's ids,
    every test's arrays (each prefixed by its length), time and id, the grids."""
    key = hashlib.sha256()

    def add(array) -> None:
        array = np.ascontiguousarray(array)
        key.update(np.int64(array.size).tobytes() + array.tobytes())

    add(pd.util.hash_pandas_object(fit_purchases[["user_id", "item"]], index=False).to_numpy())
    add(pd.util.hash_pandas_object(pd.Series(dataset.item_ids).astype(str), index=False).to_numpy())
    add(np.array([dataset.n_items, EASE_NEIGHBOURS, EASE_WEIGHT_BUDGET, *EASE_LAMBDAS], np.float64))
    for case in cases:
        for name in ("profile", "ground_truth", "inventory", "excluded", "unavailable"):
            value = getattr(case, name, None)
            add(np.zeros(0, np.int64) if value is None else np.asarray(value))
        add(np.array([case.time, case.query_id], np.float64))  # query_id: the tiebreak
    return key.hexdigest()


def freshness_grids(config: TrainConfig, chosen: TermWeights) -> list[list[TermWeights]]:
    """The time stage for freshness, one grid per tau of `freshness_days`: `chosen` with each
    freshness weight above 0 (weight 0 is `chosen` itself, scored before)."""
    return _time_grids(chosen, "freshness", config.freshness_weights, config.freshness_days)


def era_grids(config: TrainConfig, chosen: TermWeights) -> list[list[TermWeights]]:
    """The time stage where freshness cannot be tried, as `freshness_grids` for the era term."""
    return _time_grids(chosen, "era", config.era_weights, config.era_days)


def _time_grids(chosen: TermWeights, term: str, weights, taus) -> list[list[TermWeights]]:
    return [
        [replace(chosen, **{term: w, f"{term}_days": days}) for w in weights if w] for days in taus
    ]


def uploads_differ(dataset: Dataset) -> bool:
    """Whether the artworks do not all share one upload time (imports without upload times
    give every artwork 0): else neither time term can rank anything."""
    uploads = dataset.items["upload_time"].to_numpy()
    return uploads.size > 0 and bool(np.ptp(uploads) > 0)


def dates_tell(dataset: Dataset, cases) -> bool:
    """Whether freshness can rank anything: some validation test has a finite time (holdout
    tests have none) and the upload times differ."""
    return any(np.isfinite(case.time) for case in cases) and uploads_differ(dataset)


def time_term_grids(config: TrainConfig, dataset: Dataset, cases):
    """The third stage's grids (`freshness_grids` or `era_grids`), or None: freshness where the
    validation tests have times and the upload times differ; else the era term where they
    differ (holdout tests have no time). Never both: on the replay validations era beside
    freshness moved mean recall by noise (UGallery .2779 -> .2789, docs/training.md) and costs
    the service about a quarter of its per-batch work (docs/benchmarks.md)."""
    if config.freshness_weights and dates_tell(dataset, cases):
        return freshness_grids
    if config.era_weights and uploads_differ(dataset):
        return era_grids
    return None


def uses_terms(config: TrainConfig) -> bool:
    return (
        any(weights.any for weights in term_grid(config))
        or any(w > 0 for w in config.copurchase_weights)
        or any(w > 0 for w in config.ease_weights)
        or any(w > 0 for w in config.freshness_weights)
        or any(w > 0 for w in config.era_weights)
    )


def calibrate_terms(
    item_tower,
    user_tower,
    dataset: Dataset,
    fit_purchases: pd.DataFrame,
    validation_cases,
    config: TrainConfig,
    model_dir: Path,
) -> dict:
    """Fits the match vectors' projection on the catalogue's features and the co-purchase
    matrix on the fitted purchases, picks the terms' weights on the validation by
    `config.calibration_metric` in three stages (ties: the earlier in the grid, all-zero first):
    the three profile terms' grid (`term_grid`), then popularity with co-purchase (`sales_grid`),
    then EASE's weight (`ease_grid`);
    then freshness or the era term by `config.selection_metric` (`time_term_grids`; the module
    docstring says why; kept only if it beats the stages before).
    Saves them in `model_dir` (copurchase.npz and ease.npz only when their weight is above 0).
    The popularity term counts the fitted purchases before each validation test, so a held-out
    purchase never counts."""
    term = _fitted_term(dataset, config.nearest_purchase_dim, config.seed)
    sales = PopularRecommender.from_purchases(fit_purchases, dataset.n_items)
    copurchase = None
    if any(w > 0 for w in config.copurchase_weights):
        copurchase = CoPurchase.fit(fit_purchases, dataset.item_ids)
    ease, ease_l2 = None, None
    if any(w > 0 for w in config.ease_weights):
        ease, ease_l2 = _fitted_ease(dataset, fit_purchases, validation_cases)
    recommender = TowerRecommender(
        "validation", item_tower, user_tower, dataset, term, sales, copurchase, ease
    )
    grid = term_grid(config)
    rows = _grid_figures(recommender, dataset, validation_cases, grid)
    best = _best(rows, config.calibration_metric)
    if copurchase is not None:
        second = sales_grid(config, grid[best])
        rows += _grid_figures(recommender, dataset, validation_cases, second)
        grid += second
        best = _best(rows, config.calibration_metric)
    if ease is not None:
        third = ease_grid(config, grid[best])
        rows += _grid_figures(recommender, dataset, validation_cases, third)
        grid += third
        best = _best(rows, config.calibration_metric)
    time_stage = time_term_grids(config, dataset, validation_cases)
    if time_stage is not None:
        contenders = [best]  # the stages before, then every weighting of this one
        for weightings in time_stage(config, grid[best]):
            contenders += range(len(rows), len(rows) + len(weightings))
            rows += _grid_figures(recommender, dataset, validation_cases, weightings)
            grid += weightings
        best = max(contenders, key=lambda i: (rows[i][config.selection_metric], -i))
    chosen = grid[best]
    # the matrices, then the weights, then an earlier calibration's matrices (a resumed run)
    # that now have weight 0: a run killed in between never has a weight without its matrix
    matrices = ((chosen.copurchase, copurchase, COPURCHASE_FILE), (chosen.ease, ease, EASE_FILE))
    for weight, matrix, _ in matrices:
        if weight > 0:
            matrix.save(model_dir)
    term.with_weights(chosen).save(model_dir)
    for weight, _, name in matrices:
        if weight == 0 and (model_dir / name).exists():
            (model_dir / name).unlink()
    return {
        "weight": chosen.nearest,
        "mean_weight": chosen.mean,
        "popularity_weight": chosen.popularity,
        "copurchase_weight": chosen.copurchase,
        "ease_weight": chosen.ease,
        "ease_lambda": ease_l2,
        "freshness_weight": chosen.freshness,
        "freshness_days": chosen.freshness_days,
        "era_weight": chosen.era,
        "era_days": chosen.era_days,
        "dim": term.dim,
        "metric": config.calibration_metric,
        "validation": {k: v for k, v in rows[best].items() if k not in asdict(chosen)},
        "grid": rows,
    }


def _best(rows: list[dict], metric: str) -> int:
    return max(range(len(rows)), key=lambda i: (rows[i][metric], -i))


def _grid_figures(recommender, dataset: Dataset, cases, grid: list[TermWeights]) -> list[dict]:
    """Per weighting of `grid`, its weights and validation figures: the towers and each term
    are computed once per batch of tests, a weighting only re-ranks them."""
    taus = {}
    for term in ("freshness", "era"):
        days = {getattr(w, f"{term}_days") for w in grid if getattr(w, term) > 0}
        if len(days) > 1:
            raise ValueError(f"one {term} tau per grid, got {sorted(days)}")
        taus[f"{term}_days"] = days.pop() if days else 0.0
    every = TermWeights(**{f: max(getattr(w, f) for w in grid) for f in TERMS}, **taus)
    figures = GridFigures(len(grid))
    for scored in batches(cases, dataset.n_items):
        parts = recommender.components(scored.query, scored.union, every)
        for i, (case, candidates, positions) in enumerate(
            zip(scored.cases, scored.candidates, scored.positions(), strict=True)
        ):
            own = {name: part[i][positions] for name, part in parts.items()}
            scores = np.asarray(combine_grid(own, grid), np.float64)  # [len(grid), n]
            truth = np.searchsorted(candidates, case.ground_truth)
            tiebreak = case_tiebreak(case, candidates.size)
            figures.add(truth_ranks(scores, truth, tiebreak), candidates.size)
    return [
        {**asdict(weights), **row} for weights, row in zip(grid, figures.figures(), strict=True)
    ]
