"""What each time term costs the service: answer time per batch of 8 recommendation queries,
in process, with the export's terms and with freshness, era or both switched off.

    .venv/bin/python benchmarks/bench_term_cost.py [--model exports/] [--repeats 7]

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

BATCH, PROFILES, ROUND = 8, 200, 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "exports")
    parser.add_argument("--repeats", type=int, default=7)
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

        exported = catalogue.terms
        variants = {
            "as exported": exported,
            "no era": dataclasses.replace(exported, era=0.0),
            "no freshness": dataclasses.replace(exported, freshness=0.0),
            "neither": dataclasses.replace(exported, era=0.0, freshness=0.0),
        }
        batches(ROUND // 2)  # warm-up
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, terms in variants.items():
                catalogue.terms = terms
                times[name].append(batches(ROUND))
        catalogue.terms = exported
    print(f"export {args.model}: {catalogue.size:,} artworks; terms {exported}")
    print("| terms | min ms per batch of 8 | median |")
    print("| --- | --- | --- |")
    for name, found in times.items():
        print(f"| {name} | {min(found):.3f} | {float(np.median(found)):.3f} |")


if __name__ == "__main__":
    main()
