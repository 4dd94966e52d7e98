"""The service's ScaNN searcher: built at start (before) or loaded from the export (now).

    .venv/bin/python benchmarks/bench_scann_load.py [--sizes 100000,300000] [--dim 201]

Random vectors (the 1M marketplace's item vectors are 201-d), the default index settings;
prints build, save and load seconds and whether the loaded searcher answers as the built one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.index import IndexConfig, ScannSearcher  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,300000")
    parser.add_argument("--dim", type=int, default=201)
    args = parser.parse_args()
    config = IndexConfig()
    print("| artworks | build s | save s | load s | same top 20 (50 queries) |")
    print("| ---: | ---: | ---: | ---: | --- |")
    rng = np.random.default_rng(0)
    for n in (int(s) for s in args.sizes.split(",")):
        vectors = rng.normal(size=(n, args.dim)).astype(np.float32)
        started = time.perf_counter()
        built = ScannSearcher(vectors, config)
        build_s = time.perf_counter() - started
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            built.save(Path(tmp) / "scann")
            save_s = time.perf_counter() - started
            started = time.perf_counter()
            loaded = ScannSearcher.load(Path(tmp) / "scann", config)
            load_s = time.perf_counter() - started
            queries = rng.normal(size=(50, args.dim)).astype(np.float32)
            same = all(
                np.array_equal(built.search(q, 20, vectors)[0], loaded.search(q, 20, vectors)[0])
                for q in queries
            )
        print(f"| {n:,} | {build_s:.1f} | {save_s:.2f} | {load_s:.2f} | {same} |")


if __name__ == "__main__":
    main()
