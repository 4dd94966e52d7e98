"""`curator features` throughput: images per second through each backbone, and the upload
endpoint's cost per image. Prints a markdown table:
    .venv/bin/python benchmarks/bench_features.py [--images 128] [--size 800x600]

Images are generated JPEGs of a typical web photo size (decoding and resizing are part of the
measured path). Weights are `random`: the arithmetic is the same as with `imagenet`, which no
machine here can download. Each row is one full `extract_features` run after a warm-up run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from training.images.batch import extract_features
from training.images.decode import load_image
from training.images.extractor import FeatureExtractor


def write_photos(folder: Path, n: int, width: int, height: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
    for i in range(n):  # smooth images (upscaled noise), so JPEG sizes are photo-like
        tile = np.roll(base, i, axis=1)
        Image.fromarray(tile).resize((width, height)).save(folder / f"p{i:05d}.jpg", quality=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--size", default="800x600")
    parser.add_argument("--backbones", default="resnet50,efficientnetv2-b0")
    parser.add_argument("--batch-sizes", default="16,32")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"{args.images} JPEG images of {width}x{height}; {os.cpu_count()} CPUs")
    print("| backbone | batch | images/s | s total | upload: ms per image (p50 / p95) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        write_photos(photos, args.images, width, height)
        one = (photos / "p00000.jpg").read_bytes()
        for backbone in args.backbones.split(","):
            warm = Path(tmp) / f"warm-{backbone}"
            extract_features(photos, warm, backbone=backbone, weights="random", progress=False)
            extractor = FeatureExtractor.load(warm)
            uploads = []
            for _ in range(12):  # the service's path: one image decoded and embedded
                started = time.perf_counter()
                extractor(load_image(one, extractor.image_size, "image")[None])
                uploads.append(1000 * (time.perf_counter() - started))
            p50, p95 = np.percentile(uploads[2:], [50, 95])
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                out = Path(tmp) / f"{backbone}-{batch}"
                started = time.perf_counter()
                extract_features(
                    photos, out, backbone=backbone, weights="random", batch_size=batch,
                    progress=False,
                )  # fmt: skip
                seconds = time.perf_counter() - started
                print(
                    f"| {backbone} | {batch} | {args.images / seconds:.1f} | {seconds:.1f} | "
                    f"{p50:.0f} / {p95:.0f} |"
                )


if __name__ == "__main__":
    main()
