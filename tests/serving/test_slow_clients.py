"""Clients that hold a connection without finishing a request (slowloris): over a real uvicorn
process whose requests must arrive within 1.5 s, a body 1 s more per 2,000 bytes received."""

from __future__ import annotations

import http.client
import re
import shutil
import socket
import time

import pytest

from serving.process import curator_service
from tests.serving.live_service import sample_value, serve_copy

READ_SECONDS, RATE = 1.5, 2000
SLACK = 2.0 + 5.0  # the service lingers 2 s before it closes; 5 s for a loaded machine
JSON_TYPE = {"Content-Type": "application/json"}
HEAD = b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"


@pytest.fixture(scope="module")
def server(tiny_export, tmp_path_factory):
    running = serve_copy(
        tiny_export,
        tmp_path_factory.mktemp("slow"),
        api_key="test-key",
        request_read_seconds=READ_SECONDS,
        min_request_bytes_per_second=RATE,
    )
    yield running
    running.stop()


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=15)


def trickle(sock: socket.socket, data: bytes, seconds_per_byte: float) -> None:
    """Sends `data` a byte at a time; stops where the service has closed its side."""
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        time.sleep(seconds_per_byte)


def reply_and_seconds(sock: socket.socket, since: float) -> tuple[str, float]:
    """Everything the service sends until it closes, and when it closed (after `since`)."""
    reply = b""
    try:
        while chunk := sock.recv(65536):
            reply += chunk
    except ConnectionResetError:
        pass
    return reply.decode(errors="replace"), time.monotonic() - since


def status_lines(reply: str) -> list[str]:
    return re.findall(r"HTTP/1\.1 \d{3}", reply)


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server):
    """Opened and never used (as a client's pool may): closed after the deadline, and no
    answer is sent that the client could take for a later request's."""
    with connect(server) as sock:
        reply, seconds = reply_and_seconds(sock, time.monotonic())
    assert reply == ""
    assert READ_SECONDS - 0.2 < seconds < READ_SECONDS + SLACK, seconds


def test_a_trickled_head_gets_a_408_counted_in_the_metrics(server):
    refused = 'curator_refused_requests_total{status="408"}'
    before = sample_value(server, refused)
    started = time.monotonic()
    with connect(server) as sock:
        trickle(sock, HEAD + b"X-Slow: " + b"a" * 100, 0.1)  # 10 bytes a second, never ends
        reply, seconds = reply_and_seconds(sock, started)
    assert status_lines(reply) == ["HTTP/1.1 408"], reply
    assert seconds < READ_SECONDS + SLACK, seconds
    assert sample_value(server, refused) == before + 1


def test_a_trickled_body_gets_a_408_and_the_route_sees_the_client_leave(server):
    counted = 'curator_requests_total{method="POST",route="/v1/recommendations",status="400"}'
    before = sample_value(server, counted)
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(HEAD + b"Content-Length: 200\r\n\r\n")
        trickle(sock, b'{"k": 3' + b" " * 193, 0.1)
        reply, seconds = reply_and_seconds(sock, started)
    assert status_lines(reply) == ["HTTP/1.1 408"], reply
    assert seconds < READ_SECONDS + SLACK, seconds
    deadline = time.monotonic() + 10
    while True:  # the handler waiting for the body is released, not left hanging
        if sample_value(server, counted) == before + 1:
            break
        assert time.monotonic() < deadline, "the abandoned request was never counted"
        time.sleep(0.1)
    assert "Traceback" not in server.log.read_text()


def test_a_slow_but_steady_upload_gets_through(server):
    """24 KB at about 10 KB a second takes 2.4 s, past the 1.5 s base: the received bytes
    extend the deadline (12 s more), so it is answered."""
    body = b'{"k": 3' + b" " * (24_000 - 8) + b"}"
    with connect(server) as sock:
        sock.sendall(HEAD + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 1000):
            sock.sendall(body[start : start + 1000])
            time.sleep(0.1)
        reply, _ = reply_and_seconds(sock, time.monotonic())
    assert status_lines(reply) == ["HTTP/1.1 200"], reply[:300]


def test_a_401_sent_before_the_body_is_not_followed_by_a_408(server):
    """The key is checked before the body is read: the 401 goes out at once; the body that
    never comes then only closes the connection, with no second answer."""
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        reply, seconds = reply_and_seconds(sock, time.monotonic())
    assert status_lines(reply) == ["HTTP/1.1 401"], reply
    assert seconds < READ_SECONDS + SLACK, seconds


def test_keep_alive_requests_each_get_their_own_deadline(server):
    """Three requests on one connection, 1 s apart (3 s in all, past the 1.5 s deadline):
    each is timed from its own first byte, so all three are answered."""
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=15)
    try:
        for _ in range(3):
            connection.request("POST", "/v1/recommendations", b'{"k": 2}', JSON_TYPE)
            response = connection.getresponse()
            assert response.status == 200, response.read()
            response.read()
            time.sleep(1.0)
    finally:
        connection.close()


def test_pipelined_requests_are_answered_in_order(server):
    """Two requests in one write: uvicorn pauses reading while the second waits; both answered."""
    body = b'{"k": 2}'
    request = HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
    closing = HEAD + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    with connect(server) as sock:
        sock.sendall(request + closing)
        reply, _ = reply_and_seconds(sock, time.monotonic())
    assert status_lines(reply) == ["HTTP/1.1 200"] * 2, reply


def test_an_answered_request_is_not_held_open_by_a_steady_trickle(server):
    """A 401 goes out before the body; a client then sending 1 KB every 0.1 s (10 KB/s, above
    the 2,000 bytes a second that extend a wanted body's deadline) of a body announced at 50 MB
    is still closed at the base deadline: an answered request earns no extension."""
    started = time.monotonic()
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        sock.settimeout(0.1)
        reply = b""
        while time.monotonic() - started < 30:
            try:
                sock.sendall(b" " * 1000)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
            except TimeoutError:
                continue
            except OSError:
                break
        seconds = time.monotonic() - started
    assert status_lines(reply.decode()) == ["HTTP/1.1 401"], reply
    assert seconds < READ_SECONDS + SLACK, seconds


def test_past_max_connections_a_request_gets_a_503_at_once(tiny_export, tmp_path):
    shutil.copytree(tiny_export, tmp_path / "1")
    running = curator_service(tmp_path, tmp_path / "live.db", tmp_path / "log", max_connections=4)
    try:
        held = [connect(running) for _ in range(4)]  # open, sending nothing
        time.sleep(0.5)
        with connect(running) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            reply, seconds = reply_and_seconds(sock, time.monotonic())
        assert status_lines(reply) == ["HTTP/1.1 503"], reply
        assert reply.endswith("Service Unavailable") and seconds < 5
        for sock in held:
            sock.close()
        time.sleep(0.5)
        assert running.client.get("/healthz").status_code == 200
    finally:
        running.stop()
