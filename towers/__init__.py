"""Curator's two towers: Keras layers shared by training, export and serving.

TensorFlow Recommenders needs Keras 2, which TensorFlow only picks when TF_USE_LEGACY_KERAS is
set before TensorFlow is first imported. This is the one place that sets it; `training` and
`serving` import this package first, so no import order can miss it.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
