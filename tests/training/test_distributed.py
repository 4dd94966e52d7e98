"""`curator train --workers 2`: two local processes under MultiWorkerMirroredStrategy train the
same model one process does, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_TRAINING


@pytest.fixture(scope="module")
def tiny_yaml(tmp_path_factory):
    base = yaml.safe_load((REPO / "training" / "configs" / "curator.yaml").read_text())
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(yaml.safe_dump({**base, **TINY_TRAINING, "epochs": 3}))
    return path


def train_command(data, config, out, *extra):
    return [
        sys.executable, "-m", "training.cli", "train", "--data", str(data), "--config",
        str(config), "--trials", "1", "--out", str(out), *extra,
    ]  # fmt: skip


def history(run) -> list[tuple]:
    return [
        (r["epoch"], round(r["loss"], 3), r["examples"], round(r["valid_mean_recall"], 6))
        for r in json.loads((run / "history.json").read_text())
    ]


def _wait_for_first_epoch(launcher: subprocess.Popen, run) -> None:
    """Until `run`'s history holds an epoch (at most 300 s; the launcher must keep running)."""
    deadline = time.monotonic() + 300
    while not (
        (run / "history.json").exists()
        and len(json.loads((run / "history.json").read_text() or "[]")) >= 1
    ):
        assert launcher.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)


def test_two_workers_train_what_one_trains_and_resume_after_a_kill(
    small_marketplace, tiny_yaml, tmp_path
):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(train_command(small_marketplace, tiny_yaml, one), cwd=REPO, check=True,
                   capture_output=True, timeout=600)  # fmt: skip
    done = subprocess.run(
        train_command(small_marketplace, tiny_yaml, two, "--workers", "2"),
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "grpc" not in done.stderr and "absl" not in done.stderr  # each worker's INFO lines
    # the global batch is split between the workers and every worker's candidates are every
    # worker's negatives: the first epoch is the same to the last digit; later ones differ
    # only as far as Keras's fit with a step count differs from one without (which workers
    # need): losses within 0.1%, validation within 0.01. A worker seeing only its own
    # candidates gave 291 against 448 at epoch 1.
    assert history(two)[0] == history(one)[0]
    assert [h[::2] for h in history(two)] == [h[::2] for h in history(one)]  # epochs, examples
    for (_, a_loss, _, a), (_, b_loss, _, b) in zip(history(two), history(one), strict=True):
        assert a_loss == pytest.approx(b_loss, rel=1e-3)
        assert a == pytest.approx(b, abs=0.01)
    summary = json.loads((two / "summary.json").read_text())  # the chief wrote the run
    single = json.loads((one / "summary.json").read_text())
    metric = "mean_recall"  # the chosen epoch may flip on a near tie; its figure may not
    assert summary["epoch_validation"][metric] == pytest.approx(
        single["epoch_validation"][metric], abs=0.01
    )
    assert not list(tmp_path.glob(".two.worker-*"))  # the other worker's copy is gone

    # killed (the whole process group, as Ctrl-C or a lost machine would) after an epoch
    killed = tmp_path / "killed"
    launcher = subprocess.Popen(
        train_command(small_marketplace, tiny_yaml, killed, "--workers", "2"),
        cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_first_epoch(launcher, killed)
    os.killpg(launcher.pid, signal.SIGKILL)
    launcher.wait()
    assert not (killed / "summary.json").exists()
    resumed = subprocess.run(
        train_command(small_marketplace, tiny_yaml, killed, "--workers", "2", "--resume"),
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [h[:3] for h in history(killed)] == [h[:3] for h in history(two)]


def test_a_tf_config_that_does_not_match_workers_is_refused(small_marketplace, tiny_yaml, tmp_path):
    config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]},
              "task": {"type": "worker", "index": 0}}  # fmt: skip
    done = subprocess.run(
        train_command(small_marketplace, tiny_yaml, tmp_path / "x", "--workers", "2"),
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CONFIG": json.dumps(config)},
    )  # fmt: skip
    assert done.returncode == 2
    assert "--workers 2 but TF_CONFIG describes 3 workers" in done.stderr


def _stat(pid: int | str) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state, parent, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _workers(pid: int) -> list[int]:
    """The `training.cli` processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        fields = _stat(entry) if entry.isdigit() else None
        if fields is not None and int(fields[1]) == pid:
            try:
                command = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"training.cli" in command:
                found.append(int(entry))
    return found


def _running(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads worker processes from /proc")
def test_sigterm_to_the_launcher_stops_its_workers(small_marketplace, tiny_yaml, tmp_path):
    """timeout, docker stop and Kubernetes send SIGTERM to the main process only: the launcher
    stops its workers (which TensorFlow's strategy keeps training on SIGTERM) and exits 143."""
    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({**yaml.safe_load(tiny_yaml.read_text()), "epochs": 200}))
    run = tmp_path / "run"
    launcher = subprocess.Popen(
        train_command(small_marketplace, config, run, "--workers", "2"),
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _wait_for_first_epoch(launcher, run)
    workers = _workers(launcher.pid)
    try:
        assert len(workers) == 2 and all(_running(pid) for pid in workers)
        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=60) == 128 + signal.SIGTERM
        assert not [pid for pid in workers if _running(pid)]
    finally:  # a failure must not leave 200-epoch workers behind
        for pid in [launcher.pid, *workers]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
