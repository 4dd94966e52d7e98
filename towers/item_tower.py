"""The visual item tower: image features of an artwork -> its vector."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from towers.dense_stack import DenseStack


def item_inputs(features, item_id, artist_id) -> dict:
    """An ItemTower's dict input: features `[..., feature_dim]` and the ids `[...]` its
    embeddings look up (ignored by a tower without id embeddings)."""
    return {"features": features, "item_id": item_id, "artist_id": artist_id}


@tf.keras.utils.register_keras_serializable(package="curator")
class ItemTower(tf.keras.layers.Layer):
    """z-score normalisation, then a dense stack (CuratorNet: 200, 200, selu).

    Inputs: features `[batch, feature_dim]`, or a dict `{"features": [batch, feature_dim],
    "item_id": [batch] string, "artist_id": [batch] string}` (the ids are needed only with
    `vocabulary` or `artist_vocabulary`, and ignored otherwise).
    Output: `[batch, output_dim]`; `output_dim` = last hidden width, plus one bias slot with
    `bias_head` or in hybrid mode.

    Bias head: a learned linear function of the item's hidden representation, its visual
    "appeal", placed in the last slot (a user vector whose last slot is 1 adds it to the score):
    what sells regardless of taste, inferred from what the artwork looks like, so it applies to
    new artworks too.

    Hybrid: items seen in training (`vocabulary`) also get a learned embedding added to their
    visual vector and a learned bias added to the bias slot. Artist embedding: artists seen in
    training (`artist_vocabulary`) likewise get an embedding and a bias, shared by all their
    artworks, new ones included: an artwork uploaded today by a known artist inherits what the
    artist's sales taught. Unknown ids fall into an out-of-vocabulary bucket whose embedding
    and bias are held at zero, so a new artwork by a new artist is exactly its visual vector.
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
        bias_head: bool = False,
        artist_vocabulary: Sequence[str] | None = None,
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
        self.bias_head = bool(bias_head)
        self.artist_vocabulary = (
            None if artist_vocabulary is None else [str(v) for v in artist_vocabulary]
        )
        self.normalize = tf.keras.layers.Normalization(
            mean=self.feature_mean, variance=self.feature_variance
        )
        self.stack = DenseStack(self.hidden_units, activation, self.dropout, self.l2_weight)
        if self.bias_head:
            self.visual_bias = tf.keras.layers.Dense(1, kernel_initializer="zeros")
        self.id_embeddings = {}  # input key -> (lookup, embedding, bias)
        for key, vocabulary in (
            ("item_id", self.vocabulary),
            ("artist_id", self.artist_vocabulary),
        ):
            if vocabulary is not None:
                self.id_embeddings[key] = (
                    tf.keras.layers.StringLookup(vocabulary=vocabulary, num_oov_indices=1),
                    # row 0: out of vocabulary, held at zero
                    tf.keras.layers.Embedding(
                        len(vocabulary) + 1, self.hidden_units[-1], embeddings_initializer="zeros"
                    ),
                    tf.keras.layers.Embedding(
                        len(vocabulary) + 1, 1, embeddings_initializer="zeros"
                    ),
                )

    def set_id_bias(self, key: str, values: Sequence[float]) -> None:
        """Sets the learned bias of each id of the `key` vocabulary ("item_id" or "artist_id"),
        e.g. to a prior from the sales log; the out-of-vocabulary bucket stays at zero."""
        if key not in self.id_embeddings:
            raise ValueError(f"this item tower has no {key} embedding")
        lookup, _embedding, bias = self.id_embeddings[key]
        values = np.asarray(values, dtype=np.float32).reshape(-1, 1)
        if values.shape[0] != lookup.vocabulary_size() - 1:
            raise ValueError(
                f"{key} bias: {values.shape[0]} values for {lookup.vocabulary_size() - 1} ids"
            )
        if not bias.built:
            bias.build((None,))
        bias.embeddings.assign(np.concatenate([np.zeros((1, 1), np.float32), values]))

    def id_bias(self, key: str) -> np.ndarray:
        """The learned bias of each id of the `key` vocabulary, in vocabulary order."""
        if key not in self.id_embeddings:
            raise ValueError(f"this item tower has no {key} embedding")
        _lookup, _embedding, bias = self.id_embeddings[key]
        return bias.embeddings.numpy()[1:, 0].copy()

    @property
    def feature_dim(self) -> int:
        return len(self.feature_mean)

    @property
    def uses_ids(self) -> bool:
        return bool(self.id_embeddings)

    @property
    def bias_slot(self) -> bool:
        return self.bias_head or self.uses_ids

    @property
    def output_dim(self) -> int:
        return self.hidden_units[-1] + (1 if self.bias_slot else 0)

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        features = inputs["features"] if isinstance(inputs, dict) else inputs
        hidden = self.stack(self.normalize(features), training=training)  # [batch, units]
        vectors = hidden
        bias = tf.zeros_like(hidden[:, :1])  # [batch, 1]
        if self.bias_head:
            bias += self.visual_bias(hidden)
        for key, (lookup, embedding, id_bias) in self.id_embeddings.items():
            index = lookup(inputs[key])  # [batch]; 0 = unknown
            known = tf.cast(index > 0, hidden.dtype)[:, None]  # [batch, 1]
            vectors = vectors + embedding(index) * known
            bias += id_bias(index) * known
        if self.l2_normalize:
            vectors = tf.math.l2_normalize(vectors, axis=-1)
        if not self.bias_slot:
            return vectors
        return tf.concat([vectors, bias], axis=-1)  # [batch, units + 1]

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
            "bias_head": self.bias_head,
            "artist_vocabulary": self.artist_vocabulary,
        }
