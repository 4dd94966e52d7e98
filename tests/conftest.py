"""Shared fixtures: tiny hand-written datasets, a small simulated marketplace, the real data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
UGALLERY = REPO.parent / "shared" / "data" / "ugallery"


def write_dataset(
    root: Path,
    items: str,
    purchases: str,
    features: np.ndarray | None = None,
    **extra_files: str,
) -> Path:
    """Write a native dataset from CSV texts; features default to seeded random [n_items, 4]."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.csv").write_text(items)
    (root / "purchases.csv").write_text(purchases)
    if features is None:
        n_items = len(items.strip().splitlines()) - 1
        features = np.random.default_rng(0).random((n_items, 4), dtype=np.float32)
    np.save(root / "features.npy", features)
    for name, text in extra_files.items():
        (root / f"{name}.csv").write_text(text)
    return root


def write_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """n random images of odd sizes, as PNG, JPEG and WebP in turn (one grayscale PNG)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        height, width = rng.integers(17, 300, 2)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        image = Image.fromarray(pixels if i != 1 else pixels[:, :, 0])
        suffix = ["png", "jpg", "webp"][i % 3]
        image.save(folder / f"art-{i:02d}.{suffix}")
        names.append(f"art-{i:02d}")
    return names


def write_untrained_run(run_dir: Path, feature_dim: int) -> Path:
    """A run's towers (towers.json and final weights) for `feature_dim`-d features, untrained:
    enough for `--model` without a training run."""
    import tensorflow as tf

    from towers.item_tower import ItemTower
    from towers.user_tower import UserTower
    from training.trained_towers import MODEL_PREFIX, save_towers

    item_tower = ItemTower(np.zeros(feature_dim), np.ones(feature_dim), hidden_units=(8,))
    user_tower = UserTower(hidden_units=(8,))
    vectors = item_tower(tf.zeros([1, feature_dim]))[:, None, :]  # builds the variables
    user_tower((vectors, tf.ones([1, 1], tf.bool)))
    run_dir.mkdir(parents=True)
    save_towers(run_dir, item_tower, user_tower, MODEL_PREFIX)
    return run_dir


TINY_ITEMS = """item_id,artist_id,upload_time,one_of_a_kind
a,x,2020-01-01,true
b,x,2020-01-01,false
c,y,2020-01-01,true
d,y,2020-02-01,true
e,z,2020-03-15,true
"""
TINY_PURCHASES = """user_id,item_id,timestamp
u1,a,2020-01-10
u2,b,2020-01-20
u1,b,2020-02-10
u1,d,2020-02-10
u2,c,2020-03-01
u1,e,2020-04-01
u3,c,2020-01-05
"""


@pytest.fixture
def tiny_dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "tiny", TINY_ITEMS, TINY_PURCHASES)


@pytest.fixture(scope="session")
def small_marketplace(tmp_path_factory) -> Path:
    from training.data.marketplace import MarketplaceConfig, generate_marketplace

    out = tmp_path_factory.mktemp("market") / "small"
    generate_marketplace(MarketplaceConfig.at_scale("small", seed=3), out)
    return out


@pytest.fixture(scope="session")
def ugallery_dataset(tmp_path_factory):
    """The real UGallery transactions (stand-in features), when ../shared is present."""
    if not (UGALLERY / "valid_sales.csv").exists():
        pytest.skip(f"real UGallery data not found at {UGALLERY}")
    from training.data.importers import import_ugallery

    dataset, _ = import_ugallery(UGALLERY / "valid_sales.csv", UGALLERY / "valid_artworks.csv")
    return dataset


# a model small enough to train in seconds (tests/training, tests/serving)
TINY_TRAINING = {
    "item_hidden": [32],
    "user_hidden": [32],
    "policies": {"history": 1, "same_artist": 300},
    "batch_size": 128,
    "epochs": 4,
    "patience": 4,
    "n_clusters": 20,
    "learning_rate": 0.003,
}


def tiny_config(**changes):
    from dataclasses import replace

    from training.config import load_config

    return replace(load_config("curator"), **{**TINY_TRAINING, **changes})


@pytest.fixture(scope="session")
def trained_run(small_marketplace, tmp_path_factory) -> Path:
    from training.data.dataset import load_dataset
    from training.train import train

    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    train(load_dataset(small_marketplace), tiny_config(), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="session")
def tiny_export(trained_run, small_marketplace, tmp_path_factory) -> Path:
    """exports/1 of the tiny run over the small marketplace (read-only: copy before changing)."""
    from training.data.dataset import load_dataset
    from training.export import export_run

    root = tmp_path_factory.mktemp("exports")
    return export_run(trained_run, load_dataset(small_marketplace), root, progress=lambda _: None)
