"""The training job end to end, --resume after a killed run, and the export loaded elsewhere."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import TINY_TRAINING, tiny_config
from training.config import TrainConfig
from training.data.dataset import load_dataset
from training.export import MANIFEST, export_run, export_versions
from training.search import search
from training.train import data_fingerprint, train

ROOT = Path(__file__).resolve().parents[2]


def test_training_improves_over_random_on_the_validation_replay(trained_run):
    history = json.loads((trained_run / "history.json").read_text())
    summary = json.loads((trained_run / "summary.json").read_text())
    assert [r["epoch"] for r in history] == list(range(1, len(history) + 1))
    assert summary["best_validation"]["auc"] > 0.6  # random ranks at 0.5
    assert all(np.isfinite(r["loss"]) for r in history)
    assert sorted(p.name for p in (trained_run / "checkpoints").glob("ckpt-*.index")) == [
        f"ckpt-{e}.index" for e in range(1, len(history) + 1)
    ]
    assert yaml.safe_load((trained_run / "config.yaml").read_text())["item_hidden"] == [32]


def test_artist_biases_get_the_sales_prior_weight_that_validates_best(
    trained_run, small_marketplace
):
    from training.data.history import artist_sell_through
    from training.evaluation.splits import training_split
    from training.trained_towers import load_towers

    summary = json.loads((trained_run / "summary.json").read_text())["artist_prior"]
    grid = {row["weight"]: row["auc"] for row in summary["grid"]}
    assert tuple(grid) == tiny_config().artist_prior_weights
    assert grid[summary["weight"]] == max(grid.values()) == summary["validation"]["auc"]

    dataset = load_dataset(small_marketplace)
    learned, _ = load_towers(trained_run, "best/towers")
    final, _ = load_towers(trained_run)
    prior = artist_sell_through(dataset.items, training_split(dataset)[0], final.artist_vocabulary)
    np.testing.assert_allclose(
        final.id_bias("artist_id"),
        learned.id_bias("artist_id") + summary["weight"] * prior,
        rtol=1e-5,
        atol=1e-6,
    )


def test_artist_prior_needs_artist_embeddings():
    with pytest.raises(ValueError, match="artist_prior_weights needs artist_embedding"):
        tiny_config(artist_embedding=False)


def test_a_run_directory_is_never_overwritten(trained_run, small_marketplace):
    with pytest.raises(FileExistsError, match="--resume"):
        train(load_dataset(small_marketplace), tiny_config(), trained_run, progress=False)


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_directory_that_is_a_file_is_refused_and_kept(tiny_dataset_dir, tmp_path, resume):
    """Once NotADirectoryError, a traceback from `curator train --out FILE`."""
    from training.search import search

    notes = tmp_path / "notes.txt"
    notes.write_text("keep")
    dataset = load_dataset(tiny_dataset_dir)
    message = f"^{re.escape(str(notes))} exists and is not a directory: choose another output$"
    with pytest.raises(FileExistsError, match=message):
        train(dataset, tiny_config(), notes, resume=resume, progress=False)
    with pytest.raises(FileExistsError, match=message):
        search(dataset, tiny_config(), notes, trials=2, resume=resume)
    assert notes.read_text() == "keep"


def test_resume_refuses_a_different_config(trained_run, small_marketplace):
    with pytest.raises(ValueError, match="config differs .* in temperature$"):
        train(
            load_dataset(small_marketplace),
            tiny_config(temperature=0.3),
            trained_run,
            resume=True,
            progress=False,
        )


def test_resume_refuses_other_data(trained_run, small_marketplace, tiny_dataset_dir, tmp_path):
    """The run's dataset.json holds its data's fingerprint: a resume on other files (even
    ones the same config trains on) would mix two datasets' epochs in one history."""
    run = tmp_path / "run"  # a copy: a resume that wrongly went on would change the fixture
    shutil.copytree(trained_run, run)
    recorded = json.loads((run / "dataset.json").read_text())
    assert recorded["data_fingerprint"] == data_fingerprint(load_dataset(small_marketplace))
    other = load_dataset(tiny_dataset_dir)
    with pytest.raises(ValueError, match="dataset differs from the one .* began on"):
        train(other, tiny_config(), run, resume=True)
    with pytest.raises(ValueError, match="dataset differs from the one .* began on"):
        search(other, tiny_config(), run, trials=2, resume=True)  # the run, resumed as a search
    copy = tmp_path / "search"
    record = search(load_dataset(small_marketplace), tiny_config(), copy, trials=1)
    assert record["trials"][0]["state"] == "complete"
    with pytest.raises(ValueError, match="dataset differs from the one .* began on"):
        search(load_dataset(tiny_dataset_dir), tiny_config(), copy, trials=2, resume=True)


