"""Is a model's lead over a baseline more than the luck of the test set?

A few hundred tests move R@20 by a hit or two (UGallery's 728 last sessions: one hit is .0014),
so "Curator .0197, VBPR .0275" says little until the difference comes with its uncertainty.
Both methods rank the same tests, so the comparison is paired: per test, the model's metric
minus the baseline's. A percentile bootstrap over the tests (resampled with replacement,
`RESAMPLES` times, seeded) gives the 95% interval of the mean difference: how large the lead
may be. Whether there is one is decided by a paired sign-flip test (under "no difference" each
test's difference is as likely negated; exact below `EXACT_UP_TO` tests that differ, else
`RESAMPLES` random flips): the percentile bootstrap alone is too sure when few tests differ
(4 hits won and none lost gives an interval above 0, while the exact p is 1/8).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

RESAMPLES = 2000
EXACT_UP_TO = 14  # tests that differ: all 2^n sign patterns below this, random flips above
ALPHA = 0.05
CHUNK = 250  # resamples drawn at once: CHUNK x n_tests indices in memory
METRICS = ("auc", "r@20")
REFERENCES = ("oracle", "ideal")  # upper bounds, not baselines


def paired_bootstrap(
    model: np.ndarray, baseline: np.ndarray, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[float, float, float]:
    """(mean of model - baseline, 2.5th and 97.5th percentile of that mean over `resamples`
    resamplings of the tests); tests where either value is NaN are left out, and with no test
    left all three are NaN."""
    model, baseline = np.asarray(model, np.float64), np.asarray(baseline, np.float64)
    if model.shape != baseline.shape or model.ndim != 1:
        raise ValueError(f"paired values need one shape, got {model.shape} and {baseline.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    differences = (model - baseline)[np.isfinite(model) & np.isfinite(baseline)]
    n = differences.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = np.concatenate(
        [
            differences[rng.integers(0, n, size=(size, n))].mean(axis=1)
            for size in _chunks(resamples)
        ]
    )
    low, high = np.percentile(means, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)


def _chunks(total: int) -> list[int]:
    """Sizes of the batches `total` random draws are made in: CHUNK each, the rest last."""
    return [CHUNK] * (total // CHUNK) + ([total % CHUNK] if total % CHUNK else [])


def sign_flip_p(model: np.ndarray, baseline: np.ndarray, seed: int = 0) -> float:
    """Two-sided p-value of "the mean paired difference is 0": the share of sign patterns
    over the tests that differ (NaN pairs left out) whose mean is at least as far from 0 as
    the observed one (1.0 where no test differs)."""
    differences = np.asarray(model, np.float64) - np.asarray(baseline, np.float64)
    differences = differences[np.isfinite(differences) & (differences != 0)]
    n = differences.size
    if n == 0:
        return 1.0
    observed = abs(differences.sum()) * (1 - 1e-9)  # ties count as extreme
    if n < EXACT_UP_TO:
        patterns = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # [2^n, n] of +-1
        return float(np.mean(np.abs(patterns @ differences) >= observed))
    rng = np.random.default_rng(seed)
    extreme = sum(
        int(np.sum(np.abs(rng.choice((-1.0, 1.0), size=(size, n)) @ differences) >= observed))
        for size in _chunks(RESAMPLES)
    )
    return (1 + extreme) / (1 + RESAMPLES)


def comparison_rows(
    per_case: dict[str, pd.DataFrame],
    models: Sequence[str],
    subsets: Sequence[str],
    metrics: Sequence[str] = METRICS,
    seed: int = 0,
) -> list[dict]:
    """For each model of `models`, each method of `per_case` that is neither a model nor a
    reference (each
    subset ("last": the rows with is_last; "all": every row) and each metric: the paired
    difference and its bootstrap interval. `per_case` maps method -> report.case_frame, all
    over the same tests in the same order."""
    rows = []
    for model in models:
        for baseline in (m for m in per_case if m not in models and m not in REFERENCES):
            for subset in subsets:
                ours, theirs = per_case[model], per_case[baseline]
                chosen = ours["is_last"].to_numpy(bool) if subset == "last" else slice(None)
                for metric in metrics:
                    a = ours[metric].to_numpy(np.float64)[chosen]
                    b = theirs[metric].to_numpy(np.float64)[chosen]
                    paired = np.isfinite(a) & np.isfinite(b)
                    a, b = a[paired], b[paired]
                    difference, low, high = paired_bootstrap(a, b, seed=seed)
                    rows.append(
                        {
                            "model": model,
                            "baseline": baseline,
                            "subset": subset,
                            "metric": metric,
                            "n_tests": int(a.size),
                            "model_value": _mean(a),
                            "baseline_value": _mean(b),
                            "difference": _finite(difference),
                            "low": _finite(low),
                            "high": _finite(high),
                            "p": sign_flip_p(a, b, seed=seed),
                        }
                    )
    return rows


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if values.size else None


def _finite(value: float) -> float | None:
    """None for NaN: metrics.json stays valid JSON."""
    return float(value) if np.isfinite(value) else None


def verdict(row: dict) -> str:
    """`ahead` or `behind` where the sign-flip test finds a difference (p < ALPHA), else
    `within noise`."""
    if row["difference"] is None:
        return "-"
    if row["p"] >= ALPHA:
        return "within noise"
    return "ahead" if row["difference"] > 0 else "behind"


def comparison_table(rows: Sequence[dict]) -> str:
    header = ["model", "baseline", "subset", "metric", "tests", "model", "baseline"]
    header += ["difference", "95% interval", "p", "verdict"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        values = [row["model"], row["baseline"], row["subset"], row["metric"].upper()]
        values += [str(row["n_tests"])]
        values += [_figure(row["model_value"]), _figure(row["baseline_value"])]
        if row["difference"] is None:
            values += ["-", "-", "-"]
        else:
            values += [f"{row['difference']:+.4f}", f"[{row['low']:+.4f}, {row['high']:+.4f}]"]
            values += ["<0.001" if row["p"] < 0.001 else f"{row['p']:.3f}"]
        values += [verdict(row)]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines)


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
