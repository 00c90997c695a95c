"""File bodies with zero copies, large bodies, and HEAD framing, over real sockets.

The server is ``tests/apps/file_app.py`` (``HTTPServer`` with a WSGI, ASGI,
Django or callback application) in a subprocess, stopped by pid.  It counts
its own ``os.sendfile`` calls (``/stats``), so each test can tell the
zero-copy path (``wsgi.file_wrapper``, ``http.response.pathsend``) from
reading the file.  The clients are ``http.client``, ``requests`` and raw
sockets; every wait is bounded.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import wait_for

APPS = Path(__file__).resolve().parent.parent / "apps"
FILE_APP = APPS / "file_app.py"
TIMEOUT = 10.0
SIZE = 3_000_000  # more than one socket buffer's worth on loopback


def pattern(size: int) -> bytes:
    """What file_app.pattern(size) gives."""
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


class Server:
    def __init__(self, process, tls_ca: str | None = None) -> None:
        self.process = process
        self.port = process.port
        self.tls_ca = tls_ca

    def connection(self) -> http.client.HTTPConnection:
        if self.tls_ca is None:
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        context = ssl.create_default_context(cafile=self.tls_ca)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=TIMEOUT, context=context)

    def request(self, method: str, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
        conn = self.connection()
        try:
            conn.request(method, path)
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        finally:
            conn.close()

    def stats(self) -> dict:
        status, _, body = self.request("GET", "/stats")
        assert status == 200
        return json.loads(body)


def closed_once(server: Server, before: dict) -> None:
    """Wait (bounded) for the application's file to be closed, exactly once.

    The server closes the body after its last byte is handed over, so the
    client can have the whole body (and ask for /stats) a moment before.
    """
    wait_for(lambda: server.stats()["closed"] > before["closed"], TIMEOUT, "the file to be closed")
    assert server.stats()["closed"] == before["closed"] + 1


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("files") / "data.bin"
    path.write_bytes(os.urandom(SIZE))
    return path


def _start(spawner, *args: object) -> Server:
    return Server(spawner(FILE_APP, *args))


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def wsgi(request, module_spawn) -> Server:
    """The WSGI app, on uvloop and on asyncio's own loop (their transports differ)."""
    loop = ("--asyncio",) if request.param == "asyncio" else ()
    return _start(module_spawn, "--interface", "wsgi", *loop)


@pytest.fixture(scope="module")
def asgi(module_spawn) -> Server:
    return _start(module_spawn, "--interface", "asgi")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> tuple[Path, Path, Path]:
    import trustme  # a dev dependency

    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    paths = tuple(directory / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(paths[0]))
    cert.private_key_pem.write_to_path(str(paths[1]))
    ca.cert_pem.write_to_path(str(paths[2]))
    return paths  # type: ignore[return-value]


def _tls(spawner, certs, interface: str) -> Server:
    cert, key, ca = certs
    process = spawner(FILE_APP, "--interface", interface, "--certfile", cert, "--keyfile", key)
    return Server(process, str(ca))


# -- HEAD is framed as GET (RFC 9110 9.3.2) -------------------------------------------------

HEAD_CASES = [
    "/write-list",  # write() twice, then a list of one: GET streams (chunked)
    "/write-only",  # write() only, an empty list
    "/generator",  # a generator (its first piece empty)
    "/list-several",  # a list of three: streamed
    "/list-one",  # a list of one: Content-Length
    "/declared",  # the application's Content-Length, with write() and a list
    "/empty",  # an empty list
    "/bytesio?size=5000",  # a file wrapper without a file descriptor
    "/bytesio?size=5000&cl=1",
    "/big?size=200000",  # one large piece
]


@pytest.mark.parametrize("path", HEAD_CASES)
def test_head_has_the_framing_get_has(wsgi: Server, path: str) -> None:
    """HEAD's Content-Length, when it has one, is GET's body length (never a last piece)."""
    get_status, get_headers, get_body = wsgi.request("GET", path)
    head_status, head_headers, head_body = wsgi.request("HEAD", path)
    assert get_status == head_status == 200
    assert head_body == b""
    get_length = get_headers.get("Content-Length")
    head_length = head_headers.get("Content-Length")
    if get_length is not None:
        assert int(get_length) == len(get_body)
    else:
        assert get_headers.get("Transfer-Encoding") == "chunked"
    if head_length is not None:
        assert head_length == get_length, f"HEAD says {head_length}, GET sends {len(get_body)}"
    elif get_length is not None:
        assert get_length == "0"  # (an empty body: HEAD may leave it out)
    assert head_headers.get("Transfer-Encoding") is None


