"""ASGI 3 over real sockets: scope, streaming both ways, misuse, disconnects, lifespan.

The server is tests/apps/asgi_app.py (``HTTPServer(ASGIAdapter(app))``) in a
subprocess; the CLI tests at the end run ``python -m prefork --interface asgi``.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from prefork.worker.asgi import ASGIAdapter
from prefork.worker.connection import LINGER
from prefork.worker.interfaces import detect_interface, request_callback_for
from tests.conftest import (
    APPS,
    ROOT,
    post_expecting_continue,
    read_to_the_end,
    read_until_closed,
    wait_for,
)
from tests.integration.test_cli_config import Cli


@pytest.fixture(scope="module")
def mark_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("asgi") / "marks"


@pytest.fixture(scope="module")
def server(module_spawn, mark_file: Path):
    os.environ["ASGI_TEST_MARK"] = str(mark_file)
    try:
        return module_spawn(APPS / "asgi_app.py")
    finally:
        del os.environ["ASGI_TEST_MARK"]


def request(
    port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def raw(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send ``data``, read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def marks(path: Path) -> list[str]:
    try:
        return path.read_text().split()
    except FileNotFoundError:
        return []


# -- the scope ---------------------------------------------------------------------------


def test_the_scope(server) -> None:
    status, _, body = request(
        server.port, "GET", "/scope/caf%C3%A9%2Fx?a=1&b=%20", headers={"X-Test": "Yes"}
    )
    assert status == 200
    scope = json.loads(body)
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.5"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/scope/café/x"
    assert scope["raw_path"] == "/scope/caf%C3%A9%2Fx"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["root_path"] == ""
    assert ["x-test", "Yes"] in scope["headers"]
    assert ["host", f"127.0.0.1:{server.port}"] in scope["headers"]
    assert scope["client"][0] == "127.0.0.1" and isinstance(scope["client"][1], int)
    assert scope["server"] == ["127.0.0.1", server.port]


def scope_of(port: int, target: bytes, host: bytes = b"h") -> dict:
    response = raw(
        port,
        b"GET %s HTTP/1.1\r\nHost: %s\r\nX-Show-Scope: 1\r\nConnection: close\r\n\r\n"
        % (target, host),
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    return json.loads(body)


@pytest.mark.parametrize(
    ("target", "raw_path", "path", "query"),
    [
        # absolute-form: the path ends at the first "?" or "#" (RFC 3986 3.3)
        (b"http://example.com?q=/x", "/", "/", "q=/x"),
        (b"http://example.com#/admin", "/", "/", ""),
        (b"http://example.com/a?b=/c#/d", "/a", "/a", "b=/c"),
        (b"https://example.com:8443", "/", "/", ""),
        (b"http://example.com/caf%C3%A9", "/caf%C3%A9", "/caf\u00e9", ""),
        # a fragment is not part of a target: never in the path or the query
        (b"/p#frag", "/p", "/p", ""),
        (b"/p?x=1#frag?y", "/p", "/p", "x=1"),
        (b"/#", "/", "/", ""),
        (b"/a%23b", "/a%23b", "/a#b", ""),  # (an encoded "#" is the path's)
    ],
)
def test_the_path_and_query_of_every_target_form(server, target, raw_path, path, query) -> None:
    scope = scope_of(server.port, target)
    assert (scope["raw_path"], scope["path"], scope["query_string"]) == (raw_path, path, query)


def test_an_absolute_form_target_is_the_host_the_application_sees(server) -> None:
    # RFC 9112 3.2.2: the Host header is ignored for the target's authority.
    scope = scope_of(server.port, b"http://example.com:81/scope", host=b"other")
    hosts = [value for name, value in scope["headers"] if name == "host"]
    assert hosts == ["example.com:81"]


@pytest.fixture(scope="module")
def rooted(module_spawn, mark_file: Path):
    """The same application under ``--root-path /api``."""
    return module_spawn(APPS / "asgi_app.py", "--root-path", "/api")


@pytest.mark.parametrize(
    ("target", "path", "raw_path"),
    [
        (b"/scope/x", "/api/scope/x", "/api/scope/x"),  # a proxy that stripped the prefix
        (b"/api/scope/x", "/api/scope/x", "/api/scope/x"),  # one that kept it
        (b"/api", "/api", "/api"),
        # judged on the bytes sent: no prefix made of an escape
        (b"/%61pi/scope", "/api/api/scope", "/api/%61pi/scope"),
        (b"/api%2Fscope", "/api/api/scope", "/api/api%2Fscope"),
        (b"/apix/scope", "/api/apix/scope", "/api/apix/scope"),
    ],
)
def test_root_path_is_in_path_and_raw_path(rooted, target, path, raw_path) -> None:
    """ASGI: ``path`` includes ``root_path``; ``raw_path`` gets the same prefix
    (as uvicorn), so a framework can take the one off the other."""
    scope = scope_of(rooted.port, target)
    assert (scope["root_path"], scope["path"], scope["raw_path"]) == ("/api", path, raw_path)


def test_asterisk_form_keeps_its_star_under_a_root_path(rooted) -> None:
    response = raw(
        rooted.port,
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\nX-Show-Scope: 1\r\nConnection: close\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), response
    scope = json.loads(body)
    assert (scope["method"], scope["path"], scope["raw_path"]) == ("OPTIONS", "*", "*")


@pytest.mark.parametrize(
    ("forwarded", "client_ip", "port_kept"),
    [
        (b"X-Forwarded-For: 10.9.9.9\r\n", "10.9.9.9", False),
        (b"X-Real-Ip: 10.8.8.8\r\n", "10.8.8.8", False),
        (b"", "127.0.0.1", True),  # no proxy header: the peer, with its port
    ],
)
def test_a_client_named_by_a_trusted_proxy_has_no_port(
    module_spawn, forwarded: bytes, client_ip: str, port_kept: bool
) -> None:
    """``--xheaders``: the proxy names the client's IP, not its port; the
    scope's port is then 0 (as uvicorn), never the proxy's own port, which
    belongs to another host (WSGI leaves REMOTE_PORT out the same way)."""
    served = module_spawn(APPS / "asgi_app.py", "--xheaders")
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /scope/x HTTP/1.1\r\nHost: h\r\n%sConnection: close\r\n\r\n" % forwarded)
        response = read_until_closed(sock)
        own_port = sock.getsockname()[1]
    scope = json.loads(response.partition(b"\r\n\r\n")[2])
    assert scope["client"] == [client_ip, own_port if port_kept else 0]


def test_http_1_0_scope(server) -> None:
    response = raw(server.port, b"GET /scope HTTP/1.0\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert json.loads(body)["http_version"] == "1.0"


def test_the_lifespan_state_is_copied_into_each_request(server) -> None:
    status, _, body = request(server.port, "GET", "/state")
    assert status == 200 and json.loads(body) == {
        "opened": "yes",
        "lifespan_asgi": {"version": "3.0", "spec_version": "2.0"},  # the lifespan spec's own
    }


def _dates(response: bytes) -> list[str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return [
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if line.lower().startswith("date:")
    ]


@pytest.mark.parametrize("path", ["/state", "/stream?n=2", "/status/404"])
def test_responses_carry_the_date(server, path: str) -> None:
    """RFC 9110 6.6.1: an origin server with a clock sends Date (as uvicorn does),
    on the raw path, the streamed (chunked) one, and an error alike."""
    response = raw(
        server.port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode()
    )
    (date,) = _dates(response)
    sent = email.utils.parsedate_to_datetime(date)
    assert date.endswith(" GMT") and sent.tzinfo is not None
    assert abs(sent.timestamp() - time.time()) < 60


def test_the_date_moves_on(server) -> None:
    """The kept date is brought up to now at least once a second."""
    request_bytes = b"GET /state HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    first = _dates(raw(server.port, request_bytes))[0]
    wait_for(lambda: _dates(raw(server.port, request_bytes))[0] != first, 5, "a later Date")


def test_the_applications_own_date_is_not_doubled(server) -> None:
    response = raw(server.port, b"GET /dated HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _dates(response) == ["Mon, 01 Jan 2024 00:00:00 GMT"]


# -- bodies ----------------------------------------------------------------------------------


def test_a_small_body_in_one_event(server) -> None:
    status, headers, body = request(server.port, "POST", "/echo", b"hello")
    assert (status, body) == (200, b"hello")
    assert headers["content-length"] == "5"  # a body in one piece gets a length


def test_a_chunked_upload_streams_in_pieces(server) -> None:
    pieces = [b"%x\r\n%s\r\n" % (1000, b"a" * 1000) for _ in range(50)]
    response = raw(
        server.port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"".join(pieces)
        + b"0\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b"a" * 50_000


def test_a_big_upload_is_echoed_whole(server) -> None:
    data = os.urandom(5 << 20)
    status, _, body = request(server.port, "POST", "/echo", data)
    assert status == 200 and body == data


def test_reading_pauses_while_the_application_does_not_read(server, mark_file, tmp_path) -> None:
    """The server stops reading past its window: the client's send blocks."""
    go = tmp_path / "go"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        size = 64 << 20
        sock.sendall(
            b"POST /slow-read?go=%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
            % (str(go).encode(), size)
        )
        wait_for(lambda: "slow-read-started" in marks(mark_file), 10, "the app to start")
        sock.setblocking(False)
        sent = 0
        chunk = b"z" * 65536
        stalled_at = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                sent += sock.send(chunk)
                stalled_at = None
            except BlockingIOError:
                stalled_at = stalled_at or time.monotonic()
                if time.monotonic() - stalled_at > 0.5:
                    break
                time.sleep(0.01)  # polling a non-blocking socket: nothing to wait on
        assert stalled_at is not None, "the server read everything without the app reading"
        assert sent < 16 << 20  # a window plus the kernel's buffers, not the whole body
        go.touch()
        sock.setblocking(True)
        remaining = size - sent
        while remaining:
            remaining -= sock.send(chunk[: min(len(chunk), remaining)])
        response = sock.recv(65536)
        while b"\r\n\r\n" not in response:
            response += sock.recv(65536)
        assert response.startswith(b"HTTP/1.1 200 ")
        assert response.endswith(b"%d" % size) or b"%d" % size in response + sock.recv(100)


