"""Importer for the MMRec layout of public multimodal recommendation benchmarks.

    <name>.inter     tab-separated, header `userID itemID rating timestamp x_label`; userID and
                     itemID are non-negative integers, itemID is a row of the feature files;
                     x_label 0/1/2 = train/valid/test; lines end in LF or CRLF
    image_feat.npy   float [n_items, d_image]
    text_feat.npy    optional, float [n_items, d_text]

Every feature row is an item (item_id = the row number as text) with no artist, upload time 0
(always available) and one_of_a_kind false. Train rows become purchases without timestamps (the
split is fixed by x_label, so only the holdout protocol applies); valid and test rows become
valid.csv and test.csv.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.columns import (
    DatasetError,
    line_of,
    read_text,
    refuse_first,
    require_distinct_columns,
    require_ids,
    require_nonempty,
    show_value,
)
from training.data.dataset import FEATURE_CHECK_ROWS, Dataset, check_features, read_npy

INTER_FIELDS = ("userID", "itemID", "x_label")  # the header may name more; they are ignored
SPLIT_OF_LABEL = {"0": "train", "1": "valid", "2": "test"}
MAX_ID_DIGITS = 18  # int64 holds every 18-digit number

MMREC_README = """# {name} (MMRec layout)

Imported by `curator data import-mmrec` from `{name}.inter`: {n_users} users, {n_items} items,
{n_train} training, {n_valid} validation and {n_test} test interactions (x_label 0/1/2).

**Features** ({dim}-d, float32): {features}

purchases.csv has no timestamps: the split is the benchmark's own (valid.csv, test.csv), so
evaluate with `curator evaluate --protocol holdout`. The layout has no artists, upload times or
one-of-a-kind flags: every item has an empty artist_id, upload_time 0 (always available) and
one_of_a_kind false.
"""


def import_mmrec(
    directory: Path, *, name: str | None = None, text: bool = True
) -> tuple[Dataset, str]:
    """(dataset, README text) from an MMRec directory. `name` picks `<name>.inter` (default: the
    only .inter file there); `text` appends text_feat.npy, when present, to the image features."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(str(directory), "not a directory")
    inter_path = directory / f"{name}.inter" if name is not None else _only_inter(directory)
    image = _read_features(directory / "image_feat.npy")
    n_items = len(image)
    parts = [image]
    described = [f"image_feat.npy ({image.shape[1]}-d)"]
    text_path = directory / "text_feat.npy"
    if text and text_path.exists():
        text_features = _read_features(text_path)
        if len(text_features) != n_items:
            raise DatasetError(
                text_path.name,
                f"has {len(text_features)} rows but image_feat.npy has {n_items}",
            )
        parts.append(text_features)
        described.append(f"text_feat.npy ({text_features.shape[1]}-d)")
    elif text_path.exists():
        described.append("text_feat.npy was present but left out on request")
    else:
        described.append("there is no text_feat.npy")
    features = np.concatenate(parts, axis=1) if len(parts) > 1 else image  # [n_items, d]

    inter = _read_inter(inter_path, n_items=n_items)
    splits = {
        split: inter[inter["split"] == split].drop(columns="split").reset_index(drop=True)
        for split in SPLIT_OF_LABEL.values()
    }
    if splits["train"].empty:
        raise DatasetError(inter_path.name, "no training interactions (no row has x_label 0)")
    purchases = splits["train"].assign(timestamp=np.nan)
    items = pd.DataFrame(
        {
            "item_id": np.arange(n_items).astype(str),
            "artist_id": "",
            "upload_time": np.zeros(n_items),
            "one_of_a_kind": np.zeros(n_items, dtype=bool),
        }
    )
    # An empty split is left out: a header-only valid.csv or test.csv would not load.
    valid, test = (None if splits[s].empty else splits[s] for s in ("valid", "test"))
    readme = MMREC_README.format(
        name=inter_path.stem,
        n_users=inter["user_id"].nunique(),
        n_items=n_items,
        n_train=len(splits["train"]),
        n_valid=len(splits["valid"]),
        n_test=len(splits["test"]),
        dim=features.shape[1],
        features="; ".join(described) + ".",
    )
    return Dataset(items, features, purchases, valid, test), readme


def _only_inter(directory: Path) -> Path:
    found = sorted(directory.glob("*.inter"))
    if len(found) != 1:
        names = [path.name for path in found]
        raise DatasetError(
            str(directory),
            f"expected exactly one *.inter file, found {len(found)} {names}; pass the name",
        )
    return found[0]


def _read_features(path: Path) -> np.ndarray:
    """[n_items, d] float32 from a plain numeric .npy; every row finite, and so within float32's
    range (a finite float64 beyond it is refused, not cast to inf)."""
    array = read_npy(path)
    if array.dtype.kind not in "fiu":
        raise DatasetError(path.name, f"dtype is {array.dtype}, expected numbers")
    if array.ndim != 2 or len(array) == 0:
        raise DatasetError(path.name, f"shape is {array.shape}, expected [n_items, d]")
    with np.errstate(over="ignore"):  # a finite value beyond float32's range: inf, refused here
        features = array.astype(np.float32, copy=False)
    if features is not array and array.dtype.kind == "f":
        _refuse_float32_overflow(array, features, path.name)
    check_features(features, n_items=len(features), name=path.name, items_file=None)
    return features


