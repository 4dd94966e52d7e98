"""Reading a run directory's JSON and YAML records (summary.json, search.json, history.json,
towers.json, dataset.json, config.yaml) with one kind of error: ValueError naming the file and
what is wrong with it. A damaged or hand-edited run (truncated, emptied, replaced by a
directory, a key deleted) is refused with that message, not a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def read_json(path: Path | str, *, keys: tuple[str, ...] = ()) -> dict | list:
    """The JSON value of `path`; with `keys`, a mapping that holds each of them."""
    path = Path(path)
    try:
        value = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # a directory, unreadable, not UTF-8 or not JSON
        raise ValueError(f"{path}: not a readable JSON record ({error})") from None
    return _with_keys(path, value, keys)


def read_yaml_mapping(path: Path | str) -> dict:
    """The YAML mapping of `path` (a run's config.yaml)."""
    path = Path(path)
    try:
        value = yaml.safe_load(path.read_bytes())
    except (OSError, ValueError, yaml.YAMLError) as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not a readable YAML record ({first_line})") from None
    return _with_keys(path, value, (), mapping=True)


def _with_keys(path: Path, value, keys: tuple[str, ...], mapping: bool = False):
    if (keys or mapping) and not isinstance(value, dict):
        raise ValueError(f"{path}: expected a mapping, found {type(value).__name__}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise ValueError(f"{path}: no {', '.join(repr(k) for k in missing)} in it")
    return value
