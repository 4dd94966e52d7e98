"""Parsing and checking of CSV columns, with errors that name file, line and field.

Line numbers are those a text editor shows: the header is line 1, the first data row line 2.
"""

from __future__ import annotations

import codecs
import csv
import errno
import io
import os
import re
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from training.data.ids import ID_PATTERN, ID_RULE

# ids joined by newlines; possessive quantifiers (no backtracking: linear even when it fails)
_ID_BODY = ID_PATTERN.removeprefix("^").removesuffix("$").replace("{0,199}", "{0,199}+")
_IDS = re.compile(rf"{_ID_BODY}(?:\n{_ID_BODY})*+")
_EMPTY_OR_IDS = re.compile(rf"(?:{_ID_BODY})?+(?:\n(?:{_ID_BODY})?+)*+")

# The times Curator takes, in datasets and through the HTTP API alike: from the unix epoch (an
# untimed dataset's default) to 2200, within what pandas and Python's datetime can hold and
# write back. A time outside is a mistake in the data (a year 1 or 9999), not a sale.
EARLIEST_SECONDS = 0.0  # 1970-01-01T00:00:00Z
LATEST_SECONDS = 7_258_118_400.0  # 2200-01-01T00:00:00Z
TIME_RULE = "between 1970-01-01T00:00:00Z and 2200-01-01T00:00:00Z"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


@contextmanager
def reading(path, name: str) -> Iterator[None]:
    """Around the reading of file `path` (called `name` in messages): anything but a regular
    file in its place is refused before it is opened (a named pipe would block, a device could
    read without end), and an OSError becomes a DatasetError that says what is in the file's
    place (nothing, a directory, a symbolic link loop, ...)."""
    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise DatasetError(name, "is not a regular file (a pipe, socket or device?)")
        yield
    except FileNotFoundError:
        raise DatasetError(name, "file not found") from None
    except IsADirectoryError:
        raise DatasetError(name, "is a directory, expected a file") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise DatasetError(name, "is a symbolic link loop") from None
        raise DatasetError(name, f"cannot read ({error.strerror or error})") from None


SHOWN_CHARACTERS = 60  # of a value echoed in an error message


def show_value(value) -> str:
    """A value as an error message shows it: quoted, and a long one (a 10 MB field) cut to its
    first SHOWN_CHARACTERS characters, followed by its length."""
    text = str(value)
    if len(text) <= SHOWN_CHARACTERS:
        return repr(text)
    return f"{text[:SHOWN_CHARACTERS]!r}... ({len(text):,} characters)"


SHOWN_VALUES = 10  # of a list (a header's columns) echoed in an error message


def show_values(values) -> str:
    """Values (a header's columns) as an error message shows them: a list of the first
    SHOWN_VALUES show_value()s, followed by how many there are when there are more."""
    values = list(values)
    shown = ", ".join(show_value(value) for value in values[:SHOWN_VALUES])
    if len(values) > SHOWN_VALUES:
        shown += f", ... ({len(values):,} in all)"
    return f"[{shown}]"


def line_of(row: int) -> int:
    """Editor line of 0-based data row `row` (the header is line 1)."""
    return row + 2


def read_text(path, name: str, *, delimiter: str = ",", quoted: bool = True) -> str:
    """A UTF-8 text file as str (a leading byte order mark is dropped). A byte that is not
    UTF-8 is an error naming its line, its field (the header's name for that column of a
    `delimiter`-separated file, with `"` quoting when `quoted`) and its column."""
    with reading(path, name):
        raw = Path(path).read_bytes()
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        _refuse_byte(raw, error.start, "not valid UTF-8", name, delimiter, quoted)
    nul = raw.find(b"\x00")  # the csv parser would end the field there: ids cut short, merged
    if nul >= 0:
        _refuse_byte(raw, nul, "a NUL character, which no field may hold", name, delimiter, quoted)
    return text


def _refuse_byte(raw: bytes, start: int, what: str, name: str, delimiter: str, quoted: bool):
    """DatasetError locating raw[start] by line, field and column (everything before it
    decodes)."""
    line_start = raw.rfind(b"\n", 0, start) + 1
    line = raw.count(b"\n", 0, start) + 1
    column = len(raw[line_start:start].decode("utf-8")) + 1  # characters, as an editor counts
    problem = f"{what} (byte 0x{raw[start]:02x} at column {column})"
    field = None
    if line > 1:
        header_end = raw.find(b"\n")
        header = _last_record(raw[:header_end].decode("utf-8"), delimiter, quoted)
        # Quotes can hide delimiters and newlines: then parse every record up to the byte.
        first = header_end + 1 if quoted and b'"' in raw[header_end:start] else line_start
        # The sentinel gives a record that has just begun its one (partial) field.
        record = _last_record(raw[first:start].decode("utf-8") + "_", delimiter, quoted)
        if header is not None and record is not None:
            index = len(record) - 1
            if index < len(header):
                field = header[index].strip()
            else:
                problem += f", in field {index + 1} of a header with {len(header)}"
    raise DatasetError(name, problem, line=line, field=field)


