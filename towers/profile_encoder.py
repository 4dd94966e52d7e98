"""Both towers composed: a profile's artworks -> the customer's vector."""

from __future__ import annotations

import tensorflow as tf

from towers.item_tower import ItemTower, item_inputs
from towers.user_tower import UserTower


@tf.keras.utils.register_keras_serializable(package="curator")
class ProfileEncoder(tf.keras.Model):
    """Runs the shared item tower over every profile artwork, then the user tower.

    Inputs: `{"features": [batch, max_profile, feature_dim], "mask": [batch, max_profile] bool}`
    plus `"item_id"` and `"artist_id"` `[batch, max_profile]` strings when the item tower uses
    ids (hybrid or artist embedding; ignored otherwise).
    Output: `[batch, user_tower.output_dim]`.
    """

    def __init__(self, item_tower: ItemTower, user_tower: UserTower, **kwargs):
        super().__init__(**kwargs)
        self.item_tower, self.user_tower = item_tower, user_tower

    def call(self, inputs, training: bool = False) -> tf.Tensor:
        features = inputs["features"]
        batch, max_profile = tf.shape(features)[0], tf.shape(features)[1]
        flat = tf.reshape(features, [-1, self.item_tower.feature_dim])  # [batch * max_profile, d]
        if self.item_tower.uses_ids:
            ids = (tf.reshape(inputs[key], [-1]) for key in ("item_id", "artist_id"))
            flat = item_inputs(flat, *ids)
        vectors = self.item_tower(flat, training=training)  # [batch * max_profile, dim]
        vectors = tf.reshape(vectors, [batch, max_profile, self.item_tower.output_dim])
        return self.user_tower((vectors, inputs["mask"]), training=training)

    def get_config(self) -> dict:
        return {
            "item_tower": tf.keras.utils.serialize_keras_object(self.item_tower),
            "user_tower": tf.keras.utils.serialize_keras_object(self.user_tower),
        }

    @classmethod
    def from_config(cls, config):
        return cls(
            tf.keras.utils.deserialize_keras_object(config["item_tower"]),
            tf.keras.utils.deserialize_keras_object(config["user_tower"]),
        )
