"""Importers into the native format: UGallery's transactions and the public UGallery release."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from training.data.columns import (
    DatasetError,
    lookup_items,
    parse_booleans,
    parse_timestamps,
    read_csv,
    reading,
    require_after_upload,
    require_ids,
    require_unique,
    show_value,
)
from training.data.dataset import NPY_MAGIC, Dataset, require_npy_magic
from training.data.features import FeatureRenderer

STAND_IN_LATENT_DIM = 32

UGALLERY_README = """# UGallery transactions with STAND-IN features

Imported by `curator data import-ugallery` from UGallery's real sales ({n_purchases} purchases,
{n_users} customers) and artworks ({n_items} artworks, {n_artists} artists).

**features.npy is not made from the artworks' images.** The transactions carry no image
features, so each artwork gets a seeded stand-in: a 2048-d pooled-CNN-like rendering of its real
artist and medium plus per-artwork noise (seed {seed}). Purchases, timestamps, uploads and the
one-of-a-kind flags are real, so the evaluation protocol's checks hold on this dataset, but model
quality figures measured on it are NOT comparable with the CuratorNet paper's table, which used
ResNet-50 features of the actual images.
"""


def _seeded_vectors(n: int, dim: int, seed: int, salt: int) -> np.ndarray:
    return np.random.default_rng([seed, salt]).normal(size=(n, dim)) / np.sqrt(dim)


def stand_in_features(
    artist_codes: np.ndarray, medium_codes: np.ndarray, *, seed: int = 0, feature_dim: int = 2048
) -> np.ndarray:
    """[n_items, feature_dim] float32 from artist and medium codes (dense ints >= 0):
    latent = artist vector + 0.5 * medium vector + 0.45 * item noise, rendered like ResNet."""
    r = STAND_IN_LATENT_DIM
    artist_vectors = _seeded_vectors(int(artist_codes.max()) + 1, r, seed, 1) * np.sqrt(r)
    medium_vectors = _seeded_vectors(int(medium_codes.max()) + 1, r, seed, 2) * np.sqrt(r)
    latent = artist_vectors[artist_codes] + 0.5 * medium_vectors[medium_codes]
    latent /= np.linalg.norm(latent, axis=1, keepdims=True)
    latent += 0.45 * _seeded_vectors(artist_codes.size, r, seed, 3)
    renderer = FeatureRenderer.create(latent_dim=r, feature_dim=feature_dim, seed=seed)
    return renderer.render(latent, np.random.default_rng([seed, 4]))


def import_ugallery(sales: Path, artworks: Path, *, seed: int = 0) -> tuple[Dataset, str]:
    """(dataset, README text) from valid_sales.csv and valid_artworks.csv."""
    art_name, sales_name = Path(artworks).name, Path(sales).name
    art = read_csv(artworks, art_name, ["id", "artist_id", "upload_date", "original", "medium_id"])
    require_ids(art["id"], art_name, "id")
    require_unique(art["id"], art_name, "id")
    require_ids(art["artist_id"], art_name, "artist_id")
    items = pd.DataFrame(
        {
            "item_id": art["id"],
            "artist_id": art["artist_id"],
            "upload_time": parse_timestamps(art["upload_date"], art_name, "upload_date"),
            "one_of_a_kind": parse_booleans(art["original"], art_name, "original"),
        }
    )
    sold = read_csv(sales, sales_name, ["customer_id", "artwork_id", "order_date"])
    require_ids(sold["customer_id"], sales_name, "customer_id")
    require_ids(sold["artwork_id"], sales_name, "artwork_id")
    purchases = pd.DataFrame(
        {
            "user_id": sold["customer_id"],
            "item_id": sold["artwork_id"],
            "item": lookup_items(
                sold["artwork_id"], pd.Index(items["item_id"]), sales_name, "artwork_id"
            ),
            "timestamp": parse_timestamps(sold["order_date"], sales_name, "order_date"),
        }
    )
    require_after_upload(
        purchases["timestamp"],
        purchases["item"].to_numpy(),
        items,
        sales_name,
        field="order_date",
        items_file=art_name,
    )
    artist_codes = pd.factorize(art["artist_id"], sort=True)[0]
    medium_codes = pd.factorize(art["medium_id"], sort=True)[0]
    features = stand_in_features(artist_codes, medium_codes, seed=seed)
    readme = UGALLERY_README.format(
        n_purchases=len(purchases),
        n_users=purchases["user_id"].nunique(),
        n_items=len(items),
        n_artists=items["artist_id"].nunique(),
        seed=seed,
    )
    return Dataset(items, features, purchases), readme


RELEASE_README = """# UGallery public release

