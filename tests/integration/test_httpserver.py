"""The worker HTTP stack in one process, over real sockets.

Each server is ``tests/apps/echo_app.py`` in a subprocess (started and
stopped by the ``spawn`` / ``module_spawn`` fixtures of ``tests/conftest.py``).
Raw sockets speak the protocol byte for byte where a client library would
hide what the server did (framing, keep-alive, closes); ``requests`` and curl
check that ordinary clients work.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests
import urllib3

from tests.conftest import read_to_the_end, wait_for

APP = Path(__file__).resolve().parent.parent / "apps" / "echo_app.py"
TIMEOUT = 5.0

# A short client timeout for requests with a body (a local echo answers in
# milliseconds).
BODY_TIMEOUT = 2.0


# ---------------------------------------------------------------- raw client


class Response:
    def __init__(self, version: str, status: int, reason: str, headers: list[tuple[str, str]]):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = b""

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self):
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"Response({self.status} {self.reason}, {self.headers}, {self.body[:200]!r})"


class RawClient:
    """A socket with a read buffer; every read is bounded by ``timeout``."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = TIMEOUT):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = b""

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        """Close with an RST (SO_LINGER 0): a client that vanishes."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, deadline: float) -> bool:
        """Read more bytes; False on EOF (or reset)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the server sent nothing more in time")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        except TimeoutError:
            raise TimeoutError("the server sent nothing more in time") from None
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read_until(self, marker: bytes, timeout: float | None = None) -> bytes:
        deadline = time.monotonic() + (timeout or self.timeout)
        while marker not in self.buf:
            if not self._fill(deadline):
                raise EOFError(f"connection closed before {marker!r}; got {self.buf!r}")
        data, self.buf = self.buf.split(marker, 1)
        return data + marker

    def read_exact(self, n: int) -> bytes:
        deadline = time.monotonic() + self.timeout
        while len(self.buf) < n:
            if not self._fill(deadline):
                raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_to_eof(self, timeout: float | None = None) -> bytes:
        """Everything until the server closes; TimeoutError if it does not."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while self._fill(deadline):
            pass
        data, self.buf = self.buf, b""
        return data

    def wait_closed(self, timeout: float | None = None) -> bytes:
        """Like read_to_eof: the bytes that came before the close."""
        return self.read_to_eof(timeout)

    def read_response(self, method: str = "GET") -> Response:
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head[:-4].split("\r\n")
        version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]]
        response = Response(version, int(status), reason, headers)  # type: ignore[arg-type]
        te = (response.header("Transfer-Encoding") or "").lower()
        length = response.header("Content-Length")
        if method == "HEAD" or response.status < 200 or response.status in (204, 304):
            return response
        if te == "chunked":
            body = b""
            while True:
                size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n") != b"\r\n":
                        pass
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n"
            response.body = body
        elif length is not None:
            response.body = self.read_exact(int(length))
        else:
            response.body = self.read_to_eof()
        return response

    def request(self, data: bytes, method: str = "GET") -> Response:
        self.send(data)
        return self.read_response(method)


def get_request(path: str, version: str = "HTTP/1.1", *headers: str) -> bytes:
    lines = [f"GET {path} {version}", "Host: test.example", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def exchange_until_close(port: int, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send ``data``, read until the server closes; TimeoutError if it never does."""
    with RawClient(port, timeout=timeout) as client:
        try:
            client.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed before all was sent
        return client.read_to_eof()


def status_of(data: bytes) -> int:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", data)
    assert match, f"no status line in {data[:200]!r}"
    return int(match.group(1))


def echo(port: int, **kwargs) -> dict:
    response = requests.get(f"http://127.0.0.1:{port}/echo", timeout=TIMEOUT, **kwargs)
    assert response.status_code == 200
    return response.json()


def assert_serving(server) -> None:
    """The worker is unharmed: same process, still answering."""
    assert server.proc.poll() is None, "the server process exited"
    assert echo(server.port)["path"] == "/echo"


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def access_log_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("accesslog") / "access.log"


@pytest.fixture(scope="module")
def app(module_spawn, access_log_path):
    """Default limits, access log to a file."""
    return module_spawn(APP, "--access-log", access_log_path)


@pytest.fixture(scope="module")
def strict_app(module_spawn):
    """Small body limit and short timeouts."""
    return module_spawn(
        APP,
        "--limit",
        "max_body_size=1024",
        "--limit",
        "header_timeout=0.5",
        "--limit",
        "body_timeout=0.5",
        "--limit",
        "keep_alive_timeout=0.5",
    )


@pytest.fixture(scope="module")
def xheaders_app(module_spawn):
    return module_spawn(APP, "--xheaders")


def test_a_raw_answer_to_head_or_a_204_sends_no_body_and_keeps_the_connection(app):
    """RFC 9110 9.3.2, 15.3.5: nothing follows these heads. The seed's
    handler writes its body to HEAD too: the bytes are dropped, quietly, and
    the connection goes on (sent, a client would read them as the start of
    the next response: curl's 'Excess found')."""
    response = exchange_until_close(
        app.port,
        b"HEAD /raw/seed HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /raw/204-body HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /raw/seed HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    assert response == (
        b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\n"
        b"HTTP/1.1 204 No Content\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 24\r\nConnection: close\r\n\r\n"
        b"You requested /raw/seed\n"
    )
    assert "dropped" not in app.stderr_text()  # (quietly: not the Content-Length error)


