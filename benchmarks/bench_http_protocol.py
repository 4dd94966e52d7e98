"""The cost of serving/http_protocol.py's bounds alone: a bare ASGI callable (no FastAPI, no
model) served by uvicorn with the bounded httptools protocol, so that the protocol's own
per-request work is most of what is timed (about 20,000 requests/s here).

    .venv/bin/python benchmarks/bench_http_protocol.py [--repo DIR] [--port 8951]
    wrk -t1 -c8 -d5s http://127.0.0.1:8951/healthz

`--repo` serves another checkout's protocol (e.g. a git worktree of an older commit), for an
A/B run interleaved with this one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", b"2")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"{}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--port", type=int, default=8951)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo))
    import uvicorn

    from serving.http_protocol import bounded_httptools_protocol

    protocol = bounded_httptools_protocol(65_536, 20.0, 100.0)
    uvicorn.run(app, port=args.port, http=protocol, loop="uvloop", log_level="warning")


if __name__ == "__main__":
    main()
