"""Curator's recommendation service."""

import towers  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any TensorFlow import)
