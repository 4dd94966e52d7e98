"""Parsing and checking of CSV columns, with errors that name file, line and field.

Line numbers are those a text editor shows: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

_TRUE = {"true", "t", "1", "yes", "y"}
_FALSE = {"false", "f", "0", "no", "n"}


class DatasetError(ValueError):
    """Bad input data. The message names the file and, where known, the line and field."""

    def __init__(
        self, file: str, problem: str, *, line: int | None = None, field: str | None = None
    ):
        where = file
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")
        self.file, self.line, self.field, self.problem = file, line, field, problem


def line_of(row: int) -> int:
    """Editor line of 0-based data row `row` (the header is line 1)."""
    return row + 2


def read_csv(path, name: str, required: list[str], optional: list[str] = ()) -> pd.DataFrame:
    """Read a CSV as strings; refuse empty files, missing columns and empty required cells."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except FileNotFoundError:
        raise DatasetError(name, "file not found") from None
    except pd.errors.EmptyDataError:
        raise DatasetError(name, "file is empty") from None
    except pd.errors.ParserError as error:
        raise DatasetError(name, f"not a valid CSV file ({error})") from None
    frame.columns = [column.strip() for column in frame.columns]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DatasetError(
            name, f"missing column(s) {missing}; the header has {list(frame.columns)}", line=1
        )
    if frame.empty:
        raise DatasetError(name, "no data rows (only a header)")
    frame = frame[[c for c in [*required, *optional] if c in frame.columns]].copy()
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    for column in required:
        require_nonempty(frame[column], name, column)
    return frame


def require_nonempty(values: pd.Series, file: str, field: str) -> None:
    empty = np.flatnonzero((values == "").to_numpy())
    if empty.size:
        raise DatasetError(file, "empty value", line=line_of(int(empty[0])), field=field)


def parse_timestamps(values: pd.Series, file: str, field: str) -> np.ndarray:
    """ISO 8601 strings or unix seconds -> float64 unix seconds (naive times are UTC)."""
    numeric = pd.to_numeric(values, errors="coerce")
    text = values.where(numeric.isna())
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    result = numeric.astype("float64").fillna(seconds).to_numpy()
    bad = np.flatnonzero(~np.isfinite(result))
    if bad.size:
        row = int(bad[0])
        raise DatasetError(
            file,
            f"cannot parse {values.iloc[row]!r} as a timestamp (ISO 8601 or unix seconds)",
            line=line_of(row),
            field=field,
        )
    return result


def parse_booleans(values: pd.Series, file: str, field: str) -> np.ndarray:
    lowered = values.str.lower()
    is_true, is_false = lowered.isin(_TRUE).to_numpy(), lowered.isin(_FALSE).to_numpy()
    bad = np.flatnonzero(~(is_true | is_false))
    if bad.size:
        row = int(bad[0])
        raise DatasetError(
            file,
            f"{values.iloc[row]!r} is not a boolean (true/false)",
            line=line_of(row),
            field=field,
        )
    return is_true


def require_unique(values: pd.Series, file: str, field: str) -> None:
    duplicated = np.flatnonzero(values.duplicated().to_numpy())
    if duplicated.size:
        row = int(duplicated[0])
        first = int(np.flatnonzero((values == values.iloc[row]).to_numpy())[0])
        raise DatasetError(
            file,
            f"duplicate {field} {values.iloc[row]!r} (first on line {line_of(first)})",
            line=line_of(row),
            field=field,
        )


def lookup_items(
    item_ids: pd.Series, index: pd.Index, file: str, field: str = "item_id"
) -> np.ndarray:
    """Map item ids to catalogue rows; an unknown id is an error naming its line."""
    rows = index.get_indexer(item_ids)
    unknown = np.flatnonzero(rows < 0)
    if unknown.size:
        row = int(unknown[0])
        raise DatasetError(
            file,
            f"unknown item {item_ids.iloc[row]!r} (not in items.csv; "
            f"{unknown.size} row(s) with unknown items in all)",
            line=line_of(row),
            field=field,
        )
    return rows.astype(np.int64)
