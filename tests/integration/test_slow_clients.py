"""Clients that end their side early, or send too slowly, over real sockets.

README, "What is refused, and how": a request that can never complete (the
client half-closes in its head or body) is answered 400 at once; a head or
body slower than the minimum rate is answered 408 (``header_timeout`` /
``header_min_rate`` / ``header_timeout_max``, ``body_timeout`` /
``body_min_rate``: Apache mod_reqtimeout's rule).  Every interface is
served by ``tests/apps/body_app.py``: the callback gets the body whole,
WSGI and ASGI read it as it streams, and must learn that the client is gone.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for

APP = Path(__file__).resolve().parent.parent / "apps" / "body_app.py"
INTERFACES = ["callback", "wsgi", "asgi"]
STREAMED = ["wsgi", "asgi"]
TIMEOUT = 5.0

# The EOF servers' timeouts are long: an answer well within them is not a timeout.
EOF_LIMITS = ("header_timeout=5", "body_timeout=5")
EOF_BOUND = 2.0

# The rate servers': a 0.5 s window, extended by 1 s per 1000 bytes (a head up
# to 1.5 s in all).  The sweep then looks every 0.125 s.
TIMEOUT_S = 0.5
RATE = 1000
HEAD_MAX = 1.5
RATE_LIMITS = (
    f"header_timeout={TIMEOUT_S}",
    f"header_min_rate={RATE}",
    f"header_timeout_max={HEAD_MAX}",
    f"body_timeout={TIMEOUT_S}",
    f"body_min_rate={RATE}",
)
# Past a computed deadline: the sweep's period, plus room for a loaded machine.
LATE = 0.6


class Client:
    """A raw socket; every wait is bounded."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.start = time.monotonic()
        self.sent = 0

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)
        self.sent += len(data)

    def end(self) -> None:
        """Half-close: the client sends nothing more, but still reads."""
        self.sock.shutdown(socket.SHUT_WR)

    def answered_within(self, seconds: float) -> bool:
        """True once the server sent something (or closed) within ``seconds``."""
        readable, _, _ = select.select([self.sock], [], [], seconds)
        return bool(readable)

    def trickle(self, pieces: list[bytes], interval: float) -> None:
        """Send a piece every ``interval`` s, until done or the server answers."""
        for piece in pieces:
            if self.answered_within(interval):
                return
            try:
                self.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                return

    def read_until(self, marker: bytes) -> bytes:
        data = b""
        deadline = time.monotonic() + TIMEOUT
        while marker not in data:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed before {marker!r}: {data!r}")
            data += chunk
        return data

    def read_to_eof(self) -> tuple[bytes, float]:
        """Everything until the server closes, and when that was (s since connecting)."""
        data = b""
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            except TimeoutError:
                raise TimeoutError(f"the server did not close; got {data!r}") from None
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - self.start