def test_head_after_write_then_one_piece_is_not_the_last_piece(wsgi: Server) -> None:
    """The reported bug: write() then ``return [last]`` gave HEAD ``Content-Length: 5``."""
    _, get_headers, get_body = wsgi.request("GET", "/write-list")
    _, head_headers, _ = wsgi.request("HEAD", "/write-list")
    assert get_body == b"one,two,three"
    assert head_headers.get("Content-Length") in (None, str(len(get_body)))


def test_head_on_a_kept_alive_connection_leaves_it_usable(wsgi: Server) -> None:
    conn = wsgi.connection()
    try:
        for method, path in [("HEAD", "/write-list"), ("GET", "/list-one"), ("HEAD", "/big")]:
            conn.request(method, path)
            response = conn.getresponse()
            body = response.read()
            assert response.status == 200
            assert body == (b"only piece" if path == "/list-one" else b"")
        conn.request("GET", "/write-only")
        assert conn.getresponse().read() == b"one,two"
    finally:
        conn.close()


# -- wsgi.file_wrapper ----------------------------------------------------------------------


def test_file_wrapper_sends_a_regular_file_with_sendfile(wsgi: Server, data_file: Path) -> None:
    before = wsgi.stats()
    status, headers, body = wsgi.request("GET", f"/wrapper?path={data_file}")
    assert status == 200
    assert body == data_file.read_bytes()
    assert headers["Content-Length"] == str(SIZE)
    after = wsgi.stats()
    assert after["sendfile_calls"] > before["sendfile_calls"]
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == SIZE
    closed_once(wsgi, before)  # close() of the wrapper closed the file


def test_file_wrapper_from_the_current_position_and_the_apps_length(
    wsgi: Server, data_file: Path
) -> None:
    data = data_file.read_bytes()
    # From where the application left the file (a buffered read: tell() is the truth).
    status, headers, body = wsgi.request("GET", f"/wrapper?path={data_file}&seek=1000")
    assert status == 200 and body == data[1000:]
    assert headers["Content-Length"] == str(SIZE - 1000)
    # The application's Content-Length is what goes.
    status, headers, body = wsgi.request("GET", f"/wrapper?path={data_file}&seek=10&cl=5000")
    assert body == data[10:5010] and headers["Content-Length"] == "5000"


def test_file_wrapper_shorter_than_declared_closes_the_connection(
    wsgi: Server, data_file: Path
) -> None:
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        path = f"/wrapper?path={data_file}&seek={SIZE - 100}&cl=1000"
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        else:
            raise AssertionError("the server kept the connection open after a short body")
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert b"Content-Length: 1000" in head
    assert body == data_file.read_bytes()[-100:]


def test_file_wrapper_head_sends_the_length_and_no_body(wsgi: Server, data_file: Path) -> None:
    before = wsgi.stats()
    status, headers, body = wsgi.request("HEAD", f"/wrapper?path={data_file}")
    assert status == 200 and body == b""
    assert headers["Content-Length"] == str(SIZE)
    after = wsgi.stats()
    assert after["sendfile_calls"] == before["sendfile_calls"]
    closed_once(wsgi, before)


def test_file_wrapper_bytesio_is_read_in_blocks(wsgi: Server) -> None:
    before = wsgi.stats()
    status, headers, body = wsgi.request("GET", "/bytesio?size=100000")
    assert status == 200 and body == pattern(100000)
    assert headers.get("Transfer-Encoding") == "chunked"  # (no length given, none known)
    status, headers, body = wsgi.request("GET", "/bytesio?size=100000&cl=1")
    assert body == pattern(100000) and headers["Content-Length"] == "100000"
    assert wsgi.stats()["sendfile_calls"] == before["sendfile_calls"]


