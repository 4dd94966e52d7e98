"""Artworks added live go into the service's ScaNN searcher (upsert): its recall against a
searcher built with them, and against the exact answer; and batched search against one call
per query.

    .venv/bin/python benchmarks/bench_scann_upsert.py --export exports-1m/1 [--base 200000]

Takes `--base` + `--added` item vectors of an export (real tower output, prior slot included,
e.g. the 1M marketplace's), builds the searcher over the first `--base` with the export's index
settings, adds the rest in uploads of 1,000 (timed), and builds one over all of them for
comparison. Queries: 500 users pooled by the export's user tower from 5 random artworks. Recall
is `neighbour_recall` at 10 against brute-force numpy over every vector (ties count as hits).
Then micro-batches of 8 queries: ScaNN's batched search against 8 single searches.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.export_loader import load_serving_model  # noqa: E402
from training.index import ScannSearcher, exact_top_k, neighbour_recall  # noqa: E402

UPLOAD = 1_000


def recall_at_10(
    searcher: ScannSearcher, queries: np.ndarray, exact: np.ndarray, vectors: np.ndarray
) -> float:
    found = np.stack([scores for _, scores in searcher.search_batched(queries, 10, vectors)])
    return neighbour_recall(found, exact)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export", type=Path, required=True, help="an export version directory")
    parser.add_argument("--base", type=int, default=200_000)
    parser.add_argument("--added", type=int, default=50_000)
    args = parser.parse_args()
    model = load_serving_model(args.export)
    rng = np.random.default_rng(0)
    total = args.base + args.added
    if total > len(model.vectors):
        sys.exit(f"the export has {len(model.vectors):,} artworks, fewer than {total:,}")
    rows = rng.choice(len(model.vectors), total, replace=False)
    vectors = np.ascontiguousarray(model.vectors[rows])
    profiles = rng.integers(0, total, (500, 5))
    queries = model.user_tower(vectors[profiles], np.ones(profiles.shape, bool))
    exact_scores, _ = exact_top_k(queries, vectors, 10)
    base_exact, _ = exact_top_k(queries, vectors[: args.base], 10)

    started = time.perf_counter()
    searcher = ScannSearcher(vectors[: args.base], model.index)
    build_base_s = time.perf_counter() - started
    base_recall = recall_at_10(searcher, queries, base_exact, vectors)
    upload_s = []
    for start in range(args.base, total, UPLOAD):
        end = min(total, start + UPLOAD)
        started = time.perf_counter()
        searcher.add(vectors[start:end], np.arange(start, end))
        upload_s.append(time.perf_counter() - started)
    started = time.perf_counter()
    rebuilt = ScannSearcher(vectors, model.index)
    build_all_s = time.perf_counter() - started

    print(f"{args.export}: {args.base:,} artworks built, {args.added:,} added in uploads of "
          f"{UPLOAD:,}; index settings {model.index}")  # fmt: skip
    print()
    print("| searcher | artworks | recall@10 (500 users) | seconds |")
    print("| --- | ---: | ---: | --- |")
    print(f"| built | {args.base:,} | {base_recall:.4f} | build {build_base_s:.1f} |")
    print(
        f"| built, then {args.added:,} added | {total:,} | "
        f"{recall_at_10(searcher, queries, exact_scores, vectors):.4f} | "
        f"per upload of {UPLOAD:,}: median {np.median(upload_s):.3f}, max {max(upload_s):.3f} |"
    )
    rebuilt_recall = recall_at_10(rebuilt, queries, exact_scores, vectors)
    print(f"| built with all | {total:,} | {rebuilt_recall:.4f} | build {build_all_s:.1f} |")
    print()
    batches = queries[: 8 * 50].reshape(50, 8, -1)
    fetch = 10 + 5 + 64  # k, a 5-artwork profile, the service's skip allowance
    for label, search in (
        ("8 single searches", lambda b: [searcher.search(q, fetch, vectors) for q in b]),
        ("one batched search", lambda b: searcher.search_batched(b, fetch, vectors)),
    ):
        search(batches[0])
        started = time.perf_counter()
        for _ in range(3):
            for batch in batches:
                search(batch)
        per_batch_ms = (time.perf_counter() - started) / (3 * len(batches)) * 1e3
        print(f"| {label} per micro-batch of 8, fetching {fetch} | {per_batch_ms:.2f} ms |")


if __name__ == "__main__":
    main()
