"""The service's settings: environment variables `CURATOR_*` (or a `.env` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_POLL_SECONDS = 0.05  # the shortest sync or watch interval


class Settings(BaseSettings):
    """Every field can be set as `CURATOR_<FIELD>`, e.g. `CURATOR_MODEL_DIR=exports/`."""

    model_config = SettingsConfigDict(env_prefix="CURATOR_", env_file=".env", extra="ignore")

    model_dir: Path = Field(Path("exports"), description="the export root (versions 1, 2, ...)")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the live state; default: SQLite beside the exports"
    )
    host: str = Field(
        "127.0.0.1",
        min_length=1,
        description="bind address (empty: refused, it would bind every interface)",
    )
    port: int = Field(8000, ge=1, le=65535)
    max_k: int = Field(100, ge=1, le=10_000)
    max_profile: int = Field(50, ge=1, description="longest profile used (most recent kept)")
    max_batch: int = Field(256, ge=1, description="requests per recommendations:batch call")
    max_body_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_head_bytes: int = Field(
        64 * 1024, ge=1024, description="longest request line and headers (431 past it)"
    )
    request_read_seconds: float = Field(
        20.0,
        gt=0.0,
        le=3600.0,
        allow_inf_nan=False,
        description="a request (line, headers and body) must arrive within this many seconds "
        "of its first byte, a body 1 s more per min_request_bytes_per_second (408 past it)",
    )
    min_request_bytes_per_second: float = Field(
        10_000.0,
        gt=0.0,
        allow_inf_nan=False,
        description="the slowest steady upload a request's deadline allows",
    )
    max_connections: int = Field(
        1000,
        ge=2,
        le=1_000_000,
        description="open connections (or requests in progress) past which a request is "
        "answered 503 at once instead of queued (uvicorn's limit_concurrency)",
    )
    api_key: SecretStr | None = Field(
        None, description="when set, write and admin endpoints need the X-API-Key header"
    )
    image_extractor: Path | None = Field(
        None,
        description="a directory with extractor.json + extractor.keras (`curator features` "
        "writes one): enables POST /v1/items/image",
    )
    max_image_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="largest uploaded image")
    sync_seconds: float = Field(
        1.0,
        ge=0.0,
        le=86_400.0,
        allow_inf_nan=False,
        description="read other replicas' writes from the database this often (0: off; else "
        f"at least {MIN_POLL_SECONDS} s)",
    )
    watch_seconds: float = Field(
        0.0,
        ge=0.0,
        le=86_400.0,
        allow_inf_nan=False,
        description=f"poll the export root for a newer version (0: off; else at least "
        f"{MIN_POLL_SECONDS} s)",
    )

    @field_validator("sync_seconds", "watch_seconds")
    @classmethod
    def _off_or_a_real_interval(cls, seconds: float) -> float:
        if 0 < seconds < MIN_POLL_SECONDS:  # 1e-9 polled non-stop: a core at 100% when idle
            raise ValueError(f"must be 0 (off) or at least {MIN_POLL_SECONDS} s")
        return seconds

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "CURATOR_API_KEY is empty: set a real key, or unset the variable to run "
                "without one (write and admin endpoints are then open)"
            )
        if key is not None and key.get_secret_value() != key.get_secret_value().strip():
            raise ValueError(
                "CURATOR_API_KEY starts or ends with white space, which no client can send "
                "(HTTP trims it from header values): every guarded endpoint would refuse all"
            )
        return key

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.model_dir / 'curator.db').resolve()}"


def describe_settings_error(error: ValidationError) -> str:
    """One line per invalid setting, named as the user sets it (CURATOR_<FIELD>), with the
    value given: pydantic's own message names the field and adds a link per error."""
    lines = []
    for problem in error.errors(include_url=False):
        field = ".".join(str(part) for part in problem["loc"])
        given = problem.get("input")
        secret = problem["loc"][:1] == ("api_key",)
        shown = "" if isinstance(given, dict) or secret else f" (got {given!r})"
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"CURATOR_{field.upper()}: {message}{shown}")
    return "; ".join(lines)
