"""The one alphabet of ids (artworks, artists, customers) that every part of Curator accepts.

An id must be addressable everywhere, including as one segment of a URL path
(`/v1/items/{item_id}/similar`): 1 to 200 characters, letters and digits of any script, and
`_ . ~ : @ + -`; never starting with a dot (so no `.` or `..`), no `/`, `%`, `?`, `#`,
whitespace or control characters. Datasets, importers and the HTTP API check ids against it.
"""

from __future__ import annotations

import re

ID_MAX_LENGTH = 200
ID_PATTERN = r"^[\w~:@+\-][\w.~:@+\-]{0,199}$"
ID_RULE = "1-200 letters, digits or _ . ~ : @ + -, not starting with a dot"

_ID = re.compile(ID_PATTERN)


def is_valid_id(value: str) -> bool:
    return _ID.fullmatch(value) is not None