def test_resume_reads_a_config_written_before_a_field_existed(trained_run, tmp_path):
    """A run begun before `ease_weights` existed has no such key: it takes the default, so the
    check compares configs, not files (the refusal then names the field that differs)."""
    from training.train import _check_run_dir

    run = tmp_path / "old"
    shutil.copytree(trained_run, run)
    fingerprint = json.loads((run / "dataset.json").read_text())["data_fingerprint"]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["ease_weights"]
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    config = TrainConfig(**saved)
    _check_run_dir(run, config, True, fingerprint)  # no error
    with pytest.raises(ValueError, match="config differs .* in ease_weights$"):
        _check_run_dir(run, replace(config, ease_weights=(0.0, 1.0)), True, fingerprint)
    (run / "config.yaml").write_text("epochs: many\n")
    with pytest.raises(ValueError, match="config.yaml is not a config: .*epochs"):
        _check_run_dir(run, config, True, fingerprint)


LOAD_AND_RETRIEVE = """
import json, sys
import numpy as np
import scann  # registers the ScaNN ops before the SavedModel is loaded
import tensorflow as tf
export, queries = sys.argv[1], np.load(sys.argv[2])
retrieval = tf.saved_model.load(export + "/retrieval").signatures["serving_default"]
user_tower = tf.saved_model.load(export + "/user_tower").signatures["serving_default"]
inputs = {key: tf.constant(queries[key]) for key in ("features", "mask", "item_id", "artist_id")}
out = retrieval(**inputs)
users = user_tower(**inputs)["vectors"]
np.savez(sys.argv[3], scores=out["scores"].numpy(), ids=out["item_ids"].numpy().astype(str),
         users=users.numpy())
"""


