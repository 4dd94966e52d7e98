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
last), history.json (per-epoch loss and validation metrics), summary.json and logs/ (TensorBoard).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml
from tqdm import tqdm

from training.config import TrainConfig
from training.data.dataset import Dataset
from training.data.features import zscore_stats
from training.data.history import (
    artist_index,
    artist_sell_through,
    visual_clusters,
)
from training.evaluation.ranking import rank_cases
from training.evaluation.report import summary_rows
from training.evaluation.splits import training_split
from training.model import CuratorModel, build_towers
from training.recommender import MODEL_PREFIX, TowerRecommender, load_towers, save_towers
from training.sampling import Examples, SamplingContext, sample_examples


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_epoch: int
    best_metrics: dict
    epochs_run: int
    seconds: float


def data_fingerprint(dataset: Dataset) -> str:
    """sha256 over the dataset's files (items, purchases, features)."""
    digest = hashlib.sha256()
    for name in ("items.csv", "purchases.csv", "features.npy"):
        with open(dataset.path / name, "rb") as file:
            while block := file.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def _batches(examples: Examples, n_items: int, batch_size: int, seed) -> tf.data.Dataset:
    """Shuffled batches; profiles and owned rows padded to the batch's longest."""
    order = np.random.default_rng(seed).permutation(len(examples))

    def generate():
        for start in range(0, order.size, batch_size):
            chosen = order[start : start + batch_size]
            if chosen.size < 2:
                continue
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
    return tf.data.Dataset.from_generator(generate, output_signature=spec).prefetch(2)


def validate(item_tower, user_tower, dataset: Dataset, cases) -> dict:
    recommender = TowerRecommender("validation", item_tower, user_tower, dataset)
    ranked = rank_cases(recommender, cases, dataset.n_items)
    (row,) = summary_rows("validation", cases, ranked, ["all"])
    return {k: v for k, v in row.items() if k in ("auc", "r@20", "r@100", "ndcg@20")}


