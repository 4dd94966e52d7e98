"""`curator train`: fit the towers on a dataset, select the epoch on a validation replay.

Data, as the paper splits it: each customer's last basket is the test (never seen here). Of the
rest, each customer's last basket is the validation: the model is fitted on what remains, and
every epoch it is scored by the replay protocol on those validation sessions, which picks the
best epoch and stops training when `patience` epochs bring no improvement. A holdout dataset
(with valid.csv) is validated on valid.csv instead, and untimed purchases on one held-out
artwork per customer (training/evaluation/splits.py says which, for every learned method).

A run directory holds config.yaml, towers.json (tower configs), best/ (the selected epoch's
weights), model/ (those weights as finally calibrated: the model that is evaluated and exported),
checkpoints/ (model, optimizer and progress after every epoch: `--resume` continues from the
last), history.json (per epoch: the training loss per example and the validation metrics),
summary.json and logs/ (TensorBoard).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import tensorflow as tf
import yaml
from tqdm import tqdm

from training.atomic import check_run_directory, directory_lock, write_text_atomic
from training.calibration import calibrate_artist_prior, calibrate_terms, uses_terms, validate
from training.config import TrainConfig
from training.data.dataset import Dataset
from training.data.features import zscore_stats
from training.data.history import (
    artist_index,
    visual_clusters,
)
from training.distributed import Workers
from training.evaluation.protocols import Case
from training.evaluation.splits import require_validation_tests, training_split
from training.run_files import read_json, read_yaml_mapping
from training.sampling import Examples, SamplingContext, sample_examples
from training.trained_towers import (
    MODEL_DIR,
    MODEL_PREFIX,
    load_towers,
    save_towers,
)
from training.two_towers import CuratorModel, build_towers

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    seconds: float


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 over the dataset's files (items, purchases, features). A dataset that carries its
    digest returns it: a published one the digest of the directory it was published from, a
    search's the one it took once for all its trials."""
    if dataset.fingerprint is not None:
        return dataset.fingerprint
    digest = hashlib.sha256()
    for name in ("items.csv", "purchases.csv", "features.npy"):
        with open(dataset.path / name, "rb") as file:
            while block := file.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _batches(
    examples: Examples, n_items: int, batch_size: int, seed, workers: Workers | None = None
) -> tuple[tf.data.Dataset, int]:
    """(shuffled batches, how many); profiles and owned rows padded to the batch's longest.
    With `workers`, this worker's share of each global batch (every worker sees as many)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    starts = [s for s in range(0, order.size, batch_size) if order[s : s + batch_size].size >= 2]

    def generate():
        for start in starts:
            chosen = order[start : start + batch_size]
            if workers is not None:
                chosen = workers.shard(chosen)
            profiles = [examples.profiles[i] for i in chosen]
            owned = [examples.owned[i] for i in chosen]
            profile = np.full((chosen.size, max(p.size for p in profiles)), n_items, np.int64)
            own = np.full((chosen.size, max(o.size for o in owned)), -1, np.int64)
            for row, (p, o) in enumerate(zip(profiles, owned, strict=True)):
                profile[row, : p.size], own[row, : o.size] = p, o
            yield {
                "profile": profile,
                "positive": examples.positives[chosen],
                "negative": examples.negatives[chosen],
                "owned": own,
            }

    spec = {
        "profile": tf.TensorSpec([None, None], tf.int64),
        "positive": tf.TensorSpec([None], tf.int64),
        "negative": tf.TensorSpec([None], tf.int64),
        "owned": tf.TensorSpec([None, None], tf.int64),
    }
    batches = tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2)
    if workers is not None:  # sharded by the generator itself
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        batches = batches.with_options(options)
    return batches, len(starts)


@dataclass(frozen=True)
class _TrainingData:
    """The split and the sampling context that every epoch draws its examples from."""

    fit_purchases: pd.DataFrame
    validation_cases: list[Case]
    context: SamplingContext


@dataclass
class _TrainingState:
    """The model and the progress that the checkpoints save and `--resume` restores."""

    model: CuratorModel
    epoch: tf.Variable  # epochs completed
    best_value: tf.Variable  # the best validation `selection_metric` so far
    since_best: tf.Variable  # epochs since it improved
    checkpoint: tf.train.Checkpoint
    manager: tf.train.CheckpointManager
    started: float  # time.perf_counter() when this session began
    history: list[dict] = field(default_factory=list)
    elapsed_before: float = 0.0  # seconds of earlier sessions of a resumed run
    workers: Workers | None = None  # several processes train together

    @property
    def epochs_done(self) -> int:
        return int(self.epoch.numpy())

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def should_continue(self, config: TrainConfig) -> bool:
        return self.epochs_done < config.epochs and int(self.since_best.numpy()) < config.patience


def train(
    dataset: Dataset,
    config: TrainConfig,
    run_dir: Path | str,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict, float], bool | None] | None = None,
    workers: Workers | None = None,
) -> TrainResult:
    """Fit, select the best epoch, calibrate; see the module docstring. `on_epoch(epoch,
    validation metrics, seconds)` is called after every epoch, with the seconds the run has
    trained so far in every session (a search uses it to stop bad trials, and to end a trial at
    its time budget: a true return ends training there, as patience would).
    `workers`: this process is one of several (training/distributed.py): the model lives in
    their strategy's scope and each fits its share of every batch."""
    run_dir = Path(run_dir)
    check_run_directory(run_dir, resume=resume or _unstarted(run_dir))  # before the lock
    with directory_lock(run_dir, wait=False, busy=_busy(run_dir)):
        return _train_locked(dataset, config, run_dir, resume, progress, on_epoch, workers)


