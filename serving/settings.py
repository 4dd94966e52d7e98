"""The service's settings: environment variables `CURATOR_*` (or a `.env` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every field can be set as `CURATOR_<FIELD>`, e.g. `CURATOR_MODEL_DIR=exports/`."""

    model_config = SettingsConfigDict(env_prefix="CURATOR_", env_file=".env", extra="ignore")

    model_dir: Path = Field(Path("exports"), description="the export root (versions 1, 2, ...)")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the live state; default: SQLite beside the exports"
    )
    host: str = "127.0.0.1"
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
        description="read other replicas' writes from the database this often (0: off)",
    )
    watch_seconds: float = Field(
        0.0, ge=0.0, description="poll the export root for a newer version (0: off)"
    )

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and not key.get_secret_value().strip():
            raise ValueError(
                "CURATOR_API_KEY is empty: set a real key, or unset the variable to run "
                "without one (write and admin endpoints are then open)"
            )
        return key

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.model_dir / 'curator.db').resolve()}"