def train(
    dataset: Dataset,
    config: TrainConfig,
    run_dir: Path | str,
    *,
    resume: bool = False,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Fit, select the best epoch, calibrate; see the module docstring. `on_epoch(epoch,
    validation metrics)` is called after every epoch (a search uses it to stop bad trials)."""
    run_dir = Path(run_dir)
    started = time.perf_counter()
    elapsed_before = 0.0  # seconds of earlier sessions of a resumed run
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        raise FileExistsError(f"{run_dir} already exists: pass --resume to continue it")
    if resume and not (run_dir / "checkpoints").exists():
        raise ValueError(f"--resume: {run_dir} has no checkpoints to resume from")
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume:
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        if saved != config.to_dict():
            raise ValueError(f"--resume: the config differs from {run_dir}/config.yaml")
    else:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

    tf.keras.utils.set_random_seed(config.seed)
    fit_purchases, validation_cases = training_split(dataset)
    artists, _ = artist_index(dataset.items)
    clusters = visual_clusters(dataset, n_clusters=min(config.n_clusters, dataset.n_items))
    context = SamplingContext.build(fit_purchases, artists, clusters, config.max_profile)
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

    epoch = tf.Variable(0, dtype=tf.int64)  # epochs completed
    best_value = tf.Variable(-np.inf, dtype=tf.float64)
    since_best = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(
        model=model, optimizer=model.optimizer, epoch=epoch, best=best_value, since_best=since_best
    )
    manager = tf.train.CheckpointManager(checkpoint, run_dir / "checkpoints", max_to_keep=None)
    history: list[dict] = []
    if resume:
        # Build the variables (towers, then optimizer slots), then restore the last epoch.
        model.towers_on_batch(tf.constant([[0]], tf.int64), tf.constant([0], tf.int64))
        model.optimizer.build(model.trainable_variables)
        checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
        history = json.loads((run_dir / "history.json").read_text())[: int(epoch.numpy())]
        elapsed_before = history[-1]["elapsed_s"] if history else 0.0

    writer = tf.summary.create_file_writer(str(run_dir / "logs"))
    bar = tqdm(
        total=config.epochs,
        initial=int(epoch.numpy()),
        desc=f"training {run_dir.name}",
        unit="epoch",
        disable=not progress,
    )
    while int(epoch.numpy()) < config.epochs and int(since_best.numpy()) < config.patience:
        current = int(epoch.numpy())
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
        fit = model.fit(
            _batches(examples, dataset.n_items, config.batch_size, [config.seed, current]),
            epochs=1,
            verbose=0,
        )
        metrics = validate(item_tower, user_tower, dataset, validation_cases)
        record = {
            "epoch": current + 1,
            "loss": float(fit.history["loss"][-1]),
            "examples": len(examples),
            "elapsed_s": round(elapsed_before + time.perf_counter() - started, 2),
            **{f"valid_{k}": v for k, v in metrics.items()},
        }
        history.append(record)
        with writer.as_default(step=current + 1):
            for key, value in record.items():
                if key != "epoch":
                    tf.summary.scalar(key, value)
        value = metrics[config.selection_metric]
        if value > best_value.numpy():
            best_value.assign(value)
            since_best.assign(0)
            save_towers(run_dir, item_tower, user_tower, "best/towers")
        else:
            since_best.assign_add(1)
        epoch.assign_add(1)
        # history first: a run killed in between resumes from a checkpoint it can read back
        (run_dir / "history.json").write_text(json.dumps(history, indent=1) + "\n")
        manager.save(checkpoint_number=current + 1)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3g}", **{config.selection_metric: f"{value:.4f}"})
        if on_epoch is not None:
            on_epoch(current + 1, metrics)
    bar.close()

    best = max(history, key=lambda r: r[f"valid_{config.selection_metric}"])
    best_validation = {k[6:]: v for k, v in best.items() if k.startswith("valid_")}
    item_tower, user_tower = load_towers(run_dir, "best/towers")
    prior = {}
    if config.artist_prior_weights:
        prior = calibrate_artist_prior(
            item_tower, user_tower, dataset, fit_purchases, validation_cases, config
        )
        best_validation = prior["validation"]
    save_towers(run_dir, item_tower, user_tower, MODEL_PREFIX)
    summary = {
        "best_epoch": best["epoch"],
        "best_validation": best_validation,
        "epoch_validation": {k[6:]: v for k, v in best.items() if k.startswith("valid_")},
        "artist_prior": prior,
        "epochs_run": len(history),
        "validation_tests": len(validation_cases),
        "fit_purchases": len(fit_purchases),
        "data_fingerprint": data_fingerprint(dataset),
        "dataset": str(Path(dataset.path).resolve()) if dataset.path else None,
        "seconds": round(elapsed_before + time.perf_counter() - started, 1),
        "seconds_to_best": best["elapsed_s"],
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    return TrainResult(
        run_dir, best["epoch"], summary["best_validation"], len(history), summary["seconds"]
    )


def calibrate_artist_prior(
    item_tower, user_tower, dataset: Dataset, fit_purchases, validation_cases, config
) -> dict:
    """Adds w x each artist's centred log sell-through rate (from the fitted purchases) to its
    learned bias, for the w of `config.artist_prior_weights` that scores best on the validation
    (the tower is left with that w). In-batch softmax leaves these biases near zero: an artist's
    sales put its artworks among the positives and the in-batch negatives alike."""
    prior = artist_sell_through(dataset.items, fit_purchases, item_tower.artist_vocabulary)
    learned = item_tower.id_bias("artist_id")
    scores = []
    for weight in config.artist_prior_weights:
        item_tower.set_id_bias("artist_id", learned + weight * prior)
        scores.append(
            {"weight": weight, **validate(item_tower, user_tower, dataset, validation_cases)}
        )
    chosen = max(scores, key=lambda row: row[config.selection_metric])
    item_tower.set_id_bias("artist_id", learned + chosen["weight"] * prior)
    return {
        "weight": chosen["weight"],
        "validation": {k: v for k, v in chosen.items() if k != "weight"},
        "grid": scores,
    }