@pytest.mark.parametrize("kind", ["brute_force", "scann"])
def test_a_separate_process_loads_the_export_and_retrieves_the_same_top_k(
    trained_run, small_marketplace, tmp_path, kind
):
    dataset = load_dataset(small_marketplace)
    config_file = trained_run / "config.yaml"
    original = config_file.read_text()
    if kind == "scann":  # force ScaNN on the small catalogue, configured exact
        config = yaml.safe_load(original)
        config.update(scann_min_items=1, scann_leaves_to_search_share=1.0, scann_reorder=2_000)
        config_file.write_text(yaml.safe_dump(config))
    try:
        version = export_run(trained_run, dataset, tmp_path / "exports", progress=lambda _: None)
    finally:
        config_file.write_text(original)
    manifest = json.loads((version / MANIFEST).read_text())
    assert manifest["index"]["kind"] == kind
    assert manifest["index"]["recall_at_10"] == 1.0
    # the service's own search (its ScannSearcher, configured exact here), measured at export
    assert manifest["index"]["serving_recall_at_10"] == 1.0
    settings = manifest["index"]["settings"]
    assert settings["scann_min_items"] == (1 if kind == "scann" else 20_000)
    assert export_versions(tmp_path / "exports") == [1]
    from serving.export_loader import load_serving_model
    from training.index import IndexConfig

    served = load_serving_model(version)
    assert served.index == IndexConfig(**settings) and served.index.uses_scann(1_500) == (
        kind == "scann"
    )
    # with ScaNN the service's searcher comes serialized in the export: loaded, not rebuilt,
    # answering as the searcher the export measured
    assert (served.searcher is not None) == (kind == "scann")
    if kind == "scann":
        from serving.catalogue import Catalogue
        from serving.export_loader import ExportError
        from training.index import ScannSearcher

        assert Catalogue(served).searcher is served.searcher
        rebuilt = ScannSearcher(served.vectors, served.index)
        query = served.vectors[3]
        np.testing.assert_array_equal(served.searcher.search(query, 20, served.vectors)[0],
                                      rebuilt.search(query, 20, served.vectors)[0])  # fmt: skip
        assert not list(version.rglob("*.pkl"))
        tampered = tmp_path / "tampered"
        shutil.copytree(version, tampered)
        (tampered / "catalogue" / "scann" / "tree" / "scann_docids.pkl").write_bytes(b"x")
        manifest_path = tampered / MANIFEST
        listed = json.loads(manifest_path.read_text())
        listed["files"]["catalogue/scann/tree/scann_docids.pkl"] = {
            "sha256": hashlib.sha256(b"x").hexdigest(), "bytes": 1,
        }  # fmt: skip
        manifest_path.write_text(json.dumps(listed))
        with pytest.raises(ExportError, match="pickles are refused"):
            load_serving_model(tampered)

    # In this process: the towers and the exact top-k over the exported item vectors.
    from towers.profile_encoder import ProfileEncoder
    from training.trained_towers import load_towers

    profiles = [dataset.purchases["item"].to_numpy()[i : i + 1 + i % 4] for i in range(0, 40, 4)]
    rows = np.zeros((len(profiles), 4), np.int64)
    mask = np.zeros((len(profiles), 4), bool)
    for i, p in enumerate(profiles):
        rows[i, : p.size], mask[i, : p.size] = p, True
    inputs = {
        "features": np.asarray(dataset.features)[rows].astype(np.float32),
        "mask": mask,
        "item_id": dataset.item_ids.astype(str)[rows],
        "artist_id": dataset.items["artist_id"].to_numpy().astype(str)[rows],
    }
    encoder = ProfileEncoder(*load_towers(trained_run))
    users = encoder(inputs).numpy()
    vectors = np.load(version / "catalogue" / "item_vectors.npy")
    want = np.sort(users @ vectors.T, axis=1)[:, ::-1][:, :100]

    np.savez(tmp_path / "queries.npz", **inputs)
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_AND_RETRIEVE,
            str(version),
            str(tmp_path / "queries.npz"),
            str(tmp_path / "answer.npz"),
        ],
        check=True,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1"},
    )
    answer = np.load(tmp_path / "answer.npz")
    np.testing.assert_allclose(answer["users"], users, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(answer["scores"], want, rtol=1e-4, atol=1e-4)
    # Ids: each returned id's exported vector gives its returned score (ties may swap ids).
    row_of = {item: i for i, item in enumerate(dataset.item_ids.astype(str))}
    found_rows = np.vectorize(row_of.__getitem__)(answer["ids"])
    rescored = np.einsum("bd,bkd->bk", users, vectors[found_rows])
    np.testing.assert_allclose(rescored, answer["scores"], rtol=1e-4, atol=1e-4)


def test_resume_of_a_run_killed_before_its_first_checkpoint_was_recorded(
    small_marketplace, tmp_path
):
    # A kill between writing ckpt-1's files and the manager's `checkpoint` state file (the
    # race the killed-run test below can land in): resuming starts again from epoch 1.
    dataset, config = load_dataset(small_marketplace), tiny_config(epochs=1, patience=1)
    run_dir = tmp_path / "run"
    train(dataset, config, run_dir, progress=False)
    (run_dir / "checkpoints" / "checkpoint").unlink()
    (run_dir / "history.json").write_text("[]\n")

    result = train(dataset, config, run_dir, resume=True, progress=False)

    assert result.epochs_run == 1
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())] == [1]
    assert (run_dir / "checkpoints" / "checkpoint").exists()


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_stopped_before_its_first_checkpoint_starts_again(
    small_marketplace, tmp_path, resume, monkeypatch
):
    """Once a dead end (Ctrl-C or a failure in epoch 1): without --resume "already exists",
    with it "no checkpoints"; another config may be given, nothing was trained with the first."""
    import training.train as train_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    dataset = load_dataset(small_marketplace)
    run_dir = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "_fit_epoch", interrupted)
        with pytest.raises(KeyboardInterrupt):
            train(dataset, tiny_config(epochs=1, learning_rate=0.5), run_dir, progress=False)
    assert {p.name for p in run_dir.iterdir()} <= {"config.yaml", "dataset.json", "logs"}

    result = train(dataset, tiny_config(epochs=1), run_dir, resume=resume, progress=False)

    assert result.epochs_run == 1
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["learning_rate"] != 0.5