def test_a_streamed_response_is_chunked(server) -> None:
    response = raw(server.port, b"GET /stream?n=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"8\r\nchunk 0\n\r\n8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n0\r\n\r\n"


def test_a_streamed_response_on_http_1_0_is_close_delimited(server) -> None:
    response = raw(server.port, b"GET /stream?n=2 HTTP/1.0\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"chunked" not in head
    assert body == b"chunk 0\nchunk 1\n"


def test_trailers_follow_a_chunked_body_when_the_client_asks(server, mark_file) -> None:
    response = raw(
        server.port,
        b"GET /trailers?length=1 HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert b"content-length" not in head.lower()  # the app's length gave way to chunked
    assert body == b"5\r\n01234\r\n5\r\n56789\r\n0\r\nx-digest: abc\r\nx-n: 2\r\n\r\n"
    assert "trailers-offered" in marks(mark_file)


def test_trailers_are_not_offered_without_te_or_on_http_1_0(server, mark_file) -> None:
    plain = raw(server.port, b"GET /trailers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert plain.endswith(b"5\r\n56789\r\n0\r\n\r\n")  # chunked, and no trailer section
    old = raw(server.port, b"GET /trailers HTTP/1.0\r\nTE: trailers\r\n\r\n")
    assert old.endswith(b"0123456789") and b"x-digest: abc" not in old
    wait_for(lambda: marks(mark_file).count("trailers-not-offered") >= 2, 5, "both requests")


def test_trailers_announced_but_not_sent_end_the_body_whole(server) -> None:
    response = raw(
        server.port,
        b"GET /trailers?mode=none HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    assert response.endswith(b"5\r\n56789\r\n0\r\n\r\n")


def test_a_forbidden_trailer_cuts_the_response(server) -> None:
    response = raw(
        server.port,
        b"GET /trailers?mode=forbidden HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 200 ")
    assert not response.endswith(b"\r\n\r\n")  # no last chunk: the client sees it cut
    assert b"content-length: abc" not in response


def test_a_big_response_with_back_pressure(server, mark_file) -> None:
    """The app's send() waits while the client does not read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big?mb=64 HTTP/1.1\r\nHost: x\r\n\r\n")
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        # Without reading: the app must be held back well before 64 MiB.
        with pytest.raises(AssertionError):
            wait_for(lambda: "big-sent" in marks(mark_file), 1.0, "the app to send it all")
        total = len(first.partition(b"\r\n\r\n")[2])
        while total < 64 << 20:
            data = sock.recv(1 << 20)
            assert data
            total += len(data)
        assert total == 64 << 20
    wait_for(lambda: "big-sent" in marks(mark_file), 10, "the app to finish")


def test_a_head_without_a_length_goes_before_a_late_body(server, mark_file, tmp_path) -> None:
    """Server-sent events: the head leaves with ``http.response.start``'s turn
    of the loop, not with the first event (EventSource clients and proxies
    see the 200 at once, as from uvicorn); the body that follows is chunked."""
    go = tmp_path / "go"
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /events-later?go=%s HTTP/1.1\r\nHost: x\r\n\r\n" % bytes(go))
        wait_for(lambda: "events-started" in marks(mark_file), 10, "the start to be sent")
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)  # (bounded: the socket's timeout)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"transfer-encoding: chunked" in head.lower()
        go.touch()
        rest = head.partition(b"\r\n\r\n")[2]
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(4096)
            assert chunk, rest
            rest += chunk
    assert rest == b"9\r\ndata: 1\n\n\r\n0\r\n\r\n"


def test_head_gets_no_body_and_204_304_neither(server) -> None:
    status, headers, body = request(server.port, "HEAD", "/scope")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    for code in (204, 304):
        response = raw(
            server.port, b"GET /status/%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % code
        )
        assert response.startswith(b"HTTP/1.1 %d " % code)
        assert response.endswith(b"\r\n\r\n")
        assert b"Content-Length" not in response and b"chunked" not in response


def test_head_answered_with_gets_body_says_gets_length(server) -> None:
    """An application that sends GET's body to HEAD, with no content-length of
    its own: HEAD says the length GET says (RFC 9110 9.3.2), and sends no body."""
    _, get_headers, get_body = request(server.port, "GET", "/state")
    status, head_headers, head_body = request(server.port, "HEAD", "/state")
    assert status == 200 and head_body == b"" and get_body
    assert head_headers["content-length"] == get_headers["content-length"] == str(len(get_body))
    # An empty body to HEAD (a HEAD-aware application): no length is made up.
    response = raw(
        server.port, b"HEAD /status/200 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"\r\n\r\n")
    assert b"content-length" not in response.lower()


def test_pathsend_sends_the_file(server) -> None:
    status, headers, body = request(server.port, "GET", "/file")
    assert status == 200
    assert body == (APPS / "asgi_app.py").read_bytes()
    assert headers["content-length"] == str(len(body))


def test_keep_alive_across_requests(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for i in range(5):
            conn.request("POST", "/echo", body=b"n%d" % i)
            response = conn.getresponse()
            assert response.read() == b"n%d" % i
        conn.request("GET", "/stream?n=1")
        assert conn.getresponse().read() == b"chunk 0\n"
    finally:
        conn.close()


def test_each_request_runs_as_its_own_task_with_its_own_context(server) -> None:
    """The application runs in a Task (anyio and sniffio need ``current_task()``),
    the same one across its awaits, in a context of its own: a context variable
    one request set is not seen by the next, on the same keep-alive connection."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        for query in ("", "wait=1", "", "wait=1&x=2", ""):
            conn.request("GET", f"/task?{query}")
            response = conn.getresponse()
            assert response.status == 200
            seen = json.loads(response.read())
            assert seen["task"] is not None and "Task" in seen["task"], seen
            assert seen["same_task_after_await"] is True
            assert seen["found"] == "unset", seen  # nothing leaked from the request before
            assert seen["now"] == (query or "set")
    finally:
        conn.close()


# -- the client goes ---------------------------------------------------------------------------


def test_http_disconnect_reaches_a_waiting_app(server, mark_file) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(b"GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: "waiting" in marks(mark_file), 10, "the app to wait in receive()")
    wait_for(lambda: "http.disconnect" in marks(mark_file), 10, "http.disconnect")


def test_a_stream_whose_client_resets_ends_and_the_worker_serves_on(server, mark_file) -> None:
    """A reset leaves the transport closing: writes go nowhere and its buffer
    never fills, so an application streaming from memory never waited in
    send(), the loop never got the turn in which it would learn of the
    reset, and the worker froze (the master killed it as hung). send() now
    raises ClientGone at once (a disconnect: no error logged)."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(b"GET /stream-forever HTTP/1.1\r\nHost: x\r\n\r\n")
    got = 0
    while got < 65536:  # the stream runs
        chunk = sock.recv(65536)
        assert chunk
        got += len(chunk)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset
    assert request(server.port, "GET", "/state")[0] == 200  # (froze: timed out)
    wait_for(lambda: "stream-ended:ClientGone" in marks(mark_file), 5, "the application's end")


def test_a_stream_whose_request_is_refused_mid_body_ends_at_once(server, mark_file) -> None:
    """The request body turns out malformed while the response streams: the
    connection is refused (400 is too late: a close), lingering to read what
    the client still sends, its writes dropped. The application learns it at
    its next send(), not when the linger ends (it streamed into the void
    until then)."""
    before = marks(mark_file).count("stream-ended:ClientGone")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /stream-forever HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        got = 0
        while got < 65536:  # the stream runs
            chunk = sock.recv(65536)
            assert chunk
            got += len(chunk)
        sock.sendall(b"zz\r\n")  # not a chunk size: refused
        wait_for(
            lambda: marks(mark_file).count("stream-ended:ClientGone") > before,
            LINGER / 2,  # (the client keeps its socket: the linger runs its 2 s)
            "the application's end, before the linger's",
        )


def test_100_continue_goes_out_when_the_application_reads_the_body(server) -> None:
    first, rest = post_expecting_continue(server.port, "/echo", b"hello")
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\nhello"), rest


def test_no_100_continue_when_the_application_answers_without_the_body(server) -> None:
    """RFC 9110 10.1.1: the 100 only invites a body the server will read; an
    application that answers at once gets its answer out first, and the client
    never sends the body."""
    first, rest = post_expecting_continue(server.port, "/status/204", b"hello")
    assert first.startswith(b"HTTP/1.1 204 "), first
    assert rest == b""


@pytest.mark.parametrize(
    ("head", "status"),
    [
        # answered before the body is read (a 401, a 405 as frameworks do)
        (b"POST /status/401 HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n", 401),
        # refused at the head: over --max-body-size (100 MiB)
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000000\r\n\r\n", 413),
    ],
)
def test_a_client_still_sending_gets_the_answer_then_a_clean_close(
    server, head: bytes, status: int
) -> None:
    """RFC 9112 9.6: closing with the client's bytes unread would make the
    kernel reset the connection, which can destroy the answer before the
    client reads it; the server half-closes after its answer and drops what
    still comes, so the client reads the answer and then an orderly end
    (not ECONNRESET), and its sending ends within LINGER seconds."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    stopped = threading.Event()
    sent_error: list[BaseException] = []

    def keep_sending() -> None:
        piece = b"x" * 65536
        try:
            # More with the head than one read takes (uvloop reads 256 KiB at
            # most): bytes are unread in the kernel when the answer goes.
            sock.sendall(head + b"x" * (4 << 20))
            while not stopped.is_set():
                sock.sendall(piece)
        except OSError as exc:  # the server's close, after its linger
            sent_error.append(exc)

    try:
        sender = threading.Thread(target=keep_sending, daemon=True)
        sender.start()
        received = b""
        deadline = time.monotonic() + 10
        while chunk := sock.recv(65536):  # (a reset raises ConnectionResetError)
            received += chunk
            assert time.monotonic() < deadline, "no close after the answer"
        assert received.startswith(b"HTTP/1.1 %d " % status), received[:100]
        assert b"Connection: close" in received or b"connection: close" in received
        # The server still reads (and drops) what comes after its FIN: the
        # client's sending goes on, it is not reset at once.  (Without the
        # linger the reset comes within milliseconds; the sender or the
        # reader above sees it, whichever asks the socket first.)
        sender.join(timeout=LINGER / 4)
        assert sender.is_alive(), f"the client was cut at once: {sent_error}"
        sender.join(timeout=LINGER + 5)
        assert not sender.is_alive(), "the server kept reading past its linger"
        assert sent_error, "the sender stopped without the server's close"
    finally:
        stopped.set()
        sock.close()
    assert request(server.port, "GET", "/state")[0] == 200  # the worker is fine


# -- an application that gets ASGI wrong ---------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "log"),
    [
        ("/misuse/start-twice", "'http.response.start' sent twice"),
        ("/misuse/body-first", "'http.response.body' sent before 'http.response.start'"),
        ("/misuse/str-body", "'body' must be bytes, got str"),
        ("/misuse/raise", "RuntimeError: application bug"),
        ("/misuse/no-response", "returned without completing its response"),
        ("/misuse/header-split", "holds CR, LF or a control character"),
        ("/misuse/header-control", "holds CR, LF or a control character"),
        ("/misuse/late-header-split", "holds CR, LF or a control character"),
        ("/misuse/header-name-space", "invalid response header name b'x y'"),
        ("/misuse/header-name-colon", "invalid response header name b'x:y'"),
        ("/misuse/header-name-empty", "invalid response header name b''"),
        ("/misuse/unknown-message", "unexpected message type 'http.response.bogus'"),
        ("/misuse/length-long", "longer than its Content-Length (3)"),
        ("/misuse/length-short", "shorter than its Content-Length (2 of 10 bytes)"),
        ("/misuse/length-invalid", "invalid or conflicting Content-Length"),
        ("/misuse/length-conflict", "invalid or conflicting Content-Length"),
        ("/misuse/informational", "invalid status 101"),
        ("/status/600", "invalid status 600"),
        ("/status/999", "invalid status 999"),
    ],
)
def test_misuse_before_the_body_is_a_500(server, path: str, log: str) -> None:
    response = raw(server.port, b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
    assert response.startswith(b"HTTP/1.1 500 Internal Server Error\r\n"), response
    assert b"Connection: close" in response
    assert b"a\r\nb: c" not in response
    assert b"HTTP/1.1 200" not in response and b"HTTP/1.1 101" not in response
    assert response.count(b"HTTP/1.1 ") == 1  # one response, nothing smuggled behind it
    wait_for(lambda: log in server.stderr_text(), 5, f"the log line {log!r}")
    assert request(server.port, "GET", "/state")[0] == 200  # the worker is fine


@pytest.mark.parametrize(
    ("path", "framing", "body"),
    [
        ("/framing/te-stream", b"Transfer-Encoding: chunked", b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"),
        ("/framing/te-whole", b"Transfer-Encoding: chunked", b"6\r\nabcdef\r\n0\r\n\r\n"),
        ("/framing/te-and-length", b"Content-Length: 6", b"abcdef"),
        ("/framing/204-length", None, b""),
        ("/framing/length-ows", b"content-length:  6\t", b"abcdef"),
        # the same length twice goes out once (nginx refuses an upstream's duplicate)
        ("/framing/length-twice", b"Content-Length: 6", b"abcdef"),
    ],
)
def test_the_applications_framing_headers_never_make_a_broken_response(
    server, path: str, framing: bytes | None, body: bytes
) -> None:
    """An application's Transfer-Encoding (uvicorn users set it) gives way to
    the server's own framing: never beside a Content-Length, never a body the
    header does not describe; a 204 carries no Content-Length (RFC 9110 8.6).
    A second request on the connection proves the client finds the end."""
    response = raw(
        server.port,
        b"GET %s HTTP/1.1\r\nHost: x\r\n\r\nGET /status/200 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n" % path.encode(),
    )
    first, _, rest = response.partition(b"\r\n\r\n")
    lines = first.split(b"\r\n")
    assert lines[0] == (b"HTTP/1.1 204 No Content" if "204" in path else b"HTTP/1.1 200 OK")
    framing_lines = [
        line
        for line in lines[1:]
        if line.lower().startswith((b"content-length:", b"transfer-encoding:"))
    ]
    assert framing_lines == ([framing] if framing else []), first
    assert rest.startswith(body + b"HTTP/1.1 200 OK\r\n"), response


def test_bytearray_headers_and_body_are_accepted(server) -> None:
    for _ in range(2):  # the second time from the server's cache of checked heads
        response = raw(
            server.port, b"GET /bytearray-headers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        head, _, body = response.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK\r\n"), response
        assert b"\r\nx-made-of: bytearray\r\n" in head + b"\r\n"
        assert body == b"fine"


def test_an_exception_mid_body_cuts_the_response(server) -> None:
    response = raw(server.port, b"GET /misuse/raise-mid-body HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"chunked" in head
    assert body == b"7\r\npartial\r\n"  # no last chunk: the client knows it is cut
    wait_for(lambda: "application bug in the middle" in server.stderr_text(), 5, "the traceback")


def test_an_exception_mid_body_on_http_1_0_ends_with_a_reset(server) -> None:
    """HTTP/1.0, no Content-Length: only the close ends the body, and a FIN
    after the application's exception made the cut body look whole (curl
    -0 exited 0); a reset says it was cut."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /misuse/raise-mid-body HTTP/1.0\r\n\r\n")
        received, outcome = read_to_the_end(sock, 5)
    assert not received or received.startswith(b"HTTP/1.1 200 ")
    assert outcome == "reset", (outcome, received)


def test_an_exception_after_a_whole_response_is_logged_though_the_client_left(server) -> None:
    """A framework's background task runs after the response is complete,
    often once the client has gone (``Connection: close``, a one-shot
    client): its exception is the application's error all the same, and is
    logged with its traceback (it was taken for the client's leaving and
    dropped)."""
    response = raw(
        server.port,
        b"GET /misuse/raise-after-response?after=0.2 HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"done")
    wait_for(
        lambda: "RuntimeError: application bug after the response" in server.stderr_text(),
        5,
        "the background failure's traceback",
    )


@pytest.mark.parametrize(
    ("path", "log"),
    [
        ("/misuse/length-long-stream", "longer than its Content-Length (3)"),
        ("/misuse/length-short-stream", "shorter than its Content-Length (2 of 10 bytes)"),
    ],
)
def test_a_body_off_its_content_length_is_cut_never_overrun(server, path: str, log: str) -> None:
    """Once the head is out, a body that breaks the application's own
    Content-Length ends in a close: the bytes past the length (which a client
    or a proxy would read as the next response) are never sent, and a short
    body does not leave the client waiting for the rest."""
    request_bytes = b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode()
    response = raw(server.port, request_bytes + b"GET /state HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = response.partition(b"\r\n\r\n")
    length = b"3" if "long" in path else b"10"
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"\r\ncontent-length: %s" % length in head
    assert body == b"ab"
    wait_for(lambda: log in server.stderr_text(), 5, f"the log line {log!r}")
    assert request(server.port, "GET", "/state")[0] == 200  # the worker is fine


# -- interface detection -------------------------------------------------------------------------


async def _asgi_function(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    pass


class _ASGIClass:
    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        pass


def test_auto_recognises_asgi_applications() -> None:
    assert detect_interface(_asgi_function) == "asgi"
    assert detect_interface(_ASGIClass()) == "asgi"
    assert isinstance(request_callback_for(_asgi_function), ASGIAdapter)
    assert isinstance(request_callback_for(_ASGIClass(), "asgi"), ASGIAdapter)


def test_an_asgi2_class_is_served_through_a_wrapper(tmp_path: Path) -> None:
    """ASGI 2 ("double callable": the class called with the scope, the
    instance awaited): recognised by ``auto`` and wrapped, as uvicorn does;
    it used to be called as ASGI 3 (a TypeError, a 500 per request)."""
    from prefork.worker.asgi import is_asgi2
    from tests.apps.asgi2_app import App

    assert is_asgi2(App) and not is_asgi2(_ASGIClass()) and not is_asgi2(_asgi_function)
    assert detect_interface(App) == "asgi"
    server = Cli(tmp_path, "-w", "1", "--interface", "auto", app="tests.apps.asgi2_app:App")
    try:
        port = server.port()
        server.wait_workers(1)
        status, _, body = request(port, "GET", "/x/y")
        assert (status, body) == (200, b"asgi2 /x/y")
        assert server.stop() == 0
    finally:
        server.kill_group()


# -- the command line: lifespan ----------------------------------------------------------------


LIFESPAN_APP = "tests.apps.asgi_app:app"


def _start_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> Cli:
    return Cli(tmp_path, "--interface", "asgi", *args, env=env, app=LIFESPAN_APP)


def test_a_request_still_running_at_the_graceful_timeout_gets_its_cleanup_and_the_shutdown(
    tmp_path: Path,
) -> None:
    """A request that never answers, then TERM with --graceful-timeout 6: the
    worker closes it early enough (a quarter of the timeout, at most 3 s, is
    kept) that the cancelled application finishes its cleanup and the
    lifespan shutdown runs, before the master's kill (which used to come
    0.5 s after the close: neither ran, and the worker died by SIGKILL)."""
    notes = tmp_path / "marks"
    server = _start_cli(
        tmp_path, "-w", "1", "--graceful-timeout", "6", env={"ASGI_TEST_MARK": str(notes)}
    )
    try:
        port = server.port()
        server.wait_workers(1)
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            sock.sendall(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(lambda: "hang-started" in marks(notes), 5, "the request to be in flight")
            assert server.stop() == 0
            assert sock.recv(100) == b""  # closed without an answer
        assert marks(notes) == ["startup", "hang-started", "hang-cleanup-done", "shutdown"]
        log = server.log()
        assert "SIGKILL" not in log and "(exit status 0)" in log, log[-2000:]
        assert "still open at graceful_timeout (less 1.5 s kept for the shutdown)" in log
    finally:
        server.kill_group()


def test_a_callbacks_own_async_shutdown_without_a_timeout_is_awaited(tmp_path: Path) -> None:
    """The CLI gives ASGIAdapter.shutdown() the time left before the master's
    kill; a request callback of the user's own with ``async def shutdown(self)``
    is still awaited, without the argument it does not take."""
    mark = tmp_path / "mark"
    server = Cli(
        tmp_path,
        "-w",
        "1",
        "--interface",
        "callback",
        env={"SHUTDOWN_MARK": str(mark)},
        app="tests.apps.callback_shutdown_app:app",
    )
    try:
        port = server.port()
        server.wait_workers(1)
        assert request(port, "GET", "/")[0] == 200
        assert server.stop() == 0
        assert mark.read_text().startswith("shutdown "), server.log()[-2000:]
    finally:
        server.kill_group()


def test_lifespan_runs_in_every_worker_around_its_life(tmp_path: Path) -> None:
    notes = tmp_path / "marks"
    server = _start_cli(tmp_path, "-w", "2", env={"ASGI_TEST_MARK": str(notes)})
    try:
        port = server.port()
        server.wait_workers(2)
        assert marks(notes) == ["startup", "startup"]  # before the workers were ready
        assert json.loads(request(port, "GET", "/state")[2])["opened"] == "yes"
        assert server.stop() == 0
        assert marks(notes) == ["startup", "startup", "shutdown", "shutdown"]
    finally:
        server.kill_group()


def test_no_date_header_leaves_the_date_out(tmp_path: Path) -> None:
    server = _start_cli(tmp_path, "-w", "1", "--no-date-header", env={})
    try:
        port = server.port()
        server.wait_workers(1)
        for path in (b"/state", b"/stream?n=2"):
            response = raw(port, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
            assert response.startswith(b"HTTP/1.1 200 ") and _dates(response) == [], response
        assert server.stop() == 0
    finally:
        server.kill_group()


def test_a_failing_startup_exits_3_with_the_message_once(tmp_path: Path) -> None:
    server = _start_cli(
        tmp_path, "-w", "2", "--lifespan", "on", env={"ASGI_TEST_STARTUP_FAIL": "1"}
    )
    try:
        assert server.proc.wait(30) == 3
        log = server.log()
        assert log.count("application startup failed: no database") == 1, log
        assert "Traceback" not in log
    finally:
        server.kill_group()


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork", "--check-config", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_factories() -> None:
    for args in (["tests.apps.asgi_app:make_app()"], ["--factory", "tests.apps.asgi_app:make_app"]):
        result = _check(*args)
        assert result.returncode == 0, result.stderr
        assert "configuration OK" in result.stdout
    bad = _check("tests.apps.asgi_app:not_a_factory()")
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "prefork: error: app 'tests.apps.asgi_app:not_a_factory()': "
        "the factory returned 42, not an application"
    )


# -- WebSockets in the supervisor --------------------------------------------------------------


def _status(pidfile: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "prefork", "status", "--pidfile", str(pidfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_status_shows_open_websockets_and_max_requests_counts_them(tmp_path: Path) -> None:
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    notes = tmp_path / "marks"
    server = _start_cli(
        tmp_path, "-w", "1", "--max-requests", "3", env={"ASGI_TEST_MARK": str(notes)}
    )
    try:
        port = server.port()
        [first] = server.wait_workers(1)
        with contextlib.ExitStack() as stack:
            url = f"ws://127.0.0.1:{port}/ws"
            clients = [stack.enter_context(connect(url, proxy=None)) for _ in range(2)]
            for i, client in enumerate(clients):
                client.send(f"hello {i}")
                assert client.recv(timeout=10) == f"hello {i}"
            wait_for(lambda: marks(notes).count("ws-accepted") == 2, 10, "two accepted WebSockets")
            lines = [line.split() for line in _status(server.pidfile).splitlines()[2:]]
            assert [(int(row[1]), int(row[6]), int(row[7])) for row in lines] == [(first, 2, 2)]
            # The third WebSocket reaches max_requests: the worker is recycled and
            # its open WebSockets are told 1012 (Service Restart).
            third = stack.enter_context(connect(url, proxy=None))
            for client in (*clients, third):
                with pytest.raises(ConnectionClosed) as closed:
                    client.recv(timeout=15)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        wait_for(lambda: server.ready_workers() not in ([], [first]), 15, "the replacement")
        assert marks(notes).count("ws-disconnect-1012") == 3
        assert server.stop() == 0
    finally:
        server.kill_group()
