"""`POST /v1/items/image` over a real uvicorn process: an artwork from its photograph, with the
features the batch path (`curator features`) computes for the same file."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys

import httpx
import numpy as np
import pytest
from PIL import Image

from serving.process import curator_service
from serving.store import Store
from tests.conftest import REPO, tiny_config, write_images
from training.data.dataset import load_dataset
from training.export import export_run
from training.images.batch import extract_features
from training.train import train

KEY = {"X-API-Key": "k"}
MAX_IMAGE_BYTES = 300_000


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    """Photos -> `curator features` (EfficientNetV2-B0, seeded random weights) -> purchases ->
    a tiny trained model -> an export, served with the dataset's extractor."""
    root = tmp_path_factory.mktemp("gallery")
    names = write_images(root / "photos", 30, seed=1)
    rng = np.random.default_rng(0)
    rows = [
        f"c{user},{item},{1_600_000_000 + 1000 * n}"
        for n, (user, item) in enumerate(
            (user, names[i]) for user in range(12) for i in rng.choice(30, 6, replace=False)
        )
    ]
    (root / "purchases.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    data = root / "data"
    extract_features(
        root / "photos",
        data,
        backbone="efficientnetv2-b0",
        weights="random",
        purchases_csv=root / "purchases.csv",
        progress=False,
    )
    dataset = load_dataset(data)
    run = root / "run"
    train(dataset, tiny_config(epochs=2), run, progress=False)
    export_run(run, dataset, root / "exports", progress=lambda _: None)
    service = curator_service(
        root / "exports",
        root / "live.db",
        root / "service.log",
        api_key="k",
        image_extractor=data,
        max_image_bytes=MAX_IMAGE_BYTES,
    )
    yield service, root
    service.stop()


def png_bytes(seed: int, size=(97, 131)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def upload(client: httpx.Client, item_id: str, image: bytes, headers=KEY, part="image", **fields):
    files = {part: ("photo.png", image, "image/png")}
    data = {"item_id": item_id, "artist_id": "new-painter", **fields}
    return client.post("/v1/items/image", data=data, files=files, headers=headers)


def stored_features(root, item_id: str) -> np.ndarray:
    store = Store(f"sqlite:///{root / 'live.db'}")
    try:
        (item,) = [item for item in store.items() if item.item_id == item_id]
        return item.features
    finally:
        store.close()


def test_an_uploaded_photo_gets_the_batch_paths_features_and_is_recommended(gallery, tmp_path):
    service, root = gallery
    image = png_bytes(7)
    size_before = service.client.get("/readyz").json()
    answer = upload(service.client, "upload-1", image, one_of_a_kind="false")
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    assert size_before["status"] == "ready"
    # the batch path over the same file, with the same weights (a local weights file)
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "upload-1.png").write_bytes(image)
    extract_features(
        tmp_path / "one",
        tmp_path / "batch",
        backbone="efficientnetv2-b0",
        weights=str(root / "data" / "extractor.keras"),
        progress=False,
    )
    batch = np.load(tmp_path / "batch" / "features.npy")[0]
    np.testing.assert_allclose(stored_features(root, "upload-1"), batch, rtol=1e-4, atol=1e-7)
    # searchable at once: its similar artworks, and a profile of it
    similar = service.client.get("/v1/items/upload-1/similar", params={"k": 5})
    assert similar.status_code == 200 and len(similar.json()["items"]) == 5
    recommended = service.client.post(
        "/v1/recommendations", json={"item_ids": ["upload-1"], "k": 5}
    )
    assert recommended.status_code == 200 and recommended.json()["strategy"] == "model"


def count_items(root) -> int:
    store = Store(f"sqlite:///{root / 'live.db'}")
    try:
        return len(store.items())
    finally:
        store.close()


def test_bad_uploads_get_a_4xx_that_names_the_problem_and_store_nothing(gallery):
    service, root = gallery
    client, good = service.client, png_bytes(8)
    before = count_items(root)
    truncated = png_bytes(9, (300, 200))
    cases = [
        (upload(client, "u-bad", b"GIF? no, plain text"), 422, "image: not a JPEG, PNG or WebP"),
        (upload(client, "u-empty", b""), 422, "image: empty file"),
        (upload(client, "u-cut", truncated[: len(truncated) // 2]), 422, "image: cannot decode"),
        (upload(client, "u-big", png_bytes(10, (400, 400))), 413, "max_image_bytes"),
        (upload(client, "u-none", good, part="photo"), 422, "image: required"),
        (upload(client, "a b", good), 422, "item_id"),
        (upload(client, "u-odd", good, one_of_a_kind="maybe"), 422, "one_of_a_kind"),
        (upload(client, "u-extra", good, features="1,2"), 422, "features"),
        (upload(client, "art-00", good), 409, "already in the catalogue"),
        (upload(client, "u-key", good, headers={}), 401, "X-API-Key"),
        (
            client.post("/v1/items/image", json={"item_id": "x"}, headers=KEY),
            415,
            "multipart/form-data",
        ),
    ]
    for answer, status, detail in cases:
        assert answer.status_code == status, (status, answer.text)
        assert detail in answer.json()["detail"], answer.text
    assert count_items(root) == before


def test_serve_refuses_an_extractor_that_does_not_fit_the_model(gallery, tiny_export, tmp_path):
    _, root = gallery
    shutil.copytree(tiny_export, tmp_path / "exports" / "1")
    done = subprocess.run(
        [sys.executable, "-m", "training.cli", "serve", "--model", str(tmp_path / "exports"),
         "--image-extractor", str(root / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2
    assert "gives 1280-d features but the model" in done.stderr
