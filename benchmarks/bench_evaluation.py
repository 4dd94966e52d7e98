"""Replay evaluation time per baseline on the real UGallery transactions, and marketplace
generation time. Prints a markdown table:
    .venv/bin/python benchmarks/bench_evaluation.py

Issue target: a full replay of the real data (1,978 tests) for any baseline in under 10 s here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from training.data.dataset import load_dataset
from training.data.importers import import_ugallery
from training.data.marketplace import MarketplaceConfig, generate_marketplace
from training.evaluation.baselines import build_baselines
from training.evaluation.protocols import replay_cases
from training.evaluation.ranking import rank_cases

DEFAULT_UGALLERY = Path(__file__).resolve().parents[2] / "shared" / "data" / "ugallery"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ugallery", type=Path, default=DEFAULT_UGALLERY)
    parser.add_argument("--scale", default="ugallery", help="marketplace scale to generate")
    args = parser.parse_args()

    rows = []
    start = time.perf_counter()
    dataset, _ = import_ugallery(
        args.ugallery / "valid_sales.csv", args.ugallery / "valid_artworks.csv"
    )
    rows.append(
        ("import UGallery transactions (stand-in features)", "-", time.perf_counter() - start)
    )
    start = time.perf_counter()
    cases = replay_cases(dataset)
    rows.append(("build replay tests", len(cases), time.perf_counter() - start))
    names = ["oracle", "visrank-mean", "visrank-max", "popular", "random"]
    for method in build_baselines(names, dataset, cases):
        start = time.perf_counter()
        rank_cases(method, cases, dataset.n_items)
        rows.append((f"replay: {method.name}", len(cases), time.perf_counter() - start))

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        generate_marketplace(MarketplaceConfig.at_scale(args.scale), Path(tmp) / "m")
        n_items = load_dataset(Path(tmp) / "m", mmap=True).n_items
        rows.append((f"generate marketplace ({args.scale})", n_items, time.perf_counter() - start))

    print("| step | tests / artworks | seconds |\n| --- | --- | --- |")
    for step, count, seconds in rows:
        print(f"| {step} | {count} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
