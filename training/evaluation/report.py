"""Summaries of ranked tests: table rows, the markdown table, metrics.json and per-test CSVs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.dataset import format_time
from training.evaluation.metrics import case_metrics
from training.evaluation.protocols import Case
from training.evaluation.ranking import RankedCase

TABLE_COLUMNS = ("auc", "r@20", "p@20", "ndcg@20", "r@100", "p@100", "ndcg@100")


def case_frame(cases: Sequence[Case], ranked: Sequence[RankedCase]) -> pd.DataFrame:
    """One row per test: user_id, is_last, profile_size, n_truth, then every metric."""
    return pd.DataFrame(
        {
            "user_id": [case.user_id for case in cases],
            "is_last": [case.is_last for case in cases],
            "profile_size": [case.profile.size for case in cases],
            "n_truth": [case.ground_truth.size for case in cases],
        }
    ).join(pd.DataFrame([case_metrics(r.ranks, r.n_candidates) for r in ranked]))


def summary_rows(
    method: str, cases: Sequence[Case], ranked: Sequence[RankedCase], subsets: Sequence[str]
) -> list[dict]:
    """One row per subset ("last": users' last sessions, "all": every test) of mean metrics."""
    per_case = case_frame(cases, ranked).drop(
        columns=["user_id", "is_last", "profile_size", "n_truth"]
    )
    is_last = np.array([case.is_last for case in cases])
    rows = []
    for subset in subsets:
        chosen = per_case[is_last] if subset == "last" else per_case
        row = {"method": method, "subset": subset, "n_tests": len(chosen)}
        row.update({name: round(float(value), 6) for name, value in chosen.mean().items()})
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    header = ["method", "subset", "tests", *(c.upper() if c == "auc" else c for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        values = [row["method"], row["subset"], str(row["n_tests"])]
        values += [f"{row[c]:.4f}" for c in columns]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_metrics_json(path: Path, protocol: str, rows: Sequence[dict], **extra) -> None:
    path.write_text(
        json.dumps({"protocol": protocol, **extra, "rows": list(rows)}, indent=2) + "\n"
    )


def write_case_csv(
    path: Path, cases: Sequence[Case], ranked: Sequence[RankedCase], item_ids: np.ndarray
) -> None:
    """One row per test, as the reference code wrote, so results can be re-scored elsewhere."""
    times = np.array([case.time for case in cases])
    finite = np.isfinite(times)
    stamps = np.full(times.size, "", dtype=object)
    if finite.any():
        stamps[finite] = format_time(times[finite])
    pd.DataFrame(
        {
            "timestamp": stamps,
            "user_id": [case.user_id for case in cases],
            "is_last": [case.is_last for case in cases],
            "top100": [" ".join(item_ids[r.top]) for r in ranked],
            "ground_truth": [" ".join(item_ids[case.ground_truth]) for case in cases],
            "ground_truth_ranks": [" ".join(map(str, r.ranks + 1)) for r in ranked],
            "inventory_size": [r.n_candidates for r in ranked],
        }
    ).to_csv(path, index=False)
