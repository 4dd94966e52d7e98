"""Replica catch-up lag under a write load: two `curator serve` processes on one database.

    .venv/bin/python benchmarks/bench_replicas.py --model exports/ [--database sqlite|postgresql]
        [--sync-seconds 1.0] [--writes-per-second 20] [--probes 40]

A writer thread records purchases on replica A at a steady rate (the load). Meanwhile each probe
adds a favourite on A and times, from A's acknowledgement, until replica B serves it
(`GET /v1/customers/{id}/favourites`, polled every 10 ms). Prints lag percentiles per setting.
`--write-rate` instead measures what one writer commits: single-purchase transactions of an
original (the advisory lock, the purchase, the `sold_originals` row), 400 in a row.
PostgreSQL is a throwaway server (serving/throwaway_postgres.py) when its binaries are on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.process import curator_service  # noqa: E402
from serving.throwaway_postgres import ThrowawayPostgres  # noqa: E402
from training.data.dataset import load_items_table  # noqa: E402
from training.export import export_versions  # noqa: E402


def measure(root: Path, url: str, sync_s: float, rate: float, probes: int, tmp: Path) -> dict:
    export = root / str(export_versions(root)[-1])
    items = load_items_table(export / "catalogue" / "items.csv")
    prints = items.loc[~items["one_of_a_kind"], "item_id"].to_numpy()
    a = curator_service(root, None, tmp / "a.log", database_url=url, sync_seconds=sync_s)
    b = curator_service(root, None, tmp / "b.log", database_url=url, sync_seconds=sync_s)
    stop, written = threading.Event(), [0]

    def write_load():
        client, n = httpx.Client(base_url=a.url, timeout=30), 0
        while not stop.is_set():
            body = {"purchases": [{"customer_id": f"load-{n}", "item_id": prints[n % len(prints)]}]}
            client.post("/v1/purchases", json=body).raise_for_status()
            n += 1
            written[0] = n
            time.sleep(1 / rate)

    writer = threading.Thread(target=write_load, daemon=True)
    writer.start()
    lags, liked = [], str(items["item_id"].iloc[0])
    try:
        for probe in range(probes):
            path = f"/v1/customers/probe-{probe}/favourites"
            a.client.post(path, json={"add": [liked]}).raise_for_status()
            acknowledged = time.perf_counter()
            while not b.client.get(path).json()["item_ids"]:
                time.sleep(0.01)
            lags.append(time.perf_counter() - acknowledged)
            time.sleep(np.random.default_rng(probe).uniform(0, sync_s))  # unaligned probes
    finally:
        stop.set()
        writer.join()
        a.stop()
        b.stop()
    lags_ms = 1000 * np.array(lags)
    return {
        "p50": np.percentile(lags_ms, 50),
        "p95": np.percentile(lags_ms, 95),
        "max": lags_ms.max(),
        "writes": written[0],
    }


def write_rate(url: str, n: int = 400) -> float:
    """Single-purchase transactions of an original per second, one writer."""
    from serving.store import Purchase, Store

    store = Store(url)
    started = time.perf_counter()
    for i in range(n):
        store.add_purchases([Purchase(f"c{i}", f"art-{i}", 1.0)], [f"art-{i}"])
    rate = n / (time.perf_counter() - started)
    store.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "exports")
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--sync-seconds", default="1.0,0.25")
    parser.add_argument("--writes-per-second", type=float, default=20)
    parser.add_argument("--probes", type=int, default=40)
    parser.add_argument("--write-rate", action="store_true")
    args = parser.parse_args()
    if args.write_rate:
        print("| database | purchases committed/s, one writer |\n| --- | ---: |")
        with tempfile.TemporaryDirectory() as tmp:
            print(f"| sqlite | {write_rate(f'sqlite:///{tmp}/w.db'):.0f} |")
        if ThrowawayPostgres.available():
            postgres = ThrowawayPostgres()
            try:
                print(f"| postgresql | {write_rate(postgres.new_database()):.0f} |")
            finally:
                postgres.stop()
        return
    print(f"export root {args.model}; write load {args.writes_per_second:g} purchases/s on "
          f"replica A; {args.probes} probes\n")  # fmt: skip
    print("| database | sync every | lag p50 ms | lag p95 ms | lag max ms | load writes |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    postgres = None
    try:
        for database in args.database.split(","):
            if database == "postgresql" and postgres is None:
                if not ThrowawayPostgres.available():
                    print("| postgresql | (no server binaries on PATH) | | | | |")
                    continue
                postgres = ThrowawayPostgres()
            for sync_s in (float(s) for s in args.sync_seconds.split(",")):
                with tempfile.TemporaryDirectory() as tmp:
                    tmp = Path(tmp)
                    root = tmp / "exports"
                    shutil.copytree(args.model, root, ignore=shutil.ignore_patterns("*.db"))
                    url = (
                        postgres.new_database()
                        if database == "postgresql"
                        else f"sqlite:///{tmp / 'shared.db'}"
                    )
                    row = measure(root, url, sync_s, args.writes_per_second, args.probes, tmp)
                print(f"| {database} | {sync_s:g} s | {row['p50']:.0f} | {row['p95']:.0f} | "
                      f"{row['max']:.0f} | {row['writes']} |")  # fmt: skip
    finally:
        if postgres is not None:
            postgres.stop()


if __name__ == "__main__":
    main()
