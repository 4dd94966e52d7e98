"""A damaged or hand-edited run directory (a file truncated, emptied, replaced by a directory, a
key deleted) is refused by every reader, naming the file: once tracebacks (TensorFlow's
OpError, IndexError, BadZipFile, yaml's ParserError, KeyError) or messages naming no file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, tiny_config
from training.data.dataset import load_dataset
from training.export import export_run
from training.search import search
from training.train import train
from training.trained_towers import load_run_recommender


def truncate(path, keep: int = 10) -> None:
    path.write_bytes(path.read_bytes()[:keep])


DAMAGES = {
    "towers.json truncated": (
        lambda run: truncate(run / "towers.json"),
        "towers.json: not a readable JSON record",
    ),
    "towers.json without the user tower": (
        lambda run: (run / "towers.json").write_text('{"item_tower": {}}'),
        "towers.json: no 'user_tower' in it",
    ),
    "weights truncated": (
        lambda run: truncate(run / "model" / "towers.data-00000-of-00001", 100),
        "model/towers: the towers' weights cannot be read",
    ),
    "weights deleted": (
        lambda run: (run / "model" / "towers.data-00000-of-00001").unlink(),
        "model/towers: the towers' weights cannot be read",
    ),
    "weights index emptied": (
        lambda run: (run / "model" / "towers.index").write_bytes(b""),
        "model/towers: the towers' weights cannot be read",
    ),
    "nearest-purchase term truncated": (
        lambda run: truncate(run / "model" / "nearest_purchase.npz", 100),
        "nearest_purchase.npz: not a nearest-purchase file",
    ),
}


@pytest.fixture
def damaged_copy(trained_run, tmp_path):
    """A copy of the shared trained run, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_loading_a_damaged_run_names_the_file(damaged_copy, small_marketplace, damage):
    make, message = DAMAGES[damage]
    make(damaged_copy)
    with pytest.raises(ValueError) as raised:
        load_run_recommender(damaged_copy, load_dataset(small_marketplace))
    assert message in str(raised.value) and str(damaged_copy) in str(raised.value)
    assert "\n" not in str(raised.value)  # one line, not TensorFlow's dump


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("config.yaml", "epochs: [\n", "config.yaml: not a readable YAML record"),
        ("config.yaml", "- 1\n", "config.yaml: expected a mapping, found list"),
        ("summary.json", "[1, 2]", "summary.json: expected a mapping, found list"),
        ("summary.json", '{"best_epoch": 1}', "summary.json: no 'data_fingerprint', "),
    ],
)
def test_exporting_a_damaged_run_names_the_file(
    damaged_copy, small_marketplace, tmp_path, file, content, message
):
    (damaged_copy / file).write_text(content)
    with pytest.raises(ValueError, match=message):
        export_run(damaged_copy, load_dataset(small_marketplace), tmp_path / "exports")
    assert not (tmp_path / "exports").exists() or not any((tmp_path / "exports").iterdir())


def test_the_export_command_names_a_summary_without_the_dataset(damaged_copy, tmp_path):
    summary = json.loads((damaged_copy / "summary.json").read_text())
    del summary["dataset"]
    (damaged_copy / "summary.json").write_text(json.dumps(summary))
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "export", "--run", str(damaged_copy), "--out",
         str(tmp_path / "exports")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == f"error: {damaged_copy}/summary.json: no 'dataset' in it\n"


def test_resuming_a_run_with_a_damaged_record_names_the_file(damaged_copy, small_marketplace):
    dataset = load_dataset(small_marketplace)
    (damaged_copy / "config.yaml").write_text("epochs: [\n")
    with pytest.raises(ValueError, match="config.yaml: not a readable YAML record"):
        train(dataset, tiny_config(), damaged_copy, resume=True, progress=False)


def test_resuming_a_search_with_a_damaged_record_names_the_file(small_marketplace, tmp_path):
    dataset = load_dataset(small_marketplace)
    run = tmp_path / "search"
    (run).mkdir()
    (run / "search.json").write_text("{}")
    with pytest.raises(ValueError, match="search.json: no 'base', 'space', 'selection_metric', "):
        search(dataset, tiny_config(epochs=1), run, trials=2, resume=True)