def _refuse_float32_overflow(array: np.ndarray, features: np.ndarray, name: str) -> None:
    """DatasetError naming the first row where a finite value of `array` became inf in
    `features`, its float32 copy."""
    for start in range(0, len(array), FEATURE_CHECK_ROWS):
        rows = slice(start, start + FEATURE_CHECK_ROWS)
        overflow = np.isfinite(array[rows]) & ~np.isfinite(features[rows])
        if overflow.any():
            row, column = (int(k) for k in np.argwhere(overflow)[0])
            raise DatasetError(
                name,
                f"row {start + row} has a value beyond float32's range "
                f"({array[start + row, column]:.6g} in column {column}; float32 holds "
                f"magnitudes up to {np.finfo(np.float32).max:.6g})",
            )


def _read_inter(path: Path, *, n_items: int) -> pd.DataFrame:
    """user_id, item_id, item, split for every data row of a .inter file, in file order."""
    name = path.name
    content = read_text(path, name, delimiter="\t", quoted=False)
    _refuse_lone_carriage_returns(content, name)
    lines = content.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    if not lines:
        raise DatasetError(name, "file is empty")
    header = [column.strip() for column in lines[0].rstrip("\r").split("\t")]
    require_distinct_columns(header, name)
    missing = [column for column in INTER_FIELDS if column not in header]
    if missing:
        raise DatasetError(
            name, f"missing column(s) {missing}; the tab-separated header has {header}", line=1
        )
    body = pd.Series(lines[1:], dtype=object).str.rstrip("\r")
    if body.empty:
        raise DatasetError(name, "no data rows (only a header)")
    counts = (body.str.count("\t") + 1).to_numpy()
    ragged = np.flatnonzero(counts != len(header))
    if ragged.size:
        row = int(ragged[0])
        raise DatasetError(
            name,
            f"{counts[row]} tab-separated fields, expected {len(header)} as in the header",
            line=line_of(row),
        )
    cells = body.str.split("\t", expand=True)  # [n_rows, len(header)]
    fields = {field: cells[header.index(field)].str.strip() for field in INTER_FIELDS}
    users = _parse_ids(fields["userID"], name, "userID")
    items = _parse_ids(fields["itemID"], name, "itemID")
    too_large = (items.str.len() > MAX_ID_DIGITS).to_numpy()
    rows = np.where(too_large, "0", items).astype(np.int64)
    out_of_range = np.flatnonzero(too_large | (rows >= n_items))
    if out_of_range.size:
        row = int(out_of_range[0])
        raise DatasetError(
            name,
            f"item {show_value(fields['itemID'].iloc[row])} has no feature row (image_feat.npy "
            f"has {n_items} rows; {out_of_range.size} row(s) out of range in all)",
            line=line_of(row),
            field="itemID",
        )
    labels = fields["x_label"]
    unknown = np.flatnonzero(~labels.isin(list(SPLIT_OF_LABEL)).to_numpy())
    if unknown.size:
        row = int(unknown[0])
        raise DatasetError(
            name,
            f"{show_value(labels.iloc[row])} is not a split label (0 train, 1 valid, 2 test)",
            line=line_of(row),
            field="x_label",
        )
    return pd.DataFrame(
        {"user_id": users, "item_id": items, "item": rows, "split": labels.map(SPLIT_OF_LABEL)}
    )


def _refuse_lone_carriage_returns(content: str, name: str) -> None:
    """Lines end in LF or CRLF. A CR that ends no line, as CR-only (classic Mac) line endings
    have, is refused: read as a line break it would put every line number here out of step with
    read_text's errors, which count LFs; read as text it would garble the fields."""
    lone = re.search(r"\r(?!\n|\Z)", content) if "\r" in content else None
    if lone is None:
        return
    if "\n" not in content:
        raise DatasetError(
            name,
            "lines end in CR (\\r) alone, with no LF (\\n) anywhere (classic Mac line "
            "endings): convert them to LF or CRLF",
        )
    raise DatasetError(
        name,
        "a carriage return (\\r) that does not end the line: lines must end in LF (\\n) or "
        "CRLF (\\r\\n)",
        line=content.count("\n", 0, lone.start()) + 1,
    )


def _parse_ids(values: pd.Series, file: str, field: str) -> pd.Series:
    """Non-negative integers as canonical text (no leading zeros: '007' -> '7'), each an id
    (training/data/ids.py: at most 200 digits), checked here to name this file's lines."""
    require_nonempty(values, file, field)
    integers = values.str.fullmatch(r"[0-9]+").to_numpy(dtype=bool)
    refuse_first(~integers, values, file, field, lambda v: f"{v} is not a non-negative integer")
    canonical = values.str.lstrip("0").replace("", "0")
    require_ids(canonical, file, field)
    return canonical