def _last_record(text: str, delimiter: str, quoted: bool) -> list[str] | None:
    """The fields of the last record of `text` (which may end inside a quoted field); None
    when the csv module cannot split it (a field over its size limit)."""
    reader = csv.reader(
        io.StringIO(text),
        delimiter=delimiter,
        quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE,
    )
    try:
        last = deque(reader, maxlen=1)
    except csv.Error:
        return None
    return last[0] if last else [""]


def read_csv(path, name: str, required: list[str], optional: list[str] = ()) -> pd.DataFrame:
    """Read a UTF-8 CSV as strings; refuse empty files, records that are not one line of as
    many fields as the header (require_records), missing columns and empty required cells."""
    text = read_text(path, name)
    parser_error = None
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        raise DatasetError(name, "file is empty") from None
    except pd.errors.ParserError as error:
        parser_error = error
    if parser_error is not None:
        require_records(text, name)  # names the record pandas stumbled on, where it can
        raise DatasetError(name, f"not a valid CSV file ({parser_error})")
    header_end = text.find("\n")  # the first line, not a copy of the whole file's text
    header = _last_record(text if header_end < 0 else text[:header_end], ",", True) or []
    require_distinct_columns([column.strip() for column in header], name)
    frame.columns = [column.strip() for column in frame.columns]
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise DatasetError(
            name,
            f"missing column(s) {missing}; the header has {show_values(frame.columns)}",
            line=1,
        )
    require_records(text, name)  # after the header's own problems, which are on line 1
    if frame.empty:
        raise DatasetError(name, "no data rows (only a header)")
    frame = frame[[c for c in [*required, *optional] if c in frame.columns]].copy()
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    for column in required:
        require_nonempty(frame[column], name, column)
    return frame


_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")  # the line after the first "\n" is blank
_LONE_CR = re.compile(r"\r(?!\n)")
# Quotes in pairs, none around a comma or line break: the csv module would split each line as
# its commas do (a quote that opens a quoted value follows a comma or a line break, so an
# odd quote before it pairs with it, around that comma or line break). Possessive: linear.
_HARMLESS_QUOTES = re.compile(r'(?:[^"]*+"[^",\r\n]*+")*+[^"]*+')


def require_records(text: str, name: str) -> None:
    """Every record of CSV `text` (file `name`) one line of as many fields as the header, so
    that data row `row` is on line_of(row) (pandas skips blank lines, joins a quoted field's
    lines into one record, and takes an extra field in the first row for an index column,
    shifting the others). A DatasetError names the line of the first record that is not: a
    blank line (blank lines, of spaces or tabs, may only end the file), a quoted value that
    runs on over several lines or is never closed (no field may hold a line break), or too
    few or too many fields. Lines end in LF, CR LF or CR, as for pandas. An empty file passes
    (read_csv refuses it)."""
    if "\r" in text and _LONE_CR.search(text):  # a line end of its own, as for an editor
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    body = text.rstrip(" \t\r\n")  # blank lines at the end are fine
    if not body:
        return
    blank = _first_blank_line(body)
    if '"' in body and not _HARMLESS_QUOTES.fullmatch(body):
        _require_quoted_records(body, name, blank)
        return
    # A record is a line, and its fields are its commas + 1 (vectorised: a 1M-row file in
    # about 0.1 s).
    data = np.frombuffer(body.encode("utf-8"), np.uint8)  # "," and "\n" are single bytes
    commas = np.flatnonzero(data == ord(","))
    ends = np.searchsorted(commas, np.flatnonzero(data == ord("\n")))
    fields = np.diff(ends, prepend=0, append=commas.size) + 1
    wrong = np.flatnonzero(fields != fields[0])
    if blank is not None and (not wrong.size or blank <= wrong[0] + 1):
        _refuse_blank_line(name, blank)
    if wrong.size:
        line = int(wrong[0]) + 1
        _refuse_field_count(name, line, int(fields[line - 1]), int(fields[0]))


def _first_blank_line(body: str) -> int | None:
    """Line number of the first blank (or spaces and tabs only) line of `body`, which ends in
    none."""
    if re.match(r"[ \t]*\r?\n", body):
        return 1
    found = _BLANK_LINE.search(body)
    return None if found is None else body.count("\n", 0, found.start()) + 2