Imported by `curator data import-ugallery-release` ({n_items} artworks with ResNet-50 features,
{n_purchases} purchases). The release has no one-of-a-kind flag: an artwork sold to two or more
baskets is marked `one_of_a_kind=false`, every other artwork `true`. {n_extra} embeddings of
artworks missing from the inventory were ignored.
"""


def load_release_embeddings(path: Path, *, trust_pickle: bool) -> tuple[np.ndarray, np.ndarray]:
    """(ids [n] str, vectors [n, d] float32) from the release's object array of (id, vector):
    a .npy holding an object array [n] of (id, vector) pairs (or [n, 2]), every vector a flat
    array of d numbers, finite and within float32's range.

    That .npy is a pickle: loading it can run code, so it is refused without `trust_pickle`.
    Anything else is a DatasetError naming the file and, for a bad row, its index.
    """
    name = Path(path).name
    if not trust_pickle:
        raise DatasetError(
            name,
            "this file can only be read by unpickling, which can run arbitrary code; "
            "pass --trust-pickle if you trust its source",
        )
    with reading(path, name):
        with open(path, "rb") as file:
            require_npy_magic(file.read(len(NPY_MAGIC)), name)
        try:
            rows = np.load(path, allow_pickle=True)
        except Exception as error:  # a damaged pickle fails in any of many ways
            raise DatasetError(
                name, f"cannot read as .npy ({type(error).__name__}: {error})"
            ) from None
    if rows.dtype != object or rows.ndim not in (1, 2) or len(rows) == 0:
        raise DatasetError(
            name,
            f"holds an array of dtype {rows.dtype} and shape {rows.shape}, expected a non-empty "
            "object array of (id, vector) rows",
        )
    ids, vectors = [], []
    for index, row in enumerate(rows):
        if not isinstance(row, tuple | list | np.ndarray) or getattr(row, "ndim", 1) == 0:
            raise DatasetError(
                name,
                f"row {index}: expected an (id, vector) pair, got {type(row).__name__} "
                f"{show_value(row)}",
            )
        if len(row) != 2:
            raise DatasetError(name, f"row {index}: expected (id, vector), got {len(row)} fields")
        vectors.append(_release_vector(row[1], name, index, vectors[0].size if vectors else None))
        ids.append(str(row[0]))
    return np.array(ids), np.stack(vectors)


def _release_vector(value, name: str, index: int, size: int | None) -> np.ndarray:
    """Row `index`'s vector as float32 [size] (any size for the first row, None)."""
    try:
        vector = np.asarray(value)
    except ValueError as error:  # a ragged sequence
        raise DatasetError(name, f"row {index}: the vector is not an array ({error})") from None
    if vector.dtype.kind not in "fiu":
        raise DatasetError(
            name,
            f"row {index}: the vector is {type(value).__name__} {show_value(value)}, expected "
            "an array of numbers",
        )
    if vector.ndim != 1 or vector.size == 0 or (size is not None and vector.size != size):
        raise DatasetError(
            name,
            f"row {index}: vector shape {vector.shape}, expected "
            f"{f'({size},) as in row 0' if size is not None else 'a flat non-empty vector'}",
        )
    if not np.isfinite(vector).all():
        raise DatasetError(name, f"row {index}: vector has NaN or inf values")
    with np.errstate(over="ignore"):  # a finite float64 beyond float32's range becomes inf
        single = vector.astype(np.float32)
    if not np.isfinite(single).all():
        value = vector[np.flatnonzero(~np.isfinite(single))[0]]
        raise DatasetError(
            name,
            f"row {index}: vector value {value:.6g} is beyond float32's range "
            f"(magnitudes up to {np.finfo(np.float32).max:.6g})",
        )
    return single


def import_ugallery_release(
    inventory: Path, purchases: Path, embeddings: Path, *, trust_pickle: bool = False
) -> tuple[Dataset, str]:
    inv_name, pur_name = Path(inventory).name, Path(purchases).name
    inv = read_csv(inventory, inv_name, ["artwork_id_hash", "artist_id_hash", "upload_timestamp"])
    require_ids(inv["artwork_id_hash"], inv_name, "artwork_id_hash")
    require_unique(inv["artwork_id_hash"], inv_name, "artwork_id_hash")
    require_ids(inv["artist_id_hash"], inv_name, "artist_id_hash")
    uploads = pd.DataFrame(
        {
            "item_id": inv["artwork_id_hash"],
            "upload_time": parse_timestamps(inv["upload_timestamp"], inv_name, "upload_timestamp"),
        }
    )
    emb_ids, vectors = load_release_embeddings(embeddings, trust_pickle=trust_pickle)
    require_unique(pd.Series(emb_ids), Path(embeddings).name, "id")
    rows = pd.Index(emb_ids).get_indexer(inv["artwork_id_hash"])
    if (rows < 0).any():
        first = int(np.flatnonzero(rows < 0)[0])
        raise DatasetError(
            inv_name,
            f"artwork {show_value(inv['artwork_id_hash'].iloc[first])} has no embedding "
            f"({int((rows < 0).sum())} artworks without one)",
            line=first + 2,
            field="artwork_id_hash",
        )
    index = pd.Index(inv["artwork_id_hash"])
    bought = read_csv(
        purchases, pur_name, ["user_id_hash", "purchase_timestamp", "artwork_id_hash"]
    )
    require_ids(bought["user_id_hash"], pur_name, "user_id_hash")
    require_ids(bought["artwork_id_hash"], pur_name, "artwork_id_hash")
    table = pd.DataFrame(
        {
            "user_id": bought["user_id_hash"],
            "item_id": bought["artwork_id_hash"],
            "item": lookup_items(bought["artwork_id_hash"], index, pur_name, "artwork_id_hash"),
            "timestamp": parse_timestamps(
                bought["purchase_timestamp"], pur_name, "purchase_timestamp"
            ),
        }
    )
    require_after_upload(
        table["timestamp"],
        table["item"].to_numpy(),
        uploads,
        pur_name,
        field="purchase_timestamp",
        items_file=inv_name,
    )
    baskets_per_item = table.drop_duplicates(["user_id", "timestamp", "item"])[
        "item"
    ].value_counts()
    sold_repeatedly = np.zeros(len(inv), dtype=bool)
    sold_repeatedly[baskets_per_item.index[baskets_per_item.to_numpy() >= 2]] = True
    items = pd.DataFrame(
        {
            "item_id": inv["artwork_id_hash"],
            "artist_id": inv["artist_id_hash"],
            "upload_time": uploads["upload_time"],
            "one_of_a_kind": ~sold_repeatedly,
        }
    )
    readme = RELEASE_README.format(
        n_items=len(items), n_purchases=len(table), n_extra=len(emb_ids) - len(items)
    )
    return Dataset(items, vectors[rows], table), readme
