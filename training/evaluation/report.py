"""Summaries of ranked tests: table rows, the markdown table, metrics.json and per-test CSVs."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.dataset import format_time
from training.evaluation.metrics import case_metrics, restrict_ranks
from training.evaluation.protocols import Case
from training.evaluation.ranking import RankedCase

TABLE_COLUMNS = ("auc", "r@20", "p@20", "ndcg@20", "r@100", "p@100", "ndcg@100")
BASE_SUBSETS = ("last", "all")
KINDS = ("cold", "warm")


def case_frame(cases: Sequence[Case], ranked: Sequence[RankedCase]) -> pd.DataFrame:
    """One row per test: user_id, is_last, profile_size, n_truth, then every metric."""
    return pd.DataFrame(
        {
            "user_id": [case.user_id for case in cases],
            "is_last": [case.is_last for case in cases],
            "profile_size": [case.profile.size for case in cases],
            "n_truth": [case.ground_truth.size for case in cases],
        }
    ).join(_metric_frame(cases, ranked, ""))


def _metric_frame(cases: Sequence[Case], ranked: Sequence[RankedCase], kind: str) -> pd.DataFrame:
    """Every metric of every test; with `kind` ("cold" or "warm"), on that kind of ground truth
    alone, the other kind removed from the candidates (summary_rows leaves out the tests with
    none of that kind)."""
    if not kind:
        return pd.DataFrame([case_metrics(r.ranks, r.n_candidates) for r in ranked])
    return pd.DataFrame(
        [
            case_metrics(*restrict_ranks(r.ranks, r.n_candidates, case.truth_of_kind(kind)))
            for case, r in zip(cases, ranked, strict=True)
        ]
    )


def summary_rows(
    method: str, cases: Sequence[Case], ranked: Sequence[RankedCase], subsets: Sequence[str]
) -> list[dict]:
    """One row of mean metrics per subset, with its number of tests.

    A subset is "last" (users' last sessions) or "all" (every test), optionally followed by
    ":cold" or ":warm": then only tests with ground truth of that kind count, each scored on
    that ground truth alone with the other kind's removed from its candidates. A metric with no
    test to average is None.
    """
    is_last = np.array([case.is_last for case in cases], dtype=bool)  # [n_cases]
    frames: dict[str, pd.DataFrame] = {}
    rows = []
    for subset in subsets:
        base, _, kind = subset.partition(":")
        if base not in BASE_SUBSETS or kind not in ("", *KINDS):
            raise ValueError(
                f"unknown subset {subset!r}: expected one of {BASE_SUBSETS}, "
                "optionally followed by ':cold' or ':warm'"
            )
        if kind not in frames:
            frames[kind] = _metric_frame(cases, ranked, kind)
        chosen = is_last.copy() if base == "last" else np.ones(len(cases), dtype=bool)
        if kind:
            chosen &= np.array([case.truth_of_kind(kind).any() for case in cases], dtype=bool)
        means = frames[kind][chosen].mean()
        row = {"method": method, "subset": subset, "n_tests": int(chosen.sum())}
        row.update({name: _rounded(value) for name, value in means.items()})
        rows.append(row)
    return rows


def _rounded(value: float) -> float | None:
    return round(float(value), 6) if np.isfinite(value) else None


def markdown_table(rows: Sequence[dict], columns: Sequence[str] = TABLE_COLUMNS) -> str:
    header = ["method", "subset", "tests", *(c.upper() if c == "auc" else c for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        values = [row["method"], row["subset"], str(row["n_tests"])]
        values += ["-" if row[c] is None else f"{row[c]:.4f}" for c in columns]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def write_metrics_json(path: Path, protocol: str, rows: Sequence[dict], **extra) -> None:
    path.write_text(
        json.dumps({"protocol": protocol, **extra, "rows": list(rows)}, indent=2, allow_nan=False)
        + "\n"
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
