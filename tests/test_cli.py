"""The `curator` command as a user runs it: a real subprocess, exit codes, messages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO, TINY_ITEMS, TINY_PURCHASES, write_dataset, write_untrained_run


def curator(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from training.cli import main; main()", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_generate_then_evaluate_writes_table_and_metrics(tmp_path):
    done = curator(
        "data", "generate", "--out", "store", "--scale", "400", "--seed", "2", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert "artworks 400" in done.stdout
    done = curator("evaluate", "--data", "store", "--out", "report", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| ideal | last |" in done.stdout and "| random | all |" in done.stdout
    rows = json.loads((tmp_path / "report" / "metrics.json").read_text())["rows"]
    assert {row["method"] for row in rows} >= {"oracle", "ideal", "popular", "random"}
    assert [row["subset"] for row in rows if row["method"] == "random"] == [
        "last",
        "last:cold",
        "last:warm",
        "all",
        "all:cold",
        "all:warm",
    ]
    assert (tmp_path / "report" / "replay-popular.csv").exists()


def test_evaluate_replaces_an_existing_report_only_with_force_and_never_a_file(tmp_path):
    """Once, --out wiped an existing directory without asking, and renamed a file out of the
    way before failing with a traceback."""
    done = curator("data", "generate", "--out", "store", "--scale", "60", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "file").write_text("keep")
    for out in ("mine", "file"):
        done = curator("evaluate", "--data", "store", "--out", out, "--baselines", "random",
                       cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.startswith(f"error: {out} ")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    assert (tmp_path / "file").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "mine", "store"]
    done = curator("evaluate", "--data", "store", "--out", "mine", "--baselines", "random",
                   "--force", cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == [
        "metrics.json", "replay-random.csv"
    ]  # fmt: skip
    # as the umask allows, not mkdtemp's 0700 (a container's other USER reads the exports)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "store").stat().st_mode & 0o777 == 0o777 & ~umask
    from training.atomic import write_text_atomic  # the export's manifest, history.json, ...

    write_text_atomic(tmp_path / "manifest.json", "{}")
    assert (tmp_path / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_bad_dataset_exits_2_with_file_line_and_field(tmp_path):
    write_dataset(tmp_path / "bad", TINY_ITEMS, TINY_PURCHASES + "u1,nope,2020-05-01\n")
    done = curator("evaluate", "--data", "bad", "--out", "report", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: purchases.csv, line 9, field 'item_id': unknown item 'nope' "
        "(not in items.csv; 1 row(s) with unknown items in all)"
    )
    assert not (tmp_path / "report").exists()


def test_import_without_trust_pickle_writes_nothing(tmp_path):
    (tmp_path / "inv.csv").write_text("artwork_id_hash,artist_id_hash,upload_timestamp\nh,a,1\n")
    (tmp_path / "pur.csv").write_text("user_id_hash,purchase_timestamp,artwork_id_hash\nu,2,h\n")
    (tmp_path / "emb.npy").write_bytes(b"")
    done = curator(
        "data",
        "import-ugallery-release",
        "--inventory",
        "inv.csv",
        "--purchases",
        "pur.csv",
        "--embeddings",
        "emb.npy",
        "--out",
        "out",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "--trust-pickle" in done.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_protocol_and_baseline_are_usage_errors(tmp_path):
    write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    done = curator("evaluate", "--data", "d", "--protocol", "magic", cwd=tmp_path)
    assert done.returncode == 2 and "protocol must be one of" in done.stderr
    done = curator("evaluate", "--data", "d", "--baselines", "oracle,best", cwd=tmp_path)
    assert done.returncode == 2 and "unknown baseline(s) ['best']" in done.stderr


def test_import_mmrec_writes_a_holdout_dataset(tmp_path):
    source = tmp_path / "mm"
    source.mkdir()
    rows = ["0\t0\t5\t1\t0", "0\t1\t5\t2\t1", "1\t1\t5\t3\t0", "1\t2\t5\t4\t2"]
    (source / "toy.inter").write_text(
        "userID\titemID\trating\ttimestamp\tx_label\n" + "\n".join(rows)
    )
    np.save(source / "image_feat.npy", np.random.default_rng(0).random((3, 4)))
    np.save(source / "text_feat.npy", np.random.default_rng(1).random((3, 2)))
    done = curator("data", "import-mmrec", "--dir", "mm", "--out", "out", "--no-text", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "wrote out: 3 items, 2 training, 1 valid and 1 test interactions"
    assert np.load(tmp_path / "out" / "features.npy").shape == (3, 4)
    assert (tmp_path / "out" / "test.csv").read_text() == "user_id,item_id\n1,2\n"
    done = curator("data", "import-mmrec", "--dir", "mm", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2 and "already exists" in done.stderr


# `curator` plus two commands: `noisy` makes TensorFlow's known noise (CUDA's cuInit failure on a
# machine without a GPU, oneDNN's DT_INT64 line, Keras's non-serializable warning) and one real
# C++ error line; `level` reports the TF_CPP_MIN_LOG_LEVEL a command sees, without TensorFlow.
NOISY_CURATOR = """
import os
from training.cli import app, main

