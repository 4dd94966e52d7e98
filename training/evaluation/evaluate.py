"""`curator evaluate`: rank every test of a protocol with every method, summarise, write."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from training.atomic import atomic_directory, check_output_directory
from training.data.dataset import Dataset
from training.evaluation.baselines import build_baselines, default_baselines
from training.evaluation.comparison import comparison_rows, comparison_table
from training.evaluation.interface import Recommender
from training.evaluation.protocols import holdout_cases, replay_cases
from training.evaluation.ranking import rank_cases
from training.evaluation.report import (
    case_frame,
    markdown_table,
    summary_rows,
    write_case_csv,
    write_metrics_json,
)

PROTOCOLS = ("replay", "holdout")
# report.summary_rows subsets, in table order; ":cold"/":warm": tests by unsold/sold ground truth
SUBSETS = {
    "replay": ("last", "last:cold", "last:warm", "all", "all:cold", "all:warm"),
    "holdout": ("all", "all:cold", "all:warm"),
}


@dataclass(frozen=True)
class EvaluationResult:
    protocol: str
    rows: list[dict]
    per_case: dict[str, pd.DataFrame] = field(default_factory=dict)  # method -> case_frame
    comparisons: list[dict] = field(default_factory=list)  # comparison.comparison_rows

    def table(self) -> str:
        return markdown_table(self.rows)

    def comparison_table(self) -> str:
        return comparison_table(self.comparisons)

    def row(self, method: str, subset: str) -> dict:
        return next(r for r in self.rows if r["method"] == method and r["subset"] == subset)


def evaluate(
    dataset: Dataset,
    *,
    protocol: str = "replay",
    baselines: Sequence[str] | None = None,
    models: Sequence[Recommender] = (),
    split: str = "test",
    out: Path | str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate baselines (default: all that apply) and `models` under one protocol.

    Replay rows come for two subsets, "last" (each customer's last session, the paper's table)
    and "all"; holdout rows for "all". Each subset S also comes as "S:cold" and "S:warm": the
    tests whose ground truth holds artworks never sold / already sold before the test, scored on
    those alone (see report.summary_rows). Each of `models` is also compared with each
    baseline, test by test, on AUC and R@20 of the subsets "last" and "all" (a paired bootstrap
    interval: training/evaluation/comparison.py). With `out`, writes metrics.json (rows and
    comparisons) and one CSV of per-test results per method, all at once at the end; an
    existing `out` directory is replaced only with `overwrite`.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if out is not None:  # before the work: an existing output is replaced only when asked
        check_output_directory(out, overwrite=overwrite)
    cases = replay_cases(dataset) if protocol == "replay" else holdout_cases(dataset, split)
    if not cases:
        raise ValueError(f"the {protocol} protocol found no tests in {dataset.path}")
    names = default_baselines(dataset) if baselines is None else list(baselines)
    taken = [*names, *(model.name for model in models)]
    twice = sorted({name for name in taken if taken.count(name) > 1})
    if twice:  # the tables, comparisons and --out files are keyed by name
        raise ValueError(
            f"two methods are named {', '.join(map(repr, twice))}: every baseline and --model "
            "run (named by its directory) must have a name of its own"
        )
    methods = [*build_baselines(names, dataset, cases, seed), *models]
    subsets = SUBSETS[protocol]

    rows, per_case = [], {}
    for method in tqdm(methods, desc=f"{protocol} evaluation", unit="method", disable=not progress):
        ranked = rank_cases(method, cases, dataset.n_items, seed=seed)
        rows += summary_rows(method.name, cases, ranked, subsets)
        per_case[method.name] = ranked
    rows.sort(key=lambda row: subsets.index(row["subset"]))  # stable: methods keep their order
    frames = {name: case_frame(cases, ranked) for name, ranked in per_case.items()}
    whole = [subset for subset in subsets if ":" not in subset]
    comparisons = comparison_rows(frames, [m.name for m in models], whole, seed=seed)

    if out is not None:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            info = {"dataset": dataset.location, "seed": seed}
            if protocol == "holdout":
                info["split"] = split
            write_metrics_json(
                tmp / "metrics.json", protocol, rows, **info, comparisons=comparisons
            )
            for name, ranked in per_case.items():
                write_case_csv(tmp / f"{protocol}-{name}.csv", cases, ranked, dataset.item_ids)
    return EvaluationResult(protocol, rows, frames, comparisons)
