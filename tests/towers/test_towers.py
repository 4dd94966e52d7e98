"""Tower maths against numpy, masking, serialisation and save/load round trips."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from towers.item_tower import ItemTower
from towers.profile_encoder import ProfileEncoder
from towers.user_tower import UserTower


def selu(x: np.ndarray) -> np.ndarray:
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return scale * np.where(x > 0, x, alpha * (np.exp(x) - 1))


def dense_stack_numpy(stack, x: np.ndarray) -> np.ndarray:
    for layer in stack.dense_layers:
        kernel, bias = (w.numpy() for w in layer.weights)
        x = selu(x @ kernel + bias)
    return x


@pytest.fixture
def item_tower() -> ItemTower:
    rng = np.random.default_rng(0)
    return ItemTower(rng.normal(size=6), rng.uniform(0.5, 2, size=6), hidden_units=(5, 4))


def test_item_tower_is_zscore_then_dense_stack(item_tower):
    features = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    got = item_tower(tf.constant(features)).numpy()
    mean = np.asarray(item_tower.feature_mean)
    std = np.sqrt(np.asarray(item_tower.feature_variance))
    want = dense_stack_numpy(item_tower.stack, (features - mean) / std)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_item_tower_l2_normalised_output_has_unit_rows():
    tower = ItemTower(np.zeros(6), np.ones(6), hidden_units=(8,), l2_normalize=True)
    vectors = tower(tf.random.normal([4, 6])).numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_user_tower_pools_masked_mean_and_max_then_dense_stack():
    tower = UserTower(hidden_units=(7, 3))
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(2, 4, 5)).astype(np.float32)
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    got = tower((tf.constant(vectors), tf.constant(mask))).numpy()
    pooled = []
    for row in range(2):
        kept = vectors[row][mask[row]]
        pooled.append(np.concatenate([kept.mean(axis=0), kept.max(axis=0)]))
    want = dense_stack_numpy(tower.stack, np.stack(pooled))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["avg_max", "avg"])
def test_padding_never_changes_the_user_vector(pooling):
    tower = UserTower(hidden_units=(6,), pooling=pooling)
    profile = tf.random.normal([1, 3, 4], seed=3)
    short = tower((profile, tf.ones([1, 3], tf.bool))).numpy()
    # Padding rows hold large values: neither the mean nor the max may see them.
    padded = tf.concat([profile, tf.fill([1, 5, 4], 1e6)], axis=1)
    mask = tf.constant([[True] * 3 + [False] * 5])
    np.testing.assert_allclose(tower((padded, mask)).numpy(), short, rtol=1e-6)


def test_empty_profile_is_an_error():
    tower = UserTower(hidden_units=(4,))
    vectors = tf.random.normal([2, 3, 4])
    mask = tf.constant([[True, False, False], [False, False, False]])
    with pytest.raises(tf.errors.InvalidArgumentError, match="profile has no items"):
        tower((vectors, mask))


def test_id_embeddings_add_to_known_ids_and_leave_unknown_ones_visual():
    tower = ItemTower(
        np.zeros(4), np.ones(4), hidden_units=(3,), vocabulary=["a", "b"], artist_vocabulary=["x"]
    )
    features = tf.random.normal([3, 4], seed=4)
    inputs = {
        "features": features,
        "item_id": tf.constant(["a", "zzz", "new"]),
        "artist_id": tf.constant(["x", "x", "unknown"]),
    }
    tower(inputs)
    for (_lookup, embedding, bias), value in zip(
        tower.id_embeddings.values(), (1.0, 10.0), strict=True
    ):
        embedding.embeddings.assign(tf.fill(embedding.embeddings.shape, value))
        bias.embeddings.assign(tf.fill(bias.embeddings.shape, value * 2))
    out = tower(inputs).numpy()
    visual = tower.stack(tower.normalize(features)).numpy()
    np.testing.assert_allclose(out[0], np.append(visual[0] + 11.0, 22.0), rtol=1e-5)
    np.testing.assert_allclose(out[1], np.append(visual[1] + 10.0, 20.0), rtol=1e-5)
    np.testing.assert_allclose(out[2], np.append(visual[2], 0.0), rtol=1e-5)  # all unknown
    assert tower.output_dim == 4


def test_set_id_bias_sets_known_artists_and_keeps_unknown_ones_at_zero():
    tower = ItemTower(np.zeros(4), np.ones(4), hidden_units=(3,), artist_vocabulary=["x", "y"])
    tower.set_id_bias("artist_id", [0.5, -0.25])
    inputs = {
        "features": tf.zeros([3, 4]),
        "item_id": tf.constant(["a", "b", "c"]),
        "artist_id": tf.constant(["y", "x", "new"]),
    }
    np.testing.assert_allclose(tower(inputs).numpy()[:, -1], [-0.25, 0.5, 0.0])
    with pytest.raises(ValueError, match="2 ids"):
        tower.set_id_bias("artist_id", [1.0])
    with pytest.raises(ValueError, match="no item_id embedding"):
        tower.set_id_bias("item_id", [1.0, 2.0])


def test_get_config_round_trip_rebuilds_equal_towers(item_tower):
    user_tower = UserTower(hidden_units=(6, 3), pooling="avg", dropout=0.1, l2_normalize=True)
    for tower in (item_tower, user_tower):
        clone = type(tower).from_config(tower.get_config())
        assert clone.get_config() == tower.get_config()


def test_saved_model_round_trip_gives_the_same_predictions(item_tower, tmp_path):
    encoder = ProfileEncoder(item_tower, UserTower(hidden_units=(6, 3)))
    inputs = {
        "features": tf.random.normal([2, 3, 6], seed=5),
        "mask": tf.constant([[True, True, False], [True, True, True]]),
    }
    want = encoder(inputs).numpy()
    encoder.save(tmp_path / "encoder")
    loaded = tf.keras.models.load_model(tmp_path / "encoder")
    np.testing.assert_allclose(loaded(inputs).numpy(), want, rtol=1e-6)
    restored = tf.saved_model.load(str(tmp_path / "encoder"))
    np.testing.assert_allclose(restored(inputs).numpy(), want, rtol=1e-6)


def test_bias_head_adds_a_visual_appeal_to_every_score():
    tower = ItemTower(np.zeros(4), np.ones(4), hidden_units=(3,), l2_normalize=True, bias_head=True)
    features = tf.random.normal([5, 4], seed=6)
    tower(features)
    tower.visual_bias.kernel.assign([[1.0], [-2.0], [0.5]])
    out = tower(features).numpy()
    hidden = tower.stack(tower.normalize(features)).numpy()
    np.testing.assert_allclose(out[:, -1], hidden @ np.array([1.0, -2.0, 0.5]), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out[:, :-1], axis=1), 1.0, rtol=1e-5)
    user = UserTower(hidden_units=(3,), l2_normalize=True, bias_slot=True)
    users = user((tf.constant(out[None, :2]), tf.ones([1, 2], tf.bool))).numpy()
    assert users[0, -1] == 1.0  # score = taste . vector + appeal
    assert tower.output_dim == user.output_dim == 4
