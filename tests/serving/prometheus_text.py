"""Reading one sample of the service's /metrics in the tests."""

from __future__ import annotations

import re


def sample_value(server, sample: str) -> float:
    """The value of `sample` (a metric name with its labels, exactly as /metrics writes them)
    in the service's /metrics now; 0 where it has not been counted yet."""
    metrics = server.client.get("/metrics").text
    found = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0