def test_a_diverged_epoch_names_the_settings_to_change(small_marketplace, tmp_path, monkeypatch):
    """Once "validation: score() returned NaN or inf", naming neither training nor the config."""
    import training.train as train_module

    monkeypatch.setattr(train_module, "_fit_epoch", lambda *args: (float("nan"), 10))
    config = tiny_config(epochs=2)
    with pytest.raises(ValueError) as raised:
        train(load_dataset(small_marketplace), config, tmp_path / "run", progress=False)
    assert str(raised.value) == (
        f"training diverged in epoch 1: the loss is nan (learning_rate {config.learning_rate}, "
        f"temperature {config.temperature}: try a lower learning rate or a higher temperature)"
    )


def test_a_run_with_a_checkpoint_is_still_never_replaced(trained_run, small_marketplace):
    with pytest.raises(FileExistsError, match="pass --resume to continue it"):
        train(load_dataset(small_marketplace), tiny_config(), trained_run, progress=False)


def test_export_refuses_an_unfinished_run(tmp_path, small_marketplace):
    with pytest.raises(ValueError, match="not a finished training run"):
        export_run(tmp_path, load_dataset(small_marketplace), tmp_path / "exports")


def test_resume_after_a_killed_run_finishes_like_an_uninterrupted_one(small_marketplace, tmp_path):
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({**TINY_TRAINING, "epochs": 3, "patience": 3}))
    command = [
        sys.executable, "-m", "training.cli", "train", "--data", str(small_marketplace),
        "--config", str(config_file), "--trials", "1",
    ]  # fmt: skip
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    killed = tmp_path / "killed"
    process = subprocess.Popen([*command, "--out", str(killed)], cwd=ROOT, env=env)
    deadline = time.monotonic() + 120
    while not (killed / "checkpoints" / "ckpt-1.index").exists():
        assert process.poll() is None, "training ended before its first checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done_before = len(list((killed / "checkpoints").glob("ckpt-*.index")))
    assert done_before < 3

    subprocess.run([*command, "--out", str(killed), "--resume"], cwd=ROOT, env=env, check=True)
    straight = tmp_path / "straight"
    subprocess.run([*command, "--out", str(straight)], cwd=ROOT, env=env, check=True)

    def checkpoints(run):
        return sorted(p.name for p in (run / "checkpoints").glob("ckpt-*.index"))

    assert checkpoints(killed) == checkpoints(straight) == [f"ckpt-{e}.index" for e in (1, 2, 3)]
    resumed_history = json.loads((killed / "history.json").read_text())
    straight_history = json.loads((straight / "history.json").read_text())
    assert [r["epoch"] for r in resumed_history] == [1, 2, 3]
    for a, b in zip(resumed_history, straight_history, strict=True):
        assert a["valid_auc"] == pytest.approx(b["valid_auc"], abs=0.02)
    version = export_run(killed, load_dataset(small_marketplace), tmp_path / "exports",
                         progress=lambda _: None)  # fmt: skip
    assert (version / "retrieval" / "saved_model.pb").exists()


def test_a_holdout_dataset_is_validated_on_its_valid_split(small_marketplace, tmp_path):
    from training.data.dataset import save_dataset
    from training.data.history import holdout_split
    from training.evaluation.protocols import holdout_cases

    save_dataset(holdout_split(load_dataset(small_marketplace), seed=1), tmp_path / "holdout")
    dataset = load_dataset(tmp_path / "holdout")
    run = train(dataset, tiny_config(epochs=1), tmp_path / "run", progress=False)
    summary = json.loads((run.run_dir / "summary.json").read_text())
    assert summary["validation_tests"] == len(holdout_cases(dataset, "valid")) > 0
    assert summary["fit_purchases"] == len(dataset.purchases)


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_an_epochs_loss_is_its_mean_per_example_not_its_last_batchs(small_marketplace, loss):
    """At a learning rate too small to move the weights, the epoch's loss is recomputed batch by
    batch from the same examples: the summed loss over every example it covers."""
    from training.sampling import sample_examples
    from training.train import _batches, _build_model, _fit_epoch, _prepare_data

    dataset = load_dataset(small_marketplace)
    config = tiny_config(
        learning_rate=1e-12,
        batch_size=100,
        loss=loss,
        artist_embedding=False,
        artist_prior_weights=(),
    )
    data = _prepare_data(dataset, config)
    model = _build_model(dataset, config, data.fit_purchases)
    epoch_loss, n_examples = _fit_epoch(model, dataset, data.context, config, 0)

    examples = sample_examples(
        data.context, config.policy_counts, seed=config.seed * 1_000, negatives=loss == "bpr",
        in_cluster=config.in_cluster,
    )  # fmt: skip
    assert len(examples) == n_examples
    batches, _ = _batches(examples, dataset.n_items, config.batch_size, [config.seed, 0])
    summed, counted, last = 0.0, 0.0, None
    for batch in batches:
        last = float(model.compute_loss(batch))
        covered = float(model._examples_in_loss(batch))
        summed += last * covered if loss == "bpr" else last
        counted += covered
    assert counted > 0 and n_examples % config.batch_size  # a short last batch
    assert epoch_loss == pytest.approx(summed / counted, rel=1e-4)
    assert epoch_loss != pytest.approx(last, rel=1e-2)


