"""What EASE's fit costs (training/item_item.py `ease_weights`): seconds and peak memory for one
connected component of m artworks, the worst case (the co-purchase terms and the `ease`
baseline fit it once per lambda), and what `max_block` bounds.

    .venv/bin/python benchmarks/bench_ease_fit.py [--sizes 1000 2000 4000 7000] [--max-block N]

Random purchases: 3 m customers buying 6 artworks each, uniformly, so every artwork is
co-purchased into one component. Peak memory is numpy's allocations as tracemalloc sees them,
above what was allocated before the fit. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.item_item import EASE_MAX_BLOCK, ease_weights  # noqa: E402

PURCHASES_PER_CUSTOMER = 6


def purchases(m: int, seed: int = 0) -> sp.csr_matrix:
    """[3 m, m] binary: each customer's artworks, drawn uniformly."""
    rng = np.random.default_rng(seed)
    customers = 3 * m
    columns = rng.integers(0, m, size=(customers, PURCHASES_PER_CUSTOMER)).ravel()
    rows = np.repeat(np.arange(customers), PURCHASES_PER_CUSTOMER)
    matrix = sp.csr_matrix((np.ones(columns.size), (rows, columns)), shape=(customers, m))
    matrix.data[:] = 1.0
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 4000, 7000])
    parser.add_argument("--max-block", type=int, default=EASE_MAX_BLOCK)
    args = parser.parse_args()
    print(f"max_block {args.max_block}\n")
    print("| artworks in the component | inverted | seconds | peak memory (MB) | W's nonzeros |")
    print("| --- | --- | --- | --- | --- |")
    for m in args.sizes:
        matrix = purchases(m)
        tracemalloc.start()
        start = time.perf_counter()
        weights = ease_weights(matrix, 100.0, args.max_block)
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        inverted = min(m, args.max_block)
        print(f"| {m:,} | {inverted:,} | {seconds:.1f} | {peak / 1e6:,.0f} | {weights.nnz:,} |")


if __name__ == "__main__":
    main()
