"""The numpy user-tower kernel returns what the Keras UserTower returns."""

import numpy as np
import pytest
import tensorflow as tf

from serving.user_kernel import NumpyUserTower
from towers.user_tower import UserTower


@pytest.mark.parametrize(
    "options",
    [
        {"pooling": "avg_max", "l2_normalize": True, "bias_slot": True},
        {"pooling": "avg", "l2_normalize": False, "bias_slot": False},
        {"pooling": "avg_max", "activation": "relu", "hidden_units": (7,)},
        {"pooling": "avg_max", "activation": "tanh", "hidden_units": (5, 3)},
    ],
)
def test_kernel_equals_the_keras_tower_on_padded_profiles(options):
    tower = UserTower(**{"hidden_units": (9, 6, 4), **options})
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(5, 4, 8)).astype(np.float32) * 3
    mask = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1], [1, 0, 1, 0]], bool)
    vectors[~mask] = 1e6  # padding holds garbage: it must not leak into either
    want = tower((tf.constant(vectors), tf.constant(mask))).numpy()
    got = NumpyUserTower(tower)(vectors, mask)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_kernel_refuses_an_empty_profile_and_unknown_activations():
    tower = UserTower(hidden_units=(3,))
    tower((tf.zeros([1, 1, 2]), tf.ones([1, 1], tf.bool)))
    with pytest.raises(ValueError, match="no items"):
        NumpyUserTower(tower)(np.zeros((1, 2, 2), np.float32), np.zeros((1, 2), bool))
    odd = UserTower(hidden_units=(3,), activation="softplus")
    odd((tf.zeros([1, 1, 2]), tf.ones([1, 1], tf.bool)))
    with pytest.raises(ValueError, match="softplus"):
        NumpyUserTower(odd)
