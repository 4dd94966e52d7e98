"""uvicorn's httptools protocol with bounds on what a client may hold: the size of a request's
head (request line and headers) and the time it takes to send a request.

Size: uvicorn's pure-Python h11 parser refuses a head past 16 KB. httptools, its C parser
(several times faster here: docs/benchmarks.md), has no bound: a client that never ends its
headers makes the service buffer them, unauthenticated (a 200 MB header raised the service's
resident memory by 280 MB, measured). This protocol counts the bytes received while a
request's head is open, and the sizes of its request target and headers as the parser completes
them (a head that ends inside one read is measured too); past `max_head_bytes` it answers 431
and the request never reaches the application.

Time: uvicorn times out an idle keep-alive connection, but nothing else. A connection that
sends nothing, or trickles a head or a body a byte at a time (slowloris), is held forever, and
enough of them exhaust the service's connections. Here a request must arrive whole within
`read_seconds` of its first byte (of the connection's opening, for the first request); a body
the service still wants gets one second more for every `min_bytes_per_second` bytes received,
so that a large upload on a slow but steady link gets through (Apache's `RequestReadTimeout`
rule). Past it: 408. Time during which the service itself stopped reading (uvicorn pauses a
connection while a pipelined request waits, or while a body's buffer is full) does not count.
A connection opened and never used is closed without an answer (none is owed).

Either refusal ends the service's side of the connection, drops whatever the client still
sends and closes after LINGER_SECONDS (closing at once, with the client's bytes unread, would
reset the connection and could destroy the answer before the client reads it). Where an answer
is already started or queued on the connection (a 401 sent before the body is read; pipelined
requests), the connection is only closed, so that the refusal is never read as another
request's answer; where the application is still waiting for the body, it sees the client
leave (a 400 for the route).
"""

from __future__ import annotations

from asyncio import TimerHandle
from collections.abc import Callable

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

STATUS_408 = b"HTTP/1.1 408 Request Timeout\r\n"
STATUS_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
LINGER_SECONDS = 2.0


def bounded_httptools_protocol(
    max_head_bytes: int,
    read_seconds: float,
    min_bytes_per_second: float,
    on_refused: Callable[[int], None] = lambda status: None,
) -> type[HttpToolsProtocol]:
    """uvicorn's `http` protocol class refusing request heads over `max_head_bytes` (431) and
    requests not received within `read_seconds` + received bytes / `min_bytes_per_second` (408).
    `on_refused(status)` is called once per refusal (the service counts them in /metrics),
    whether the answer could be written or the connection was only closed, and for uvicorn's own
    400 to a request its parser cannot read."""

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        head_open = False  # between a request's first byte and the end of its headers
        in_request = False  # between a request's first byte and the end of its body
        head_bytes = 0  # received while the head is open
        parsed_head_bytes = 0  # the request target and headers the parser completed
        head_too_large = False  # past max_head_bytes: the request is refused, not started
        refused = False  # answered 408 or 431: what arrives is dropped until the close
        read_timer: TimerHandle | None = None  # armed while a request is being received
        read_since = 0.0  # loop time the request (or the connection) began
        read_bytes = 0  # received since then

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._start_reading()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_reading()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.head_open, self.head_bytes, self.in_request = True, 0, True
            self.parsed_head_bytes = 0
            if self.read_timer is None:  # else: a first request, timed from the opening
                self._start_reading()

        def on_url(self, url: bytes) -> None:
            self._count_head(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count_head(len(name) + len(value) + 4)  # ": " and the line's end
            super().on_header(name, value)

        def _count_head(self, size: int) -> None:
            self.parsed_head_bytes += size
            if self.parsed_head_bytes > max_head_bytes:
                self.head_too_large = True

        def on_headers_complete(self) -> None:
            if self.head_too_large:  # refused once the parser returns: no route is started
                return
            self.head_open = False
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self.head_too_large:
                super().on_body(body)

        def on_message_complete(self) -> None:
            self.in_request = False
            self._stop_reading()
            if not self.head_too_large:
                super().on_message_complete()

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return
            self.read_bytes += len(data)
            super().data_received(data)
            if self.head_too_large and not self.refused:
                self._refuse_head()
                return
            if not self.head_open or self.transport.is_closing():
                return
            self.head_bytes += len(data)  # the parser holds them until the head ends
            if self.head_bytes > max_head_bytes:
                self._refuse_head()

        def _refuse_head(self) -> None:
            self._refuse(
                STATUS_431,
                f"the request line and headers exceed {max_head_bytes} bytes "
                "(CURATOR_MAX_HEAD_BYTES)",
            )

        def _start_reading(self) -> None:
            self._stop_reading()
            self.read_since, self.read_bytes = self.loop.time(), 0
            self.read_timer = self.loop.call_later(read_seconds, self._check_reading)

        def _stop_reading(self) -> None:
            if self.read_timer is not None:
                self.read_timer.cancel()
                self.read_timer = None

        def send_400_response(self, msg: str) -> None:
            on_refused(400)  # a request the parser cannot read: uvicorn answers it, no route
            super().send_400_response(msg)

        def _check_reading(self) -> None:
            self.read_timer = None
            if self.refused or self.transport.is_closing():
                return
            now = self.loop.time()
            if self.flow.read_paused:  # the service stopped reading (pipelining, a full buffer)
                self.read_since, self.read_bytes = now, 0  # not the client's delay: a new window
                self.read_timer = self.loop.call_later(read_seconds, self._check_reading)
                return
            if not self.in_request and self.read_bytes == 0:
                self.refused = True  # opened and never used (a pooled connection): no answer owed
                self.transport.close()
                return
            allowed = read_seconds  # a head gets no more: it is at most max_head_bytes
            if not self.head_open and not self._answered():  # a body the service still wants
                allowed += self.read_bytes / min_bytes_per_second
            left = allowed - (now - self.read_since)
            if left > 0:  # bytes came in since: the deadline moved
                self.read_timer = self.loop.call_later(left, self._check_reading)
                return
            self._refuse(
                STATUS_408,
                f"the request was not received within {read_seconds:g} s plus 1 s per "
                f"{min_bytes_per_second:g} bytes of body (CURATOR_REQUEST_READ_SECONDS, "
                "CURATOR_MIN_REQUEST_BYTES_PER_SECOND)",
            )

        def _answered(self) -> bool:
            """This request's answer has started before its body was all received (a 401)."""
            return self.in_request and not self.head_open and self.cycle.response_started

        def _may_answer(self) -> bool:
            """No answer of this connection is started or queued: a refusal would not be
            taken for another request's answer (nor written into one)."""
            if self.pipeline:
                return False
            if self.in_request and not self.head_open:  # self.cycle is this request's
                return not self.cycle.response_started
            return self.cycle is None or self.cycle.response_complete

        def _refuse(self, status: bytes, message: str) -> None:
            self.logger.warning("%s refused: %s", status[9:12].decode(), message)
            self.refused = True
            on_refused(int(status[9:12]))
            self._stop_reading()
            if not self._may_answer():  # e.g. a 401 went out before the body: only close
                self.transport.close()
                return
            body = message.encode()
            self.transport.write(
                status
                + b"content-type: text/plain; charset=utf-8\r\n"
                + b"content-length: " + str(len(body)).encode() + b"\r\n"
                + b"connection: close\r\n\r\n"
                + body
            )  # fmt: skip
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)

    return BoundedHttpToolsProtocol
