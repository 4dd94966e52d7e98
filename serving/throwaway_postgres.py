"""A throwaway PostgreSQL server in a temporary directory (tests and benchmarks).

`initdb` and `postgres` refuse to run as root, so as root they run as the `postgres` user
(`runuser`); the directory is made theirs. `ThrowawayPostgres.available()` says whether the
server binaries are on the PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class ThrowawayPostgres:
    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="curator-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.data = self.root / "data"
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self._run(["initdb", "-D", str(self.data), "-A", "trust", "-U", "curator"])
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        log = str(self.root / "log")
        self._run(["pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start"])

    @staticmethod
    def available() -> bool:
        return shutil.which("initdb") is not None and shutil.which("pg_ctl") is not None

    def _run(self, command: list[str]) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True)

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL (psycopg 3)."""
        import psycopg

        name = f"curator_{time.time_ns()}"
        with psycopg.connect(
            f"postgresql://curator@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://curator@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)