def statuses(data: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


def closing_error(data: bytes, status: int) -> None:
    """One error response that says it closes, and nothing after it."""
    assert statuses(data) == [status], data
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"\r\nConnection: close" in head, data
    assert body.startswith(b"%d " % status) and body.endswith(b"\n"), data


def events(port: int) -> list[str]:
    with Client(port) as client:
        client.send(b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data, _ = client.read_to_eof()
    return json.loads(data.partition(b"\r\n\r\n")[2])


def wait_for_event(port: int, event: str) -> None:
    wait_for(lambda: event in events(port), TIMEOUT, event)


def post_head(path: str, length: int | None = None) -> bytes:
    framing = f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked"
    return f"POST {path} HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n".encode()


@pytest.fixture(scope="module")
def servers(module_spawn):  # type: ignore[no-untyped-def]
    """``get(interface, limits)``: one server per pair, started on first use."""
    started = {}

    def get(interface: str, limits: tuple[str, ...]):  # type: ignore[no-untyped-def]
        if (interface, limits) not in started:
            args = ["--interface", interface]
            for limit in limits:
                args += ["--limit", limit]
            server = module_spawn(APP, *args)
            server.interface = interface
            started[interface, limits] = server
        return started[interface, limits]

    return get


@pytest.fixture(params=INTERFACES)
def eof_server(request, servers):  # type: ignore[no-untyped-def]
    return servers(request.param, EOF_LIMITS)


@pytest.fixture(params=STREAMED)
def streamed_eof_server(request, servers):  # type: ignore[no-untyped-def]
    return servers(request.param, EOF_LIMITS)


@pytest.fixture(params=INTERFACES)
def rate_server(request, servers):  # type: ignore[no-untyped-def]
    return servers(request.param, RATE_LIMITS)


@pytest.fixture
def callback_rate_server(servers):  # type: ignore[no-untyped-def]
    return servers("callback", RATE_LIMITS)


# ---------------------------------------------------------------- the end of the input


def _cut_short(server, head: bytes, partial: bytes, tag: str) -> tuple[bytes, float]:  # type: ignore[no-untyped-def]
    """Send a head and part of its body, half-close once the application is
    reading (when it streams), return what came back and how soon."""
    with Client(server.port) as client:
        client.send(head + partial)
        if server.interface in STREAMED:
            wait_for_event(server.port, f"{tag}:reading")
        ended = time.monotonic()
        client.end()
        data, _ = client.read_to_eof()
        return data, time.monotonic() - ended


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_a_body_cut_short_by_a_half_close_gets_400_at_once(eof_server, framing):
    tag = f"cut-{framing}"
    if framing == "chunked":
        head, partial = post_head(f"/body?tag={tag}"), b"5\r\nab"
    else:
        head, partial = post_head(f"/body?tag={tag}", 100), b"a" * 10
    data, elapsed = _cut_short(eof_server, head, partial, tag)
    closing_error(data, 400)
    assert elapsed < EOF_BOUND  # not body_timeout (5 s)
    if eof_server.interface in STREAMED:
        # The application reading the body learnt the client was gone.
        wait_for_event(eof_server.port, f"{tag}:disconnect")


def test_a_whole_request_then_a_half_close_is_answered(eof_server):
    with Client(eof_server.port) as client:
        # The answer waits 300 ms: the half-close arrives while it is pending.
        client.send(post_head("/body?delay_ms=300", 10) + b"0123456789")
        client.end()
        data, _ = client.read_to_eof()
    assert statuses(data) == [200], data
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == b"size=10"
    assert b"\r\nConnection: close" in head  # nothing more can come: it says so


def test_a_streamed_body_completed_then_a_half_close_is_answered(streamed_eof_server):
    server = streamed_eof_server
    with Client(server.port) as client:
        client.send(post_head("/body?tag=whole&delay_ms=300", 10) + b"01234")
        wait_for_event(server.port, "whole:reading")
        client.send(b"56789")
        client.end()
        data, _ = client.read_to_eof()
    assert statuses(data) == [200], data
    assert data.endswith(b"\r\n\r\nsize=10")
    assert "whole:disconnect" not in events(server.port)


def test_pipelined_requests_before_a_half_close_are_answered_in_order(eof_server):
    with Client(eof_server.port) as client:
        client.send(
            b"GET /body?delay_ms=100 HTTP/1.1\r\nHost: x\r\n\r\n"
            + post_head("/body", 3)
            + b"abc"
            + b"GET /bo"  # cut short: it can never complete
        )
        client.end()
        data, elapsed = client.read_to_eof()
    assert statuses(data) == [200, 200, 400], data
    assert b"size=0" in data and b"size=3" in data
    assert elapsed < EOF_BOUND


def test_a_head_cut_short_by_a_half_close_gets_400_at_once(eof_server):
    with Client(eof_server.port) as client:
        client.send(b"GET /body HTTP/1.1\r\nHost: x\r\n")
        client.end()
        data, elapsed = client.read_to_eof()
    closing_error(data, 400)
    assert elapsed < EOF_BOUND  # not header_timeout (5 s)


def test_a_half_close_before_any_byte_just_closes(eof_server):
    with Client(eof_server.port) as client:
        client.end()
        data, elapsed = client.read_to_eof()
    assert data == b""  # no request began: nothing to answer
    assert elapsed < EOF_BOUND


def test_a_half_close_between_requests_just_closes(eof_server):
    with Client(eof_server.port) as client:
        client.send(b"GET /body HTTP/1.1\r\nHost: x\r\n\r\n")
        assert statuses(client.read_until(b"size=0")) == [200]
        client.end()
        data, elapsed = client.read_to_eof()
    assert data == b""
    assert elapsed < EOF_BOUND


def test_a_body_cut_short_after_the_response_started_just_closes(streamed_eof_server):
    server = streamed_eof_server
    tag = "early"
    with Client(server.port) as client:
        client.send(post_head(f"/early?tag={tag}", 100) + b"a" * 10)
        started = client.read_until(b"started;")
        wait_for_event(server.port, f"{tag}:reading")
        client.end()
        rest, _ = client.read_to_eof()
    assert statuses(started) == [200]
    # No 400 after a 200 already under way, and no end of the chunked body:
    # the close is all the client can be told.
    assert b"HTTP/1.1" not in rest and not (started + rest).endswith(b"0\r\n\r\n"), rest
    wait_for_event(server.port, f"{tag}:disconnect")


# ---------------------------------------------------------------- slow bodies


def assert_cut_near_its_deadline(elapsed: float, sent: int, client_rate: float) -> None:
    """Cut where ``TIMEOUT_S + received / RATE`` meets the clock.

    The server saw at most the ``sent`` bytes, and at least those sent until
    a little before the client noticed the cut (a sweep period and a poll:
    0.2 s of the client's rate); it cuts after its deadline, by a sweep
    period or so.  Computed from what was really sent, this holds on a
    machine too busy to send at the planned rate.
    """
    earliest = TIMEOUT_S + max(0.0, sent - 0.2 * client_rate) / RATE
    latest = TIMEOUT_S + sent / RATE + LATE
    assert earliest <= elapsed <= latest, (elapsed, sent)


def test_a_body_trickled_below_the_min_rate_gets_408_near_its_deadline(rate_server):
    tag = "trickle"
    with Client(rate_server.port) as client:
        client.send(post_head(f"/body?tag={tag}", 4000))
        head_bytes = client.sent
        # 25 bytes every 50 ms: 500 B/s against 1000 B/s.  The deadline moves
        # 25 ms a piece, the clock 50 ms: they meet about 1.0 s in.
        client.trickle([b"a" * 25] * 160, 0.05)
        data, elapsed = client.read_to_eof()
    closing_error(data, 408)
    body_sent = client.sent - head_bytes
    assert body_sent < 4000
    # The bytes that came did earn time (about 0.5 s: the cut is near 1.0 s).
    assert_cut_near_its_deadline(elapsed, body_sent, 500)
    if rate_server.interface in STREAMED:
        wait_for_event(rate_server.port, f"{tag}:disconnect")


def test_a_body_at_a_good_rate_may_take_longer_than_body_timeout(callback_rate_server):
    with Client(callback_rate_server.port) as client:
        client.send(post_head("/body", 3000))
        # 200 bytes every 50 ms: 4000 B/s, four times the minimum, for 0.75 s.
        client.trickle([b"a" * 200] * 15, 0.05)
        data = client.read_until(b"size=3000")
        elapsed = time.monotonic() - client.start
    assert statuses(data) == [200], data
    assert elapsed > TIMEOUT_S
    assert data.endswith(b"size=3000")
    assert client.sent - len(post_head("/body", 3000)) == 3000


def test_a_body_that_stalls_after_a_fast_start_is_cut(callback_rate_server):
    with Client(callback_rate_server.port) as client:
        client.send(post_head("/body", 4000))
        assert not client.answered_within(0.1)
        # 1500 bytes at once earn 1.5 s; then nothing.  The rate rule alone
        # would wait until 0.5 + 1.5 = 2.0 s; silence for body_timeout (seen
        # at the next look: up to twice that) ends it sooner.
        client.send(b"a" * 1500)
        data, elapsed = client.read_to_eof()
    closing_error(data, 408)
    assert 0.1 + TIMEOUT_S <= elapsed < 2.0 - 0.2, elapsed


# ---------------------------------------------------------------- slow heads


def _head_lines(size: int, count: int) -> list[bytes]:
    """``count`` header lines of ``size`` bytes each."""
    return [b"X-Pad-%03d: " % i + b"a" * (size - 13) + b"\r\n" for i in range(count)]


def test_a_head_trickled_below_the_min_rate_gets_408_near_its_deadline(callback_rate_server):
    with Client(callback_rate_server.port) as client:
        client.send(b"GET /body HTTP/1.1\r\nHost: x\r\n")
        # 25-byte lines every 50 ms: 500 B/s against 1000 B/s.
        client.trickle(_head_lines(25, 99), 0.05)
        data, elapsed = client.read_to_eof()
    closing_error(data, 408)
    assert_cut_near_its_deadline(elapsed, client.sent, 500)


def test_a_head_at_a_good_rate_may_take_longer_than_header_timeout(callback_rate_server):
    with Client(callback_rate_server.port) as client:
        client.send(b"GET /body HTTP/1.1\r\nHost: x\r\n")
        # 200-byte lines every 50 ms: 4000 B/s, for 0.75 s (under header_timeout_max).
        client.trickle([*_head_lines(200, 15), b"\r\n"], 0.05)
        data = client.read_until(b"size=0")
        elapsed = time.monotonic() - client.start
    assert statuses(data) == [200], data
    assert elapsed > TIMEOUT_S


def test_a_head_is_cut_at_header_timeout_max_however_fast(callback_rate_server):
    with Client(callback_rate_server.port) as client:
        client.send(b"GET /body HTTP/1.1\r\nHost: x\r\n")
        # 4000 B/s would earn 0.5 + 6 s over 1.5 s: the maximum cuts it.
        client.trickle(_head_lines(200, 60), 0.05)
        data, elapsed = client.read_to_eof()
    closing_error(data, 408)
    assert HEAD_MAX <= elapsed <= HEAD_MAX + LATE, elapsed
