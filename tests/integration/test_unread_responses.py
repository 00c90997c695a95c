"""Clients that do not read their responses, over real sockets.

README, "Limits and timeouts": while a client leaves more than the
transport's high-water mark (64 KiB) of output unread, the worker reads and
answers none of its next requests; output that does not shrink for
``send_timeout`` seconds is dropped and the connection aborted (nginx's
``send_timeout``), and an application still streaming learns the client is
gone.  Every interface is served by ``tests/apps/unread_app.py``.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for

APP = Path(__file__).resolve().parent.parent / "apps" / "unread_app.py"
INTERFACES = ["callback", "wsgi", "asgi"]
SEND_TIMEOUT = 1.0
TIMEOUT = 10.0
MIB = 1 << 20
ABORTED = "(send_timeout): aborting"


@pytest.fixture(scope="module")
def servers(module_spawn):  # type: ignore[no-untyped-def]
    started = {}

    def get(interface: str):  # type: ignore[no-untyped-def]
        if interface not in started:
            started[interface] = module_spawn(
                APP, "--interface", interface, "--limit", f"send_timeout={SEND_TIMEOUT}"
            )
        return started[interface]

    return get


@pytest.fixture(params=INTERFACES)
def server(request, servers):  # type: ignore[no-untyped-def]
    return servers(request.param)


def state(port: int) -> dict:  # type: ignore[type-arg]
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return json.loads(data.partition(b"\r\n\r\n")[2])


def unread_client(port: int) -> socket.socket:
    """A client with a small receive buffer (set before connecting, so the
    window is small from the start) that never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    return sock


def big_requests(count: int, size: int) -> bytes:
    return b"GET /big?size=%d HTTP/1.1\r\nHost: x\r\n\r\n" % size * count


def aborts(server) -> int:  # type: ignore[no-untyped-def]
    return server.stderr_text().count(ABORTED)


def test_pipelined_requests_wait_while_the_client_does_not_read(server):
    """200 pipelined 1 MiB answers asked for, none read: the worker answers
    only what the buffers hold (a few MiB), then aborts at send_timeout.
    Without flow control it answered all 200 (200 MiB held in memory, and the
    connection kept for ever)."""
    before, aborted = state(server.port)["big"], aborts(server)
    with unread_client(server.port) as sock:
        sock.sendall(big_requests(200, MIB))
        wait_for(lambda: aborts(server) > aborted, TIMEOUT, "the send_timeout abort")
        answered = state(server.port)["big"] - before
        assert 1 <= answered <= 16, answered
        # A reset, not a close whose unsent bytes an orphan socket keeps
        # probing a zero window with: the client learns it at once.
        with pytest.raises(ConnectionResetError):
            while sock.recv(1 << 20):
                pass


def test_a_client_reading_slowly_gets_every_answer_in_order(server):
    """Flow control resumes as the client reads: 40 pipelined 256 KiB answers,
    all of them, in order, whole."""
    size, count = 256 * 1024, 40
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(big_requests(count, size))
        data = bytearray()
        expected = count * (size + len(b"HTTP/1.1 200 OK\r\n"))
        deadline = time.monotonic() + TIMEOUT
        while len(data) < expected and time.monotonic() < deadline:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(data)} bytes"
            data += chunk
            # Keep reading until every answer's body is here.
            if data.count(b"HTTP/1.1 200 OK") == count and data.endswith(b"x" * 1024):
                heads = data.count(b"Content-Length: %d" % size)
                if heads == count and len(data.replace(b"x", b"")) < len(data) - count * size + 1:
                    break
    assert data.count(b"HTTP/1.1 200 OK") == count
    assert data.count(b"x") == count * size


def test_output_read_slowly_but_steadily_is_not_cut(servers):
    """send_timeout counts from the last progress, as nginx's: a 1 MiB answer
    read at under 0.5 MiB/s takes longer than send_timeout and is still
    whole.  (The connection's, the same for every interface.)"""
    server = servers("callback")
    size = MIB
    aborted = aborts(server)
    with unread_client(server.port) as sock:
        sock.sendall(big_requests(1, size) + b"GET /state HTTP/1.1\r\nHost: x\r\n\r\n")
        data = bytearray()
        started = time.monotonic()
        while data.count(b"x") < size:
            chunk = sock.recv(16384)
            assert chunk, f"closed after {len(data)} bytes"
            data += chunk
            time.sleep(0.008)  # a slow reader: 4 KiB (its buffer) at a time
        assert time.monotonic() - started > 2 * SEND_TIMEOUT
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert aborts(server) == aborted


def test_a_stream_to_a_client_that_does_not_read_ends_at_send_timeout(server):
    """An endless response the client never reads: the connection is aborted
    at send_timeout and the application learns the client is gone (before,
    it waited for the client for ever)."""
    before = state(server.port)["events"].count("stream:gone")
    with unread_client(server.port) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(
            lambda: state(server.port)["events"].count("stream:gone") > before,
            TIMEOUT,
            "the application to learn the client is gone",
        )
