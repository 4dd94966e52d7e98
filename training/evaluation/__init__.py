"""Offline evaluation: the paper's time-ordered replay, a holdout protocol, metrics, baselines."""