def test_file_wrapper_then_pipelined_requests_in_order(wsgi: Server, data_file: Path) -> None:
    """What is written while the file goes (nothing may be) follows it, in order."""
    data = data_file.read_bytes()
    request = (
        f"GET /wrapper?path={data_file} HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /list-one HTTP/1.1\r\nHost: x\r\n\r\n"
        f"GET /wrapper?path={data_file}&cl=10 HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /write-list HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received = bytearray()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += chunk
    stream = bytes(received)
    head, _, rest = stream.partition(b"\r\n\r\n")
    assert b"Content-Length: %d" % SIZE in head
    assert rest[:SIZE] == data
    rest = rest[SIZE:]
    head, _, rest = rest.partition(b"\r\n\r\n")
    assert rest.startswith(b"only piece")
    head, _, rest = rest[len(b"only piece") :].partition(b"\r\n\r\n")
    assert b"Content-Length: 10" in head and rest[:10] == data[:10]
    head, _, rest = rest[10:].partition(b"\r\n\r\n")
    assert b"chunked" in head and rest == b"4\r\none,\r\n4\r\ntwo,\r\n5\r\nthree\r\n0\r\n\r\n"


def test_file_wrapper_back_pressure_from_a_slow_reader(wsgi: Server, tmp_path: Path) -> None:
    """A 64 MiB file to a client that reads slowly: sent as the client reads, never held."""
    path = tmp_path / "large.bin"
    with open(path, "wb") as file:
        for _ in range(64):
            file.write(os.urandom(1 << 20))
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    before = wsgi.stats()
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        sock.sendall(f"GET /wrapper?path={path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        for _ in range(50):  # slowly at first: the socket's buffers fill up
            received += sock.recv(16384)
            time.sleep(0.002)
        stalled = wsgi.stats()
        assert stalled["sendfile_bytes"] - before["sendfile_bytes"] < 48 << 20
        assert stalled["closed"] == before["closed"]  # still sending
        head_end = received.find(b"\r\n\r\n") + 4
        while len(received) - head_end < 64 << 20:
            chunk = sock.recv(1 << 20)
            assert chunk, "the server closed early"
            received += chunk
    assert hashlib.sha256(received[head_end:]).hexdigest() == expected
    after = wsgi.stats()
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == 64 << 20
    assert after["sendfile_calls"] - before["sendfile_calls"] > 2  # it waited for the socket
    pid = after["pid"]
    rss = next(line for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM"))
    assert int(rss.split()[1]) < 60_000, rss  # kB: the 64 MiB never came into memory


def test_a_client_leaving_mid_file_closes_the_file(wsgi: Server, tmp_path: Path) -> None:
    path = tmp_path / "large.bin"
    path.write_bytes(b"z" * (32 << 20))
    before = wsgi.stats()
    sock = socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT)
    sock.sendall(f"GET /wrapper?path={path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert sock.recv(65536)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # (a reset)
    wait_for(lambda: wsgi.stats()["closed"] > before["closed"], TIMEOUT, "the file to be closed")
    status, _, body = wsgi.request("GET", "/list-one")  # the server goes on
    assert status == 200 and body == b"only piece"


def test_file_wrapper_over_tls_reads_the_file(spawn, certs, data_file: Path) -> None:
    server = _tls(spawn, certs, "wsgi")
    before = server.stats()
    status, headers, body = server.request("GET", f"/wrapper?path={data_file}&block=65536")
    assert status == 200 and body == data_file.read_bytes()
    assert headers["Content-Length"] == str(SIZE)  # (known from the file: not chunked)
    after = server.stats()
    assert after["sendfile_calls"] == before["sendfile_calls"]
    closed_once(server, before)
    status, headers, body = server.request("HEAD", f"/wrapper?path={data_file}")
    assert body == b"" and headers["Content-Length"] == str(SIZE)


def test_file_wrapper_over_tls_reads_in_large_blocks(spawn, certs, data_file: Path) -> None:
    """Django's 4 KiB block_size is a hint: over TLS a regular file is read in
    64 KiB pieces (each read is a hand-over to the loop), not 750 small ones."""
    server = _tls(spawn, certs, "wsgi")
    before = server.stats()
    status, _, body = server.request("GET", f"/wrapper?path={data_file}&block=4096")
    assert status == 200 and body == data_file.read_bytes()
    reads = server.stats()["file_reads"] - before["file_reads"]
    assert 0 < reads <= SIZE // 65536 + 4, reads


def test_django_file_response_goes_through_the_file_wrapper(spawn, data_file: Path) -> None:
    server = _start(spawn, "--interface", "django")
    before = server.stats()
    response = requests.get(
        f"http://127.0.0.1:{server.port}/file", params={"path": str(data_file)}, timeout=TIMEOUT
    )
    assert response.status_code == 200
    assert response.content == data_file.read_bytes()
    assert response.headers["Content-Length"] == str(SIZE)
    after = server.stats()
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == SIZE
    closed_once(server, before)


# -- ASGI http.response.pathsend ------------------------------------------------------------


def test_pathsend_uses_sendfile(asgi: Server, data_file: Path) -> None:
    before = asgi.stats()
    status, headers, body = asgi.request("GET", f"/pathsend?path={data_file}")
    assert status == 200 and body == data_file.read_bytes()
    assert headers["Content-Length"] == str(SIZE)
    after = asgi.stats()
    assert after["sendfile_bytes"] - before["sendfile_bytes"] == SIZE
    status, headers, body = asgi.request("HEAD", f"/pathsend?path={data_file}")
    assert status == 200 and body == b"" and headers["Content-Length"] == str(SIZE)
    assert asgi.stats()["sendfile_bytes"] == after["sendfile_bytes"]


def test_pathsend_keeps_the_connection_for_the_next_request(asgi: Server, data_file: Path) -> None:
    conn = asgi.connection()
    try:
        for _ in range(3):
            conn.request("GET", f"/pathsend?path={data_file}")
            response = conn.getresponse()
            assert response.read() == data_file.read_bytes()
        conn.request("GET", "/big?size=10")
        assert conn.getresponse().read() == pattern(10)
    finally:
        conn.close()


def test_pathsend_over_tls_reads_the_file(spawn, certs, data_file: Path) -> None:
    server = _tls(spawn, certs, "asgi")
    status, headers, body = server.request("GET", f"/pathsend?path={data_file}")
    assert status == 200 and body == data_file.read_bytes()
    assert headers["Content-Length"] == str(SIZE)
    assert server.stats()["sendfile_calls"] == 0


# -- large bodies: head and body apart, whatever the interface -------------------------------


@pytest.mark.parametrize(
    "path",
    ["/big?size=1048576", "/big?size=1048576&pieces=3", "/big?size=70000", "/big?size=5000"],
)
def test_wsgi_large_bodies_arrive_whole(wsgi: Server, path: str) -> None:
    status, headers, body = wsgi.request("GET", path)
    size = int(path.split("size=")[1].split("&")[0])
    assert status == 200 and body == pattern(size)
    if "pieces" in path:
        assert headers.get("Transfer-Encoding") == "chunked"  # (large chunks, framed apart)
    else:
        assert headers["Content-Length"] == str(size)


@pytest.mark.parametrize("query", ["", "&cl=1", "&more=1", "&more=1&cl=1"])
def test_asgi_large_bodies_arrive_whole(asgi: Server, query: str) -> None:
    status, headers, body = asgi.request("GET", f"/big?size=1048576{query}")
    assert status == 200 and body == pattern(1 << 20)
    if "more=1" in query and "cl=1" not in query:
        assert headers.get("Transfer-Encoding") == "chunked"
    else:
        assert headers["Content-Length"] == str(1 << 20)
    _, head_headers, head_body = asgi.request("HEAD", f"/big?size=1048576{query}")
    assert head_body == b""
    assert head_headers.get("Content-Length") in (None, headers["Content-Length"])


def test_raw_head_alone_goes_with_its_body_or_at_once(spawn) -> None:
    """A raw head written alone is held for the body's write, never for longer."""
    server = _start(spawn, "--interface", "callback")
    status, headers, body = server.request("GET", "/raw-big?size=1048576")
    assert status == 200 and body == pattern(1 << 20)
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /raw-later HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        head = sock.recv(65536)
        assert head.endswith(b"chunked\r\n\r\n")  # the head alone, not waiting for the body
        assert time.monotonic() - started < 0.25
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
        assert rest == b"5\r\nlater\r\n0\r\n\r\n"


def test_callback_large_body_over_http_1_0_and_1_1(spawn) -> None:
    server = _start(spawn, "--interface", "callback")
    for version in ("HTTP/1.0", "HTTP/1.1"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(
                f"GET /big?size=1048576 {version}\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            received = bytearray()
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                received += chunk
        head, _, body = bytes(received).partition(b"\r\n\r\n")
        assert b"Content-Length: 1048576" in head and body == pattern(1 << 20)


# -- the sender itself, in-process, on a socket pair ----------------------------------------


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _run_until(loop, predicate, what: str):  # type: ignore[no-untyped-def]
    """Turn ``loop`` until ``predicate()`` holds (bounded by TIMEOUT); return its value."""
    import asyncio

    deadline = time.monotonic() + TIMEOUT
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {TIMEOUT} s waiting for {what}")
        loop.run_until_complete(asyncio.sleep(0.005))
    return value


@pytest.mark.parametrize("loop_kind", ["uvloop", "asyncio"])
def test_sender_waits_for_the_socket_and_cancel_closes_everything(
    loop_kind: str, tmp_path: Path
) -> None:
    """A reader that stops: the sender waits (add_writer), cancel() ends it cleanly."""
    import asyncio

    from prefork.worker.filesend import FileSender

    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(8 << 20))
    if loop_kind == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.SelectorEventLoop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    fds_before = _open_fds()
    results: list[tuple[int, BaseException | None]] = []
    progress: list[int] = []
    try:
        fd = os.open(path, os.O_RDONLY)
        sender = FileSender(
            loop, ours, fd, 0, 8 << 20, progress.append, lambda n, e: results.append((n, e))
        )
        loop.call_soon(sender.start, b"HEAD")
        loop.run_until_complete(asyncio.sleep(0.2))  # the peer reads nothing: the buffer fills
        assert not results and progress and progress[-1] < 8 << 20
        assert theirs.recv(4) == b"HEAD"
        received = 4
        theirs.settimeout(TIMEOUT)
        while received < 1 << 20:  # read some: the sender goes on by itself
            received += len(theirs.recv(1 << 16))
            loop.run_until_complete(asyncio.sleep(0))
        _run_until(loop, lambda: progress[-1] > (1 << 20) - 4, "the sender to go on")
        assert not results
        sender.cancel()
        assert len(results) == 1 and isinstance(results[0][1], ConnectionError)
        assert results[0][0] == sender.sent == progress[-1]
        sender.cancel()  # (twice: nothing more)
        assert len(results) == 1
        loop.run_until_complete(asyncio.sleep(0.05))  # (no writer left to fire)
        assert _open_fds() - fds_before == set()  # the file and the duplicate are closed
    finally:
        ours.close()
        theirs.close()
        loop.close()


def test_sender_sends_all_and_ends_short_on_a_truncated_file(tmp_path: Path) -> None:
    import asyncio

    from prefork.worker.filesend import FileSender

    path = tmp_path / "data.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    loop = asyncio.SelectorEventLoop()
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    theirs.settimeout(TIMEOUT)
    try:
        for offset, count, expected in [(0, 300_000, data), (1000, 5000, data[1000:6000])]:
            results: list[tuple[int, BaseException | None]] = []
            sender = FileSender(
                loop,
                ours,
                os.open(path, os.O_RDONLY),
                offset,
                count,
                None,
                lambda n, e, results=results: results.append((n, e)),
            )
            loop.call_soon(sender.start)
            got = bytearray()
            while len(got) < len(expected):
                loop.run_until_complete(asyncio.sleep(0.01))
                got += theirs.recv(1 << 20)
            _run_until(loop, lambda results=results: results, "the sender's end")
            assert bytes(got) == expected and results == [(count, None)]
        # Asked for more than the file has: ends with what there is, no error.
        results = []
        sender = FileSender(
            loop,
            ours,
            os.open(path, os.O_RDONLY),
            299_000,
            5000,
            None,
            lambda n, e: results.append((n, e)),
        )
        loop.call_soon(sender.start)
        _run_until(loop, lambda: results, "the sender's end")
        assert results == [(1000, None)] and theirs.recv(1 << 20) == data[299_000:]
    finally:
        ours.close()
        theirs.close()
        loop.close()


def test_regular_file_fd_tells_files_from_the_rest(tmp_path: Path) -> None:
    import io

    from prefork.worker.filesend import regular_file_fd

    path = tmp_path / "f"
    path.write_bytes(b"x")
    with open(path, "rb") as file:
        assert regular_file_fd(file) == file.fileno()
    assert regular_file_fd(file) is None  # closed
    assert regular_file_fd(io.BytesIO(b"x")) is None
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb") as pipe:
            assert regular_file_fd(pipe) is None
    finally:
        os.close(write_end)
    left, right = socket.socketpair()
    with left, right:
        assert regular_file_fd(left) is None
