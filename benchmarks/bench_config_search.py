"""Time of `curator train`'s default configuration search on one dataset. Prints a markdown
table, one row per trial, then the total:
    .venv/bin/python benchmarks/bench_config_search.py --data DIR [--trials 8]

Issue target: under 10 minutes at UGallery size on the 2-core machine, with the default budget.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from training.cli import DEFAULT_TRIALS
from training.config import load_config
from training.data.dataset import load_dataset
from training.search import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--trials", type=int, default=DEFAULT_TRIALS)
    parser.add_argument("--config", default="curator")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    print(f"dataset {args.data}: {dataset.n_items:,} artworks, {len(dataset.purchases):,} "
          f"purchases; {os.cpu_count()} CPUs; {args.trials} trials")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        record = search(dataset, load_config(args.config), Path(tmp) / "run", trials=args.trials)
    metric = record["selection_metric"]
    print(f"| trial | state | epochs | best epoch | s | valid {metric} | parameters |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | --- |")
    for trial in record["trials"]:
        params = ", ".join(f"{k}={v}" for k, v in trial["params"].items())
        print(
            f"| {trial['number']} | {trial['state']} | {trial['epochs']} | {trial['best_epoch']} "
            f"| {trial['seconds']:.0f} | {trial['validation'][metric]:.4f} | {params} |"
        )
    total = sum(t["seconds"] for t in record["trials"])
    print(f"\ntotal {total:.0f} s ({total / 60:.1f} min); chosen trial {record['chosen']}")


if __name__ == "__main__":
    main()
