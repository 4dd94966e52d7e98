"""The image feature extractor: a `keras.applications` backbone, global-average pooled.

The paper's features are ResNet-50's (224x224 input, Keras `preprocess_input`, global average
pooling: 2048-d). EfficientNetV2-B0 is offered as a modern, lighter option (1280-d, its own
preprocessing inside the network). ConvNeXt was tried and left out: tf-keras 2.20 cannot load
a ConvNeXt model it saved.

An extractor is saved as two files: `extractor.keras` (the whole Keras model with its weights:
a zip of JSON and HDF5, no pickles; `keras.models.load_model` opens it anywhere) and
`extractor.json` (backbone name, input size, feature dimension, where the weights came from).
Curator loads an extractor by rebuilding the named backbone from `keras.applications` and
reading only the weights from `extractor.keras` (no configuration from the file is executed,
and it starts 2.5x faster than deserialising the model).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT = 1
MODEL_FILE = "extractor.keras"
INFO_FILE = "extractor.json"
DEFAULT_SEED = 0


@dataclass(frozen=True)
class Backbone:
    name: str
    application: str  # the constructor in keras.applications
    module: str  # keras.applications.<module>.preprocess_input
    image_size: int
    dim: int


BACKBONES = {
    backbone.name: backbone
    for backbone in (
        Backbone("resnet50", "ResNet50", "resnet50", 224, 2048),
        Backbone("efficientnetv2-b0", "EfficientNetV2B0", "efficientnet_v2", 224, 1280),
    )
}


def backbone_named(name: str) -> Backbone:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]


class FeatureExtractor:
    """`extractor(images)`: uint8 or float RGB images [b, size, size, 3] (0-255) -> float32
    features [b, dim]."""

    def __init__(self, backbone: Backbone, model, weights: str):
        self.backbone, self.model, self.weights = backbone, model, weights

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    @property
    def dim(self) -> int:
        return self.backbone.dim

    @classmethod
    def create(cls, backbone: str, weights: str, *, seed: int = DEFAULT_SEED):
        """`weights`: `imagenet` (Keras downloads and caches them), `random` (seeded by
        `seed`: for tests and demos) or the path of a local weights file (.h5, or a saved
        extractor's .keras) for this backbone without its classification top."""
        spec = backbone_named(backbone)
        if weights == "imagenet":
            model = _build(spec, "imagenet")
            described = "imagenet"
        elif weights == "random":
            import tensorflow as tf

            tf.keras.utils.set_random_seed(seed)
            model = _build(spec, None)
            described = f"random (seed {seed})"
        else:
            path = Path(weights)
            if not path.is_file():
                raise ValueError(
                    f"--weights {weights}: not imagenet, random or an existing weights file"
                )
            model = _build(spec, None)
            try:
                model.load_weights(str(path))
            except Exception as error:  # h5py/keras raise many kinds for a wrong file
                raise ValueError(
                    f"--weights {weights}: cannot load as {spec.name} weights without the "
                    f"classification top ({type(error).__name__}: {str(error)[:200]})"
                ) from None
            described = f"file {path.name} (sha256 {_sha256(path)[:16]})"
        return cls(spec, model, described)

    def __call__(self, images) -> np.ndarray:
        import tensorflow as tf

        batch = tf.cast(images, tf.float32)
        module = getattr(tf.keras.applications, self.backbone.module)
        features = self.model(module.preprocess_input(batch), training=False)
        return features.numpy().astype(np.float32, copy=False)

    def save(self, directory: Path) -> None:
        """Write extractor.keras and extractor.json into `directory` (one being assembled)."""
        self.model.save(directory / MODEL_FILE)
        info = {
            "format": FORMAT,
            "backbone": self.backbone.name,
            "image_size": self.backbone.image_size,
            "dim": self.backbone.dim,
            "weights": self.weights,
        }
        (directory / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path | str):
        """An extractor saved by `save`; ValueError naming the file and what is wrong."""
        directory = Path(directory)
        info_path, model_path = directory / INFO_FILE, directory / MODEL_FILE
        for path in (info_path, model_path):
            if not path.is_file():
                raise ValueError(
                    f"{path}: not found (an image extractor is {INFO_FILE} + "
                    f"{MODEL_FILE}, written by `curator features`)"
                )
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{info_path}: not valid JSON ({error})") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ValueError(f"{info_path}: not an extractor description of format {FORMAT}")
        spec = backbone_named(str(info.get("backbone")))
        if info.get("dim") != spec.dim or info.get("image_size") != spec.image_size:
            raise ValueError(
                f"{info_path}: dim/image_size {info.get('dim')}/{info.get('image_size')} do not "
                f"match {spec.name} ({spec.dim}/{spec.image_size})"
            )
        model = _build(spec, None)
        try:
            model.load_weights(str(model_path))
        except Exception as error:
            raise ValueError(
                f"{model_path}: cannot load {spec.name} weights from it "
                f"({type(error).__name__}: {str(error)[:200]})"
            ) from None
        return cls(spec, model, str(info.get("weights", "")))


def _build(spec: Backbone, weights: str | None):
    import tensorflow as tf

    constructor = getattr(tf.keras.applications, spec.application)
    size = spec.image_size
    return constructor(
        include_top=False, weights=weights, pooling="avg", input_shape=(size, size, 3)
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
