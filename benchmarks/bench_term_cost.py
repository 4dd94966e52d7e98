"""What each optional term costs the service: answer time per batch of 8 recommendation
queries, in process, with the export's terms, with each of its time and co-purchase terms
(freshness, era, item-kNN co-purchase, EASE) switched off alone, and with all of them off;
with `--ease-per-row N`, also with the export's EASE matrix cut to its N largest weights per row
by |w| (what the EASE term's weight budget costs against a flat cut, training/copurchase.py).

    .venv/bin/python benchmarks/bench_term_cost.py [--model exports/] [--repeats 7]
        [--ease-per-row 300]

200 different 5-artwork profiles in rotation, k=20, the way the service's micro-batcher hands
queries to `Service.answer`. The variants are timed interleaved (one round of each, `--repeats`
rounds) and the table gives the minimum and median per batch: on a shared machine the minimum
is the cleanest comparison. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.schemas import RecommendationRequest  # noqa: E402
from serving.service import Service  # noqa: E402
from serving.settings import Settings  # noqa: E402
from training.item_item import keep_strongest  # noqa: E402

BATCH, PROFILES, ROUND = 8, 200, 50
OPTIONAL_TERMS = ("era", "freshness", "copurchase", "ease")  # TermWeights' fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "exports")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--ease-per-row", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(Settings(model_dir=args.model, database_url=f"sqlite:///{tmp}/live.db"))
        service.reload()
        catalogue = service.catalogue
        rng = np.random.default_rng(0)
        queries = [
            service.resolve(
                RecommendationRequest(
                    item_ids=list(rng.choice(catalogue.item_ids, 5, replace=False)), k=20
                )
            )
            for _ in range(PROFILES)
        ]

        def batches(n: int) -> float:
            start = time.perf_counter()
            for i in range(n):
                service.answer([queries[(i * BATCH + j) % PROFILES] for j in range(BATCH)])
            return (time.perf_counter() - start) / n * 1e3

        exported, matrices = catalogue.terms, dict(catalogue.item_item_matrices)
        used = [name for name in OPTIONAL_TERMS if getattr(exported, name) > 0]
        variants = {"as exported": (exported, matrices)}
        for name in used:
            variants[f"no {name}"] = (dataclasses.replace(exported, **{name: 0.0}), matrices)
        if len(used) > 1:
            off = dataclasses.replace(exported, **dict.fromkeys(used, 0.0))
            variants["none of them"] = (off, matrices)
        if args.ease_per_row and "ease" in matrices:
            cut = keep_strongest(matrices["ease"], args.ease_per_row, by_magnitude=True)
            name = f"EASE cut to {args.ease_per_row} per row"
            variants[name] = (exported, {**matrices, "ease": cut})
        batches(ROUND // 2)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, (terms, item_item) in variants.items():
                catalogue.terms, catalogue.item_item_matrices = terms, item_item
                times[name].append(batches(ROUND))
        catalogue.terms, catalogue.item_item_matrices = exported, matrices
        weights = {name: matrix.nnz for name, matrix in matrices.items()}
    print(f"export {args.model}: {catalogue.size:,} artworks; terms {exported}")
    print(f"co-purchase matrices' weights over the catalogue: {weights}")
    print("| terms | min ms per batch of 8 | median |")
    print("| --- | --- | --- |")
    for name, found in times.items():
        print(f"| {name} | {min(found):.3f} | {float(np.median(found)):.3f} |")


if __name__ == "__main__":
    main()