def _require_quoted_records(body: str, name: str, blank: int | None) -> None:
    """require_records for a `body` with quotes, which can hide commas and line breaks: the
    csv module splits it; a record per line, all as long as the first, passes at C speed, and
    anything else is walked record by record to name the first bad one."""
    reader = csv.reader(io.StringIO(body))
    try:
        lengths = np.fromiter(map(len, reader), np.int64)
        fine = blank is None and reader.line_num == lengths.size
        fine = fine and bool((lengths == lengths[0]).all())
    except csv.Error:  # a field over the csv module's size limit: walk it without the limit
        fine = False
    with _csv_field_limit(len(body)):
        # A quote that the last line opens and never closes ends its record at the end of the
        # file for the csv module (pandas fails); a sentinel line shows it, taken in.
        last = body[body.rfind("\n") + 1 :]
        reader = csv.reader(io.StringIO(last + "\n_"))
        unclosed = next(reader)
        if reader.line_num == 1:
            if fine:
                return
            unclosed = None
        _walk_records(body, name, blank, unclosed)


def _walk_records(body: str, name: str, blank: int | None, unclosed: list[str] | None) -> None:
    """require_records record by record, for the first bad one (under no csv field limit);
    `unclosed`: the last line's record, with the sentinel line, if it never closes a quote."""
    last_line = body.count("\n") + 1
    reader = csv.reader(io.StringIO(body))
    header: list[str] = []
    start = 1  # the line the next record starts on
    for record in reader:
        if start == blank:
            _refuse_blank_line(name, blank)
        if reader.line_num > start:
            problem = f"a quoted value runs on to line {reader.line_num} (no field may hold a "
            problem += "line break; is a closing quote missing?)"
        elif start == last_line and unclosed is not None:
            record = unclosed
            problem = "a quoted value is never closed (is a closing quote missing?)"
        elif not header:
            header = [column.strip() for column in record]
            problem = None
        elif len(record) != len(header):
            _refuse_field_count(name, start, len(record), len(header))
        else:
            problem = None
        if problem is not None:
            index = next((i for i, value in enumerate(record) if "\n" in value), len(header))
            field = header[index] if index < len(header) else None
            raise DatasetError(name, problem, line=start, field=field)
        start = reader.line_num + 1


_CSV_FIELD_LIMIT_LOCK = threading.Lock()


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """The csv module's field size limit (131,072 characters, process-wide) raised to `limit`
    for a while: a long value is for the checks that follow to refuse, naming its field.
    (_last_record, which counts on the limit, may meanwhile split a longer field: harmless.)"""
    with _CSV_FIELD_LIMIT_LOCK:  # two threads at once would put back each other's limit
        old = csv.field_size_limit()
        csv.field_size_limit(max(old, min(limit, 2**31 - 1)))
        try:
            yield
        finally:
            csv.field_size_limit(old)


def _refuse_blank_line(name: str, line: int):
    raise DatasetError(name, "blank line (only the end of the file may have them)", line=line)


def _refuse_field_count(name: str, line: int, fields: int, header: int):
    raise DatasetError(
        name,
        f"{fields:,} field{'s' if fields != 1 else ''}, the header has {header:,}",
        line=line,
    )


def require_distinct_columns(header: list[str], file: str) -> None:
    """DatasetError naming a column the header has twice (a reader would keep one silently)."""
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise DatasetError(
                file, f"column {show_value(column)} appears twice in the header", line=1
            )
        seen.add(column)


def require_nonempty(values: pd.Series, file: str, field: str) -> None:
    empty = np.flatnonzero((values == "").to_numpy())
    if empty.size:
        raise DatasetError(file, "empty value", line=line_of(int(empty[0])), field=field)


def parse_timestamps(values: pd.Series, file: str, field: str) -> np.ndarray:
    """ISO 8601 strings or unix seconds -> float64 unix seconds (naive times are UTC)."""
    numeric = pd.to_numeric(values, errors="coerce")
    result = numeric.astype("float64").to_numpy()
    if numeric.isna().any():  # some are text: ISO 8601
        text = values.where(numeric.isna())
        parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
        seconds = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
        result = numeric.astype("float64").fillna(seconds).to_numpy()
    refuse_first(
        ~np.isfinite(result),
        values,
        file,
        field,
        lambda shown: f"cannot parse {shown} as a timestamp (ISO 8601 or unix seconds)",
    )
    refuse_first(
        ~within_time_range(result), values, file, field, lambda v: f"{v} is not {TIME_RULE}"
    )
    return result


