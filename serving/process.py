"""The service as a child process: started, waited for until ready, stopped.

Used by `curator demo`, the notebooks, the HTTP tests and benchmarks/bench_serving.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    """Runs `command + ["--port", PORT]` and waits until `ready_path` answers 200. Output goes
    to `log` (None: this process's own output). `stop()` ends it, with SIGKILL if `kill` (as a
    crash would). Also a context manager."""

    def __init__(
        self,
        command: list[str],
        log: Path | None = None,
        env: dict | None = None,
        *,
        port: int | None = None,
        ready_path: str = "/readyz",
        timeout: float = 300,
        on_wait=lambda: None,
    ):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        output = log.open("w") if log else None
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
        )
        self.client = httpx.Client(base_url=self.url, timeout=60)
        deadline, last_notice = time.monotonic() + timeout, time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited before it was ready{self._tail()}")
            try:
                if self.client.get(ready_path).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise RuntimeError(f"the service was not ready after {timeout} s{self._tail()}")
            if time.monotonic() - last_notice > 5:
                on_wait()
                last_notice = time.monotonic()
            time.sleep(0.2)

    def _tail(self) -> str:
        return f": {self.log.read_text()[-3000:]}" if self.log else " (see its output above)"

    def stop(self, kill: bool = False) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.process.wait(timeout=60)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def curator_service(
    model_dir: Path, database: Path | None = None, log: Path | None = None, **settings
) -> ServiceProcess:
    """`curator serve --model model_dir` on a free loopback port (or settings["port"]), its live
    state in the SQLite file `database` (default: beside the exports), any other setting as
    CURATOR_<NAME>."""
    port, on_wait = settings.pop("port", None), settings.pop("on_wait", lambda: None)
    env = {f"CURATOR_{key.upper()}": str(value) for key, value in settings.items()}
    # absolute: the service runs from the repository (REPO), not from the caller's directory
    if database is not None:
        env["CURATOR_DATABASE_URL"] = f"sqlite:///{Path(database).resolve()}"
    model = str(Path(model_dir).resolve())
    command = [sys.executable, "-m", "training.cli", "serve", "--model", model]
    return ServiceProcess(command, log, env, port=port, on_wait=on_wait)