@app.command("noisy")
def noisy() -> None:
    import tensorflow as tf
    import tf_keras

    class Tower(tf_keras.Model):
        def __init__(self, thing):
            super().__init__()
            self.thing = thing

    tf.function(tf.transpose)(tf.constant([[1, 2]], dtype=tf.int64))
    Tower(object()).get_config()
    os.write(2, b"2026-01-01 00:00:00.000001: E tensorflow/x.cc:1] a real error\\n")
    # the abseil form of the same lines, and what every --workers worker prints
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are "
                b"written to STDERR\\n")
    os.write(2, b"E0000 00:00:1795576489.852506    1234 cuda_platform.cc:51] failed call to "
                b"cuInit: INTERNAL: CUDA error\\n")
    os.write(2, b"I0000 00:00:1795576489.852506   14152 grpc_server_lib.cc:466] Started server "
                b"with target: grpc://127.0.0.1:53027\\n")
    os.write(2, b"E0000 00:00:1795576489.852506    1234 x.cc:2] another real error\\n")
    print("level", os.environ["TF_CPP_MIN_LOG_LEVEL"])

@app.command("level")
def level() -> None:
    print("level", os.environ["TF_CPP_MIN_LOG_LEVEL"])

main()
"""
NOISE = ("cuInit", "oneDNN", "non-serializable", "absl::InitializeLog", "grpc")


def noisy_curator(*args: str, tmp_path: Path, level: str | None = None):
    script = tmp_path / "noisy_curator.py"
    script.write_text(NOISY_CURATOR)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    if level is not None:
        env["TF_CPP_MIN_LOG_LEVEL"] = level
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    command = [sys.executable, str(script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)


def test_commands_drop_tensorflow_noise_but_keep_real_errors(tmp_path):
    done = noisy_curator("noisy", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "level 2"
    assert not [word for word in NOISE if word in done.stdout + done.stderr], done.stderr
    assert "E tensorflow/x.cc:1] a real error" in done.stderr
    assert "x.cc:2] another real error" in done.stderr


def test_verbose_shows_every_log_line(tmp_path):
    done = noisy_curator("--verbose", "noisy", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "level 0"  # TensorFlow's INFO lines too
    assert "non-serializable" in done.stderr and "a real error" in done.stderr


def test_a_tf_log_level_the_user_set_is_kept(tmp_path):
    for args, user, seen in [
        (["-v"], "1", "1"),
        (["-v"], "3", "3"),
        ([], "0", "0"),
        ([], "3", "3"),
        ([], None, "2"),
    ]:
        done = noisy_curator(*args, "level", tmp_path=tmp_path, level=user)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"level {seen}", (args, user)


def test_a_dataset_published_with_tfds_evaluates_like_its_directory(tmp_path):
    """`curator data publish-tfds`, then `--data tfds:NAME` wherever a dataset is read: the
    evaluation table equals the directory's, and bad names fail with exit 2."""
    env_dir = tmp_path / "tfds"
    done = curator("data", "generate", "--out", "store", "--scale", "300", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = curator(
        "data", "publish-tfds", "--data", "store", "--name", "store", "--tfds-dir", str(env_dir),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "curator_dataset/store:1.0.0" in done.stdout
    os.environ["TFDS_DATA_DIR"] = str(env_dir)
    try:
        tables = {}
        for data in ("store", "tfds:store", "tfds:store:1.0.0"):
            out = f"report-{len(tables)}"
            done = curator(
                "evaluate", "--data", data, "--out", out, "--baselines", "popular", cwd=tmp_path
            )
            assert done.returncode == 0, done.stderr
            rows = json.loads((tmp_path / out / "metrics.json").read_text())["rows"]
            tables[data] = [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
        assert tables["tfds:store"] == tables["store"] == tables["tfds:store:1.0.0"]
        needs = {
            "store": "valid.csv in store; it has none",
            "tfds:store": "a valid split; tfds:store:1.0.0 has none",
        }
        for data, message in needs.items():
            done = curator("evaluate", "--data", data, "--protocol", "holdout", "--split",
                           "valid", "--baselines", "popular", cwd=tmp_path)  # fmt: skip
            assert done.returncode == 2
            assert done.stderr == f"error: the holdout protocol needs {message}\n"
        done = curator("evaluate", "--data", "tfds:nope", "--out", "x", cwd=tmp_path)
        assert done.returncode == 2 and "published there: store (1.0.0)" in done.stderr
    finally:
        del os.environ["TFDS_DATA_DIR"]


def test_features_command_writes_a_dataset_and_names_a_bad_file(tmp_path):
    from tests.conftest import write_images

    names = write_images(tmp_path / "photos", 4)
    args = ["--backbone", "efficientnetv2-b0", "--weights", "random", "--batch-size", "3"]
    done = curator("features", "--images", "photos", "--out", "feat", *args, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "wrote feat: 4 images -> 1280-d efficientnetv2-b0 features" in done.stdout
    features = np.load(tmp_path / "feat" / "features.npy")
    assert features.shape == (4, 1280) and features.dtype == np.float32
    items = (tmp_path / "feat" / "items.csv").read_text().splitlines()[1:]
    assert [line.split(",")[0] for line in items] == sorted(names)
    (tmp_path / "photos" / "broken.png").write_bytes(b"\x89PNG not really")
    done = curator("features", "--images", "photos", "--out", "again", *args, cwd=tmp_path)
    assert done.returncode == 2 and "broken.png" in done.stderr
    assert not (tmp_path / "again").exists()


def test_a_directory_or_a_symbolic_link_loop_for_a_dataset_file_exits_2_in_one_line(tmp_path):
    """Once a traceback from `curator train`, `evaluate` and `data holdout`."""
    (write_dataset(tmp_path / "dir", TINY_ITEMS, TINY_PURCHASES) / "items.csv").unlink()
    (tmp_path / "dir" / "items.csv").mkdir()
    (write_dataset(tmp_path / "loop", TINY_ITEMS, TINY_PURCHASES) / "purchases.csv").unlink()
    (tmp_path / "loop" / "purchases.csv").symlink_to("purchases.csv")
    for command, data in [
        (["evaluate", "--out", "report"], "dir"),
        (["evaluate", "--out", "report"], "loop"),
        (["train", "--out", "run"], "dir"),
        (["data", "holdout", "--out", "held"], "loop"),
    ]:
        done = curator(*command, "--data", data, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert (
            done.stderr
            == {
                "dir": "error: items.csv: is a directory, expected a file\n",
                "loop": "error: purchases.csv: is a symbolic link loop\n",
            }[data]
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "loop"]


def test_train_refuses_an_out_that_is_a_file_before_any_work(tmp_path):
    """Once a traceback (NotADirectoryError), after loading the dataset."""
    (tmp_path / "notes.txt").write_text("keep")
    done = curator("train", "--data", "no-such-dataset", "--out", "notes.txt", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: notes.txt exists and is not a directory: choose another output\n"
    assert (tmp_path / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_train_refuses_an_export_root_that_is_a_file_before_any_work(tmp_path):
    """Once refused only after the whole training run."""
    (tmp_path / "exports").write_text("keep")
    done = curator(
        "train", "--data", "no-such-dataset", "--out", "run", "--export", "exports", cwd=tmp_path
    )
    assert done.returncode == 2
    assert done.stderr == "error: exports exists and is not a directory: choose another output\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exports"]


def test_evaluate_refuses_a_run_trained_on_features_of_another_dimension(tmp_path):
    """Once a Keras traceback."""
    write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)  # 4-d features
    write_untrained_run(tmp_path / "run", feature_dim=2048)
    done = curator("evaluate", "--data", "d", "--model", "run", "--out", "report", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: run was trained on 2048-d features; d/features.npy has 4-d\n"
    assert not (tmp_path / "report").exists()


def test_empty_baselines_evaluate_the_models_alone_and_without_a_model_are_refused(tmp_path):
    """Once an empty table."""
    write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    for baselines in ("", " , "):
        done = curator("evaluate", "--data", "d", "--baselines", baselines, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr == (
            "error: --baselines names no baseline and there is no --model: nothing to evaluate\n"
        )
    write_untrained_run(tmp_path / "run", feature_dim=4)
    done = curator("evaluate", "--data", "d", "--baselines", "", "--model", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    methods = {line.split(" | ")[0] for line in done.stdout.splitlines()[2:] if line}
    assert methods == {"| run"}


def test_evaluate_warns_of_a_run_trained_on_other_data_and_not_of_one_on_the_same(tmp_path):
    """Once silent: a run trained on the replay data and evaluated on its holdout split may
    have trained on the very purchases it is tested on."""
    from training.data.dataset import load_dataset
    from training.train import data_fingerprint

    write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    same = data_fingerprint(load_dataset(tmp_path / "d"))
    for name, fingerprint in (("same", same), ("other", "0" * 64), ("old", None)):
        write_untrained_run(tmp_path / name, feature_dim=4)
        if fingerprint is not None:
            record = {"data_fingerprint": fingerprint, "dataset": f"/data/{name}"}
            (tmp_path / name / "dataset.json").write_text(json.dumps(record))
    args = ["evaluate", "--data", "d", "--baselines", "random"]
    done = curator(*args, "--model", "same", "--model", "other", "--model", "old", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert warnings == [
        "warning: other was trained on other data (/data/other); the purchases evaluated here "
        "may be among those it trained on"
    ]
    (tmp_path / "other" / "dataset.json").write_text("[]")
    done = curator(*args, "--model", "other", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == "error: other/dataset.json: expected a mapping, found list\n"


def test_force_never_replaces_an_output_that_holds_the_input(tmp_path):
    """Once `--out` a parent of `--data` with `--force` deleted the dataset and its neighbours."""
    write_dataset(tmp_path / "parent" / "d", TINY_ITEMS, TINY_PURCHASES)
    (tmp_path / "parent" / "notes.txt").write_text("keep")
    for command in (
        ["evaluate", "--data", "parent/d", "--baselines", "popular", "--out", "parent"],
        ["data", "holdout", "--data", "parent/d", "--out", "parent"],
        ["data", "holdout", "--data", "parent/d", "--out", "parent/d"],
    ):
        done = curator(*command, "--force", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        out = command[-1]
        assert done.stderr == (
            f"error: --out {out} holds the input parent/d: replacing it would delete it; "
            "choose another output\n"
        )
        assert sorted(p.name for p in (tmp_path / "parent").iterdir()) == ["d", "notes.txt"]
        assert (tmp_path / "parent" / "d" / "purchases.csv").read_text() == TINY_PURCHASES


def test_a_budget_or_seed_out_of_range_names_its_option(tmp_path):
    """Once NaN minutes meant no budget, -1 was taken, and a seed of -1 said "expected
    non-negative integer" without naming --seed."""
    write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    for minutes in ("nan", "-1"):
        done = curator("train", "--data", "d", "--out", "r", "--budget-minutes", minutes,
                       cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2
        assert done.stderr == (
            f"error: --budget-minutes must be >= 0 (inf: no budget), got {float(minutes)}\n"
        )
    done = curator("data", "holdout", "--data", "d", "--out", "h", "--seed", "-1", cwd=tmp_path)
    assert done.returncode == 2 and "Invalid value for '--seed'" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_serve_refuses_a_bad_start_in_one_line(tiny_export, tmp_path):
    """Once tracebacks of hundreds of lines (SQLAlchemy's), or for a mistyped --model, SQLite's
    "unable to open database file" for the database it meant to make beside the exports."""
    import shutil

    shutil.copytree(tiny_export, tmp_path / "exports" / "1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATOR_")}

    def serve(*args, **variables):
        command = [sys.executable, "-m", "training.cli", "serve", "--port", "1", *args]
        return subprocess.run(command, cwd=tmp_path, env={**env, **variables},
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    done = serve("--model", "exprts")
    assert done.returncode == 2
    assert done.stderr == "error: exprts: no export found (run `curator export`)\n"
    for url, problem in (
        ("notaurl", "database 'notaurl': cannot open it (Could not parse SQLAlchemy URL"),
        ("sqlite:////no/such/dir/x.db", "database sqlite:////no/such/dir/x.db: cannot open it "
                                        "(unable to open database file)"),
        ("postgresql+psycopg://u:pw@127.0.0.1:1/x", "database postgresql+psycopg://u:***@"
                                                    "127.0.0.1:1/x: cannot open it ("),
    ):  # fmt: skip
        done = serve("--model", "exports", CURATOR_DATABASE_URL=url)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith(f"error: {problem}") and done.stderr.count("\n") == 1
    done = serve("--model", "exports", CURATOR_MAX_K="0")
    assert done.returncode == 2
    assert done.stderr == (
        "error: CURATOR_MAX_K: Input should be greater than or equal to 1 (got '0')\n"
    )


def test_holdout_fraction_outside_its_range_names_the_option_and_writes_nothing(tmp_path):
    write_dataset(tmp_path / "d", TINY_ITEMS, TINY_PURCHASES)
    for fraction in ("0.5", "0", "nan"):
        done = curator("data", "holdout", "--data", "d", "--out", "held", "--fraction", fraction,
                       cwd=tmp_path)  # fmt: skip
        assert done.returncode == 2
        assert done.stderr.startswith("error: --fraction must be in (0, 0.5)"), done.stderr
        assert done.stderr.endswith(f"got {float(fraction)}\n")
    assert not (tmp_path / "held").exists()
