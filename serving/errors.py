"""Requests the service refuses, each with its HTTP status (light: no TensorFlow, so that body
validation can run in a worker process that imports only the schemas)."""

from __future__ import annotations

import json
from collections.abc import Sequence


class RequestError(ValueError):
    """A request the service refuses; `status` is its HTTP status."""

    status = 422


class BadRequest(RequestError):
    status = 400


class NotEnabled(RequestError):
    """A feature this service was started without (e.g. image uploads)."""

    status = 404


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class UnknownItems(RequestError):
    status = 404

    def __init__(self, field: str, ids: Sequence[str]):
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        super().__init__(f"{field}: unknown item id(s) {shown}")


class Conflict(RequestError):
    status = 409


class NotReady(RequestError):
    status = 503


async def send_problem(send, status: int, detail: str, headers: Sequence = ()) -> None:
    """An ASGI answer with the API's JSON problem body, sent by middleware in front of the
    app (which answers through its exception handlers)."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