def refuse_first(
    bad: np.ndarray, values: pd.Series, file: str, field: str, problem: Callable[[str], str]
) -> None:
    """DatasetError at the first row where `bad` [n] is true, naming its line and `field`;
    `problem(shown)` says what is wrong with that row's value, as show_value() shows it."""
    rows = np.flatnonzero(bad)
    if rows.size:
        row = int(rows[0])
        shown = show_value(values.iloc[row])
        raise DatasetError(file, problem(shown), line=line_of(row), field=field)


def within_time_range(seconds) -> np.ndarray | bool:
    """Whether unix `seconds` (a number or an array) are TIME_RULE."""
    seconds = np.asarray(seconds, np.float64)
    return (seconds >= EARLIEST_SECONDS) & (seconds < LATEST_SECONDS)


def parse_booleans(values: pd.Series, file: str, field: str) -> np.ndarray:
    lowered = values.str.lower()
    is_true, is_false = lowered.isin(_TRUE).to_numpy(), lowered.isin(_FALSE).to_numpy()
    refuse_first(
        ~(is_true | is_false), values, file, field, lambda v: f"{v} is not a boolean (true/false)"
    )
    return is_true


def require_unique(values: pd.Series, file: str, field: str) -> None:
    duplicated = np.flatnonzero(values.duplicated().to_numpy())
    if duplicated.size:
        row = int(duplicated[0])
        first = int(np.flatnonzero((values == values.iloc[row]).to_numpy())[0])
        raise DatasetError(
            file,
            f"duplicate {field} {show_value(values.iloc[row])} (first on line {line_of(first)})",
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
            f"unknown item {show_value(item_ids.iloc[row])} (not in items.csv; "
            f"{unknown.size} row(s) with unknown items in all)",
            line=line_of(row),
            field=field,
        )
    return rows.astype(np.int64)


def require_ids(values: pd.Series, file: str, field: str, *, allow_empty: bool = False) -> None:
    """Every value an id of the one alphabet (training/data/ids.py); `allow_empty` lets an empty
    cell through (an optional id, such as an item's artist)."""
    if _all_ids(values.tolist(), allow_empty):
        return
    valid = values.str.fullmatch(ID_PATTERN, na=False).to_numpy(dtype=bool)
    if allow_empty:
        valid |= (values == "").to_numpy(dtype=bool)
    bad = np.flatnonzero(~valid)
    if bad.size:
        row = int(bad[0])
        raise DatasetError(
            file,
            f"{show_value(values.iloc[row])} is not a valid id ({ID_RULE}; "
            f"{bad.size} row(s) with invalid ids in all)",
            line=line_of(row),
            field=field,
        )


def _all_ids(values: list, allow_empty: bool) -> bool:
    """Whether every value is an id (or empty, if allowed): one regex over all of them joined
    by newlines, which no id contains (at 1M ids 5x faster than a match per value). False
    sends the caller to the per-value check, which finds the first bad one."""
    try:
        joined = "\n".join(values)
    except TypeError:  # not all strings
        return False
    if joined.count("\n") != len(values) - 1:  # a value holds a newline
        return False
    return (_EMPTY_OR_IDS if allow_empty else _IDS).fullmatch(joined) is not None


def format_seconds(seconds: float) -> str:
    """Unix seconds -> ISO 8601 UTC, with milliseconds only when there are any; a time that
    ISO 8601's four-digit years cannot write (or not a number) as "<seconds> unix seconds":
    error messages use it, and must never fail themselves."""
    try:
        moment = _EPOCH + timedelta(milliseconds=round(seconds * 1000))
    except (OverflowError, ValueError, TypeError):
        return f"{seconds!r} unix seconds"
    text = moment.isoformat(timespec="milliseconds").removesuffix("+00:00")
    return text.removesuffix(".000") + "Z"


def require_after_upload(
    timestamps: np.ndarray,
    rows: np.ndarray,
    items: pd.DataFrame,
    file: str,
    *,
    field: str = "timestamp",
    items_file: str = "items.csv",
) -> None:
    """No purchase (catalogue row `rows[i]` at `timestamps[i]`) before its artwork's upload.
    Untimed purchases (NaN) pass; an item without an upload time has upload time 0."""
    times = np.asarray(timestamps, dtype=np.float64)
    upload = items["upload_time"].to_numpy(dtype=np.float64)[rows]
    early = np.flatnonzero(times < upload)  # NaN compares False: untimed purchases pass
    if early.size:
        row = int(early[0])
        item = int(rows[row])
        raise DatasetError(
            file,
            f"purchase of {show_value(items['item_id'].iloc[item])} at "
            f"{format_seconds(float(times[row]))} is before the artwork's upload at "
            f"{format_seconds(float(upload[row]))} ({items_file} line {line_of(item)}; "
            f"{early.size} purchase(s) before their upload in all)",
            line=line_of(row),
            field=field,
        )
