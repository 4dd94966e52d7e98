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
  customer profiles and sold artworks; without the timestamp column where the data has no times)
- towers.json, model/towers.*: the towers' configs and weights (`load_towers(export_dir)`), for
  the service and for anyone rebuilding the Keras layers
- model/nearest_purchase.npz, catalogue/match_vectors.npy: the run's calibrated profile terms
  (training/nearest_purchase.py) and each catalogue artwork's match vector, when the run has a
  term with a weight above 0 (manifest "nearest_purchase": {"weight", "mean_weight",
  "popularity_weight", "copurchase_weight", "freshness_weight", "freshness_days", "era_weight",
  "era_days", "ease_weight", "dim"}, else null). The retrieval/ SavedModel ranks by the towers
  alone; the service adds the terms.
- model/copurchase.npz, model/ease.npz: the co-purchase terms' matrices, item-kNN's and
  EASE's (training/copurchase.py), each when its weight is above 0.
- manifest.json (format 3): version, run, config, data fingerprint, training metrics, the
               catalogue's size, and
  - "index": the search: "kind" ("brute_force" or "scann"), its ScaNN parameters, "settings"
    (the `IndexConfig` fields: what the service builds its searcher from, so that an old export
    does not depend on today's `TrainConfig`), "recall_at_10" of the retrieval/ SavedModel and
    "serving_recall_at_10" of the service's own `ScannSearcher` (1.0 when exact search serves),
    both against exact search on up to RECALL_QUERIES real customers' profiles;
  - "files": {relative path: {"sha256", "bytes"}} for every file of the version but the
    manifest, which the service checks before loading anything (`serving/export_loader.py`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from towers.item_tower import ItemTower, item_inputs
from towers.profile_encoder import ProfileEncoder
from training.atomic import atomic_directory, directory_lock
from training.config import TrainConfig
from training.copurchase import FILE_NAMES as COPURCHASE_FILES
from training.copurchase import WEIGHT_FIELDS as COPURCHASE_WEIGHTS
from training.copurchase import load_if_present as load_copurchase
from training.data.dataset import Dataset, format_time, write_purchases_csv
from training.index import (
    IndexConfig,
    ScannSearcher,
    build_index,
    exact_top_k,
    neighbour_recall,
    searcher_recall,
)
from training.nearest_purchase import load_if_present
from training.run_files import read_json, read_yaml_mapping
from training.trained_towers import (
    MODEL_DIR,
    MODEL_PREFIX,
    check_feature_dim,
    embed_items,
    load_towers,
    pad_profiles,
    save_towers,
)

MANIFEST = "manifest.json"
FORMAT_VERSION = 3  # 2: catalogue/purchases.csv; 3: index.settings, files (hashes)
# the service's ScaNN searchers, serialized (training/index.py: ScannSearcher.save)
SEARCHER_DIR = "catalogue/scann"
MATCH_SEARCHER_DIR = "catalogue/scann_match"
# files are hashed 16 MiB at a time: hashlib releases the GIL per update, and a thread hashing
# 1 MiB chunks beside busy Python waits for the GIL after each one (the 1M export's 2.6 GB
# hashed in 28.8 s beside a Python loop, against 3.9 s in 16 MiB chunks; 2.4-4.0 s alone)
HASH_CHUNK = 16 << 20
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


def index_settings(settings: IndexConfig) -> dict:
    """manifest["index"]["settings"]: the IndexConfig fields (`IndexConfig(**settings)`)."""
    return dataclasses.asdict(settings)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    buffer = bytearray(HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while size := file.readinto(buffer):
            digest.update(view[:size])
    return digest.hexdigest()


def version_entries(version_dir: Path) -> tuple[list[str], list[str]]:
    """(regular files, anything else: links, devices...) under an export version, as sorted
    relative POSIX paths, the manifest left out. Links are not followed."""
    files, others = [], []
    for folder, dirs, names in os.walk(version_dir):
        here = Path(folder)
        for name in dirs + names:
            entry = here / name
            relative = entry.relative_to(version_dir).as_posix()
            if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                others.append(relative)
            elif entry.is_file() and relative != MANIFEST:
                files.append(relative)
        dirs[:] = [d for d in dirs if not (here / d).is_symlink()]
    return sorted(files), sorted(others)


def file_digests(version_dir: Path) -> dict[str, dict]:
    """manifest["files"]: {relative path: {"sha256": hex, "bytes": size}}, every file of the
    version but manifest.json."""
    files, others = version_entries(version_dir)
    if others:
        raise ValueError(f"{version_dir}: not regular files: {others}")
    return {
        name: {
            "sha256": sha256_file(version_dir / name),
            "bytes": (version_dir / name).stat().st_size,
        }
        for name in files
    }


def export_versions(root: Path | str) -> list[int]:
    """Version numbers of the complete exports under root, oldest first. Only a directory named
    as `curator export` names them (1, 2, ...) counts: `02`, `002` or `٢` (another script's
    digit) would be read as version 2 and then looked for under `2`."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(
        int(p.name)
        for p in root.iterdir()
        if re.fullmatch(r"[1-9][0-9]*", p.name) and (p / MANIFEST).is_file()
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


def _recalls(index, encoder, dataset, vectors, profiles, searcher, k=10) -> tuple[float, float]:
    """recall@k against exact search on `profiles`: (the retrieval/ index's, the service's
    `searcher`'s: the one the export serializes for the service; 1.0 when the service searches
    exactly, `searcher` None)."""
    found, users = [], []
    for start in range(0, len(profiles), 100):
        inputs = _profile_inputs(dataset, profiles[start : start + 100])
        scores, _ids = index(inputs, k=k)
        found.append(scores.numpy())
        users.append(encoder(inputs).numpy())
    users = np.concatenate(users)
    exact = exact_top_k(users, vectors, k)[0]
    recall = neighbour_recall(np.concatenate(found), exact)
    if searcher is None:
        return recall, 1.0
    return recall, searcher_recall(searcher, users, exact, vectors)


def _index_description(settings: IndexConfig, n_items: int, apart: int) -> dict:
    """kind, k and, for ScaNN, the parameters of the tree as built: over the rows not apart."""
    description = settings.describe(n_items)
    if description["kind"] == "scann":
        description.update(settings.scann_parameters(n_items - apart))
    return description


# what an export reads from a run's summary.json
SUMMARY_KEYS = ("data_fingerprint", "best_epoch", "best_validation", "epochs_run", "seconds")


def export_run(run_dir: Path | str, dataset: Dataset, out: Path | str, *, progress=print) -> Path:
    """Export a finished training run over `dataset`'s catalogue; returns the version dir."""
    run_dir, out = Path(run_dir), Path(out)
    if not (run_dir / "summary.json").exists():
        raise ValueError(f"{run_dir} is not a finished training run (no summary.json)")
    try:
        config = TrainConfig(**read_yaml_mapping(run_dir / "config.yaml"))
    except TypeError as error:  # a field no config has (ValueError names itself)
        raise ValueError(f"{run_dir / 'config.yaml'}: {error}") from None
    summary = read_json(run_dir / "summary.json", keys=SUMMARY_KEYS)
    item_tower, user_tower = load_towers(run_dir)
    check_feature_dim(run_dir, item_tower, dataset)
    nearest = load_if_present(run_dir / MODEL_DIR)
    if nearest is not None and not nearest.weights.any:
        nearest = None  # calibrated to 0: validation said the towers alone rank better
    matrices = []  # the co-purchase terms' (training/copurchase.py) with a weight above 0
    for kind, weight in COPURCHASE_WEIGHTS.items():
        if nearest is not None and getattr(nearest, weight) > 0:
            matrix = load_copurchase(run_dir / MODEL_DIR, kind)
            if matrix is None:
                name = COPURCHASE_FILES[kind]
                raise ValueError(f"{run_dir / MODEL_DIR}: a {weight} but no {name}")
            matrices.append(matrix)
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
    # the service's searchers, built here once and serialized (serving loads, not rebuilds)
    searcher = ScannSearcher(vectors, settings) if settings.uses_scann(len(vectors)) else None
    match_vectors = nearest.vectors(dataset.features) if nearest is not None else None
    match_searcher = None
    if searcher is not None and nearest is not None and nearest.weights.uses_profile:
        match_searcher = ScannSearcher(match_vectors, replace(settings, prior_slot=False))
    profiles = _recall_profiles(dataset, config.seed)
    recall, serving_recall = _recalls(index, encoder, dataset, vectors, profiles, searcher)
    progress(
        f"recall@10 against exact search ({len(profiles)} profiles): index {recall:.4f}, "
        f"the service's search {serving_recall:.4f}"
    )

    # one export at a time into a root: two would take the same version number (the
    # second waits here, then numbers its version after the first's)
    with directory_lock(out, wait=True):
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
            write_purchases_csv(tmp / "catalogue" / "purchases.csv", dataset.purchases)
            save_towers(tmp, item_tower, user_tower, MODEL_PREFIX)
            if nearest is not None:
                nearest.save(tmp / MODEL_DIR)
                np.save(tmp / "catalogue" / "match_vectors.npy", match_vectors)
            for matrix in matrices:
                matrix.save(tmp / MODEL_DIR)
            if searcher is not None:
                searcher.save(tmp / SEARCHER_DIR)
            if match_searcher is not None:
                match_searcher.save(tmp / MATCH_SEARCHER_DIR)
            manifest = {
                "format": FORMAT_VERSION,
                "version": version,
                "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "run": str(run_dir.resolve()),
                "dataset": dataset.location,
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
                    **_index_description(settings, dataset.n_items, apart),
                    "settings": index_settings(settings),
                    "prior_rows_apart": int(apart),
                    "recall_at_10": round(recall, 4),
                    "serving_recall_at_10": round(serving_recall, 4),
                    "recall_queries": len(profiles),
                },
                "nearest_purchase": (
                    None
                    if nearest is None
                    else {
                        "weight": nearest.weight,
                        "mean_weight": nearest.mean_weight,
                        "popularity_weight": nearest.popularity_weight,
                        "copurchase_weight": nearest.copurchase_weight,
                        "freshness_weight": nearest.freshness_weight,
                        "freshness_days": nearest.freshness_days,
                        "era_weight": nearest.era_weight,
                        "era_days": nearest.era_days,
                        "ease_weight": nearest.ease_weight,
                        "dim": nearest.dim,
                    }
                ),
                "uses_ids": item_tower.uses_ids,
                "tensorflow": tf.__version__,
                "files": file_digests(tmp),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        return out / str(version)
