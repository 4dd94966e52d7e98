"""Top-10 search: ScaNN against numpy brute force at 13k, 100k and 1M artworks, same run.

    .venv/bin/python benchmarks/bench_search.py --export exports-1m/1 --plot docs/images/search.png

Item vectors are a real export's (the item tower over a generated 1M-artwork marketplace; the
smaller sizes are its first n artworks); queries are the user tower's vectors of 200 random
3-artwork profiles. Per-query latency is one query at a time, as a request would search.
ScaNN is the service's searcher with the export's settings (tree of sqrt(n) leaves, 5%
searched, asymmetric hashing, exact re-ordering; artworks with a positive artist prior searched
apart and merged: training/index.py). recall@10 is against exact search, compared by score
(ties count).

Issue target: at 1M, ScaNN at least 50x faster than brute force with recall@10 >= 0.95.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.export_loader import load_serving_model  # noqa: E402
from training.index import ScannSearcher, exact_top_k, neighbour_recall  # noqa: E402

SIZES = (13_297, 100_000, 1_000_000)


def per_query_ms(search, queries: np.ndarray) -> float:
    search(queries[0])  # warm
    start = time.perf_counter()
    for query in queries:
        search(query)
    return (time.perf_counter() - start) / len(queries) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--export", type=Path, required=True, help="an export version directory")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--plot", type=Path, help="write a PNG of latency and recall by size")
    args = parser.parse_args()
    model = load_serving_model(args.export)
    vectors = model.vectors
    rng = np.random.default_rng(0)
    profiles = rng.integers(0, vectors.shape[0], (args.queries, 3))
    queries = model.user_tower(vectors[profiles], np.ones(profiles.shape, bool))

    rows = []
    for size in [s for s in SIZES if s <= vectors.shape[0]]:
        subset = np.ascontiguousarray(vectors[:size])
        columns = np.ascontiguousarray(subset.T)

        def brute(query, columns=columns):
            scores = query @ columns
            top = np.argpartition(-scores, 9)[:10]
            return top[np.argsort(-scores[top])]

        start = time.perf_counter()
        searcher = ScannSearcher(subset, model.index)
        build_s = time.perf_counter() - start
        brute_ms = per_query_ms(brute, queries)
        scann_ms = per_query_ms(lambda q, s=searcher, v=subset: s.search(q, 10, v), queries)
        found = np.stack([searcher.search(q, 10, subset)[1] for q in queries])
        exact, _ = exact_top_k(queries, subset, 10)
        rows.append(
            {
                "artworks": size,
                "apart": searcher.apart_rows.size,
                "brute ms": brute_ms,
                "scann ms": scann_ms,
                "speed-up": brute_ms / scann_ms,
                "recall@10": neighbour_recall(found, exact),
                "build s": build_s,
                "peak RSS GB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
            }
        )
        print(f"{size:,} done", file=sys.stderr, flush=True)

    print(f"export {args.export}: {vectors.shape[1]}-d item vectors, {args.queries} queries\n")
    print("| artworks | with a prior (apart) | brute force ms/query | ScaNN ms/query | speed-up "
          "| recall@10 | ScaNN build s | peak RSS GB |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['artworks']:,} | {r['apart']:,} | {r['brute ms']:.3f} | {r['scann ms']:.3f} | "
            f"{r['speed-up']:.0f}x | {r['recall@10']:.3f} | {r['build s']:.1f} | "
            f"{r['peak RSS GB']:.1f} |"
        )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        sizes = [r["artworks"] for r in rows]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
        left.loglog(sizes, [r["brute ms"] for r in rows], "o-", label="numpy brute force")
        left.loglog(sizes, [r["scann ms"] for r in rows], "o-", label="ScaNN")
        left.set(xlabel="artworks", ylabel="ms per query (top 10)", title="search latency")
        left.legend()
        right.semilogx(sizes, [r["recall@10"] for r in rows], "o-", color="tab:orange")
        right.axhline(0.95, color="gray", linestyle="--", label="target 0.95")
        right.set(xlabel="artworks", ylabel="recall@10", title="ScaNN recall", ylim=(0.8, 1.0))
        right.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
