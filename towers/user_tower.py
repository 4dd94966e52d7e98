"""The user tower: the item vectors of a customer's purchases -> the customer's vector."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from towers.dense_stack import DenseStack

POOLINGS = ("avg_max", "avg")


@tf.keras.utils.register_keras_serializable(package="curator")
class UserTower(tf.keras.layers.Layer):
    """Masked mean and masked max pooling of the profile, concatenated (AVG+MAX; or AVG alone),
    then a dense stack (CuratorNet: 300, 300, 200, selu).

    Inputs: `(item_vectors [batch, max_profile, dim], mask [batch, max_profile] bool)`.
    Output: `[batch, output_dim]`. Padding (mask False) never changes the result. A profile with
    no item is an error (InvalidArgumentError), not a zero vector. With `bias_slot`, a constant 1
    is appended so that a hybrid item tower's bias slot adds to the dot product.
    """

    def __init__(
        self,
        hidden_units: Sequence[int] = (300, 300, 200),
        activation: str = "selu",
        pooling: str = "avg_max",
        dropout: float = 0.0,
        l2_normalize: bool = False,
        l2_weight: float = 0.0,
        bias_slot: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation, self.pooling, self.dropout = activation, pooling, float(dropout)
        self.l2_normalize, self.l2_weight = bool(l2_normalize), float(l2_weight)
        self.bias_slot = bool(bias_slot)
        self.stack = DenseStack(self.hidden_units, activation, self.dropout, self.l2_weight)

    @property
    def output_dim(self) -> int:
        return self.hidden_units[-1] + (1 if self.bias_slot else 0)

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        vectors, mask = inputs  # [batch, max_profile, dim], [batch, max_profile]
        mask = tf.cast(mask, tf.bool)
        weights = tf.cast(mask, vectors.dtype)[:, :, None]  # [batch, max_profile, 1]
        counts = tf.reduce_sum(weights, axis=1)  # [batch, 1]
        tf.debugging.assert_positive(
            tf.reshape(counts, [-1]), message="UserTower: a profile has no items"
        )
        pooled = tf.reduce_sum(vectors * weights, axis=1) / counts  # [batch, dim]
        if self.pooling == "avg_max":
            lowest = tf.fill(tf.shape(vectors), vectors.dtype.min)
            masked = tf.where(mask[:, :, None], vectors, lowest)  # padding never wins the max
            pooled = tf.concat([pooled, tf.reduce_max(masked, axis=1)], axis=-1)  # [batch, 2*dim]
        user = self.stack(pooled, training=training)  # [batch, units]
        if self.l2_normalize:
            user = tf.math.l2_normalize(user, axis=-1)
        if self.bias_slot:
            user = tf.concat([user, tf.ones_like(user[:, :1])], axis=-1)  # [batch, units + 1]
        return user

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "l2_normalize": self.l2_normalize,
            "l2_weight": self.l2_weight,
            "bias_slot": self.bias_slot,
        }
