"""`curator export`: a trained run -> a versioned directory the service loads.

exports/<version>/ (versions 1, 2, ...; written to a temporary sibling, then renamed):
- item_tower/  SavedModel, `serving_default(features [n, d] float32, item_id [n] string,
               artist_id [n] string)` -> {"vectors": [n, dim]}
- user_tower/  SavedModel, `serving_default(features [b, p, d], mask [b, p] bool, item_id,
               artist_id)` -> {"vectors": [b, dim]}, and `from_item_vectors(vectors [b, p, dim],
               mask)` for profiles of catalogue artworks whose vectors are already known
- retrieval/   SavedModel, a tfrs factorized_top_k index (ScaNN from `scann_min_items` artworks
               on, else brute force; artworks with a prior in an exact index of their own, merged:
               training/index.py) over every catalogue vector, with the user tower as its
               query model: `serving_default(features, mask, item_id, artist_id)` ->
               {"scores", "item_ids"} [b, k]. Loading it needs `import scann` first.
               Every signature takes the ids; towers without id embeddings ignore them.
- catalogue/items.csv, catalogue/item_vectors.npy (row i of one is row i of the other),
  catalogue/purchases.csv (the purchase log the model was exported with: the service's starting
  customer profiles and sold artworks)
- towers.json, model/towers.*: the towers' configs and weights (`load_towers(export_dir)`), for
  the service and for anyone rebuilding the Keras layers
- manifest.json: version, run, config, data fingerprint, training metrics, the index and its
               recall@10 against exact search, measured here on real customers' profiles.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import numpy as np
import tensorflow as tf
import yaml

from towers.item_tower import ItemTower, item_inputs
from towers.profile_encoder import ProfileEncoder
from training.atomic import atomic_directory
from training.config import TrainConfig
from training.data.dataset import Dataset, format_time
from training.index import IndexConfig, build_index, exact_top_k, recall_at_k
from training.recommender import (
    MODEL_PREFIX,
    embed_items,
    load_towers,
    pad_profiles,
    save_towers,
)

MANIFEST = "manifest.json"
FORMAT_VERSION = 2  # 2: catalogue/purchases.csv
RECALL_QUERIES = 500
SCANN_NAMESPACE = ["Scann"]


def index_config(config: TrainConfig) -> IndexConfig:
    return IndexConfig(
        k=config.export_k,
        scann_min_items=config.scann_min_items,
        leaves_to_search_share=config.scann_leaves_to_search_share,
        dimensions_per_block=config.scann_dimensions_per_block,
        reorder=config.scann_reorder,
        prior_slot=config.bias_slot,
    )


def export_versions(root: Path | str) -> list[int]:
    """Version numbers of the complete exports under root, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if re.fullmatch(r"\d+", p.name) and (p / MANIFEST).is_file()
    )


def _specs(feature_dim: int, profile: bool) -> list[tf.TensorSpec]:
    """Signature inputs: features[, mask], item_id, artist_id. Every signature takes the ids so
    that callers need not know the tower's options; visual-only towers ignore them."""
    shape = [None, None] if profile else [None]
    specs = [tf.TensorSpec([*shape, feature_dim], tf.float32, name="features")]
    if profile:
        specs.append(tf.TensorSpec(shape, tf.bool, name="mask"))
    return specs + [
        tf.TensorSpec(shape, tf.string, name="item_id"),
        tf.TensorSpec(shape, tf.string, name="artist_id"),
    ]


class _ItemTowerModule(tf.Module):
    def __init__(self, item_tower: ItemTower):
        super().__init__()
        self.item_tower = item_tower

        @tf.function(input_signature=_specs(item_tower.feature_dim, profile=False))
        def serve(features, item_id, artist_id):
            return {"vectors": self.item_tower(item_inputs(features, item_id, artist_id))}

        self.serve = serve


class _UserTowerModule(tf.Module):
    def __init__(self, encoder: ProfileEncoder):
        super().__init__()
        self.encoder = encoder
        item_tower = encoder.item_tower

        @tf.function(input_signature=_specs(item_tower.feature_dim, profile=True))
        def serve(features, mask, item_id, artist_id):
            inputs = {**item_inputs(features, item_id, artist_id), "mask": mask}
            return {"vectors": self.encoder(inputs)}

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None, item_tower.output_dim], tf.float32, name="vectors"),
                tf.TensorSpec([None, None], tf.bool, name="mask"),
            ]
        )
        def from_item_vectors(vectors, mask):
            return {"vectors": self.encoder.user_tower((vectors, mask))}

        self.serve, self.from_item_vectors = serve, from_item_vectors


class _RetrievalModule(tf.Module):
    def __init__(self, index, encoder: ProfileEncoder):
        super().__init__()
        self.index = index

        @tf.function(input_signature=_specs(encoder.item_tower.feature_dim, profile=True))
        def serve(features, mask, item_id, artist_id):
            inputs = {**item_inputs(features, item_id, artist_id), "mask": mask}
            scores, item_ids = self.index(inputs)
            return {"scores": scores, "item_ids": item_ids}

        self.serve = serve


