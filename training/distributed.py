"""Training on several processes: `curator train --workers N`, tf.distribute's
MultiWorkerMirroredStrategy.

`launch_local(argv, n)` starts n local worker processes running the same `curator train`
command, each with its own `TF_CONFIG` (worker i of n on a loopback port), and waits for all of
them; on a cluster, start one `curator train ... --workers N` per machine with a `TF_CONFIG` of
your own (docs/training.md) and nothing is launched. In a worker, `from_environment()` gives the
strategy and the worker's place:

- every worker samples the same epoch (same seeds) and takes its own share of each global batch
  (`shard`): the global batch stays `batch_size`, split across the workers;
- the in-batch softmax sees every worker's candidates: `CuratorModel.compute_loss` gathers
  candidate vectors, ids and sampling probabilities across replicas (TFRS no longer does), so
  the negatives are those one worker would see;
- gradients are summed across workers (the loss is a sum over the batch), regularisation is
  counted once;
- the chief (worker 0) writes the run directory; every other worker runs the very same steps
  (the collectives need them) and writes its copy, checkpoints included, beside it
  (`.RUN.worker-i/`, its output in `.RUN.worker-i.log`), removed when all succeeded;
  `--resume` starts every other worker from a copy of the chief's run, so all resume from the
  same checkpoint.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Workers:
    strategy: object  # tf.distribute.MultiWorkerMirroredStrategy
    index: int
    count: int

    @property
    def chief(self) -> bool:
        return self.index == 0

    def output_dir(self, run_dir: Path) -> Path:
        return run_dir if self.chief else scratch_path(run_dir, self.index)

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This worker's share of one global batch."""
        return np.array_split(rows, self.count)[self.index]


def from_environment(expected: int) -> Workers | None:
    """The strategy of a worker started with TF_CONFIG (None without one); `expected` is the
    `--workers` count, which must match the cluster's."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"]["worker"], config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"TF_CONFIG: not a worker cluster description ({error})") from None
    if task.get("type", "worker") != "worker" or not 0 <= index < len(cluster):
        raise ValueError(f"TF_CONFIG: task {task} is not one of the {len(cluster)} workers")
    if len(cluster) != expected:
        raise ValueError(f"--workers {expected} but TF_CONFIG describes {len(cluster)} workers")
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    return Workers(strategy, index, len(cluster))


def launch_local(argv: list[str], count: int, run_dir: Path) -> int:
    """Runs `curator <argv>` as `count` local workers; the chief's output is shown, the
    others' go to .RUN.worker-i.log beside RUN. Returns the first non-zero exit status (the
    others are stopped), else 0."""
    ports = _free_ports(count)
    cluster = [f"127.0.0.1:{port}" for port in ports]
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    processes, logs = [], []
    # SIGTERM (timeout, docker stop, Kubernetes) ends the launcher as Ctrl-C does, stopping
    # the workers first (from before the first starts); a handler can only be set from the
    # main thread. A second SIGTERM while they stop ends the launcher at once.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if main_thread else None
    interrupted = False
    try:
        for index in range(count):
            env = dict(os.environ)
            env["TF_CONFIG"] = json.dumps(
                {"cluster": {"worker": cluster}, "task": {"type": "worker", "index": index}}
            )
            log = None if index == 0 else scratch_path(run_dir, index, ".log").open("w")
            logs.append(log)
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "training.cli", *argv],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT if log else None,
                )
            )
        while True:
            codes = [p.poll() for p in processes]
            failed = [c for c in codes if c not in (None, 0)]
            if failed:
                return failed[0]
            if all(c == 0 for c in codes):
                return 0
            time.sleep(0.2)
    except _Terminated:
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
        _stop(processes, interrupted)
        for log in logs:
            if log:
                log.close()


# seconds a worker gets to stop on SIGINT before it is killed
STOP_GRACE_S = 10.0


class _Terminated(Exception):
    """The launcher received SIGTERM."""


def _terminated(signum, frame) -> None:
    raise _Terminated


# after Ctrl-C, which the terminal sends the workers too: seconds they get to stop on that one
# before they are sent another (which would cut their own cleanup short)
CTRL_C_GRACE_S = 2.0


def _stop(processes: list[subprocess.Popen], interrupted: bool) -> None:
    """Stop the workers still running: SIGINT, as Ctrl-C would (TensorFlow's multi-worker
    strategy catches SIGTERM in its workers and trains on), then SIGKILL after STOP_GRACE_S.
    `interrupted`: the launcher had Ctrl-C, which its process group had too."""
    if interrupted:
        deadline = time.monotonic() + CTRL_C_GRACE_S
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.1)
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_GRACE_S
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scratch_path(run_dir: Path, index: int, suffix: str = "") -> Path:
    """Worker `index`'s copy of the run (or its log), beside the run directory."""
    return run_dir.parent / f".{run_dir.name}.worker-{index}{suffix}"


def remove_scratch(run_dir: Path, count: int) -> None:
    import shutil

    for index in range(1, count):
        shutil.rmtree(scratch_path(run_dir, index), ignore_errors=True)
        scratch_path(run_dir, index, ".log").unlink(missing_ok=True)


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
