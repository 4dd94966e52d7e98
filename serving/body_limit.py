"""The request body's size limit (`max_body_bytes`), refused with the API's JSON problem.

Pure ASGI middleware behind the API key guard. A body whose Content-Length is over the limit is
answered 413 from its headers, before a byte of it is read; a body without one (chunked) is
counted as it arrives and refused once it passes the limit (`PayloadTooLarge`, which the app's
handler answers). Starlette's own `max_body_size` was used before: its 413 for a declared
length replaces whatever the application answered with a plain-text "Content Too Large", not
the JSON body every other error has.
"""

from __future__ import annotations

from serving.errors import PayloadTooLarge, send_problem


class BodyLimit:
    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"body: larger than max_body_bytes ({max_bytes} bytes)"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await send_problem(send, 413, self.message, [(b"connection", b"close")])
            return
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLarge(self.message)
            return message

        await self.app(scope, counted, send)


def _content_length(scope) -> int | None:
    """The declared Content-Length, None when absent or unreadable (uvicorn refuses a malformed
    or repeated one before the application sees the request)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
