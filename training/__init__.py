"""Curator's datasets, evaluation, training job and export."""

import towers  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any TensorFlow import)
