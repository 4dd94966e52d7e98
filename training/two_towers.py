"""The trainable model: both towers, and the loss that trains them (TFRS Model)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from towers.item_tower import ItemTower, item_inputs
from towers.user_tower import UserTower
from training.config import TrainConfig


def build_towers(
    config: TrainConfig,
    feature_mean: np.ndarray,
    feature_variance: np.ndarray,
    vocabulary: list[str] | None = None,
    artist_vocabulary: list[str] | None = None,
) -> tuple[ItemTower, UserTower]:
    """The two towers a config describes; z-score statistics come from the training catalogue."""
    weight_decay = config.weight_decay
    item_tower = ItemTower(
        feature_mean,
        feature_variance,
        hidden_units=config.item_hidden,
        activation=config.activation,
        dropout=config.dropout,
        l2_normalize=config.l2_normalize,
        l2_weight=weight_decay,
        vocabulary=vocabulary if config.hybrid else None,
        bias_head=config.bias_head,
        artist_vocabulary=artist_vocabulary if config.artist_embedding else None,
        name="item_tower",
    )
    user_tower = UserTower(
        hidden_units=config.user_hidden,
        activation=config.activation,
        pooling=config.pooling,
        dropout=config.dropout,
        l2_normalize=config.l2_normalize,
        l2_weight=weight_decay,
        bias_slot=config.bias_slot,
        name="user_tower",
    )
    return item_tower, user_tower


class CuratorModel(tfrs.models.Model):
    """Towers plus loss. Batches hold catalogue rows (row n_items is padding):

    profile [batch, max_profile], positive [batch], negative [batch] (-1: none),
    owned [batch, max_owned] (the customer's purchases: never negatives).

    softmax: tfrs.tasks.Retrieval over in-batch candidates (plus policy negatives when
    `hard_negatives`, plus `uniform_negatives` artworks drawn uniformly from the catalogue, so
    that artworks that never sold are seen and ranked down too), with temperature,
    accidental-hit removal, the customer's other purchases masked out, and log-q correction by
    each candidate's sampling probability.
    bpr: -log sigmoid(score(positive) - score(negative)) on policy triples (the paper's loss).
    """

    def __init__(
        self,
        item_tower: ItemTower,
        user_tower: UserTower,
        features: np.ndarray,
        item_ids: np.ndarray,
        artist_ids: np.ndarray,
        config: TrainConfig,
        positive_share: np.ndarray | None = None,
    ):
        super().__init__()
        self.item_tower, self.user_tower, self.config = item_tower, user_tower, config
        self.n_items = features.shape[0]
        padded = np.concatenate([features, np.zeros((1, features.shape[1]), features.dtype)])
        self.features = tf.constant(padded)  # [n_items + 1, d]
        self.item_ids = tf.constant(np.append(item_ids.astype(str), ""))  # [n_items + 1]
        self.artist_ids = tf.constant(np.append(artist_ids.astype(str), ""))  # [n_items + 1]
        share = np.ones(self.n_items) / self.n_items if positive_share is None else positive_share
        self.positive_share = tf.constant(np.append(share, 1.0).astype(np.float32))
        self.task = tfrs.tasks.Retrieval(
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
        )

    def item_vectors(self, rows: tf.Tensor, training: bool = False) -> tf.Tensor:
        """[n] catalogue rows -> [n, dim]."""
        features = tf.gather(self.features, rows)
        if self.item_tower.uses_ids:
            ids = tf.gather(self.item_ids, rows), tf.gather(self.artist_ids, rows)
            features = item_inputs(features, *ids)
        return self.item_tower(features, training=training)

    def towers_on_batch(self, profile, candidates, training: bool = False):
        """User vectors [batch, dim] for padded profiles and item vectors [n, dim] for
        candidates, running the item tower once per distinct artwork of the batch."""
        flat = tf.reshape(profile, [-1])  # [batch * max_profile]
        distinct, position = tf.unique(tf.concat([flat, candidates], axis=0))
        vectors = self.item_vectors(distinct, training)  # [n_distinct, dim]
        n_flat = tf.size(flat)
        profile_vectors = tf.reshape(
            tf.gather(vectors, position[:n_flat]),
            [tf.shape(profile)[0], tf.shape(profile)[1], self.item_tower.output_dim],
        )  # [batch, max_profile, dim]
        mask = profile < self.n_items  # [batch, max_profile]
        users = self.user_tower((profile_vectors, mask), training=training)
        return users, tf.gather(vectors, position[n_flat:])

    def _sampling_probability(self, candidates: tf.Tensor, n_batch, n_uniform) -> tf.Tensor:
        """Each candidate's chance of being drawn as a negative: in-batch candidates follow the
        training positives' distribution, uniform ones 1/n_items; the mixture of both."""
        n_uniform = float(n_uniform)
        share = tf.gather(self.positive_share, candidates)  # [n_candidates]
        return (n_batch * share + n_uniform / self.n_items) / (n_batch + n_uniform)

    def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
        positive, negative = inputs["positive"], inputs["negative"]
        if self.config.loss == "bpr":
            has_negative = negative >= 0
            positive = tf.boolean_mask(positive, has_negative)
            negative = tf.boolean_mask(negative, has_negative)
            profile = tf.boolean_mask(inputs["profile"], has_negative)
            users, items = self.towers_on_batch(
                profile, tf.concat([positive, negative], 0), training
            )
            n = tf.shape(positive)[0]
            margin = tf.reduce_sum(users * (items[:n] - items[n:]), axis=-1)  # [batch]
            return -tf.reduce_mean(tf.math.log_sigmoid(margin))

        candidates = positive
        if self.config.hard_negatives:
            candidates = tf.concat([positive, tf.boolean_mask(negative, negative >= 0)], 0)
        replicas = _replica_context()
        n_uniform = self.config.uniform_negatives
        if replicas is not None:  # each draws its share, so that all draw n_uniform
            n_uniform = -(-n_uniform // replicas.num_replicas_in_sync)
        if n_uniform:  # mixed negative sampling: catalogue artworks drawn uniformly
            drawn = tf.random.uniform([n_uniform], 0, self.n_items, dtype=candidates.dtype)
            candidates = tf.concat([candidates, drawn], 0)
        n_in_batch = tf.size(candidates) - n_uniform
        users, items = self.towers_on_batch(inputs["profile"], candidates, training)
        n_uniform_all = n_uniform
        if replicas is not None:
            # every worker's candidates are every worker's negatives (training/distributed.py)
            counts = tf.cast(tf.stack([tf.size(candidates), n_in_batch]), tf.float32)[None, :]
            counts = tf.cast(replicas.all_gather(counts, axis=0), tf.int32)  # [replicas, 2]
            first_own = tf.reduce_sum(counts[: replicas.replica_id_in_sync_group, 0])
            n_in_batch = tf.reduce_sum(counts[:, 1])
            n_uniform_all = n_uniform * replicas.num_replicas_in_sync
            items = _own_first(replicas.all_gather(items, axis=0), first_own)  # differentiable
            # int64 has no collective on CPU; row numbers are exact in float64
            everyone = replicas.all_gather(tf.cast(candidates, tf.float64), axis=0)
            candidates = tf.cast(_own_first(everyone, first_own), candidates.dtype)
        # this replica's candidates come first, so that its users' positives are the diagonal
        # (the labels TFRS's Retrieval builds)
        n_batch = tf.cast(n_in_batch, tf.float32)
        owned = inputs["owned"]  # [batch, max_owned]
        is_owned = tf.reduce_any(owned[:, :, None] == candidates[None, None, :], axis=1)
        own_positive = tf.eye(tf.shape(users)[0], tf.shape(candidates)[0], dtype=tf.bool)
        return self.task(
            users,
            items,
            candidate_ids=candidates,
            candidate_sampling_probability=(
                self._sampling_probability(candidates, n_batch, n_uniform_all)
                if self.config.logq_correction
                else None
            ),
            score_mask=tf.logical_or(~is_owned, own_positive),  # [batch, n_candidates]
            compute_metrics=False,
            compute_batch_metrics=False,
        )

    def train_step(self, inputs):
        """TFRS's step, with the regularisation divided among replicas: their gradients are
        summed, and each would otherwise add the whole of it."""
        with tf.GradientTape() as tape:
            loss = self.compute_loss(inputs, training=True)
            regularization = tf.add_n([tf.reduce_sum(r) for r in self.losses] or [0.0])
            replicas = _replica_context()
            if replicas is not None:
                regularization /= replicas.num_replicas_in_sync
            total = loss + regularization
        gradients = tape.gradient(total, self.trainable_variables)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_variables, strict=True))
        examples = self._examples_in_loss(inputs)
        summed = loss * examples if self.config.loss == "bpr" else loss  # softmax: a sum
        # Keras sums each of these across replicas: the whole batch's sum and count, from
        # which `loss_of_epoch` makes the epoch's loss per example
        return {
            "loss": loss,
            "regularization_loss": regularization,
            "total_loss": total,
            "loss_sum": summed,
            "examples": examples,
        }

    def _examples_in_loss(self, inputs) -> tf.Tensor:
        """How many of the batch's examples (this replica's) the loss covers: bpr only those
        with a negative, the in-batch softmax all."""
        if self.config.loss == "bpr":
            return tf.reduce_sum(tf.cast(inputs["negative"] >= 0, tf.float32))
        return tf.cast(tf.shape(inputs["positive"])[0], tf.float32)


def _own_first(gathered: tf.Tensor, start) -> tf.Tensor:
    """`gathered` rotated so that the rows from `start` on come first."""
    return tf.concat([gathered[start:], gathered[:start]], axis=0)


def _replica_context():
    """The replica context when several replicas train together, else None."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context
