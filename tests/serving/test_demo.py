"""`curator demo`, the last step of `make run`, against a real service process."""

import json
import os
import shutil
import subprocess
import sys

from serving.demo import purchase_log
from serving.process import REPO, free_port


def test_demo_shows_every_example_and_the_docs_address(tiny_export, tmp_path):
    assert tmp_path.resolve() != REPO
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    port = free_port()
    # run from the exports' own directory with a relative path, as `make run` does from a
    # checkout: the service it starts must find the same directory
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "demo", "--model", "exports", "--port", str(port),
         "--no-keep-serving"],
        cwd=tmp_path,
        env={**os.environ, "CURATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}"},
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for shown in (
        "(a returning customer)",
        "(a visitor's cart)",
        "strategy: popular",
        "(the new artwork, at once)",
        "POST /v1/purchases",
        f"interactive API docs: http://127.0.0.1:{port}/docs",
    ):
        assert shown in done.stdout
    # the artwork it uploaded is its own nearest neighbour
    assert "demo-upload-" in done.stdout.split("(the new artwork, at once)")[1].splitlines()[2]


def test_the_demo_says_why_it_shows_no_upload_when_the_dataset_cannot_be_opened(
    tiny_export, tmp_path
):
    """Once skipped in silence: an export of a published dataset, demoed without its
    TFDS_DATA_DIR."""
    root = tmp_path / "exports"
    shutil.copytree(tiny_export, root / "1")
    manifest = json.loads((root / "1" / "manifest.json").read_text())
    (root / "1" / "manifest.json").write_text(json.dumps({**manifest, "dataset": "tfds:gone"}))
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "demo", "--model", str(root), "--port", str(port),
         "--no-keep-serving"],
        env={**os.environ, "CURATOR_DATABASE_URL": f"sqlite:///{tmp_path / 'live.db'}",
             "TFDS_DATA_DIR": str(tmp_path / "tfds")},
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert (
        "(no POST /v1/items example: the export's dataset tfds:gone cannot be opened here: "
        f"curator_dataset/gone is not published under {tmp_path / 'tfds'}"
    ) in done.stdout
    assert "(the new artwork, at once)" not in done.stdout
    assert "(the same customer, after buying it)" in done.stdout


def test_the_demo_reads_numeric_ids_as_written(tmp_path):
    (tmp_path / "catalogue").mkdir()
    (tmp_path / "catalogue" / "purchases.csv").write_text("user_id,item_id\n0,007\n12,5\n")
    log = purchase_log(tmp_path)
    assert log["user_id"].tolist() == ["0", "12"] and log["item_id"].tolist() == ["007", "5"]
    assert ", ".join(log.groupby("user_id")["item_id"].agg(list)["0"]) == "007"
