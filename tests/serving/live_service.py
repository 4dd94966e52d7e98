"""The tests' running service: a copy of an export served by a real `curator serve` process,
and one sample of its /metrics."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from serving.process import ServiceProcess, curator_service


def serve_copy(export: Path, root: Path, **settings) -> ServiceProcess:
    """`export` copied as version 1 under `root`, served with its live state in
    root/live.db and its output in root/service.log; any other setting as CURATOR_<NAME>."""
    shutil.copytree(export, root / "1")
    return curator_service(root, root / "live.db", root / "service.log", **settings)


def sample_value(server, sample: str) -> float:
    """The value of `sample` (a metric name with its labels, exactly as /metrics writes them)
    in the service's /metrics now; 0 where it has not been counted yet."""
    metrics = server.client.get("/metrics").text
    found = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0
