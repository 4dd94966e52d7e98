"""Service throughput and latency against the HTTP ceiling, and bulk artwork uploads.

    .venv/bin/python benchmarks/bench_serving.py [--model exports/] [--duration 10]

In one run, each server alone on the machine, one uvicorn worker each, `wrk -t1 -c8`:
1. the ceiling: a trivial FastAPI POST endpoint with the recommendation request's shape
   (benchmarks/trivial_app.py) that answers k fixed items;
2. `curator serve` on the newest export: POST /v1/recommendations, 5-artwork profiles drawn
   from the catalogue (200 different bodies in rotation), k=20.
3. with `--extra JSON` (e.g. '{"max_per_artist": 1, "explain": true}'), the same bodies with
   those fields added, against the same service.
Then POST /v1/items with 1,000 artworks (random features), three times. The live state goes to
a temporary database, so the export's own database is not touched. Needs `wrk` on the PATH.

Targets: throughput >= 0.8x the trivial endpoint and p99 < 20 ms at 13k artworks; 1,000
artworks < 5 s.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.process import ServiceProcess, curator_service  # noqa: E402
from training.data.dataset import load_items_table  # noqa: E402
from training.export import export_versions  # noqa: E402

LUA = """
bodies = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"},
                    bodies[(counter %% #bodies) + 1])
end
"""


def wrk(url: str, script: Path, duration: int) -> dict:
    command = ["wrk", "-t1", "-c8", f"-d{duration}s", "--latency", "-s", str(script), url]
    subprocess.run([*command[:3], "-d2s", *command[4:]], capture_output=True, check=True)  # warm
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def latency(percentile: str) -> float:
        value, unit = re.search(rf"{percentile}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {
        "req/s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50 ms": latency("50"),
        "p99 ms": latency("99"),
        "non-2xx": int(errors.group(1)) if errors else 0,
    }


def process_memory_gb(pid: int) -> dict:
    """Resident set size now and at its peak (VmRSS, VmHWM) of process `pid`, in GB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return {
        field: int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1)) / 1e6
        for field in ("VmRSS", "VmHWM")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=REPO / "exports")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--extra", type=json.loads, default=None, help="fields added, as JSON")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    versions = export_versions(args.model)
    if not versions:
        sys.exit(f"no export under {args.model}: run `make run` or `curator export` first")
    export = args.model / str(versions[-1])
    items = load_items_table(export / "catalogue" / "items.csv")["item_id"].to_numpy()
    manifest = json.loads((export / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    profiles = [rng.choice(items, 5, replace=False).tolist() for _ in range(200)]
    bodies = [json.dumps({"item_ids": profile, "k": 20}) for profile in profiles]
    extra_bodies = [
        json.dumps({"item_ids": profile, "k": 20, **(args.extra or {})}) for profile in profiles
    ]

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        script = tmp / "recommend.lua"
        script.write_text(LUA % ", ".join(f"[[{body}]]" for body in bodies))
        extra_script = tmp / "recommend-extra.lua"
        extra_script.write_text(LUA % ", ".join(f"[[{body}]]" for body in extra_bodies))
        rows = []
        trivial = ServiceProcess(
            [sys.executable, "-m", "uvicorn", "benchmarks.trivial_app:app", "--log-level",
             "warning"],
            tmp / "trivial.log",
            ready_path="/docs",
        )  # fmt: skip
        try:
            rows.append(
                (
                    "trivial FastAPI endpoint",
                    wrk(f"{trivial.url}/v1/recommendations", script, args.duration),
                )
            )
        finally:
            trivial.stop()
        start = time.perf_counter()
        service = curator_service(args.model, tmp / "live.db", tmp / "service.log")
        startup_s = time.perf_counter() - start
        try:
            result = wrk(f"{service.url}/v1/recommendations", script, args.duration)
            rows.append(("curator /v1/recommendations", result))
            if args.extra:
                result = wrk(f"{service.url}/v1/recommendations", extra_script, args.duration)
                rows.append((f"curator with {json.dumps(args.extra)}", result))
            memory = process_memory_gb(service.process.pid)
            metrics = service.client.get("/metrics").text
            batches = [
                float(re.search(rf"^curator_batch_size_{name} ([\d.e+]+)$", metrics, re.M).group(1))
                for name in ("sum", "count")
            ]
            upload_seconds = []
            for round_ in range(3):
                features = rng.normal(0, 1, (1000, manifest["catalogue"]["feature_dim"]))
                body = {
                    "items": [
                        {"item_id": f"bench-{round_}-{n}", "artist_id": "", "features": f.tolist()}
                        for n, f in enumerate(features.astype(np.float32))
                    ]
                }
                payload = json.dumps(body)
                start = time.perf_counter()
                response = service.client.post(
                    "/v1/items", content=payload, headers={"Content-Type": "application/json"}
                )
                upload_seconds.append(time.perf_counter() - start)
                response.raise_for_status()
        finally:
            service.stop()

    ceiling, curator = rows[0][1]["req/s"], rows[1][1]["req/s"]
    print(f"export {export} ({manifest['catalogue']['items']:,} artworks), wrk -t1 -c8 "
          f"-d{args.duration}s, one uvicorn worker each\n")  # fmt: skip
    print("| server | req/s | ratio | p50 ms | p99 ms | non-2xx |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, row in rows:
        print(
            f"| {name} | {row['req/s']:,.0f} | {row['req/s'] / ceiling:.2f} | "
            f"{row['p50 ms']:.1f} | {row['p99 ms']:.1f} | {row['non-2xx']} |"
        )
    mean_batch = batches[0] / batches[1]
    print(f"\nthroughput ratio {curator / ceiling:.2f} (target >= 0.8); "
          f"mean queries per model call {mean_batch:.1f}")  # fmt: skip
    print(f"service: ready {startup_s:.1f} s after start (loading the export, building its "
          f"index); RSS after the load test {memory['VmRSS']:.2f} GB, "
          f"peak {memory['VmHWM']:.2f} GB")  # fmt: skip
    print("\n| POST /v1/items, 1,000 artworks | seconds | artworks/s |")
    print("| --- | --- | --- |")
    for round_, seconds in enumerate(upload_seconds, 1):
        print(f"| round {round_} | {seconds:.2f} | {1000 / seconds:,.0f} |")


if __name__ == "__main__":
    main()
