"""A real server process on a loopback port, for the HTTP tests and benchmarks/bench_serving.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """Runs `command + ["--port", PORT]` and waits until `ready_path` answers 200; `stop()` ends
    it (SIGKILL with kill=True, as a crash would)."""

    def __init__(
        self, command: list[str], log: Path, env: dict | None = None, ready_path="/readyz"
    ):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline = time.monotonic() + 180
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {log.read_text()[-3000:]}")
            try:
                if self.client.get(ready_path).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"the server did not get ready: {log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self, kill: bool = False) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=60)


def curator_server(model_dir: Path, database: Path, **settings: str) -> Server:
    """`curator serve --model model_dir` with its live state in the SQLite file `database` and
    any other setting as CURATOR_<NAME>."""
    env = {
        "CURATOR_DATABASE_URL": f"sqlite:///{database}",
        **{f"CURATOR_{key.upper()}": value for key, value in settings.items()},
    }
    command = [sys.executable, "-m", "training.cli", "serve", "--model", str(model_dir)]
    return Server(command, database.with_suffix(".log"), env)
