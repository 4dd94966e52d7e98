"""Item feature helpers: z-scoring, and rendering latent art styles as pooled-CNN-like features."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK_ROWS = 65_536
RENDER_ROWS = 16_384


def zscore_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension (mean [d], std [d]) in float64, in chunks so memory-mapped input stays
    on disk. Constant dimensions get std 1 so they z-score to 0 instead of NaN."""
    total = np.zeros(features.shape[1])
    total_sq = np.zeros(features.shape[1])
    for start in range(0, features.shape[0], CHUNK_ROWS):
        chunk = np.asarray(features[start : start + CHUNK_ROWS], dtype=np.float64)
        total += chunk.sum(axis=0)
        total_sq += np.square(chunk).sum(axis=0)
    mean = total / features.shape[0]
    std = np.sqrt(np.maximum(total_sq / features.shape[0] - np.square(mean), 0.0))
    return mean, np.where(std > 1e-8, std, 1.0)


def zscore(features: np.ndarray) -> np.ndarray:
    """[n, d] float32 z-scored per dimension (the paper's input normalisation)."""
    mean, std = zscore_stats(features)
    return ((np.asarray(features, dtype=np.float64) - mean) / std).astype(np.float32)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to L2 norm 1 (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


@dataclass(frozen=True)
class FeatureRenderer:
    """Maps latent style vectors [n, r] to features [n, d] shaped like ResNet-50 global-average-
    pooled activations: non-negative, about half the channels zero for a given image, channels
    of unequal scale, plus per-image variation that the latent style does not explain."""

    projection: np.ndarray  # [r, d]
    bias: np.ndarray  # [d]
    channel_scale: np.ndarray  # [d]
    noise_scale: float

    @classmethod
    def create(
        cls, *, latent_dim: int, feature_dim: int = 2048, noise_scale: float = 0.6, seed: int = 0
    ) -> FeatureRenderer:
        rng = np.random.default_rng(seed)
        return cls(
            projection=rng.normal(0.0, 1.0, (latent_dim, feature_dim)).astype(np.float32),
            bias=rng.normal(-0.3, 0.2, feature_dim).astype(np.float32),
            channel_scale=rng.lognormal(-0.7, 0.5, feature_dim).astype(np.float32),
            noise_scale=noise_scale,
        )

    def render_chunks(self, latent: np.ndarray, rng: np.random.Generator) -> Iterator[np.ndarray]:
        """Features for latent [n, r], as float32 blocks [chunk, d] in row order."""
        for start in range(0, latent.shape[0], RENDER_ROWS):
            block = latent[start : start + RENDER_ROWS].astype(np.float32)
            pre = block @ self.projection  # [chunk, d]
            pre += self.bias
            pre += rng.standard_normal(pre.shape, dtype=np.float32) * self.noise_scale
            np.maximum(pre, 0.0, out=pre)
            pre *= self.channel_scale
            yield pre

    def render(self, latent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Features [n, d] float32 for latent [n, r], in memory."""
        return np.concatenate(list(self.render_chunks(latent, rng)))


def write_npy_chunks(path: Path, shape: tuple[int, int], chunks: Iterable[np.ndarray]) -> None:
    """Write float32 row blocks as one .npy file without holding (or mapping) all of it."""
    written = 0
    with open(path, "wb") as file:
        header = {"descr": "<f4", "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(file, header)
        for chunk in chunks:
            file.write(np.ascontiguousarray(chunk, dtype="<f4").tobytes())
            written += chunk.shape[0]
    if written != shape[0]:
        raise ValueError(f"wrote {written} rows to {path}, expected {shape[0]}")
