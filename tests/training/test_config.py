"""The training configuration refuses what would fail later (or train something else): each
field's type as declared, and its range, before any work."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_ITEMS, TINY_PURCHASES, write_dataset
from training.config import load_config


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("epochs: true", "config field 'epochs' must be an integer, got True"),
        ("batch_size: 2.5", "config field 'batch_size' must be an integer, got 2.5"),
        ("learning_rate: .inf", "config field 'learning_rate' must be a finite number, got inf"),
        ("lr_decay: .nan", "config field 'lr_decay' must be a finite number, got nan"),
        ("l2_normalize: 1", "config field 'l2_normalize' must be true or false, got 1"),
        ("item_hidden: [32, 2.5]", "config field 'item_hidden' element must be an integer, got"),
        ("item_hidden: [-3]", "config field 'item_hidden' must be a non-empty list of units >= 1, "
                              "got (-3,)"),
        ("weight_decay: -1", "config field 'weight_decay' must be >= 0, got -1"),
        ("patience: -5", "config field 'patience' must be >= 1, got -5"),
        ("n_clusters: 0", "config field 'n_clusters' must be >= 1, got 0"),
        ("seed: -1", "config field 'seed' must be in [0, 2**32), got -1"),
        ("activation: nonsense", "config field 'activation' must be one of ("),
        ("policies: {history: -1}", "config field 'policies' must be names from ("),
        # once tracebacks or messages naming no field, or a count silently truncated
        ("item_hidden: 200", "config field 'item_hidden' must be a list, each element an "
                             "integer, got 200"),
        ("user_hidden: []", "config field 'user_hidden' must be a non-empty list of units >= 1"),
        ("policies: 5", "config field 'policies' must be a mapping of policy names to integer "
                        "counts, e.g. {history: 1, one_item: 2000}, got 5"),
        ("policies: abc", "config field 'policies' must be a mapping"),
        ("policies: [[history]]", "config field 'policies' must be a mapping"),
        ("policies: {history: abc}", "config field 'policies' must be a mapping of policy names "
                                     "to integer counts, e.g. {history: 1, one_item: 2000}, got "
                                     "'history': 'abc'"),
        ("policies: {history: 1.7}", "config field 'policies' must be a mapping"),
        ("1: 2", "unknown config field(s) ['1']"),
        # once a 40-line TensorFlow error in epoch 1
        ("item_hidden: [64]", "config: item_hidden ends in 64 units and user_hidden in 200: "
                              "both towers must end in the same width"),
    ],
)  # fmt: skip
def test_a_bad_field_is_refused_naming_the_file_and_field(tmp_path, line, message):
    path = tmp_path / "my.yaml"
    path.write_text(line + "\n")
    with pytest.raises(ValueError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"my.yaml: {message}")


def test_a_bad_config_fails_before_the_run_directory_is_made(tmp_path):
    """Once `weight_decay: -1` failed after creating runs/X, which then neither --resume nor a
    corrected rerun could use."""
    data = write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    (tmp_path / "bad.yaml").write_text("weight_decay: -1\n")
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "train", "--data", str(data), "--config",
         str(tmp_path / "bad.yaml"), "--trials", "1", "--out", str(tmp_path / "run")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().endswith("config field 'weight_decay' must be >= 0, got -1")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("dir.yaml", None, "config {path}: not a regular file"),
        ("latin.yaml", b"\xffepochs: 1\n", "latin.yaml: not UTF-8 text (byte 0)"),
        ("empty.yaml", b"", "empty.yaml: expected a mapping of config fields"),
        ("empty.toml", b"", "empty.toml: expected a mapping of config fields"),
    ],
)
def test_a_config_file_that_is_no_config_is_refused_naming_it(tmp_path, name, content, message):
    """Once a traceback (a directory), a message naming no file (bad bytes), or, for an empty
    TOML file, the defaults silently (an empty YAML was refused)."""
    path = tmp_path / name
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(message.format(path=path))


def test_a_named_pipe_as_config_is_refused_without_blocking(tmp_path):
    """Once the read waited for a writer for ever."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):
        load_config(str(fifo))
