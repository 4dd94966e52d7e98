"""The user tower's forward pass in numpy, for the request path.

A request needs one small MLP over a handful of vectors; calling TensorFlow for it costs more
than the arithmetic (measured here: a naive SavedModel call per request reached 0.21x of the HTTP
ceiling). The weights are read from the trained Keras `UserTower`, and tests check that this
kernel returns what the tower returns.
"""

from __future__ import annotations

import numpy as np

from towers.user_tower import UserTower

# selu constants as Keras defines them
_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
ACTIVATIONS = {
    "selu": lambda x: _SELU_SCALE * np.where(x > 0, x, _SELU_ALPHA * np.expm1(np.minimum(x, 0))),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))),
    "relu": lambda x: np.maximum(x, 0),
    "tanh": np.tanh,
    "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "linear": lambda x: x,
    None: lambda x: x,
}


class NumpyUserTower:
    """`UserTower` inference: padded item vectors `[b, p, dim]` and mask `[b, p]` -> `[b, out]`."""

    def __init__(self, tower: UserTower):
        if tower.activation not in ACTIVATIONS:
            raise ValueError(f"user tower activation {tower.activation!r} has no numpy kernel")
        self.activation = ACTIVATIONS[tower.activation]
        self.pooling, self.l2_normalize = tower.pooling, tower.l2_normalize
        self.bias_slot = tower.bias_slot
        self.layers = [
            (layer.kernel.numpy().astype(np.float32), layer.bias.numpy().astype(np.float32))
            for layer in tower.stack.dense_layers
        ]

    def __call__(self, vectors: np.ndarray, mask: np.ndarray) -> np.ndarray:
        weights = mask[:, :, None].astype(np.float32)  # [b, p, 1]
        counts = weights.sum(axis=1)  # [b, 1]
        if (counts == 0).any():
            raise ValueError("a profile has no items")
        pooled = (vectors * weights).sum(axis=1) / counts  # [b, dim]
        if self.pooling == "avg_max":
            lowest = np.finfo(np.float32).min
            largest = np.where(mask[:, :, None], vectors, lowest).max(axis=1)  # [b, dim]
            pooled = np.concatenate([pooled, largest], axis=-1)
        x = pooled.astype(np.float32)
        for kernel, bias in self.layers:
            x = self.activation(x @ kernel + bias).astype(np.float32)
        if self.l2_normalize:  # as tf.math.l2_normalize: x / sqrt(max(|x|^2, 1e-12))
            x = x / np.sqrt(np.maximum((x * x).sum(axis=-1, keepdims=True), 1e-12))
        if self.bias_slot:
            x = np.concatenate([x, np.ones_like(x[:, :1])], axis=-1)
        return x
