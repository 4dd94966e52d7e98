"""`curator features`: photographs -> features.npy, items.csv and the saved extractor."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.conftest import write_images
from training.data.dataset import load_dataset, load_items_table
from training.images.batch import extract_features
from training.images.decode import MAX_PIXELS, ImageError, check_image, decode_and_resize
from training.images.extractor import FeatureExtractor

REPO = Path(__file__).resolve().parents[3]
BACKBONE = "efficientnetv2-b0"  # the light backbone keeps the tests fast; same code path


def reference_features(folder: Path, item_ids: list[str], extractor: FeatureExtractor):
    """Each file decoded on its own and run through the extractor one at a time."""
    rows = []
    for item_id in item_ids:
        (path,) = folder.glob(f"{item_id}.*")
        pixels = decode_and_resize(tf.io.read_file(str(path)), extractor.image_size)
        rows.append(extractor(pixels[None])[0])
    return np.stack(rows)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> tuple[Path, list[str]]:
    folder = tmp_path_factory.mktemp("photos")
    return folder, write_images(folder, 7)


@pytest.fixture(scope="module")
def extracted(photos, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("features") / "out"
    extract_features(
        photos[0], out, backbone=BACKBONE, weights="random", batch_size=3, progress=False
    )
    return out


def test_a_folder_gives_features_in_item_id_order_equal_to_one_image_at_a_time(photos, extracted):
    folder, names = photos
    features = np.load(extracted / "features.npy")
    items = load_items_table(extracted / "items.csv")
    assert features.dtype == np.float32 and features.shape == (7, 1280)
    assert list(items["item_id"]) == sorted(names)
    extractor = FeatureExtractor.load(extracted)
    reference = reference_features(folder, list(items["item_id"]), extractor)
    np.testing.assert_allclose(features, reference, rtol=1e-4, atol=1e-7)
    assert not (extracted.parent / ".out.partial").exists()


def test_the_saved_extractor_is_a_keras_model_anyone_can_load(extracted):
    model = tf.keras.models.load_model(extracted / "extractor.keras", compile=False)
    assert model.output_shape == (None, 1280)
    info = (extracted / "extractor.json").read_text()
    assert "efficientnetv2-b0" in info and "random (seed 0)" in info


def test_random_weights_are_seeded_and_a_local_weights_file_loads(photos, extracted, tmp_path):
    folder, _ = photos
    again = tmp_path / "again"
    extract_features(folder, again, backbone=BACKBONE, weights="random", progress=False)
    close = dict(rtol=1e-4, atol=1e-7)  # batches of other sizes round differently
    np.testing.assert_allclose(
        np.load(again / "features.npy"), np.load(extracted / "features.npy"), **close
    )
    other = tmp_path / "other"
    extract_features(folder, other, backbone=BACKBONE, weights="random", seed=1, progress=False)
    assert not np.allclose(np.load(other / "features.npy"), np.load(extracted / "features.npy"))
    from_file = tmp_path / "from-file"
    weights = str(extracted / "extractor.keras")
    extract_features(folder, from_file, backbone=BACKBONE, weights=weights, progress=False)
    np.testing.assert_allclose(
        np.load(from_file / "features.npy"), np.load(extracted / "features.npy"), **close
    )
    with pytest.raises(ValueError, match="not imagenet, random or an existing weights file"):
        extract_features(folder, tmp_path / "x", backbone=BACKBONE, weights="nope.h5")
    with pytest.raises(ValueError, match="unknown backbone 'vgg'"):
        extract_features(folder, tmp_path / "x", backbone="vgg", weights="random")


def test_a_weights_file_that_does_not_load_leaves_no_partial_run(photos, tmp_path):
    """Once an empty .OUT.partial/ stayed behind."""
    folder, _ = photos
    bad = tmp_path / "weights.keras"
    bad.write_text("not weights")
    with pytest.raises(ValueError):
        extract_features(folder, tmp_path / "x", backbone=BACKBONE, weights=str(bad))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.keras"]


def test_a_csv_aligned_to_an_items_file_keeps_its_order_and_names_a_missing_image(
    photos, extracted, tmp_path
):
    folder, names = photos
    listing = tmp_path / "images.csv"
    rows = [f"{n},{next(folder.glob(n + '.*')).resolve()}" for n in names]
    listing.write_text("item_id,image_path\n" + "\n".join(rows) + "\n")
    order = [names[3], names[0], names[6], names[1], names[5], names[2], names[4]]
    items_csv = tmp_path / "items.csv"
    items_csv.write_text(
        "item_id,artist_id,one_of_a_kind\n" + "".join(f"{n},painter,true\n" for n in order)
    )
    out = tmp_path / "aligned"
    extract_features(
        listing, out, backbone=BACKBONE, weights="random", items_csv=items_csv, progress=False
    )
    items = load_items_table(out / "items.csv")
    assert list(items["item_id"]) == order and items["one_of_a_kind"].all()
    by_id = dict(zip(sorted(names), np.load(extracted / "features.npy"), strict=True))
    np.testing.assert_allclose(
        np.load(out / "features.npy"), np.stack([by_id[n] for n in order]), rtol=1e-4, atol=1e-7
    )
    items_csv.write_text("item_id\n" + "\n".join([*order[:2], "no-photo", *order[2:]]) + "\n")
    with pytest.raises(
        ValueError, match=r"items.csv, line 4, field 'item_id': no image for item 'no-photo'"
    ):
        extract_features(
            listing, tmp_path / "x", backbone=BACKBONE, weights="random", items_csv=items_csv
        )
    listing.write_text("item_id,image_path\nart-00,missing.png\n")
    with pytest.raises(ValueError, match=r"images.csv, line 2, field 'image_path': no such file"):
        extract_features(listing, tmp_path / "x", backbone=BACKBONE, weights="random")


@pytest.mark.parametrize(
    "name, content, problem",
    [
        ("bad.jpg", b"this is not a picture", "not a JPEG, PNG or WebP image"),
        ("empty.png", b"", "empty file"),
    ],
)
def test_a_file_that_is_not_an_image_is_named_and_nothing_is_written(
    photos, tmp_path, name, content, problem
):
    folder = tmp_path / "photos"
    write_images(folder, 3)
    (folder / name).write_bytes(content)
    out = tmp_path / "out"
    with pytest.raises(ImageError, match=f"{name}: {problem}"):
        extract_features(folder, out, backbone=BACKBONE, weights="random", progress=False)
    assert not out.exists()


def test_a_truncated_file_is_named_when_it_does_not_decode(tmp_path):
    folder = tmp_path / "photos"
    write_images(folder, 3)
    whole = (folder / "art-00.png").read_bytes()
    (folder / "art-00.png").write_bytes(whole[: len(whole) // 3])  # the header is intact
    out = tmp_path / "out"
    with pytest.raises(ImageError, match="art-00.png: cannot decode"):
        extract_features(folder, out, backbone=BACKBONE, weights="random", progress=False)
    assert not out.exists()


def test_an_empty_folder_an_existing_out_and_bad_names_are_refused(photos, extracted, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no photos here")
    with pytest.raises(ValueError, match="no image files"):
        extract_features(tmp_path / "empty", tmp_path / "x", weights="random")
    with pytest.raises(FileExistsError, match="pass --force"):
        extract_features(photos[0], extracted, weights="random")
    twice = tmp_path / "twice"
    write_images(twice, 1)
    Image.new("RGB", (20, 20)).save(twice / "art-00.jpg")
    with pytest.raises(ValueError, match="item 'art-00' has two images"):
        extract_features(twice, tmp_path / "x", weights="random")
    spaced = tmp_path / "spaced"
    spaced.mkdir()
    Image.new("RGB", (20, 20)).save(spaced / "a b.png")
    with pytest.raises(ValueError, match="'a b' is not a valid item id"):
        extract_features(spaced, tmp_path / "x", weights="random")


def test_oversized_and_other_formats_are_refused_from_the_header():
    import io

    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, format="GIF")
    with pytest.raises(ImageError, match="a GIF image; JPEG, PNG and WebP are read"):
        check_image(gif.getvalue(), "x.gif")
    side = int(MAX_PIXELS**0.5) + 10  # a PNG that compresses to almost nothing
    huge = io.BytesIO()
    Image.new("L", (side, side)).save(huge, format="PNG")
    with pytest.raises(ImageError, match=f"{side}x{side} pixels, more than the 50 megapixels"):
        check_image(huge.getvalue(), "huge.png")


def test_a_killed_run_resumes_with_the_same_weights_and_gives_the_same_features(
    photos, extracted, tmp_path
):
    folder, _ = photos
    out = tmp_path / "out"
    script = (
        "import sys, time; import training.images.batch as b\n"
        "save = b._save_chunk\n"
        "def slow(*a):\n    save(*a); time.sleep(60)\n"  # stalls after the first chunk
        "b._save_chunk = slow\n"
        f"b.extract_features(b.Path({str(folder)!r}), b.Path({str(out)!r}), "
        f"backbone={BACKBONE!r}, weights='random', seed=5, batch_size=2, chunk_images=2, "
        "progress=False)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    partial = tmp_path / ".out.partial"
    deadline = time.monotonic() + 120
    while not (partial / "chunk-00000.npy").exists():
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert not out.exists()
    said = []
    extract_features(
        folder, out, backbone=BACKBONE, weights="random", seed=5, batch_size=2,
        chunk_images=2, progress=False, echo=said.append,
    )  # fmt: skip
    assert said == [f"resuming {partial}: 2 of 7 images done"]
    uninterrupted = tmp_path / "uninterrupted"
    extract_features(folder, uninterrupted, backbone=BACKBONE, weights="random", seed=5,
                     progress=False)  # fmt: skip
    np.testing.assert_allclose(
        np.load(out / "features.npy"), np.load(uninterrupted / "features.npy"), rtol=1e-4, atol=1e-7
    )
    assert not partial.exists()


def test_purchases_make_a_complete_dataset_and_bad_ones_write_nothing(photos, tmp_path):
    folder, names = photos
    purchases = tmp_path / "purchases.csv"
    purchases.write_text(f"user_id,item_id\nc1,{names[0]}\nc1,{names[1]}\nc2,nope\n")
    out = tmp_path / "shop"
    with pytest.raises(ValueError, match="purchases.csv, line 4, field 'item_id': unknown item"):
        extract_features(
            folder, out, backbone=BACKBONE, weights="random", purchases_csv=purchases,
            progress=False,
        )  # fmt: skip
    assert not out.exists()
    purchases.write_text(f"user_id,item_id\nc1,{names[0]}\nc1,{names[1]}\nc2,{names[2]}\n")
    said = []
    extract_features(
        folder, out, backbone=BACKBONE, weights="random", purchases_csv=purchases,
        progress=False, echo=said.append,
    )  # fmt: skip
    assert said == [f"resuming {tmp_path / '.shop.partial'}: 7 of 7 images done"]
    dataset = load_dataset(out)
    assert dataset.n_items == 7 and len(dataset.purchases) == 3