@pytest.mark.parametrize("status", ["103", "100", "600"])
def test_write_headers_with_no_final_status_is_the_applications_error(app, status):
    """A 1xx would be taken for the answer (the client would wait for the
    final one); 600+ is no HTTP status: write_headers refuses it, so the
    callback fails and the client gets a 500."""
    response = exchange_until_close(
        app.port, b"GET /framed?status=%s HTTP/1.1\r\nHost: h\r\n\r\n" % status.encode()
    )
    assert response.startswith(b"HTTP/1.1 500 "), response
    assert response.count(b"HTTP/1.1 ") == 1
    wait_for(
        lambda: (
            f"write_headers() needs a final status (200-599), got {status}" in app.stderr_text()
        ),
        TIMEOUT,
        "the traceback",
    )


# ---------------------------------------------------------------- HTTPRequest


def test_request_attributes_on_a_get(app):
    port = app.port
    response = requests.get(
        f"http://127.0.0.1:{port}/echo?a=1&a=2&b=x%20y&blank=",
        headers={"X-Test": "value", "User-Agent": "attr-test"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    data = response.json()
    assert data["method"] == "GET"
    assert data["uri"] == "/echo?a=1&a=2&b=x%20y&blank="
    assert data["path"] == "/echo"
    assert data["query"] == "a=1&a=2&b=x%20y&blank="
    assert data["version"] == "HTTP/1.1"
    headers = dict(data["headers"])
    assert headers["X-Test"] == "value"
    assert headers["User-Agent"] == "attr-test"
    assert headers["Host"] == f"127.0.0.1:{port}"
    assert data["body"] == ""
    assert data["remote_ip"] == "127.0.0.1"
    assert data["protocol"] == "http"
    assert data["host"] == f"127.0.0.1:{port}"
    # Blank values are dropped, as in 2.x.
    assert data["arguments"] == {"a": ["1", "2"], "b": ["x y"]}
    assert data["files"] == {}
    assert data["full_url"] == f"http://127.0.0.1:{port}/echo?a=1&a=2&b=x%20y&blank="
    assert data["request_time"] > 0
    assert data["supports_http_1_1"] is True
    assert data["ssl_certificate"] is None
    assert data["ssl_certificate_binary_len"] is None


def test_request_attributes_http10_without_host(app):
    with RawClient(app.port) as client:
        response = client.request(b"GET /echo?q=1 HTTP/1.0\r\nX-A: b\r\n\r\n")
    assert response.status == 200
    data = response.json()
    assert data["version"] == "HTTP/1.0"
    assert data["supports_http_1_1"] is False
    assert data["host"] == "127.0.0.1"  # the seed's default without a Host header
    assert data["full_url"] == "http://127.0.0.1/echo?q=1"
    assert data["arguments"] == {"q": ["1"]}


def test_full_url_of_an_absolute_form_target(app):
    """It was protocol + host + the whole target: http://hhttp://h/a."""
    with RawClient(app.port) as client:
        response = client.request(
            b"GET http://other.example:81/echo?b=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        )
    assert response.json()["full_url"] == "http://other.example:81/echo?b=1"


@pytest.mark.parametrize(("version", "cut"), [("1.0", "reset"), ("1.1", "no last chunk")])
def test_callback_raising_mid_body_shows_the_client_a_cut(app, version, cut):
    """HTTP/1.0 with no length: only the close ends the body, and a FIN made
    the cut body look whole; it ends with a reset.  HTTP/1.1: chunked, and
    the last chunk never comes."""
    request = b"GET /raise?after=framed-body HTTP/%s\r\nHost: x\r\n\r\n" % version.encode()
    with socket.create_connection(("127.0.0.1", app.port), timeout=TIMEOUT) as sock:
        sock.sendall(request)
        received, outcome = read_to_the_end(sock, TIMEOUT)
    assert received.startswith(b"HTTP/1.1 200 ") or (not received and outcome == "reset")
    if cut == "reset":
        assert outcome == "reset", (outcome, received)
    else:
        assert b"partial" in received and not received.endswith(b"0\r\n\r\n"), received
    assert_serving(app)


def _stats(port: int) -> dict:
    with RawClient(port) as client:
        return client.request(b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n").json()


@pytest.mark.parametrize("how", ["close", "half-close"])
def test_a_parked_request_learns_the_client_went_by_its_close_callback(app, how):
    """The 2.x long poll: the callback parks the request and watches with
    set_close_callback. A client that closes (or half-closes) is its close, as
    under tornado: it never fired (the connection was kept half-open to
    answer) and the socket stayed in CLOSE-WAIT."""
    before = _stats(app.port)["parked_closed"]
    sock = socket.create_connection(("127.0.0.1", app.port), timeout=TIMEOUT)
    sock.sendall(b"GET /park HTTP/1.1\r\nHost: x\r\n\r\n")
    if how == "close":
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)
    try:
        wait_for(
            lambda: _stats(app.port)["parked_closed"] == before + 1, TIMEOUT, "the close callback"
        )
    finally:
        sock.close()


def test_framed_writes_each_from_the_previous_ones_callback(app):
    """write_headers(), then write(chunk, callback): the first piece was held
    (to see whether the body came whole) and its callback never ran."""
    response = exchange_until_close(
        app.port, b"GET /framed-callbacks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    assert body == b"6\r\npart1;\r\n6\r\npart2;\r\n0\r\n\r\n"


def test_a_write_after_finish_never_reaches_the_next_response(app):
    """A timer writes after its request finished while the connection
    answers the next one: it went into that response (another client's,
    behind a proxy reusing connections). Now it raises RuntimeError."""
    response = exchange_until_close(
        app.port,
        b"GET /late-write HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /delay?ms=500&i=2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    assert b"SECRET" not in response
    assert response.count(b"HTTP/1.1 200 OK") == 2 and response.endswith(b'{"i": "2"}')
    assert _stats(app.port)["late_write"].startswith(
        "RuntimeError: write()/finish() for a request that is over (GET /late-write)"
    )


def test_urlencoded_post_arguments_merge_with_the_query(app):
    response = requests.post(
        f"http://127.0.0.1:{app.port}/echo?a=1",
        data={"a": "2", "c": "3 4"},
        timeout=BODY_TIMEOUT,
    )
    data = response.json()
    assert data["method"] == "POST"
    assert data["body"] == "a=2&c=3+4"
    assert data["arguments"] == {"a": ["1", "2"], "c": ["3 4"]}


@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_urlencoded_body_arguments_for_put_and_patch(app, method):
    response = requests.request(
        method, f"http://127.0.0.1:{app.port}/echo", data={"k": "v"}, timeout=BODY_TIMEOUT
    )
    assert response.json()["arguments"] == {"k": ["v"]}


def _check_multipart(data: dict) -> None:
    assert data["arguments"]["field"] == ["plain value"]
    assert data["arguments"]["q"] == ["1"]
    for view in ("files", "files_attr"):  # by key and by attribute
        (upload,) = data[view]["upload"]
        assert upload == {
            "filename": "hello.txt",
            "content_type": "text/plain",
            "body": "file content\r\nline 2\n",
        }


def test_multipart_post_with_a_file(app):
    response = requests.post(
        f"http://127.0.0.1:{app.port}/echo?q=1",
        data={"field": "plain value"},
        files={"upload": ("hello.txt", b"file content\r\nline 2\n", "text/plain")},
        timeout=BODY_TIMEOUT,
    )
    _check_multipart(response.json())


def test_multipart_post_with_a_file_chunked(app):
    body, content_type = urllib3.encode_multipart_formdata(
        {
            "field": "plain value",
            "upload": ("hello.txt", b"file content\r\nline 2\n", "text/plain"),
        }
    )

    def pieces():
        for i in range(0, len(body), 50):
            yield body[i : i + 50]

    response = requests.post(
        f"http://127.0.0.1:{app.port}/echo?q=1",
        data=pieces(),
        headers={"Content-Type": content_type},
        timeout=TIMEOUT,
    )
    data = response.json()
    assert dict(data["headers"])["Transfer-Encoding"] == "chunked"
    _check_multipart(data)


# ---------------------------------------------------------------- keep-alive and framing


def test_http11_keep_alive_then_connection_close(app):
    with RawClient(app.port) as client:
        first = client.request(get_request("/echo?n=1"))
        assert first.status == 200 and first.header("Connection") is None
        second = client.request(get_request("/echo?n=2", "HTTP/1.1", "Connection: close"))
        assert second.json()["arguments"] == {"n": ["2"]}
        assert second.header("Connection") == "close"
        assert client.read_to_eof() == b""


def test_http10_keep_alive_only_when_asked(app):
    with RawClient(app.port) as client:
        first = client.request(get_request("/echo?n=1", "HTTP/1.0", "Connection: keep-alive"))
        assert first.header("Connection") == "keep-alive"
        second = client.request(get_request("/echo?n=2", "HTTP/1.0"))
        assert second.json()["arguments"] == {"n": ["2"]}
        assert client.read_to_eof() == b""


@pytest.mark.parametrize("path", ["/echo", "/framed?pieces=1", "/framed?pieces=3"])
def test_http10_close_is_announced_in_an_http11_response(app, path):
    answer = exchange_until_close(app.port, get_request(path, "HTTP/1.0"))
    head = answer.partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close" in head, head


def test_no_keep_alive_server_always_closes(spawn):
    server = spawn(APP, "--no-keep-alive")
    with RawClient(server.port) as client:
        response = client.request(get_request("/echo"))
        assert response.status == 200
        assert response.header("Connection") == "close"
        assert client.read_to_eof() == b""


def test_framed_one_piece_gets_content_length(app):
    with RawClient(app.port) as client:
        response = client.request(get_request("/framed?pieces=1"))
        assert response.status == 200
        assert response.header("Content-Length") == "7"
        assert response.header("Transfer-Encoding") is None
        assert response.body == b"piece0;"
        empty = client.request(get_request("/framed?pieces=0"))
        assert empty.header("Content-Length") == "0" and empty.body == b""
        # still open: keep-alive after framed responses
        assert client.request(get_request("/echo")).status == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/framed?pieces=1&length=3", b"pie"),
        ("/framed?pieces=2&length=7", b"piece0;"),
        ("/raw/long", b"abc"),
        ("/raw/long-stream", b"abc"),
    ],
    ids=["framed-one-piece", "framed-streamed", "raw-one-write", "raw-later-write"],
)
def test_a_body_never_goes_past_its_content_length(app, path, body):
    """Bytes past the application's Content-Length would be read as the next
    response by a client or a proxy that keeps the connection: they are
    dropped, the error logged, and the connection closed after the response
    (tornado raises HTTPOutputError there)."""
    pipelined = get_request(path) + get_request("/echo")
    response = exchange_until_close(app.port, pipelined)
    head, _, rest = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Length: " in head
    assert rest == body  # no more, and no answer to the pipelined request
    wait_for(
        lambda: "Response body longer than its Content-Length" in app.stderr_text(),
        5,
        "the error line",
    )


def test_framed_stream_is_chunked_on_http11(app):
    with RawClient(app.port) as client:
        client.send(get_request("/framed?pieces=3"))
        head = client.read_until(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked\r\n" in head
        assert b"Content-Length" not in head
        assert client.read_until(b"0\r\n\r\n") == (
            b"7\r\npiece0;\r\n7\r\npiece1;\r\n7\r\npiece2;\r\n0\r\n\r\n"
        )
        assert client.request(get_request("/echo")).status == 200


def test_framed_stream_is_close_delimited_on_http10(app):
    with RawClient(app.port) as client:
        client.send(get_request("/framed?pieces=3", "HTTP/1.0", "Connection: keep-alive"))
        data = client.read_to_eof()
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    assert b"Content-Length" not in head and b"Transfer-Encoding" not in head
    assert b"keep-alive" not in head.lower()
    assert body == b"piece0;piece1;piece2;"


def test_framed_one_piece_keeps_http10_keep_alive(app):
    with RawClient(app.port) as client:
        req = get_request("/framed?pieces=1", "HTTP/1.0", "Connection: keep-alive")
        response = client.request(req)
        assert response.header("Content-Length") == "7"
        assert response.header("Connection") == "keep-alive"
        assert client.request(req).body == b"piece0;"


@pytest.mark.parametrize("pieces", [1, 3])
def test_head_gets_no_body(app, pieces):
    with RawClient(app.port) as client:
        client.send(f"HEAD /framed?pieces={pieces} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        response = client.read_response("HEAD")
        assert response.status == 200
        assert response.header("Transfer-Encoding") is None
        # The next response must start right after the head: no body bytes.
        follow = client.request(get_request("/framed?pieces=1"))
        assert follow.status == 200 and follow.body == b"piece0;"


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(app, status):
    with RawClient(app.port) as client:
        client.send(get_request(f"/framed?status={status}&pieces=2"))
        response = client.read_response()
        assert response.status == status
        assert response.header("Transfer-Encoding") is None
        assert response.header("Content-Length") in (None, "0")
        follow = client.request(get_request("/framed?pieces=1"))
        assert follow.status == 200 and follow.body == b"piece0;"


@pytest.mark.parametrize("pieces", [1, 3])
def test_framed_connection_close_asked_by_the_application(app, pieces):
    with RawClient(app.port) as client:
        client.send(get_request(f"/framed?pieces={pieces}&close=1"))
        response = client.read_response()
        assert response.header("Connection") == "close"
        assert response.body == b"".join(b"piece%d;" % i for i in range(pieces))
        assert client.read_to_eof() == b""


def test_raw_unframed_response_on_http11_is_closed(app):
    with RawClient(app.port) as client:
        client.send(get_request("/raw/unframed"))
        data = client.read_to_eof()  # TimeoutError here would be a hanging client
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    assert b"\r\nConnection: close" in head
    assert body == b"unframed body"


def test_raw_unframed_response_does_not_hang_curl(app):
    result = subprocess.run(
        ["curl", "-sS", "--max-time", "5", f"http://127.0.0.1:{app.port}/raw/unframed"],
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"unframed body"


# ---------------------------------------------------------------- request bodies


def test_chunked_request_body_with_extensions_and_trailers(app):
    body = (
        b'5;ext=1\r\na=1&b\r\n4;name="q v";x\r\n=two\r\n0\r\nX-Trailer: yes\r\nX-Other: 2\r\n\r\n'
    )
    with RawClient(app.port) as client:
        response = client.request(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + body
        )
        data = response.json()
        assert data["body"] == "a=1&b=two"
        assert data["arguments"] == {"a": ["1"], "b": ["two"]}
        assert data["trailers"] == [["X-Trailer", "yes"], ["X-Other", "2"]]
        assert "X-Trailer" not in dict(data["headers"])  # never merged into the headers
        # the connection is usable after a chunked body
        assert client.request(get_request("/echo?after=1")).json()["arguments"] == {"after": ["1"]}


def test_chunked_request_body_from_requests_generator(app):
    def gen():
        yield b"first,"
        yield b"second,"
        yield b"third"

    response = requests.post(f"http://127.0.0.1:{app.port}/echo", data=gen(), timeout=TIMEOUT)
    data = response.json()
    assert dict(data["headers"])["Transfer-Encoding"] == "chunked"
    assert data["body"] == "first,second,third"


@pytest.mark.parametrize(
    "framing",
    [
        "content-length",
        "chunked",
    ],
)
def test_expect_100_continue(app, framing):
    if framing == "chunked":
        head_field, body = b"Transfer-Encoding: chunked", b"5\r\nhello\r\n0\r\n\r\n"
    else:
        head_field, body = b"Content-Length: 5", b"hello"
    with RawClient(app.port, timeout=BODY_TIMEOUT) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + head_field)
        client.send(b"\r\n\r\n")
        # Before any body byte is sent:
        interim = client.read_until(b"\r\n\r\n")
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(body)
        response = client.read_response()
        assert response.status == 200
        assert response.json()["body"] == "hello"


def test_pipelined_requests_answered_in_order(app):
    # Later requests finish sooner: the answers must still come in order.
    requests_ = b"".join(get_request(f"/delay?ms={(5 - i) * 30}&i={i}") for i in range(5))
    with RawClient(app.port) as client:
        client.send(requests_)
        answers = [client.read_response().json()["i"] for _ in range(5)]
    assert answers == ["0", "1", "2", "3", "4"]


def test_pipelined_requests_with_a_chunked_body_between(app):
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    with RawClient(app.port) as client:
        client.send(get_request("/echo?i=0") + chunked + get_request("/echo?i=2"))
        first = client.read_response().json()
        second = client.read_response().json()
        third = client.read_response().json()
    assert first["arguments"] == {"i": ["0"]}
    assert second["body"] == "abc" and second["method"] == "POST"
    assert third["arguments"] == {"i": ["2"]}


# ---------------------------------------------------------------- malformed requests

_H = b"Host: x\r\n"
MALFORMED = {
    "cl-and-te": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "te-gzip": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Transfer-Encoding: gzip\r\n\r\nxxxxx",
        400,
    ),
    "te-chunked-not-last": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Transfer-Encoding: chunked, gzip\r\n\r\n",
        400,
    ),
    "te-unknown-coding-before-chunked": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Transfer-Encoding: gzip, chunked\r\n\r\n",
        501,
    ),
    "te-in-http10": (
        b"POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    "bad-chunk-size": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n",
        400,
    ),
    "chunk-size-overflow": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Transfer-Encoding: chunked\r\n\r\n"
        b"fffffffffffffffff\r\n",
        400,
    ),
    "two-different-content-lengths": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    "negative-content-length": (
        b"POST /echo HTTP/1.1\r\n" + _H + b"Content-Length: -5\r\n\r\n",
        400,
    ),
    "bare-lf": (b"GET /echo HTTP/1.1\nHost: x\n\n", 400),
    "bare-cr": (b"GET /echo HTTP/1.1\r\nHost: x\rX-A: b\r\n\r\n", 400),
    "nul-in-header": (b"GET /echo HTTP/1.1\r\n" + _H + b"X-A: a\x00b\r\n\r\n", 400),
    "space-before-colon": (b"GET /echo HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    "obs-fold": (b"GET /echo HTTP/1.1\r\n" + _H + b"X-A: a\r\n  folded\r\n\r\n", 400),
    "invalid-method": (b"G(ET /echo HTTP/1.1\r\n" + _H + b"\r\n", 400),
    "missing-host-http11": (b"GET /echo HTTP/1.1\r\n\r\n", 400),
    "two-hosts": (b"GET /echo HTTP/1.1\r\n" + _H + _H + b"\r\n", 400),
    "http-2.0": (b"GET /echo HTTP/2.0\r\n" + _H + b"\r\n", 505),
    "bad-version": (b"GET /echo HTTP/1.x\r\n" + _H + b"\r\n", 400),
    "oversize-header-block": (
        b"GET /echo HTTP/1.1\r\n" + _H + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n",
        431,
    ),
    "too-many-headers": (
        b"GET /echo HTTP/1.1\r\n"
        + _H
        + b"".join(b"X-H%d: v\r\n" % i for i in range(150))
        + b"\r\n",
        431,
    ),
    "long-uri": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + _H + b"\r\n", 414),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_gets_4xx_and_close(app, name):
    data, expected = MALFORMED[name]
    answer = exchange_until_close(app.port, data)
    assert status_of(answer) == expected, answer[:300]
    assert b"\r\nConnection: close\r\n" in answer.partition(b"\r\n\r\n")[0] + b"\r\n"
    assert_serving(app)


def test_smuggled_request_after_cl_te_is_not_served(app):
    # If the server used Content-Length and ignored Transfer-Encoding (or the
    # other way round), the bytes after it would be served as a request.
    smuggled = get_request("/echo?smuggled=1")
    data = (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(smuggled))
    ) + smuggled
    answer = exchange_until_close(app.port, data)
    assert status_of(answer) == 400
    assert answer.count(b"HTTP/1.1 ") == 1


# ---------------------------------------------------------------- request grammar

# app: header_timeout is the default 20 s, so an answer within this bound
# comes from the parser refusing the bytes, not from a timeout.
PROMPT_BOUND = 1.0


def tls_client_hello() -> bytes:
    """The first flight of a real TLS client."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def assert_refused_at_once(server, data: bytes) -> None:
    """400, Connection: close, and the server closes, all within PROMPT_BOUND."""
    start = time.monotonic()
    answer = exchange_until_close(server.port, data, timeout=PROMPT_BOUND)
    elapsed = time.monotonic() - start
    assert status_of(answer) == 400, answer[:300]
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert b"\r\nConnection: close\r\n" in answer.partition(b"\r\n\r\n")[0] + b"\r\n"
    assert elapsed < PROMPT_BOUND, elapsed
    assert_serving(server)


@pytest.mark.parametrize("part", ["whole", "before-any-lf"])
def test_tls_client_hello_on_the_plain_port_is_refused_at_once(app, part):
    # Like nginx: refused on the first read, not after header_timeout.  A
    # ClientHello holds random bytes: cut before its first LF byte, nothing
    # in it looks like a line end (a bare LF alone used to be refused).
    hello = tls_client_hello()
    if part == "before-any-lf":
        hello = hello.split(b"\n", 1)[0]
    assert hello[:1] == b"\x16"  # a TLS handshake record
    assert_refused_at_once(app, hello)


def test_too_many_empty_lines_are_refused_at_once(app):
    assert_refused_at_once(app, b"\r\n" * 5)


@pytest.mark.parametrize(
    "data",
    [
        b"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://user@x/echo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x:8o\r\n\r\n",
    ],
    ids=["asterisk-with-get", "userinfo", "host-port-not-digits"],
)
def test_bad_request_target_or_host_is_refused(app, data):
    assert_refused_at_once(app, data)


def test_whitespace_after_a_chunk_size_is_refused(app):
    assert_refused_at_once(
        app,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5 \r\nhello\r\n0\r\n\r\n",
    )


@pytest.mark.parametrize(
    "name,data",
    [
        ("content-length", b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"),
        (
            "chunked",
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"400\r\n" + b"a" * 1024 + b"\r\n1\r\nb\r\n0\r\n\r\n",
        ),
    ],
)
def test_body_over_max_body_size_gets_413(strict_app, name, data):
    answer = exchange_until_close(strict_app.port, data)
    assert status_of(answer) == 413
    assert_serving(strict_app)


def test_body_at_max_body_size_is_accepted(strict_app):
    with RawClient(strict_app.port) as client:
        response = client.request(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"400\r\n" + b"a" * 1024 + b"\r\n0\r\n\r\n"
        )
    assert response.status == 200
    assert len(response.json()["body"]) == 1024


# ---------------------------------------------------------------- timeouts

# strict_app: header_timeout = body_timeout = keep_alive_timeout = 0.5 s.
# The sweep runs every 0.125 s; allow generous slack for a loaded machine.
TIMEOUT_BOUND = 3.0


def assert_closes_after_one_408(data: bytes) -> None:
    """One complete 408 response that says it closes, and nothing after it."""
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, data
    assert data.count(b"HTTP/1.1 ") == 1, data
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    assert headers.get("connection", "").lower() == "close", data
    assert len(body) == int(headers["content-length"]), data


def _wait_for_close(client: RawClient) -> tuple[bytes, float]:
    start = time.monotonic()
    data = client.wait_closed(TIMEOUT_BOUND)
    return data, time.monotonic() - start


def test_slowloris_partial_head_is_cut_off(strict_app):
    with RawClient(strict_app.port) as client:
        start = time.monotonic()
        client.send(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        # Trickle a header line every 0.1 s: each one arrives well within any
        # per-read timeout, but the whole head never completes.
        received = b""
        deadline = start + TIMEOUT_BOUND
        closed = False
        while time.monotonic() < deadline:
            client.sock.settimeout(0.1)
            try:
                chunk = client.sock.recv(65536)
            except TimeoutError:
                try:
                    client.send(b"X-Slow: 1\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                continue
            except ConnectionResetError:
                closed = True
                break
            if not chunk:
                closed = True
                break
            received += chunk
        elapsed = time.monotonic() - start
    assert closed, "the slow client was never cut off"
    assert 0.4 <= elapsed < TIMEOUT_BOUND
    # README, "Limits and timeouts": header_timeout -> 408, close.
    assert status_of(received) == 408, received
    assert_closes_after_one_408(received)
    assert_serving(strict_app)


def test_silent_connection_is_closed_after_header_timeout(strict_app):
    # Not a byte of a request arrived: like an idle keep-alive connection it
    # is closed without an answer (there is no request to answer 408 to).
    with RawClient(strict_app.port) as client:
        data, elapsed = _wait_for_close(client)
    assert data == b""
    assert 0.4 <= elapsed < TIMEOUT_BOUND


def test_idle_keep_alive_connection_is_closed(strict_app):
    # README: keep_alive_timeout -> close (no 408: the client sent nothing more).
    with RawClient(strict_app.port) as client:
        assert client.request(get_request("/echo")).status == 200
        data, elapsed = _wait_for_close(client)
    assert data == b""
    assert 0.4 <= elapsed < TIMEOUT_BOUND


def test_stalled_body_is_cut_off(strict_app):
    with RawClient(strict_app.port) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"a" * 10)
        data, elapsed = _wait_for_close(client)
    assert 0.4 <= elapsed < TIMEOUT_BOUND
    # README, "Limits and timeouts": body_timeout -> 408, close.
    assert status_of(data) == 408, data
    assert_closes_after_one_408(data)
    assert_serving(strict_app)


def test_stalled_chunked_body_is_cut_off(strict_app):
    with RawClient(strict_app.port) as client:
        client.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        data, elapsed = _wait_for_close(client)
    assert 0.4 <= elapsed < TIMEOUT_BOUND
    assert status_of(data) == 408, data
    assert_closes_after_one_408(data)
    assert_serving(strict_app)


def test_a_prompt_request_is_not_hit_by_the_timeouts(strict_app):
    with RawClient(strict_app.port) as client:
        for i in range(3):
            assert client.request(get_request(f"/echo?i={i}")).status == 200


# ---------------------------------------------------------------- failing callbacks


@pytest.mark.parametrize("after", ["", "framed"])
def test_callback_raising_before_a_response_gets_500(app, after):
    query = f"?after={after}" if after else ""
    answer = exchange_until_close(app.port, get_request("/raise" + query))
    assert status_of(answer) == 500
    assert answer.count(b"HTTP/1.1 ") == 1
    assert_serving(app)


def test_callback_raising_after_a_raw_head_closes_the_connection(app):
    answer = exchange_until_close(app.port, get_request("/raise?after=head"))
    # What was written goes out as written; then the connection closes
    # (the client sees a short body, not a hang).
    assert status_of(answer) == 200
    assert answer.endswith(b"\r\n\r\nabc")
    assert_serving(app)


def _stats(port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{port}/stats", timeout=TIMEOUT).json()


@pytest.mark.parametrize("mode", ["raw", "framed"])
def test_client_gone_mid_response_raises_nothing_into_the_application(app, mode):
    before = _stats(app.port)
    with RawClient(app.port) as client:
        client.send(get_request(f"/slow-stream?mode={mode}&chunks=30&size=65536&interval_ms=10"))
        client.read_until(b"\r\n\r\n")
        client.read_exact(1000)
        client.reset()
    deadline = time.monotonic() + 10
    while True:
        stats = _stats(app.port)
        if stats["streams_done"] >= before["streams_done"] + 1:
            break
        assert time.monotonic() < deadline, f"the stream never finished: {stats}"
        time.sleep(0.05)
    assert stats["streams_started"] == before["streams_started"] + 1
    # The scenario really happened: the connection closed mid-response.
    assert stats["closed_mid_stream"] == before["closed_mid_stream"] + 1
    assert stats["stream_errors"] == before["stream_errors"], stats["last_error"]
    assert_serving(app)


# ---------------------------------------------------------------- xheaders


def test_xheaders_real_ip_and_scheme(xheaders_app):
    data = echo(xheaders_app.port, headers={"X-Real-Ip": "10.1.2.3", "X-Scheme": "https"})
    assert data["remote_ip"] == "10.1.2.3"
    assert data["protocol"] == "https"
    assert data["full_url"].startswith("https://")


def test_xheaders_rightmost_forwarded_for_and_proto(xheaders_app):
    data = echo(
        xheaders_app.port,
        headers={
            "X-Forwarded-For": "6.6.6.6, 10.0.0.1,  2001:db8::7",
            "X-Forwarded-Proto": "https",
        },
    )
    assert data["remote_ip"] == "2001:db8::7"
    assert data["protocol"] == "https"


def test_xheaders_real_ip_wins_over_forwarded_for(xheaders_app):
    data = echo(xheaders_app.port, headers={"X-Real-Ip": "10.0.0.9", "X-Forwarded-For": "1.1.1.1"})
    assert data["remote_ip"] == "10.0.0.9"


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Real-Ip": "not-an-ip"},
        {"X-Real-Ip": "10.0.0.1<script>"},
        {"X-Forwarded-For": "1.2.3.4, garbage"},
        {"X-Scheme": "gopher"},
        {"X-Forwarded-Proto": "javascript"},
    ],
)
def test_xheaders_invalid_values_are_ignored(xheaders_app, headers):
    data = echo(xheaders_app.port, headers=headers)
    assert data["remote_ip"] == "127.0.0.1"
    assert data["protocol"] == "http"


def test_xheaders_do_not_leak_to_the_next_request_on_the_connection(xheaders_app):
    with RawClient(xheaders_app.port) as client:
        first = client.request(
            get_request("/echo", "HTTP/1.1", "X-Real-Ip: 10.9.9.9", "X-Scheme: https")
        ).json()
        second = client.request(get_request("/echo")).json()
    assert (first["remote_ip"], first["protocol"]) == ("10.9.9.9", "https")
    assert (second["remote_ip"], second["protocol"]) == ("127.0.0.1", "http")


def test_xheaders_off_by_default(app):
    data = echo(app.port, headers={"X-Real-Ip": "10.1.2.3", "X-Scheme": "https"})
    assert data["remote_ip"] == "127.0.0.1"
    assert data["protocol"] == "http"


# ---------------------------------------------------------------- access log

# ip - - [time] "request line" status size "referer" "user agent"
COMBINED = re.compile(
    r'^(?P<ip>\S+) - - \[(?P<time>[^\]]+)\] "(?P<request>[^"]*)" (?P<status>\d{3}) '
    r'(?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"$'
)


def _log_lines_matching(path: Path, needle: str, timeout: float = TIMEOUT) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        lines = [line for line in text.splitlines() if needle in line]
        if lines or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)


def test_access_log_line_in_combined_format(app, access_log_path):
    marker = f"log{time.monotonic_ns()}"
    response = requests.get(
        f"http://127.0.0.1:{app.port}/echo?{marker}=1",
        headers={"Referer": "http://ref.example/", "User-Agent": "log-test/1.0"},
        timeout=TIMEOUT,
    )
    lines = _log_lines_matching(access_log_path, marker)
    assert len(lines) == 1, lines
    match = COMBINED.match(lines[0])
    assert match, lines[0]
    assert match["ip"] == "127.0.0.1"
    assert match["request"] == f"GET /echo?{marker}=1 HTTP/1.1"
    assert match["status"] == "200"
    assert int(match["size"]) == len(response.content)
    assert match["referer"] == "http://ref.example/"
    assert match["agent"] == "log-test/1.0"
    time.strptime(match["time"], "%d/%b/%Y:%H:%M:%S %z")


def test_access_log_one_line_per_request_on_keep_alive(app, access_log_path):
    marker = f"ka{time.monotonic_ns()}"
    with RawClient(app.port) as client:
        for i in range(3):
            client.request(get_request(f"/framed?{marker}={i}&pieces=2"))
    lines = _log_lines_matching(access_log_path, marker)
    deadline = time.monotonic() + TIMEOUT
    while len(lines) < 3 and time.monotonic() < deadline:
        lines = _log_lines_matching(access_log_path, marker)
    assert len(lines) == 3, lines
    for i, line in enumerate(lines):
        match = COMBINED.match(line)
        assert match and match["request"] == f"GET /framed?{marker}={i}&pieces=2 HTTP/1.1"
        assert match["status"] == "200" and match["size"] == "14"


def test_access_log_for_a_500(app, access_log_path):
    marker = f"err{time.monotonic_ns()}"
    exchange_until_close(app.port, get_request(f"/raise?{marker}=1"))
    lines = _log_lines_matching(access_log_path, marker)
    assert len(lines) == 1 and COMBINED.match(lines[0])["status"] == "500", lines


def test_access_log_for_a_rejected_request(app, access_log_path):
    def rejected_lines() -> list[str]:
        text = access_log_path.read_text() if access_log_path.exists() else ""
        return [line for line in text.splitlines() if '"-" 505 ' in line]

    before = len(rejected_lines())
    exchange_until_close(app.port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
    deadline = time.monotonic() + TIMEOUT
    while len(rejected_lines()) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    lines = rejected_lines()
    assert len(lines) == before + 1
    assert COMBINED.match(lines[-1])["ip"] == "127.0.0.1"


# ---------------------------------------------------------------- IPv6


def test_remote_ip_over_ipv6(spawn, ipv6):
    server = spawn(APP, "--address", ipv6)
    response = requests.get(f"http://[::1]:{server.port}/echo", timeout=TIMEOUT)
    data = response.json()
    assert data["remote_ip"] == "::1"
    assert data["host"] == f"[::1]:{server.port}"
    assert data["full_url"] == f"http://[::1]:{server.port}/echo"


# ---------------------------------------------------------------- unix socket


@pytest.fixture
def unix_path():
    directory = tempfile.mkdtemp(prefix="prefork-")  # short: sun_path is ~108 bytes
    path = Path(directory) / "app.sock"
    try:
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_unix_socket_with_a_raw_client(spawn, unix_path):
    server = spawn(APP, "--unix", unix_path)
    assert server.ports == [str(unix_path)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(unix_path))
        sock.sendall(get_request("/echo?u=1", "HTTP/1.1", "Connection: close"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(head) == 200
    payload = json.loads(body)
    assert payload["remote_ip"] == "0.0.0.0"
    assert payload["arguments"] == {"u": ["1"]}


def test_unix_socket_with_curl(spawn, unix_path):
    spawn(APP, "--unix", unix_path)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--unix-socket",
            str(unix_path),
            "http://localhost/echo?via=curl",
            "http://localhost/echo?via=curl2",
            "-v",
        ],
        capture_output=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    first, second = (
        json.loads(part) for part in result.stdout.replace(b"}{", b"}\n{").split(b"\n")
    )
    assert first["remote_ip"] == "0.0.0.0" and second["remote_ip"] == "0.0.0.0"
    assert first["host"] == "localhost"
    assert b"Re-using existing connection" in result.stderr