def _busy(run_dir: Path) -> str:
    return f"{run_dir} is being trained by another process: wait for it, or choose another --out"


def _train_locked(dataset, config, run_dir, resume, progress, on_epoch, workers) -> TrainResult:
    """`train`, with the run directory locked to this process (another one training into it
    would mix checkpoints; one starting it again would delete what this one writes)."""
    started = time.perf_counter()
    if _unstarted(run_dir):  # nothing to resume, nothing to keep: it starts again
        logger.warning("%s recorded no epoch (stopped before its first checkpoint): starting "
                       "it again", run_dir)  # fmt: skip
        for entry in run_dir.iterdir():  # the directory stays: this process holds its lock
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        resume = False
    check_run_directory(run_dir, resume=resume)  # the cheap refusal before hashing the data
    fingerprint = data_fingerprint(dataset)
    _check_run_dir(run_dir, config, resume, fingerprint)
    data = _prepare_data(dataset, config)  # refuses data without validation tests
    if not resume:  # written once nothing is left to refuse
        _create_run_dir(run_dir, config, dataset, fingerprint)
    with workers.strategy.scope() if workers else contextlib.nullcontext():
        model = _build_model(dataset, config, data.fit_purchases)
        if workers:  # variables made here are mirrored; made inside a replica's step, not
            model.towers_on_batch(tf.constant([[0]], tf.int64), tf.constant([0], tf.int64))
            model.optimizer.build(model.trainable_variables)
        state = _open_state(model, run_dir, started, resume)
    state.workers = workers
    progress = progress and (workers is None or workers.chief)
    _epoch_loop(state, dataset, data, config, run_dir, progress=progress, on_epoch=on_epoch)
    return _finish(state, dataset, data, config, run_dir, fingerprint)


def _unstarted(run_dir: Path) -> bool:
    """A run directory begun and then stopped, or failed, before its first checkpoint: it holds
    its config.yaml, dataset.json, logs/ and no checkpoint, nothing else."""
    if not run_dir.is_dir() or run_dir.is_symlink() or not any(run_dir.iterdir()):
        return False
    if not {p.name for p in run_dir.iterdir()} <= {
        "config.yaml",
        DATASET_FILE,
        "logs",
        "checkpoints",
    }:
        return False
    return not (run_dir / "checkpoints" / "checkpoint").exists()


def _check_run_dir(run_dir: Path, config: TrainConfig, resume: bool, fingerprint: str) -> None:
    """Refuse a run directory that exists (unless resumed), or a resumed one whose config or
    data (its dataset.json's fingerprint) differs."""
    check_run_directory(run_dir, resume=resume)
    if not resume:
        return
    if not (run_dir / "checkpoints").exists():
        raise ValueError(f"--resume: {run_dir} has no checkpoints to resume from")
    differ = config_differences(run_dir, config)
    if differ:
        raise ValueError(
            f"--resume: the config differs from {run_dir}/config.yaml in {', '.join(differ)}"
        )
    check_same_data(run_dir / DATASET_FILE, fingerprint)


