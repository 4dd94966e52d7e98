"""A stack of dense layers, the building block of both towers."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


@tf.keras.utils.register_keras_serializable(package="curator")
class DenseStack(tf.keras.layers.Layer):
    """Dense(units[0], activation) -> [Dropout] -> ... -> Dense(units[-1], activation);
    dropout sits between layers, never after the last.

    `[batch, any] -> [batch, units[-1]]`. `l2_weight` is L2 weight decay on the kernels.
    """

    def __init__(
        self,
        units: Sequence[int],
        activation: str = "selu",
        dropout: float = 0.0,
        l2_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.units = tuple(int(u) for u in units)
        if not self.units or min(self.units) < 1:
            raise ValueError(f"units must be a non-empty list of positive widths, got {units}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if l2_weight < 0.0:
            raise ValueError(f"l2_weight must be >= 0, got {l2_weight}")
        self.activation, self.dropout, self.l2_weight = activation, float(dropout), float(l2_weight)
        regularizer = tf.keras.regularizers.l2(self.l2_weight) if self.l2_weight else None
        initializer = "lecun_normal" if activation == "selu" else "glorot_uniform"
        self.dense_layers = [
            tf.keras.layers.Dense(
                width,
                activation=activation,
                kernel_initializer=initializer,
                kernel_regularizer=regularizer,
            )
            for width in self.units
        ]
        self.dropout_layer = tf.keras.layers.Dropout(self.dropout) if self.dropout else None

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        x = inputs
        for depth, layer in enumerate(self.dense_layers):
            if depth and self.dropout_layer is not None:
                x = self.dropout_layer(x, training=training)
            x = layer(x)
        return x

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "units": list(self.units),
            "activation": self.activation,
            "dropout": self.dropout,
            "l2_weight": self.l2_weight,
        }
