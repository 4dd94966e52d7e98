"""uvicorn's httptools protocol with a bound on the request head (request line and headers).

uvicorn's pure-Python h11 parser refuses a head past 16 KB. httptools, its C parser (several
times faster here: docs/benchmarks.md), has no bound: a client that never ends its headers
makes the service buffer them, unauthenticated (a 200 MB header raised the service's resident
memory by 280 MB, measured). This protocol counts the bytes received while a request's head is
open; past `max_head_bytes` it answers 431, ends its side of the connection, drops whatever the
client still sends and closes after LINGER_SECONDS (closing at once, with the client's bytes
unread, would reset the connection and could destroy the 431 before the client reads it).
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
LINGER_SECONDS = 2.0


def bounded_httptools_protocol(max_head_bytes: int) -> type[HttpToolsProtocol]:
    """uvicorn's `http` protocol class refusing request heads over `max_head_bytes`."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        head_open = False  # between a request's first byte and the end of its headers
        head_bytes = 0
        refused = False  # answered 431: what arrives is dropped until the connection closes

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_open, self.head_bytes = True, 0

        def on_headers_complete(self) -> None:
            self.head_open = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            super().data_received(data)
            if not self.head_open or self.transport.is_closing():
                return
            self.head_bytes += len(data)  # the parser holds them until the head ends
            if self.head_bytes > max_head_bytes:
                self._refuse_head()

        def _refuse_head(self) -> None:
            message = (
                f"the request line and headers exceed {max_head_bytes} bytes "
                "(CURATOR_MAX_HEAD_BYTES)"
            ).encode()
            self.logger.warning("request head over %d bytes refused", max_head_bytes)
            self.transport.write(
                STATUS_431
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: " + str(len(message)).encode() + b"\r\n"
                + b"connection: close\r\n\r\n"
                + message
            )  # fmt: skip
            self.refused = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    return BoundedHttpToolsProtocol