def _create_run_dir(run_dir: Path, config: TrainConfig, dataset: Dataset, fingerprint: str):
    """The run directory with config.yaml and dataset.json (the data's fingerprint)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    record = {"data_fingerprint": fingerprint, "dataset": dataset.location}
    write_text_atomic(run_dir / DATASET_FILE, json.dumps(record, indent=1) + "\n")


DATASET_FILE = "dataset.json"  # in a run directory: the data it trains on


def check_same_data(recorded: Path, fingerprint: str) -> None:
    """ValueError if `recorded` (a dataset.json) names other data than `fingerprint`; runs
    begun before the file existed are not checked."""
    other = other_data(recorded, fingerprint)
    if other is not None:
        raise ValueError(
            f"--resume: the dataset differs from the one {recorded.parent} began on ({other}); "
            "its files' fingerprint does not match"
        )


def other_data(recorded: Path, fingerprint: str) -> str | None:
    """Where `recorded` (a dataset.json) says its run's data was, if that data's fingerprint is
    not `fingerprint`; None if it is, or if the run has no record (begun before the file
    existed). ValueError if the file is not a dataset record."""
    if not recorded.exists():
        return None
    saved = read_json(recorded, keys=("data_fingerprint",))
    if saved["data_fingerprint"] == fingerprint:
        return None
    return str(saved.get("dataset") or "unnamed data")


def config_differences(run_dir: Path, config: TrainConfig) -> list[str]:
    """The fields in which `run_dir`'s config.yaml differs from `config` (fields added since the
    run began take their defaults); ValueError if it is not a config."""
    saved = read_yaml_mapping(run_dir / "config.yaml")
    try:
        saved = TrainConfig(**saved).to_dict()
    except (TypeError, ValueError) as error:
        raise ValueError(f"--resume: {run_dir}/config.yaml is not a config: {error}") from None
    return [name for name, value in config.to_dict().items() if saved[name] != value]


def _prepare_data(dataset: Dataset, config: TrainConfig) -> _TrainingData:
    """Seed every generator, then split the data and build the sampling context."""
    tf.keras.utils.set_random_seed(config.seed)
    fit_purchases, validation_cases = training_split(dataset)
    require_validation_tests(dataset, validation_cases)
    artists, _ = artist_index(dataset.items)
    clusters = visual_clusters(dataset, n_clusters=min(config.n_clusters, dataset.n_items))
    context = SamplingContext.build(fit_purchases, artists, clusters, config.max_profile)
    return _TrainingData(fit_purchases, validation_cases, context)


def _build_model(
    dataset: Dataset, config: TrainConfig, fit_purchases: pd.DataFrame
) -> CuratorModel:
    """The towers (vocabularies and feature normalisation from the fitted purchases) in a
    compiled CuratorModel."""
    counts = np.bincount(fit_purchases["item"], minlength=dataset.n_items) + 1.0  # smoothed
    mean, std = zscore_stats(dataset.features)
    artist_vocabulary = list(
        np.unique(dataset.items["artist_id"].to_numpy()[fit_purchases["item"]].astype(str))
    )
    item_tower, user_tower = build_towers(
        config,
        mean,
        np.square(std),
        vocabulary=list(np.unique(dataset.item_ids[fit_purchases["item"]])),
        artist_vocabulary=artist_vocabulary,
    )
    model = CuratorModel(
        item_tower,
        user_tower,
        np.asarray(dataset.features),
        dataset.item_ids,
        dataset.items["artist_id"].to_numpy(),
        config,
        positive_share=counts / counts.sum(),
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    return model


def _open_state(model: CuratorModel, run_dir: Path, started: float, resume: bool) -> _TrainingState:
    """The training progress with its checkpoint manager; a resumed run's restored from its
    last checkpoint."""
    epoch = tf.Variable(0, dtype=tf.int64)
    best_value = tf.Variable(-np.inf, dtype=tf.float64)
    since_best = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, epoch=epoch, best=best_value, since_best=since_best
    )
    manager = tf.train.CheckpointManager(checkpoint, run_dir / "checkpoints", max_to_keep=None)
    state = _TrainingState(model, epoch, best_value, since_best, checkpoint, manager, started)
    if resume:
        _restore(state, run_dir)
    return state


def _restore(state: _TrainingState, run_dir: Path) -> None:
    """Load the last checkpoint and the history of the epochs it covers. A run killed before
    its first checkpoint was recorded starts again from its first epoch."""
    if state.manager.latest_checkpoint is None:
        logger.warning("--resume: %s recorded no checkpoint yet; starting from epoch 1", run_dir)
        return
    model = state.model
    # Build the variables (towers, then optimizer slots), then restore the last epoch.
    model.towers_on_batch(tf.constant([[0]], tf.int64), tf.constant([0], tf.int64))
    model.optimizer.build(model.trainable_variables)
    state.checkpoint.restore(state.manager.latest_checkpoint).assert_existing_objects_matched()
    history = read_json(run_dir / "history.json")
    if not isinstance(history, list) or len(history) < state.epochs_done:
        raise ValueError(
            f"{run_dir / 'history.json'}: not the history of the {state.epochs_done} epoch(s) "
            "its last checkpoint recorded"
        )
    state.history = history[: state.epochs_done]
    state.elapsed_before = state.history[-1]["elapsed_s"] if state.history else 0.0


def _epoch_loop(
    state: _TrainingState,
    dataset: Dataset,
    data: _TrainingData,
    config: TrainConfig,
    run_dir: Path,
    *,
    progress: bool,
    on_epoch: Callable[[int, dict, float], bool | None] | None,
) -> None:
    """Train epoch after epoch, until `config.epochs`, `patience` epochs without improvement or
    `on_epoch` returns true."""
    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    bar = tqdm(
        total=config.epochs,
        initial=state.epochs_done,
        desc=f"training {run_dir.name}",
        unit="epoch",
        disable=not progress,
    )
    while state.should_continue(config):
        record, metrics = _run_epoch(state, dataset, data, config, run_dir, writer)
        bar.update(1)
        value = metrics[config.selection_metric]
        bar.set_postfix(loss=f"{record['loss']:.3g}", **{config.selection_metric: f"{value:.4f}"})
        if on_epoch is not None and on_epoch(record["epoch"], metrics, record["elapsed_s"]):
            break  # the caller ends training here (a search whose time budget is spent)
    bar.close()


def _run_epoch(
    state: _TrainingState,
    dataset: Dataset,
    data: _TrainingData,
    config: TrainConfig,
    run_dir: Path,
    writer: tf.summary.SummaryWriter,
) -> tuple[dict, dict]:
    """Fit one epoch, validate it, log it and checkpoint it: (its history record, its validation
    metrics)."""
    model, current = state.model, state.epochs_done
    loss, n_examples = _fit_epoch(model, dataset, data.context, config, current, state.workers)
    if not math.isfinite(loss):  # diverged: every later epoch and score would be NaN too
        raise ValueError(
            f"training diverged in epoch {current + 1}: the loss is {loss} (learning_rate "
            f"{config.learning_rate}, temperature {config.temperature}: try a lower learning "
            "rate or a higher temperature)"
        )
    metrics = validate(model.item_tower, model.user_tower, dataset, data.validation_cases)
    record = {
        "epoch": current + 1,
        "loss": loss,
        "examples": n_examples,
        "elapsed_s": round(state.elapsed(), 2),
        **{f"valid_{k}": v for k, v in metrics.items()},
    }
    state.history.append(record)
    with writer.as_default(step=current + 1):
        for key, value in record.items():
            if key != "epoch":
                tf.summary.scalar(key, value)
    _end_epoch(state, run_dir, metrics[config.selection_metric])
    return record, metrics


def _fit_epoch(
    model: CuratorModel,
    dataset: Dataset,
    context: SamplingContext,
    config: TrainConfig,
    current: int,
    workers: Workers | None = None,
) -> tuple[float, int]:
    """Sample epoch `current`'s examples and fit one pass over them: (loss, number of examples)."""
    model.optimizer.learning_rate.assign(config.learning_rate * config.lr_decay**current)
    examples = sample_examples(
        context,
        config.policy_counts,
        seed=config.seed * 1_000 + current,
        negatives=config.loss == "bpr" or config.hard_negatives,
        in_cluster=config.in_cluster,
    )
    if len(examples) < 2:
        raise ValueError(
            f"the sampling policies {sorted(config.policy_counts)} give no training examples "
            "on this data (untimed purchases need `leave_one_out`; `same_artist` needs "
            "artists)"
        )
    batches, steps = _batches(
        examples, dataset.n_items, config.batch_size, [config.seed, current], workers
    )
    if workers is not None:  # each worker's own share as it is: no rebatching across workers
        shares = batches
        batches = workers.strategy.distribute_datasets_from_function(lambda _: shares)
    # Steps only where Keras needs them (a distributed dataset): passed to one process they
    # changed what it trains from the second epoch on (seen on the paper's configuration;
    # cause not found), so one process keeps the results it had before workers existed.
    epoch_loss = _EpochLoss()
    model.fit(
        batches,
        epochs=1,
        steps_per_epoch=steps if workers else None,
        verbose=0,
        callbacks=[epoch_loss],
    )
    return epoch_loss.per_example(), len(examples)


