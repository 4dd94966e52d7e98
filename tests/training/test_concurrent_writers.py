"""Several processes writing one output: none silently replaces another's, and one training run
(or export, or publication) at a time goes into a directory. Each case here once let both
processes report success while one's output was lost, or deleted a run still training."""

from __future__ import annotations

import threading
import time

import pytest

from tests.conftest import tiny_config
from training.atomic import atomic_directory, directory_lock
from training.data.dataset import load_dataset
from training.export import export_run, export_versions
from training.search import search
from training.train import train


def test_an_output_another_process_wrote_meanwhile_is_not_replaced_without_force(tmp_path):
    out = tmp_path / "out"
    refused = pytest.raises(FileExistsError, match="another process wrote it meanwhile")
    with refused, atomic_directory(out) as tmp:
        (tmp / "mine.txt").write_text("mine")
        out.mkdir()  # the other process finishes first
        (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no stray temporary
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]


def test_with_force_the_last_writer_replaces_the_output_whatever_the_order(tmp_path):
    out = tmp_path / "out"
    with atomic_directory(out, overwrite=True) as tmp:
        (tmp / "mine.txt").write_text("mine")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_held_directory_lock_refuses_or_waits(tmp_path):
    refused = pytest.raises(FileExistsError, match="busy here")
    held = directory_lock(tmp_path / "d", wait=False)
    with held, refused, directory_lock(tmp_path / "d", wait=False, busy="busy here"):
        pass
    with directory_lock(tmp_path / "d", wait=False):  # released at the end of the block
        pass
    assert not (tmp_path / "d").exists()  # made by the lock, left empty: removed


def test_a_run_directory_being_trained_is_refused_even_to_resume_or_restart(
    small_marketplace, tmp_path
):
    """Once a second `curator train` wrote into the same run (mixed checkpoints, one result
    lost), and a `--resume` of a run still in its first epoch deleted it as unstarted."""
    dataset, run = load_dataset(small_marketplace), tmp_path / "run"
    with directory_lock(run, wait=False):  # as the first process holds it while training
        (run / "config.yaml").write_text("epochs: 1\n")  # in epoch 1: no checkpoint yet
        for resume in (False, True):
            with pytest.raises(FileExistsError, match="is being trained by another process"):
                train(dataset, tiny_config(epochs=1), run, resume=resume, progress=False)
        with pytest.raises(FileExistsError, match="is being searched by another process"):
            search(dataset, tiny_config(epochs=1), tmp_path / "run", trials=2, resume=True)
        assert [p.name for p in run.iterdir()] == ["config.yaml"]


def test_an_export_waits_for_another_into_the_same_root(trained_run, small_marketplace, tmp_path):
    """Once two exports took the same version number and one replaced the other."""
    root = tmp_path / "exports"
    dataset = load_dataset(small_marketplace)
    done = []
    with directory_lock(root, wait=False):  # another export is writing version 1
        worker = threading.Thread(
            target=lambda: done.append(export_run(trained_run, dataset, root, progress=str))
        )
        worker.start()
        time.sleep(3.0)
        assert worker.is_alive() and export_versions(root) == []
        (root / "1").mkdir()
        (root / "1" / "manifest.json").write_text("{}")  # the other's version 1, complete
    worker.join(timeout=600)
    assert done == [root / "2"] and export_versions(root) == [1, 2]
