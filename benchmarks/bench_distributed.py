"""Training throughput with 1 and 2 local workers (`curator train --workers N`).

    .venv/bin/python benchmarks/bench_distributed.py [--data data/marketplace] [--epochs 2]

Each row is one `curator train --trials 1` of the default configuration with `epochs` epochs,
as a subprocess; examples/s counts the epoch's training examples over the epoch's time
(fitting and the validation replay, from history.json), and the wall time includes start-up
(for 2 workers: two TensorFlow processes and the gRPC rendezvous).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=REPO / "data" / "marketplace")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    print(f"dataset {args.data}; {os.cpu_count()} CPUs; default config, {args.epochs} epochs\n")
    print("| workers | wall s | s per epoch | examples/s | valid mean_recall (last epoch) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = yaml.safe_load((REPO / "training" / "configs" / "curator.yaml").read_text())
        (tmp / "config.yaml").write_text(yaml.safe_dump({**config, "epochs": args.epochs}))
        for workers in (int(w) for w in args.workers.split(",")):
            out = tmp / f"run-{workers}"
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "training.cli", "train", "--data", str(args.data),
                 "--config", str(tmp / "config.yaml"), "--trials", "1", "--out", str(out),
                 "--workers", str(workers)],
                cwd=REPO, check=True, capture_output=True,
            )  # fmt: skip
            wall = time.perf_counter() - started
            history = json.loads((out / "history.json").read_text())
            times = [h["elapsed_s"] for h in history]
            # from the end of the first epoch on: start-up and tracing excluded
            per_epoch = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else times[0]
            examples = sum(h["examples"] for h in history) / len(history)
            print(f"| {workers} | {wall:.0f} | {per_epoch:.1f} | {examples / per_epoch:,.0f} | "
                  f"{history[-1]['valid_mean_recall']:.4f} |")  # fmt: skip


if __name__ == "__main__":
    main()
