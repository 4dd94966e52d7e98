"""`curator features`: a folder or CSV of photographs -> features.npy, items.csv, the extractor.

Images are read, decoded and resized in a tf.data pipeline (parallel, prefetching) and run
through the backbone in batches. Work is saved every CHUNK_IMAGES images in a hidden sibling of
OUT (`.OUT.partial`: the plan, the extractor and one .npy per finished chunk), so a run that is
killed resumes where it stopped, with the very same weights. The output directory appears only
when complete (training/atomic.py), and the partial directory is then removed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.atomic import atomic_directory, write_text_atomic
from training.data.columns import (
    DatasetError,
    line_of,
    read_csv,
    require_ids,
    require_unique,
    show_value,
)
from training.data.ids import ID_RULE, is_valid_id
from training.images.decode import EXTENSIONS, check_image, decode_and_resize, load_image
from training.images.extractor import DEFAULT_SEED, FeatureExtractor

CHUNK_IMAGES = 256
PLAN_FILE = "plan.json"


@dataclass(frozen=True)
class ImageSource:
    item_id: str
    path: Path
    where: str  # how errors name it: the file, or the CSV line that lists it


def list_images(images: Path) -> list[ImageSource]:
    """A folder (item_id = file stem, JPEG/PNG/WebP by extension, sorted by id) or a CSV of
    `item_id,image_path` (paths relative to the CSV's folder, in the CSV's order)."""
    if images.is_dir():
        return _folder_images(images)
    if images.is_file():
        return _csv_images(images)
    raise ValueError(f"--images {images}: no such folder or CSV file")


def _folder_images(folder: Path) -> list[ImageSource]:
    files = sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in EXTENSIONS and not p.name.startswith(".")
    )
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(EXTENSIONS)})")
    seen: dict[str, Path] = {}
    for path in files:
        if not is_valid_id(path.stem):
            raise ValueError(
                f"{path}: the file name {path.stem!r} is not a valid item id ({ID_RULE})"
            )
        if path.stem in seen:
            raise ValueError(f"{path}: item {path.stem!r} has two images ({seen[path.stem].name})")
        seen[path.stem] = path
    return [ImageSource(item_id, path, str(path)) for item_id, path in sorted(seen.items())]


def _csv_images(csv_path: Path) -> list[ImageSource]:
    name = csv_path.name
    frame = read_csv(csv_path, name, ["item_id", "image_path"])
    require_ids(frame["item_id"], name, "item_id")
    require_unique(frame["item_id"], name, "item_id")
    sources = []
    for row, (item_id, relative) in enumerate(
        zip(frame["item_id"], frame["image_path"], strict=True)
    ):
        path = csv_path.parent / relative
        if not path.is_file():
            raise DatasetError(
                name,
                f"no such file {show_value(relative)}",
                line=line_of(row),
                field="image_path",
            )
        sources.append(ImageSource(item_id, path, f"{name}, line {line_of(row)} ({relative})"))
    return sources


def align_to_items(sources: list[ImageSource], items: pd.DataFrame, name: str) -> list[ImageSource]:
    """`sources` in the order of `items` (an items table); an item without an image is an error
    naming it and its line. Images of items not in the table are left out."""
    by_id = {source.item_id: source for source in sources}
    missing = [row for row, item_id in enumerate(items["item_id"]) if item_id not in by_id]
    if missing:
        first = items["item_id"].iloc[missing[0]]
        raise DatasetError(
            name,
            f"no image for item {show_value(first)} "
            f"({len(missing)} item(s) without an image in all)",
            line=line_of(missing[0]),
            field="item_id",
        )
    return [by_id[item_id] for item_id in items["item_id"]]


def extract_features(
    images: Path,
    out: Path,
    *,
    backbone: str = "resnet50",
    weights: str = "imagenet",
    batch_size: int = 32,
    items_csv: Path | None = None,
    purchases_csv: Path | None = None,
    seed: int = DEFAULT_SEED,
    chunk_images: int = CHUNK_IMAGES,
    overwrite: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    """Compute features for every image (see the module doc); returns a summary. With
    `purchases_csv` (copied in, then the whole directory validated) OUT is a complete dataset."""
    if purchases_csv is not None and not Path(purchases_csv).is_file():
        raise ValueError(f"--purchases {purchases_csv}: no such file")
    if batch_size < 1 or chunk_images < 1:
        raise ValueError(f"batch size {batch_size}, chunk {chunk_images}: each at least 1")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} already exists (pass --force to replace it)")
    sources = list_images(Path(images))
    if items_csv is not None:
        from training.data.dataset import load_items_table

        items = load_items_table(Path(items_csv))
        sources = align_to_items(sources, items, Path(items_csv).name)
    else:
        items = _default_items([s.item_id for s in sources])
    for source in sources:  # headers only: every unreadable file is named before any work
        with source.path.open("rb") as handle:
            check_image(handle.read(), source.where)

    partial = out.parent / f".{out.name}.partial"
    plan = {
        "chunk_images": chunk_images,
        "backbone": backbone,
        "weights": weights,
        "seed": seed,
        "images": [
            [s.item_id, str(s.path.resolve()), s.path.stat().st_size, s.path.stat().st_mtime_ns]
            for s in sources
        ],
    }
    extractor, done = _resume_or_start(partial, plan, echo)
    if extractor is None:
        try:
            extractor = FeatureExtractor.create(backbone, weights, seed=seed)
        except BaseException:  # bad weights: nothing was done, nothing to resume
            shutil.rmtree(partial, ignore_errors=True)
            raise
        extractor.save(partial)
        write_text_atomic(partial / PLAN_FILE, json.dumps(plan))
    _extract_remaining(extractor, sources, partial, done, batch_size, chunk_images, progress)

    chunks = (len(sources) + chunk_images - 1) // chunk_images
    features = np.concatenate([np.load(partial / _chunk_name(c)) for c in range(chunks)])
    if not np.isfinite(features).all():
        row = int(np.flatnonzero(~np.isfinite(features).all(axis=1))[0])
        raise ValueError(f"{sources[row].where}: the extractor's features are not finite")
    with atomic_directory(out, overwrite=overwrite) as tmp:
        from training.data.dataset import check_features, write_items_csv

        check_features(features, n_items=len(items))
        np.save(tmp / "features.npy", features)
        write_items_csv(tmp / "items.csv", items)
        for name in os.listdir(partial):
            if name.startswith("extractor."):
                shutil.copy2(partial / name, tmp / name)
        if purchases_csv is not None:  # a complete dataset: checked as one before the rename
            from training.data.dataset import load_dataset

            shutil.copyfile(purchases_csv, tmp / "purchases.csv")
            load_dataset(tmp, mmap=True)
        (tmp / "README.md").write_text(
            f"Image features: {extractor.backbone.name}, weights {extractor.weights}, "
            f"{features.shape[0]} images -> {features.shape[1]}-d "
            f"(`curator features --images {images}`).\n"
        )
    shutil.rmtree(partial)
    return {"images": len(sources), "dim": int(features.shape[1]), "backbone": backbone}


def _default_items(item_ids: list[str]) -> pd.DataFrame:
    n = len(item_ids)
    return pd.DataFrame(
        {
            "item_id": item_ids,
            "artist_id": [""] * n,
            "upload_time": np.zeros(n),
            "one_of_a_kind": np.zeros(n, bool),
        }
    )


def _resume_or_start(partial: Path, plan: dict, echo) -> tuple[FeatureExtractor | None, int]:
    """(the interrupted run's extractor, its finished chunks) when `partial` holds a run of the
    same plan; otherwise (None, 0) and a fresh `partial`."""
    if (partial / PLAN_FILE).is_file():
        try:
            same = json.loads((partial / PLAN_FILE).read_text()) == plan
        except (UnicodeDecodeError, json.JSONDecodeError):
            same = False
        if same:
            done = 0
            while (partial / _chunk_name(done)).is_file():
                done += 1
            echo(
                f"resuming {partial}: {min(done * plan['chunk_images'], len(plan['images']))} of "
                f"{len(plan['images'])} images done"
            )
            return FeatureExtractor.load(partial), done
        echo(f"{partial} is an interrupted run over other images or settings: starting over")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return None, 0


def _extract_remaining(
    extractor, sources, partial, done_chunks, batch_size, chunk_images, progress
) -> None:
    import tensorflow as tf
    from tqdm import tqdm

    n = len(sources)
    start = min(done_chunks * chunk_images, n)
    if start >= n:
        return
    size = extractor.image_size
    paths = tf.data.Dataset.from_tensor_slices([str(s.path) for s in sources[start:]])
    pipeline = (
        paths.map(
            lambda path: decode_and_resize(tf.io.read_file(path), size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .batch(batch_size)
        .prefetch(1)
    )
    pending: list[np.ndarray] = []
    position, chunk = start, done_chunks
    with tqdm(total=n, initial=start, unit="img", disable=not progress) as bar:
        batches = iter(pipeline)
        while position < n:
            try:
                images = next(batches)
            except tf.errors.InvalidArgumentError:
                _raise_for_bad_file(sources[position : position + batch_size], size)
                raise
            pending.append(extractor(images))
            position += int(images.shape[0])
            bar.update(int(images.shape[0]))
            while sum(len(p) for p in pending) >= chunk_images or (position >= n and pending):
                rows = np.concatenate(pending)
                _save_chunk(partial / _chunk_name(chunk), rows[:chunk_images])
                pending = [rows[chunk_images:]] if len(rows) > chunk_images else []
                chunk += 1


def _raise_for_bad_file(sources: list[ImageSource], size: int) -> None:
    """The ImageError of the first of `sources` that does not decode (the service's path)."""
    for source in sources:
        load_image(source.path.read_bytes(), size, source.where)


def _save_chunk(path: Path, rows: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, rows.astype(np.float32))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:05d}.npy"