def _profile_inputs(dataset: Dataset, profiles: list[np.ndarray]) -> dict[str, tf.Tensor]:
    rows, mask = pad_profiles(profiles)  # [b, p]
    inputs = item_inputs(
        tf.constant(np.asarray(dataset.features)[rows], tf.float32),
        tf.constant(dataset.item_ids.astype(str)[rows]),
        tf.constant(dataset.items["artist_id"].to_numpy().astype(str)[rows]),
    )
    return {**inputs, "mask": tf.constant(mask)}


def _recall_profiles(dataset: Dataset, seed: int) -> list[np.ndarray]:
    """Up to RECALL_QUERIES real customers' purchase histories (at most 50 artworks each)."""
    groups = [np.asarray(g)[-50:] for g in dataset.purchases.groupby("user_id")["item"].agg(list)]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(groups), size=min(RECALL_QUERIES, len(groups)), replace=False)
    return [groups[i] for i in np.sort(chosen)]


def _index_recall(index, encoder, dataset, vectors, profiles, k=10) -> float:
    found, exact = [], []
    for start in range(0, len(profiles), 100):
        inputs = _profile_inputs(dataset, profiles[start : start + 100])
        scores, _ids = index(inputs, k=k)
        users = encoder(inputs).numpy()
        found.append(scores.numpy())
        exact.append(exact_top_k(users, vectors, k)[0])
    return recall_at_k(np.concatenate(found), np.concatenate(exact))


def export_run(run_dir: Path | str, dataset: Dataset, out: Path | str, *, progress=print) -> Path:
    """Export a finished training run over `dataset`'s catalogue; returns the version dir."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "summary.json").exists():
        raise ValueError(f"{run_dir} is not a finished training run (no summary.json)")
    config = TrainConfig(**yaml.safe_load((run_dir / "config.yaml").read_text()))
    summary = json.loads((run_dir / "summary.json").read_text())
    item_tower, user_tower = load_towers(run_dir)
    if item_tower.feature_dim != dataset.features.shape[1]:
        raise ValueError(
            f"{run_dir} was trained on {item_tower.feature_dim}-d features; "
            f"{dataset.path} has {dataset.features.shape[1]}-d"
        )
    encoder = ProfileEncoder(item_tower, user_tower)
    ids = dataset.item_ids.astype(str)
    progress(f"embedding {dataset.n_items:,} artworks")
    vectors = embed_items(item_tower, dataset.features, ids, dataset.items["artist_id"])
    settings = index_config(config)
    apart = settings.prior_rows(vectors).size
    progress(
        f"building the index: {settings.describe(dataset.n_items)}"
        + (f", {apart:,} artworks with a prior searched apart" if apart else "")
    )
    index = build_index(vectors, ids, settings, query_model=encoder)
    profiles = _recall_profiles(dataset, config.seed)
    recall = _index_recall(index, encoder, dataset, vectors, profiles)
    progress(f"index recall@10 against exact search: {recall:.4f} ({len(profiles)} profiles)")

    version = (export_versions(out) or [0])[-1] + 1
    options = tf.saved_model.SaveOptions(namespace_whitelist=SCANN_NAMESPACE)
    with atomic_directory(out / str(version)) as tmp:
        item_module = _ItemTowerModule(item_tower)
        tf.saved_model.save(item_module, tmp / "item_tower", signatures=item_module.serve)
        user_module = _UserTowerModule(encoder)
        tf.saved_model.save(
            user_module,
            tmp / "user_tower",
            signatures={
                "serving_default": user_module.serve,
                "from_item_vectors": user_module.from_item_vectors,
            },
        )
        retrieval = _RetrievalModule(index, encoder)
        tf.saved_model.save(
            retrieval, tmp / "retrieval", signatures=retrieval.serve, options=options
        )
        (tmp / "catalogue").mkdir()
        items = dataset.items.copy()
        items["upload_time"] = format_time(items["upload_time"].to_numpy())
        items.to_csv(tmp / "catalogue" / "items.csv", index=False)
        np.save(tmp / "catalogue" / "item_vectors.npy", vectors.astype(np.float32))
        purchases = dataset.purchases[["user_id", "item_id"]].copy()
        times = dataset.purchases["timestamp"].to_numpy()
        timed = np.isfinite(times)
        purchases["timestamp"] = np.where(timed, format_time(np.where(timed, times, 0.0)), "")
        purchases.to_csv(tmp / "catalogue" / "purchases.csv", index=False)
        save_towers(tmp, item_tower, user_tower, MODEL_PREFIX)
        manifest = {
            "format": FORMAT_VERSION,
            "version": version,
            "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "run": str(run_dir.resolve()),
            "dataset": str(dataset.path),
            "data_fingerprint": summary["data_fingerprint"],
            "config": config.to_dict(),
            "training": {
                **{
                    k: summary[k]
                    for k in ("best_epoch", "best_validation", "epochs_run", "seconds")
                },
                "artist_prior_weight": summary.get("artist_prior", {}).get("weight"),
            },
            "catalogue": {
                "items": int(dataset.n_items),
                "feature_dim": int(item_tower.feature_dim),
                "vector_dim": int(vectors.shape[1]),
            },
            "index": {
                **settings.describe(dataset.n_items),
                "prior_rows_apart": int(settings.prior_rows(vectors).size),
                "recall_at_10": round(recall, 4),
                "recall_queries": len(profiles),
            },
            "uses_ids": item_tower.uses_ids,
            "tensorflow": tf.__version__,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return out / str(version)
