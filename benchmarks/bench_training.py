"""Training time on the default marketplace, per configuration. Prints a markdown table:
    .venv/bin/python benchmarks/bench_training.py [--data data/marketplace]

Issue target: `curator` reaches its best validation epoch in under 10 minutes on the 2-core
machine. "to best" counts from the start of `train()` (clusters, sampling and input pipeline
included) to the end of the best epoch's validation.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from training.config import load_config
from training.data.dataset import load_dataset
from training.data.marketplace import MarketplaceConfig, generate_marketplace
from training.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("data/marketplace"))
    parser.add_argument("--configs", default="curator,curatornet-paper")
    args = parser.parse_args()
    if not args.data.exists():
        generate_marketplace(MarketplaceConfig.at_scale("ugallery"), args.data)
    dataset = load_dataset(args.data)

    print(f"dataset {args.data}: {dataset.n_items:,} artworks, {len(dataset.purchases):,} "
          f"purchases; {os.cpu_count()} CPUs")  # fmt: skip
    print("| config | epochs | best | s to best | s total | s/epoch | examples/s | valid AUC | "
          "valid R@20 |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs.split(","):
            run_dir = Path(tmp) / name
            result = train(dataset, load_config(name), run_dir, progress=False)
            summary = json.loads((run_dir / "summary.json").read_text())
            history = json.loads((run_dir / "history.json").read_text())
            per_epoch = (history[-1]["elapsed_s"] - history[0]["elapsed_s"]) / max(
                1, len(history) - 1
            )
            # examples of every epoch after the first (the first also pays for the set-up),
            # over their time: sampling, fitting and the validation replay together
            examples = sum(r["examples"] for r in history[1:]) / max(
                1e-9, per_epoch * (len(history) - 1)
            )
            print(
                f"| {name} | {result.epochs_run} | {result.best_epoch} | "
                f"{summary['seconds_to_best']:.0f} | {summary['seconds']:.0f} | {per_epoch:.1f} | "
                f"{examples:,.0f} | "
                f"{result.best_metrics['auc']:.4f} | {result.best_metrics['r@20']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