class _EpochLoss(tf.keras.callbacks.Callback):
    """The epoch's training loss per example: every batch's summed loss over every batch's
    example count (`CuratorModel.train_step` reports both, summed across replicas). Keras's
    own "loss" at the end of an epoch is its last batch's, which may hold 2 examples."""

    def __init__(self):
        super().__init__()
        self.loss_sum, self.examples = 0.0, 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.loss_sum += float(logs["loss_sum"])
        self.examples += float(logs["examples"])

    def per_example(self) -> float:
        return self.loss_sum / self.examples if self.examples else float("nan")


def _end_epoch(state: _TrainingState, run_dir: Path, value: float) -> None:
    """Keep the towers if `value` is the best so far, count the epochs since, and save the
    history and a checkpoint."""
    if value > state.best_value.numpy():
        state.best_value.assign(value)
        state.since_best.assign(0)
        save_towers(run_dir, state.model.item_tower, state.model.user_tower, "best/towers")
    else:
        state.since_best.assign_add(1)
    state.epoch.assign_add(1)
    # history first: a run killed in between resumes from a checkpoint it can read back
    write_text_atomic(run_dir / "history.json", json.dumps(state.history, indent=1) + "\n")
    state.manager.save(checkpoint_number=state.epochs_done)


def _finish(
    state: _TrainingState,
    dataset: Dataset,
    data: _TrainingData,
    config: TrainConfig,
    run_dir: Path,
    fingerprint: str,
) -> TrainResult:
    """Calibrate the best epoch's towers, save them as the run's model and write summary.json."""
    history = state.history
    best = max(history, key=lambda r: r[f"valid_{config.selection_metric}"])
    epoch_validation = {k[6:]: v for k, v in best.items() if k.startswith("valid_")}
    item_tower, user_tower = load_towers(run_dir, "best/towers")
    prior = {}
    if config.artist_prior_weights:
        prior = calibrate_artist_prior(
            item_tower, user_tower, dataset, data.fit_purchases, data.validation_cases, config
        )
    save_towers(run_dir, item_tower, user_tower, MODEL_PREFIX)
    nearest = {}
    if uses_terms(config):
        nearest = calibrate_terms(
            item_tower,
            user_tower,
            dataset,
            data.fit_purchases,
            data.validation_cases,
            config,
            run_dir / MODEL_DIR,
        )
    summary = {
        "best_epoch": best["epoch"],
        "best_validation": (nearest or prior or {"validation": dict(epoch_validation)})[
            "validation"
        ],
        "epoch_validation": epoch_validation,
        "artist_prior": prior,
        "nearest_purchase": nearest,
        "epochs_run": len(history),
        "validation_tests": len(data.validation_cases),
        "fit_purchases": len(data.fit_purchases),
        "data_fingerprint": fingerprint,
        "dataset": dataset.location,
        "seconds": round(state.elapsed(), 1),
        "seconds_to_best": best["elapsed_s"],
    }
    write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    return TrainResult(
        run_dir, best["epoch"], summary["best_validation"], len(history), summary["seconds"]
    )
