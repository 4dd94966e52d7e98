"""Request bodies read and validated by the service itself, and validation errors as text.

FastAPI would parse a body with Python's `json.loads`, which accepts `NaN` and `Infinity`
literals, and validate the result on the event loop. Here a body is validated straight from its
bytes by pydantic in strict mode (`5.0` is not an int, `0` is not a bool, `NaN` is no number).
Bodies above `OFF_LOOP_BYTES` are validated in a worker process: pydantic holds the GIL while
it parses (a 45 MB body: about a second), so a thread would still stall every request beside
it. The validated model comes back pickled (our own worker, never a client's bytes; features
arrive as float32 arrays, cheap to unpickle). Errors name the JSON field
(`items[2].features[17]`) and never echo the input (which may hold values JSON cannot encode).
"""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from email.message import Message
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from serving.errors import BadRequest, RequestError, UnsupportedMediaType

OFF_LOOP_BYTES = 256 * 1024
SHOWN_ERRORS = 5

Body = TypeVar("Body", bound=BaseModel)


class BodyValidator:
    """Validates bodies: small ones at once, large ones in a worker process started on first
    use (spawned: the service's own process holds TensorFlow's threads, which forking would
    copy half-alive)."""

    def __init__(self, off_loop_bytes: int = OFF_LOOP_BYTES):
        self.off_loop_bytes = off_loop_bytes
        self.pool: ProcessPoolExecutor | None = None

    async def read(self, request: Request, model: type[Body]) -> Body:
        """The request's JSON body as `model`; RequestError (4xx) naming the field otherwise."""
        content_type = request.headers.get("content-type")
        if not _is_json(content_type):
            raise UnsupportedMediaType(
                f"body: Content-Type {content_type!r} is not supported, send application/json"
            )
        require_identity_encoding(request)
        raw = await request.body()
        if not raw:
            raise BadRequest("body: empty, expected a JSON object")
        if len(raw) <= self.off_loop_bytes:
            return validate(model, raw)
        if self.pool is None:
            context = multiprocessing.get_context("spawn")
            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=context)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.pool, validate, model, raw)
        except BrokenProcessPool:  # the worker died (e.g. killed): a new one next time
            self.pool = None
            raise

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)  # the worker exits with us


def require_identity_encoding(request: Request) -> None:
    """UnsupportedMediaType (415, RFC 9110 15.5.16) for a compressed body: the service reads
    bodies as sent, and a gzip body read as JSON would be a misleading 400."""
    encodings = [
        part.strip().lower()
        for value in request.headers.getlist("content-encoding")
        for part in value.split(",")
    ]
    refused = [e for e in encodings if e not in ("", "identity")]
    if refused:
        raise UnsupportedMediaType(
            f"header Content-Encoding: {refused[0]!r} is not supported, send the body "
            "uncompressed (identity)"
        )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


def validate(model: type[Body], raw: bytes) -> Body:
    try:
        return model.model_validate_json(raw)
    except ValidationError as error:
        errors = error.errors(include_input=False, include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise BadRequest(f"body: not valid JSON ({errors[0]['msg']})") from None
        raise RequestError(describe_errors(errors)) from None


def describe_errors(errors: Sequence[dict[str, Any]], skip: int = 0) -> str:
    """`field.path[3]: message; ...` for pydantic/FastAPI error dicts (the first SHOWN_ERRORS);
    `skip` drops leading location parts such as FastAPI's "query"."""
    parts = [f"{field_path(e['loc'][skip:])}: {e['msg']}" for e in errors[:SHOWN_ERRORS]]
    if len(errors) > SHOWN_ERRORS:
        parts.append(f"... {len(errors) - SHOWN_ERRORS} more")
    return "; ".join(parts)


def field_path(location: Sequence[str | int]) -> str:
    """("items", 0, "features", 17) -> "items[0].features[17]"; () -> "body"."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"
