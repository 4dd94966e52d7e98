"""The service's settings refuse what they cannot mean, naming the variable."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from serving.settings import Settings, describe_settings_error


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
        # once taken: an empty host bound every interface, 1e-9 s polled a core at 100%,
        # inf never polled, a key with a space at its end could never be sent
        ("CURATOR_HOST", ""),
        ("CURATOR_SYNC_SECONDS", "1e-9"),
        ("CURATOR_SYNC_SECONDS", "inf"),
        ("CURATOR_WATCH_SECONDS", "1e-9"),
        ("CURATOR_WATCH_SECONDS", "1e300"),
        ("CURATOR_API_KEY", " secret "),
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


def test_a_settings_error_is_one_line_per_setting_as_the_user_sets_it(monkeypatch):
    monkeypatch.setenv("CURATOR_MAX_K", "0")
    monkeypatch.setenv("CURATOR_SYNC_SECONDS", "1e-9")
    monkeypatch.setenv("CURATOR_API_KEY", " secret ")
    with pytest.raises(ValidationError) as raised:
        Settings(_env_file=None)
    assert describe_settings_error(raised.value) == (
        "CURATOR_MAX_K: Input should be greater than or equal to 1 (got '0'); "
        "CURATOR_API_KEY: CURATOR_API_KEY starts or ends with white space, which no client can "
        "send (HTTP trims it from header values): every guarded endpoint would refuse all; "
        "CURATOR_SYNC_SECONDS: must be 0 (off) or at least 0.05 s (got '1e-9')"
    )


def test_zero_still_turns_polling_off(monkeypatch):
    monkeypatch.setenv("CURATOR_SYNC_SECONDS", "0")
    monkeypatch.setenv("CURATOR_WATCH_SECONDS", "0.05")
    settings = Settings(_env_file=None)
    assert (settings.sync_seconds, settings.watch_seconds) == (0.0, 0.05)
