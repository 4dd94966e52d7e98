"""Photographs to the backbone's input: checked, decoded, resized, the same way in batch and in
the service.

The header is read first (Pillow: format and size only, no pixels), so a file that is not a
JPEG, PNG or WebP image, or one so large that decoding would take gigabytes, is refused by name
before anything is decoded. Decoding and resizing are TensorFlow ops, so `curator features` runs
them in parallel inside its tf.data pipeline and the service computes exactly the same pixels.
Resizing follows the paper's feature extraction (Keras `load_img(target_size=(224, 224))`): the
whole image is scaled to the square input, aspect ratio not kept, nearest-neighbour sampling.
"""

from __future__ import annotations

import io
import warnings

# Pillow's names; MPO is a camera JPEG with more pictures after the first (decoded as JPEG)
FORMATS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
MAX_PIXELS = 50_000_000  # 50 megapixels: decoding takes 150 MB


class ImageError(ValueError):
    """A file that is not an image Curator reads; the message names it."""


def check_image(data: bytes, name: str) -> tuple[int, int]:
    """(width, height) of a JPEG, PNG or WebP image read from its header; ImageError naming
    `name` for an empty or unreadable file, another format, or more than MAX_PIXELS."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name}: empty file, expected a JPEG, PNG or WebP image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                found, (width, height) = image.format, image.size
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: more than the {MAX_PIXELS // 1_000_000} megapixels read"
        ) from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a JPEG, PNG or WebP image") from None
    except (OSError, ValueError, SyntaxError) as error:  # what Pillow raises for broken headers
        raise ImageError(f"{name}: unreadable image header ({error})") from None
    if found not in FORMATS:
        raise ImageError(f"{name}: a {found} image; JPEG, PNG and WebP are read")
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{name}: {width}x{height} pixels, more than the {MAX_PIXELS // 1_000_000} "
            "megapixels read"
        )
    return width, height


def decode_and_resize(data, size: int):
    """TensorFlow: encoded bytes (a scalar string tensor) -> uint8 [size, size, 3] RGB.
    Grayscale is repeated to three channels, an alpha channel dropped, the first frame of an
    animation taken."""
    import tensorflow as tf

    image = tf.io.decode_image(data, channels=3, expand_animations=False, dtype=tf.uint8)
    image.set_shape([None, None, 3])
    return tf.image.resize(image, [size, size], method="nearest")


def load_image(data: bytes, size: int, name: str):
    """One image's pixels for the extractor (the service's path): checked, decoded, resized.
    ImageError naming `name` when the body of the file does not decode."""
    import tensorflow as tf

    check_image(data, name)
    try:
        return decode_and_resize(tf.constant(data), size)
    except tf.errors.InvalidArgumentError as error:
        raise ImageError(f"{name}: cannot decode ({_first_line(error.message)})") from None


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:200] if message.strip() else "corrupt data"