def test_an_untimed_run_exports_and_is_served(small_marketplace, tmp_path):
    """Purchases without times (an MMRec import) train, export without a timestamp column, and
    load in the service: the log's customers get their profiles, and live purchases add."""
    from serving.schemas import PurchaseIn, Purchases, RecommendationRequest
    from serving.service import Service
    from serving.settings import Settings
    from training.evaluation.splits import with_purchases
    from training.search import adapt_to_data

    dataset = load_dataset(small_marketplace)
    untimed = with_purchases(dataset, dataset.purchases.assign(timestamp=np.nan))
    config = adapt_to_data(replace(tiny_config(), epochs=1), untimed)
    train(untimed, config, tmp_path / "run", progress=False)
    version = export_run(tmp_path / "run", untimed, tmp_path / "exports", progress=lambda _: None)
    log = (version / "catalogue" / "purchases.csv").read_text().splitlines()
    assert log[0] == "user_id,item_id" and len(log) == len(untimed.purchases) + 1

    database = f"sqlite:///{tmp_path}/live.db"
    service = Service(Settings(model_dir=tmp_path / "exports", database_url=database))
    service.reload()
    catalogue = service.catalogue
    purchases = untimed.purchases.astype({"user_id": str, "item_id": str})
    customer = purchases["user_id"].iloc[0]
    bought = purchases.loc[purchases["user_id"] == customer, "item_id"]
    assert [catalogue.item_ids[r] for r in catalogue.profiles[customer]] == list(
        dict.fromkeys(bought)
    )
    request = RecommendationRequest(customer_id=customer, k=10)
    [answer] = service.answer([service.resolve(request)])
    assert answer["strategy"] == "model" and len(answer["items"]) == 10
    assert not {item["item_id"] for item in answer["items"]} & set(bought)
    unsold = next(i for i in catalogue.item_ids if not catalogue.sold[catalogue.row_of[i]])
    service.add_purchases(Purchases(purchases=[PurchaseIn(customer_id="new", item_id=unsold)]))
    assert [catalogue.item_ids[r] for r in catalogue.profiles["new"]] == [unsold]


def test_data_without_validation_tests_is_refused_before_a_run_directory_is_made(
    small_marketplace, tmp_path
):
    """Untimed purchases where no customer has three distinct artworks leave nothing to
    validate on: training says why, and leaves no run directory that --resume cannot use."""
    from training.evaluation.splits import with_purchases
    from training.search import adapt_to_data

    dataset = load_dataset(small_marketplace)
    purchases = dataset.purchases.drop_duplicates(["user_id", "item"]).assign(timestamp=np.nan)
    two_each = purchases.groupby("user_id").head(2).reset_index(drop=True)
    untimed = with_purchases(dataset, two_each)
    config = adapt_to_data(tiny_config(), untimed)
    for run in (
        lambda out: train(untimed, config, out, progress=False),
        lambda out: search(untimed, tiny_config(), out, trials=2),
    ):
        with pytest.raises(ValueError, match="no validation tests in .*: no customer has 3 or"):
            run(tmp_path / "run")
        assert not (tmp_path / "run").exists()
