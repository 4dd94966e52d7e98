"""The visual item tower: image features of an artwork -> its vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from towers.dense_stack import DenseStack


@tf.keras.utils.register_keras_serializable(package="curator")
class ItemTower(tf.keras.layers.Layer):
    """z-score normalisation, then a dense stack (CuratorNet: 200, 200, selu).

    Inputs: features `[batch, feature_dim]`, or with `vocabulary` (the hybrid option) a dict
    `{"features": [batch, feature_dim], "item_id": [batch] string}`.
    Output: `[batch, output_dim]`; `output_dim` = last hidden width, plus one bias slot in
    hybrid mode.

    Hybrid: items seen in training (`vocabulary`) also get a learned embedding added to their
    visual vector and a learned bias in the last slot (a user vector whose last slot is 1 adds
    it to the score). Unknown ids fall into an out-of-vocabulary bucket whose embedding and
    bias are held at zero, so a new artwork is exactly its visual vector.
    """

    def __init__(
        self,
        feature_mean: Sequence[float],
        feature_variance: Sequence[float],
        hidden_units: Sequence[int] = (200, 200),
        activation: str = "selu",
        dropout: float = 0.0,
        l2_normalize: bool = False,
        l2_weight: float = 0.0,
        vocabulary: Sequence[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if len(feature_mean) != len(feature_variance):
            raise ValueError(
                f"feature_mean has {len(feature_mean)} values, "
                f"feature_variance {len(feature_variance)}"
            )
        if np.any(np.asarray(feature_variance) < 0):
            raise ValueError("feature_variance must be non-negative")
        self.feature_mean = [float(v) for v in feature_mean]
        self.feature_variance = [float(v) for v in feature_variance]
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation, self.dropout = activation, float(dropout)
        self.l2_normalize, self.l2_weight = bool(l2_normalize), float(l2_weight)
        self.vocabulary = None if vocabulary is None else [str(v) for v in vocabulary]
        self.normalize = tf.keras.layers.Normalization(
            mean=self.feature_mean, variance=self.feature_variance
        )
        self.stack = DenseStack(self.hidden_units, activation, self.dropout, self.l2_weight)
        if self.vocabulary is not None:
            self.lookup = tf.keras.layers.StringLookup(
                vocabulary=self.vocabulary, num_oov_indices=1
            )
            size = len(self.vocabulary) + 1  # row 0: out of vocabulary
            self.item_embedding = tf.keras.layers.Embedding(
                size, self.hidden_units[-1], embeddings_initializer="zeros"
            )
            self.item_bias = tf.keras.layers.Embedding(size, 1, embeddings_initializer="zeros")

    @property
    def feature_dim(self) -> int:
        return len(self.feature_mean)

    @property
    def output_dim(self) -> int:
        return self.hidden_units[-1] + (1 if self.vocabulary is not None else 0)

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        features = inputs["features"] if isinstance(inputs, dict) else inputs
        vectors = self.stack(self.normalize(features), training=training)  # [batch, units]
        if self.vocabulary is None:
            return tf.math.l2_normalize(vectors, axis=-1) if self.l2_normalize else vectors
        index = self.lookup(inputs["item_id"])  # [batch]; 0 = unknown
        known = tf.cast(index > 0, vectors.dtype)[:, None]  # [batch, 1]
        vectors = vectors + self.item_embedding(index) * known
        if self.l2_normalize:
            vectors = tf.math.l2_normalize(vectors, axis=-1)
        return tf.concat([vectors, self.item_bias(index) * known], axis=-1)  # [batch, units + 1]

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "feature_mean": self.feature_mean,
            "feature_variance": self.feature_variance,
            "hidden_units": list(self.hidden_units),
            "activation": self.activation,
            "dropout": self.dropout,
            "l2_normalize": self.l2_normalize,
            "l2_weight": self.l2_weight,
            "vocabulary": self.vocabulary,
        }
