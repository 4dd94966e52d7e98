"""The service's settings refuse what they cannot mean, naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import Settings


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("CURATOR_REQUEST_READ_SECONDS", "nan"),
        ("CURATOR_REQUEST_READ_SECONDS", "inf"),
        ("CURATOR_REQUEST_READ_SECONDS", "0"),
        ("CURATOR_REQUEST_READ_SECONDS", "-1"),
        ("CURATOR_REQUEST_READ_SECONDS", "7200"),
        ("CURATOR_REQUEST_READ_SECONDS", "abc"),
        ("CURATOR_MIN_REQUEST_BYTES_PER_SECOND", "inf"),
        ("CURATOR_MIN_REQUEST_BYTES_PER_SECOND", "0"),
        ("CURATOR_MAX_CONNECTIONS", "1"),
        ("CURATOR_MAX_CONNECTIONS", "2.5"),
        ("CURATOR_MAX_CONNECTIONS", "99999999999999999999999"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("CURATOR_").lower()):
        Settings(_env_file=None)


def test_the_defaults():
    settings = Settings(_env_file=None)
    assert settings.request_read_seconds == 20.0
    assert settings.min_request_bytes_per_second == 10_000.0
    assert settings.max_connections == 1000
