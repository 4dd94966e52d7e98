r"""The one alphabet of ids (artworks, artists, customers) that every part of Curator accepts.

An id must be addressable everywhere, including as one segment of a URL path
(`/v1/items/{item_id}/similar`): 1 to 200 characters, ASCII letters and digits and
`_ . ~ : @ + -`; never starting with a dot (so no `.` or `..`), no `/`, `%`, `?`, `#`,
whitespace or control characters. Datasets, importers and the HTTP API check ids against it.

ASCII, because the rule must mean the same to every checker: the OpenAPI schema publishes it as
a pattern, and JSON Schema reads patterns as ECMA-262 regular expressions, where `\w` is ASCII
only, while Python's `re` reads `\w` as letters of any script and pydantic's Rust engine adds
marks and zero-width joiners. With `\w`, ids such as `ê` were accepted against the published
schema and `art-7` + U+200D (an invisible joiner) was accepted by the API and refused by the
datasets. The classes below are spelled out, so all three read them alike.
"""

from __future__ import annotations

import re

ID_MAX_LENGTH = 200
ID_PATTERN = r"^[A-Za-z0-9_~:@+\-][A-Za-z0-9_.~:@+\-]{0,199}$"
ID_RULE = "1-200 ASCII letters, digits or _ . ~ : @ + -, not starting with a dot"

_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None
