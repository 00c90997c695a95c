"""PEP 3333: WSGI applications served by real prefork processes.

Two ways in, both real processes stopped by pid (the ``spawn`` fixtures of
``tests/conftest.py``):

* ``tests/apps/wsgi_app.py`` builds ``HTTPServer(WSGIAdapter(app))`` in one
  process (``--threads N``; ``--app MODULE:CALLABLE`` serves the Flask app);
* the CLI, ``python -m prefork -b 127.0.0.1:PORT -w 1 MODULE:CALLABLE``, with a
  master, a worker and the interface detected from the callable.

``requests`` checks that an ordinary client works; ``http.client`` and raw
sockets check what a client library would hide (framing, closes, no body).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import http.client
import json
import os
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from prefork.worker.interfaces import detect_interface, is_wsgi_app, request_callback_for
from prefork.worker.wsgi import WSGIAdapter
from tests.conftest import post_expecting_continue, read_to_the_end, wait_for, wait_for_lines

APPS = Path(__file__).resolve().parent.parent / "apps"
WSGI_APP = APPS / "wsgi_app.py"
FLASK_SPEC = "tests.apps.flask_app:app"
TIMEOUT = 5.0


def raw_exchange(port: int, data: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send ``data``, read until the server closes (bounded by ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        else:
            raise AssertionError("the server did not close the connection")
    return b"".join(chunks)


def header_lines(response: bytes) -> list[str]:
    head = response.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return head.split("\r\n")[1:]


def count_header(response: bytes, name: str) -> int:
    return sum(1 for line in header_lines(response) if line.lower().startswith(name.lower() + ":"))


class Server:
    """A base URL and the process serving it."""

    def __init__(self, process, port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        return requests.get(self.url + path, **kwargs)

    def stats(self) -> dict:
        return self.get("/stats").json()


def start_script(spawner, *args: object) -> Server:
    process = spawner(WSGI_APP, *args)
    return Server(process, process.port)


def start_cli(spawner, free_port, *args: object) -> Server:
    port = free_port()
    process = spawner("-m", "prefork", "-b", f"127.0.0.1:{port}", "-w", "1", *args, ready_port=port)
    return Server(process, port)


@pytest.fixture(scope="module")
def wsgi(module_spawn) -> Server:
    return start_script(module_spawn, "--threads", "4")


@pytest.fixture(scope="module", params=["adapter", "cli"])
def flask(request, module_spawn, free_port) -> Server:
    if request.param == "adapter":
        return start_script(module_spawn, "--app", FLASK_SPEC)
    return start_cli(module_spawn, free_port, FLASK_SPEC)  # --interface auto


# ------------------------------------------------------------- detection


def _seed(request):
    pass


def _wsgi(environ, start_response):
    return []


class _CallableWSGI:
    def __call__(self, environ, start_response):
        return []


class _SeedHandler:
    def handle(self, request):
        pass


def _varargs(*args, **kwargs):
    pass


def test_interface_detection_by_signature() -> None:
    from tests.apps.flask_app import app as flask_app

    assert detect_interface(_seed) == "callback"
    assert detect_interface(_SeedHandler().handle) == "callback"
    assert detect_interface(_wsgi) == "wsgi"
    assert detect_interface(_CallableWSGI()) == "wsgi"
    assert detect_interface(flask_app) == "wsgi"
    assert detect_interface(flask_app.wsgi_app) == "wsgi"
    assert detect_interface(functools.partial(lambda extra, environ, sr: [], 1)) == "wsgi"
    assert detect_interface(_varargs) is None  # undecidable
    assert detect_interface(lambda request, extra=None: None) is None
    assert detect_interface(len) == "callback"  # a builtin with a signature
    assert is_wsgi_app(flask_app) and not is_wsgi_app(_seed)


def test_request_callback_for_wraps_only_wsgi(caplog) -> None:
    assert request_callback_for(_seed) is _seed
    assert isinstance(request_callback_for(_wsgi, threads=2), WSGIAdapter)
    assert request_callback_for(_wsgi, threads=2).threads == 2
    assert isinstance(request_callback_for(_varargs, "wsgi"), WSGIAdapter)
    with caplog.at_level("WARNING", logger="prefork.error"):
        assert request_callback_for(_varargs) is _varargs
    assert "serving it as a request callback" in caplog.text
    with pytest.raises(ValueError):
        request_callback_for(_wsgi, "cgi")
    with pytest.raises(ValueError):
        WSGIAdapter(_wsgi, threads=0)


# ------------------------------------------------------------- Flask


def test_flask_routes_and_path_params(flask: Server) -> None:
    response = flask.get("/")
    assert response.status_code == 200
    assert response.text == "hello from flask"
    assert response.headers["Content-Length"] == str(len("hello from flask"))
    assert flask.get("/users/42").json() == {"id": 42, "name": "user42"}
    assert flask.get("/files/a/b/c.txt").json() == {"name": "a/b/c.txt"}
    assert flask.get("/users/notanumber").status_code == 404


def test_flask_query_arguments(flask: Server) -> None:
    response = flask.get("/search", params={"q": "hello world", "page": "2", "tag": ["a", "é"]})
    assert response.json() == {"q": "hello world", "page": 2, "tags": ["a", "é"]}


def test_flask_json_post(flask: Server) -> None:
    payload = {"name": "Zoë", "items": [1, 2, 3], "nested": {"ok": True}}
    response = requests.post(flask.url + "/json", json=payload, timeout=TIMEOUT)
    assert response.status_code == 201
    assert response.json() == {"received": payload, "content_type": "application/json"}


def test_flask_urlencoded_form(flask: Server) -> None:
    data = {"name": "Zoë & co", "colors": ["red", "blue"]}
    response = requests.post(flask.url + "/form", data=data, timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"form": {"name": ["Zoë & co"], "colors": ["red", "blue"]}}


def test_flask_multipart_upload(flask: Server) -> None:
    content = bytes(range(256)) * 4096  # 1 MiB, every byte value
    response = requests.post(
        flask.url + "/upload",
        files={"file": ("data.bin", content, "application/octet-stream")},
        data={"description": "all the bytes"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert response.json() == {
        "filename": "data.bin",
        "mimetype": "application/octet-stream",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "description": "all the bytes",
    }


def test_flask_redirect_404_405_and_errors(flask: Server) -> None:
    response = flask.get("/old", allow_redirects=False)
    assert response.status_code == 302
    assert response.headers["Location"] == "/users/7"
    followed = flask.get("/old")
    assert followed.json() == {"id": 7, "name": "user7"}
    assert [r.status_code for r in followed.history] == [302]
    assert flask.get("/no/such/route").status_code == 404
    assert requests.post(flask.url + "/", timeout=TIMEOUT).status_code == 405
    assert flask.get("/abort").status_code == 403
    error = flask.get("/error")
    assert error.status_code == 500
    assert "Internal Server Error" in error.text


def test_flask_streamed_response(flask: Server) -> None:
    response = flask.get("/stream", params={"n": 50})
    assert response.status_code == 200
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert response.text == "".join(f"line {i}\n" for i in range(50))


def test_flask_unicode_route_url_and_cookies(flask: Server) -> None:
    assert flask.get("/café").json() == {"path": "/café"}
    assert flask.get("/url").json() == {
        "url": flask.url + "/url",
        "host": f"127.0.0.1:{flask.port}",
        "remote_addr": "127.0.0.1",
    }
    with requests.Session() as session:
        assert session.get(flask.url + "/cookie", timeout=TIMEOUT).json() == {"seen": None}
        assert session.get(flask.url + "/cookie", timeout=TIMEOUT).json() == {"seen": "1"}


def test_flask_head_has_headers_but_no_body(flask: Server) -> None:
    get = flask.get("/users/1")
    raw = raw_exchange(
        flask.port, b"HEAD /users/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b""
    assert f"Content-Length: {get.headers['Content-Length']}" in header_lines(raw)


# ------------------------------------------------------------- environ


def test_environ_is_complete(wsgi: Server) -> None:
    response = requests.post(
        wsgi.url + "/environ?a=1&b=%20x",
        data=b"the body",
        headers={
            "Content-Type": "text/plain; charset=utf-8",
            "X-Custom": "one",
            "X_Spoofed": "dropped",
            "Cookie": "a=1",
        },
        timeout=TIMEOUT,
    )
    env = response.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ"
    assert env["QUERY_STRING"] == "a=1&b=%20x"
    assert env["CONTENT_TYPE"] == "text/plain; charset=utf-8"
    assert env["CONTENT_LENGTH"] == "8"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(wsgi.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert int(env["REMOTE_PORT"]) > 0
    assert env["HTTP_HOST"] == f"127.0.0.1:{wsgi.port}"
    assert env["HTTP_X_CUSTOM"] == "one"
    assert env["HTTP_COOKIE"] == "a=1"
    assert not any("SPOOFED" in key for key in env)
    assert env["wsgi.version"] == {"type": "tuple", "repr": "(1, 0)"}
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.input.read"] == "the body"
    assert env["wsgi.errors"]["type"] == "_ErrorStream"
    assert env["wsgi.multithread"]["repr"] == "True"
    assert env["wsgi.multiprocess"]["repr"] == "True"
    assert env["wsgi.run_once"]["repr"] == "False"
    assert env["wsgi.input_terminated"]["repr"] == "True"


def test_environ_remote_port_is_the_clients(wsgi: Server) -> None:
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /environ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
        client_port = sock.getsockname()[1]
    env = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert env["REMOTE_PORT"] == str(client_port)


def test_environ_repeated_headers_host_forms_and_no_host(wsgi: Server) -> None:
    raw = raw_exchange(
        wsgi.port,
        b"GET /environ HTTP/1.1\r\nHost: example.com:8080\r\nX-Many: a\r\nX-Many: b\r\n"
        b"Cookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n",
    )
    env = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "8080")
    assert env["HTTP_X_MANY"] == "a,b"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    for host, expected in (
        (b"[::1]:9000", ("[::1]", "9000")),
        (b"example.org", ("example.org", "80")),
    ):
        raw = raw_exchange(
            wsgi.port, b"GET /environ HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n"
        )
        env = json.loads(raw.split(b"\r\n\r\n", 1)[1])
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == expected
    # HTTP/1.0 without Host: the listening socket's address.
    raw = raw_exchange(wsgi.port, b"GET /environ HTTP/1.0\r\n\r\n")
    env = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(wsgi.port))
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "HTTP_HOST" not in env


def test_environ_over_tls_says_https(spawn, tmp_path: Path) -> None:
    import trustme  # a dev dependency

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path, ca_path = (tmp_path / n for n in ("cert.pem", "key.pem", "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    ca.cert_pem.write_to_path(str(ca_path))
    server = start_script(spawn, "--certfile", cert_path, "--keyfile", key_path)
    url = f"https://127.0.0.1:{server.port}/environ"
    env = requests.get(url, verify=str(ca_path), timeout=TIMEOUT).json()
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(server.port))


def test_chunked_request_body_reaches_wsgi_input(wsgi: Server) -> None:
    raw = raw_exchange(
        wsgi.port,
        b"POST /environ HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    env = json.loads(raw.split(b"\r\n\r\n", 1)[1])
    assert env["wsgi.input.read"] == "hello world"
    # The body streams: its length is not known when the application starts.
    assert "CONTENT_LENGTH" not in env
    assert env["wsgi.input_terminated"] == {"type": "bool", "repr": "True"}


def test_wsgi_input_streams_before_the_body_is_complete(wsgi: Server) -> None:
    """The application runs at the request head and reads the body as it comes:
    it can answer from the first bytes of a body that is still being sent."""
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        sock.sendall(
            b"POST /first-bytes?n=5 HTTP/1.1\r\nHost: h\r\nContent-Length: 1000000\r\n\r\nhello"
        )
        response = b""
        while b"\r\n\r\nhello" not in response:
            chunk = sock.recv(65536)
            assert chunk, f"closed before the answer: {response!r}"
            response += chunk
    assert response.startswith(b"HTTP/1.1 200 ")
    # Answered before the rest of the body: the connection cannot be reused.
    assert b"Connection: close" in response


def test_large_upload_streams_through_wsgi_input(wsgi: Server) -> None:
    """A 32 MiB upload arrives intact through the bounded stream window."""
    body = os.urandom(1 << 20) * 32
    response = requests.post(f"http://127.0.0.1:{wsgi.port}/digest", data=body, timeout=60)
    assert response.status_code == 200
    assert response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


@pytest.mark.parametrize("n", [-1, 3 << 20, 2 << 20])
def test_one_read_larger_than_the_stream_window(wsgi: Server, n: int) -> None:
    """read() / read(CONTENT_LENGTH) of a body larger than the 1 MiB window
    (Django's request.body reads so) returns it: the stream is not left paused
    while the application waits for more than the window may hold."""
    body = os.urandom(3 << 20)
    response = requests.post(f"{wsgi.url}/read?n={n}", data=body, timeout=TIMEOUT)
    assert response.status_code == 200
    want = body[:n] if n >= 0 else body
    assert response.json() == {"size": len(want), "sha256": hashlib.sha256(want).hexdigest()}


@pytest.mark.parametrize("size", [-1, 2 << 20])
def test_a_line_longer_than_the_stream_window(wsgi: Server, size: int) -> None:
    """readline() (and iteration) on a line longer than the window: the line
    comes whole (or cut at ``size``), not a stream paused for ever."""
    body = b"x" * (3 << 20) + b"\nend"
    response = requests.post(f"{wsgi.url}/lines?size={size}", data=body, timeout=TIMEOUT)
    assert response.status_code == 200
    longest = len(body) - 3 if size < 0 else size
    assert response.json()["longest"] == longest
    assert response.json()["sha256"] == hashlib.sha256(body).hexdigest()


def test_path_info_is_decoded_bytes_as_latin1(wsgi: Server) -> None:
    # UTF-8 "café": PATH_INFO carries the bytes c3 a9 as two latin-1 chars.
    info = wsgi.get("/caf%C3%A9").json()
    assert info == {"path_info": "/caf\u00c3\u00a9", "bytes": "/café".encode().hex()}
    info = wsgi.get("/%FFa%20b%2Fc").json()
    assert bytes.fromhex(info["bytes"]) == b"/\xffa b/c"


def test_errors_stream_goes_to_the_error_log(wsgi: Server) -> None:
    assert wsgi.get("/errors").json() == {"ok": True}
    wait_for(
        lambda: (
            "a line for wsgi.errors" in wsgi.process.stderr_text()
            and "prefork.error:partial" in wsgi.process.stderr_text()
        ),
        TIMEOUT,
        "the wsgi.errors lines in the log",
    )


# ------------------------------------------------------------- responses


def test_write_callable(wsgi: Server) -> None:
    response = wsgi.get("/write")
    assert response.status_code == 200
    assert response.text == "one,two,three"


def test_framing_one_piece_gets_content_length_generators_stream(wsgi: Server) -> None:
    raw = raw_exchange(
        wsgi.port, b"GET /closing?n=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert "Transfer-Encoding: chunked" in header_lines(raw)  # a Closing object: length unknown
    raw = raw_exchange(wsgi.port, b"GET /pid HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert count_header(raw, "Content-Length") == 1
    raw = raw_exchange(
        wsgi.port, b"GET /stream?n=3&size=4 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    )
    assert "Transfer-Encoding: chunked" in header_lines(raw)
    assert raw.endswith(b"0\r\n\r\n")
    # HTTP/1.0 cannot take chunks: the body ends with the connection.
    raw = raw_exchange(wsgi.port, b"GET /stream?n=3&size=4 HTTP/1.0\r\n\r\n")
    assert count_header(raw, "Transfer-Encoding") == 0
    assert raw.split(b"\r\n\r\n", 1)[1] == b"0000" + b"0000" + b"0000"


def test_declared_content_length_is_honoured(wsgi: Server) -> None:
    for stream in ("0", "1"):
        raw = raw_exchange(
            wsgi.port,
            b"GET /declared?cl=3&body=abcdef&stream=" + stream.encode() + b" HTTP/1.1\r\n"
            b"Host: h\r\nConnection: close\r\n\r\n",
        )
        assert count_header(raw, "Content-Length") == 1, raw
        assert "Content-Length: 3" in header_lines(raw)
        assert raw.split(b"\r\n\r\n", 1)[1] == b"abc"
    # A body shorter than declared: the connection closes (keep-alive would desync).
    with closing(http.client.HTTPConnection("127.0.0.1", wsgi.port, timeout=TIMEOUT)) as conn:
        conn.request("GET", "/declared?cl=10&body=abc")
        response = conn.getresponse()
        assert response.getheader("Connection") == "close"
        with pytest.raises(http.client.IncompleteRead):
            response.read()


def test_close_is_called_on_the_iterable(wsgi: Server) -> None:
    before = wsgi.stats()["closed"]
    assert wsgi.get("/closing", params={"n": 3}).text == "c0;c1;c2;"
    assert wsgi.get("/status", params={"code": "204"}).status_code == 204
    wait_for(lambda: wsgi.stats()["closed"] == before + 2, TIMEOUT, "close() twice")


def test_head_204_304_have_no_body_on_a_kept_alive_connection(wsgi: Server) -> None:
    with closing(http.client.HTTPConnection("127.0.0.1", wsgi.port, timeout=TIMEOUT)) as conn:
        conn.request("HEAD", "/stream?n=5&size=10")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        conn.request("HEAD", "/pid")
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b""
        assert int(response.getheader("Content-Length")) > 0
        for code in (204, 304):
            conn.request("GET", f"/status?code={code}")
            response = conn.getresponse()
            assert response.status == code
            assert response.getheader("Content-Length") is None
            assert response.getheader("Transfer-Encoding") is None
            assert response.read() == b""
        # Any stray body byte would have broken this next response.
        conn.request("GET", "/write")
        assert conn.getresponse().read() == b"one,two,three"


@pytest.mark.parametrize("path", ["/stream?n=0", "/closing?n=0", "/declared?cl=0&body="])
def test_head_of_an_empty_body_has_the_length_get_has(wsgi: Server, path: str) -> None:
    """An empty body (an empty generator or iterable) gets Content-Length: 0
    on GET; HEAD says the same (README: HEAD carries the Content-Length GET
    would send), not nothing, which reads as 'GET would stream'."""
    with closing(http.client.HTTPConnection("127.0.0.1", wsgi.port, timeout=TIMEOUT)) as conn:
        lengths = {}
        for method in ("GET", "HEAD"):
            conn.request(method, path)
            response = conn.getresponse()
            assert response.status == 200 and response.read() == b""
            lengths[method] = response.getheader("Content-Length")
    assert lengths == {"GET": "0", "HEAD": "0"}


@pytest.mark.parametrize("code", ["103", "100", "600", "999"])
def test_a_status_that_is_no_final_answer_is_the_applications_error(wsgi: Server, code) -> None:
    """A 1xx from start_response would be taken for the answer, leaving the
    client waiting for the final one (an interim answer is the server's to
    send); 600-999 are no HTTP status: a 500 and the reason in the log."""
    response = raw_exchange(
        wsgi.port, b"GET /status?code=%s HTTP/1.1\r\nHost: h\r\n\r\n" % code.encode()
    )
    assert response.startswith(b"HTTP/1.1 500 "), response
    assert response.count(b"HTTP/1.1 ") == 1
    wait_for(
        lambda: (
            f"invalid WSGI status '{code} Whatever' (a final status, 200-599)"
            in wsgi.process.stderr_text()
        ),
        TIMEOUT,
        "the log line",
    )


def test_a_request_body_the_client_cuts_is_no_application_traceback(wsgi: Server) -> None:
    """wsgi.input raising ClientDisconnected (a malformed chunked body: 400)
    is the client's doing: the connection's one INFO line, not 'Error in WSGI
    application' with a traceback for every such request (a client could
    flood the log)."""
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        # The 100 Continue says the application is reading wsgi.input now.
        sock.sendall(
            b"POST /digest HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"5\r\nhello0\r\n\r\n")  # a chunk not ended by CRLF: refused
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 400 "), response
    wait_for(
        lambda: "400 Bad Request from 127.0.0.1: " in wsgi.process.stderr_text(),
        TIMEOUT,
        "the one-line note",
    )
    assert wsgi.get("/write").text == "one,two,three"  # the worker is fine
    assert "Error in WSGI application: /digest" not in wsgi.process.stderr_text()


def _post_reading(port: int, head: bytes) -> socket.socket:
    """A POST /digest whose application is blocked reading wsgi.input (its
    100 Continue is in), the rest of ``head`` sent."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    sock.sendall(b"POST /digest HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n" + head)
    assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    return sock


def test_a_cut_or_refused_upload_is_one_log_line_not_two(spawn, free_port) -> None:
    """A body the connection refuses while the application reads it (400
    malformed, 413 too large, 400 the client ended its side) is logged once,
    by the connection, with the status and why, as under ASGI; the WSGI
    adapter's "stopped reading" line (which called a 413 a disconnect) is for
    a client that vanished without a word (a reset), where it is the one line.
    One application thread: /pid answers only after /digest has returned."""
    server = start_cli(
        spawn, free_port, "--threads", "1", "--max-body-size", "1000",
        "--access-log", "off", "tests.apps.wsgi_app:app",
    )  # fmt: skip
    cases = [
        (b"Transfer-Encoding: chunked\r\n\r\n", b"5\r\nhello0\r\n\r\n", "400 Bad Request"),
        (b"Transfer-Encoding: chunked\r\n\r\n", b"800\r\n" + b"x" * 2048, "413 Content Too Large"),
        (b"Content-Length: 500\r\n\r\n", b"abc", "400 Bad Request"),  # then half-closed
    ]
    for head, body, status in cases:
        with _post_reading(server.port, head) as sock:
            sock.sendall(body)
            if status == "400 Bad Request" and body == b"abc":
                sock.shutdown(socket.SHUT_WR)
            response = b""
            while chunk := sock.recv(65536):
                response += chunk
        assert response.startswith(b"HTTP/1.1 " + status.encode()), response
        assert "pid" in server.get("/pid").json()
    with _post_reading(server.port, b"Content-Length: 500\r\n\r\n") as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    wait_for(
        lambda: "WSGI application stopped reading: POST /digest" in server.process.stderr_text(),
        TIMEOUT,
        "the reset's one line",
    )
    assert "pid" in server.get("/pid").json()
    log = server.process.stderr_text()
    noted = [line for line in log.splitlines() if "prefork.error" in line]
    assert len(noted) == 4, log
    assert sum("from 127.0.0.1: " in line for line in noted) == 3, log
    assert log.count("WSGI application stopped reading") == 1, log
    assert "Traceback" not in log, log


def test_pipelined_requests_are_answered_in_order(wsgi: Server) -> None:
    raw = raw_exchange(
        wsgi.port,
        b"GET /write HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"GET /closing?n=2 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    assert raw.count(b"HTTP/1.1 200 OK") == 3
    first, second, third = (raw.index(m) for m in (b"three", b'"thread"', b"c0;"))
    assert first < second < third


def test_exc_info_before_any_byte_replaces_the_headers(wsgi: Server) -> None:
    response = wsgi.get("/excinfo-before")
    assert response.status_code == 500
    assert response.text == "error handled"


def test_exc_info_after_bytes_reraises_and_closes(wsgi: Server) -> None:
    raw = raw_exchange(wsgi.port, b"GET /excinfo-after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert b"partial" in raw and b"never" not in raw
    assert not raw.endswith(b"0\r\n\r\n")  # the body was cut, not completed
    assert "failed after the first chunk" in wsgi.process.stderr_text()


def test_exceptions_give_500_before_bytes_and_a_close_after(wsgi: Server) -> None:
    with closing(http.client.HTTPConnection("127.0.0.1", wsgi.port, timeout=TIMEOUT)) as conn:
        for path in ("/raise-before", "/no-start", "/not-bytes"):
            conn.request("GET", path)
            response = conn.getresponse()
            assert response.status == 500, path
            assert response.read() == b"500 Internal Server Error\n"
        conn.request("GET", "/write")  # the same connection still serves
        assert conn.getresponse().read() == b"one,two,three"
    raw = raw_exchange(wsgi.port, b"GET /raise-after HTTP/1.1\r\nHost: h\r\n\r\n")
    assert b"partial" in raw and not raw.endswith(b"0\r\n\r\n")
    stderr = wsgi.process.stderr_text()
    assert "failed before start_response on purpose" in stderr
    assert "Traceback" in stderr and "failed mid-stream on purpose" in stderr


def test_a_close_delimited_body_cut_by_an_error_ends_with_a_reset(wsgi: Server) -> None:
    """HTTP/1.0 without Content-Length: only the close ends the body, so a
    generator failing midway must not end it with a FIN (the client would
    take the cut body for the whole one): a reset says it was cut."""
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /raise-after HTTP/1.0\r\n\r\n")
        received, outcome = read_to_the_end(sock, TIMEOUT)
    assert not received or received.startswith(b"HTTP/1.1 200 ")
    assert outcome == "reset", (outcome, received)
    # A complete close-delimited body still ends with a plain close.
    raw = raw_exchange(wsgi.port, b"GET /write HTTP/1.0\r\n\r\n")
    assert raw.endswith(b"\r\n\r\none,two,three")


def test_two_different_content_lengths_are_a_500_not_a_truncated_answer(wsgi: Server) -> None:
    """``[("Content-Length", "3"), ("Content-Length", "5")]`` over 3 bytes sent
    CL 5 and closed: the client waited for 2 bytes that never came."""
    response = wsgi.get("/declared?cl=3%2B5&body=abc")
    assert response.status_code == 500
    assert "conflicting Content-Length values 3 and 5" in wsgi.process.stderr_text()


def test_start_response_twice_without_exc_info_is_an_error(wsgi: Server) -> None:
    assert "twice" in wsgi.get("/twice").text


# ------------------------------------------------------------- streaming and disconnects


def test_client_disconnect_mid_stream_stops_the_app_and_calls_close(wsgi: Server) -> None:
    before = wsgi.stats()
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        # 1000 chunks 10 ms apart: ten seconds if nobody stopped it.
        sock.sendall(b"GET /stream?n=1000&size=1000&delay_ms=10 HTTP/1.1\r\nHost: h\r\n\r\n")
        received = b""
        while len(received) < 5000:
            received += sock.recv(65536)
    wait_for(
        lambda: wsgi.stats()["stream_closed"] == before["stream_closed"] + 1,
        3.0,
        "close() after the client went away",
    )
    produced = wsgi.stats()["stream_produced"] - before["stream_produced"]
    assert produced < 500 * 1000, produced  # it stopped early


def test_write_raises_once_the_client_is_gone(wsgi: Server) -> None:
    """An application streaming through write() in a loop of its own learns
    that the client left (write() raises, as gunicorn's socket write does)
    instead of writing into the void until it is done; that is one INFO line,
    no traceback."""
    before = wsgi.stats()
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        # 1000 bytes 10 ms apart for ten seconds if nobody stopped it.
        sock.sendall(b"GET /write-loop?delay_ms=10 HTTP/1.1\r\nHost: h\r\n\r\n")
        received = b""
        while len(received) < 5000:
            received += sock.recv(65536)
    wait_for(
        lambda: wsgi.stats()["write_loop_raised"] == before["write_loop_raised"] + 1,
        3.0,
        "write() raising after the client went away",
    )
    wait_for(
        lambda: "WSGI application stopped writing: GET /write-loop" in wsgi.process.stderr_text(),
        TIMEOUT,
        "the one-line note",
    )
    assert "Error in WSGI application: /write-loop" not in wsgi.process.stderr_text()
    assert wsgi.get("/write").text == "one,two,three"  # the worker is fine


def test_back_pressure_bounds_what_the_app_produces(wsgi: Server) -> None:
    before = wsgi.stats()
    total = 4000 * 65536  # 256 MiB if nothing held it back
    with socket.create_connection(("127.0.0.1", wsgi.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /stream?n=4000&size=65536 HTTP/1.1\r\nHost: h\r\n\r\n")
        sock.recv(1024)
        # The thing under test: a client that reads nothing for a second.
        time.sleep(1.0)
        produced = wsgi.stats()["stream_produced"] - before["stream_produced"]
        assert produced < 32 * 1024 * 1024, produced
        # Reading lets it go on.
        got = 0
        while got < 8 * 1024 * 1024:
            got += len(sock.recv(1 << 20))
        more = wsgi.stats()["stream_produced"] - before["stream_produced"]
        assert more > produced
    wait_for(
        lambda: wsgi.stats()["stream_closed"] == before["stream_closed"] + 1,
        3.0,
        "close() of the big stream",
    )
    assert wsgi.stats()["stream_produced"] - before["stream_produced"] < total


def test_a_client_that_stops_reading_is_dropped_after_send_timeout(spawn) -> None:
    server = start_script(spawn, "--send-timeout", "1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /stream?n=4000&size=65536 HTTP/1.1\r\nHost: h\r\n\r\n")
        # Never read: the pool thread gives up after ~1 s without progress.
        wait_for(lambda: server.stats()["stream_closed"] == 1, 5.0, "close() after send_timeout")
    assert "client read nothing; closing" in server.process.stderr_text()


def test_a_large_streamed_body_arrives_whole(wsgi: Server) -> None:
    response = wsgi.get("/stream", params={"n": 200, "size": 65536})
    assert len(response.content) == 200 * 65536
    assert response.content[65536 : 65536 + 8] == b"00000001"


# ------------------------------------------------------------- threads


def _timed_get(url: str) -> tuple[float, float, dict]:
    started = time.monotonic()
    response = requests.get(url, timeout=TIMEOUT)
    return started, time.monotonic(), response.json()


def test_a_slow_request_does_not_block_another(wsgi: Server, tmp_path: Path) -> None:
    marks = tmp_path / "sleep-started"
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(_timed_get, wsgi.url + f"/sleep?s=1&mark={quote(str(marks))}")
        wait_for_lines(marks, 1, TIMEOUT, "the slow request to start in the application")
        started = time.monotonic()
        assert wsgi.get("/pid").status_code == 200
        answered_at = time.time()
        assert time.monotonic() - started < 0.5
        slept = slow.result(TIMEOUT)[2]
    assert slept["thread"].startswith("prefork-wsgi")
    assert slept["ended"] > answered_at  # answered while the slow one still slept


def test_the_pool_bounds_concurrency(spawn) -> None:
    server = start_script(spawn, "--threads", "2")
    env = server.get("/environ").json()
    assert env["wsgi.multithread"]["repr"] == "True"
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(_timed_get, [server.url + "/sleep?s=1"] * 4))
    elapsed = time.monotonic() - started
    assert 1.9 <= elapsed < 3.0, elapsed  # two rounds of two
    assert len({r[2]["thread"] for r in results}) == 2
    single = start_script(spawn, "--threads", "1")
    assert single.get("/environ").json()["wsgi.multithread"]["repr"] == "False"


# ------------------------------------------------------------- the CLI


def test_cli_heartbeat_goes_on_while_the_app_sleeps(spawn, free_port) -> None:
    server = start_cli(spawn, free_port, "--timeout", "2", FLASK_SPEC)
    pid = server.get("/pid").json()["pid"]
    response = server.get("/slow", params={"s": 3}, timeout=10)
    assert response.json() == {"pid": pid, "slept": True}
    assert server.get("/pid").json()["pid"] == pid  # not killed as hung, not replaced
    assert "hung" not in server.process.stderr_text().lower()


def test_cli_term_lets_an_app_thread_finish_its_request(spawn, free_port, tmp_path) -> None:
    server = start_cli(spawn, free_port, FLASK_SPEC)
    server.get("/pid")  # the worker is up (a TERM during its boot is another story)
    proc = server.process.proc
    marks = tmp_path / "slow-started"
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(server.get, f"/slow?s=1&mark={quote(str(marks))}")
        wait_for_lines(marks, 1, TIMEOUT, "the request to be in the application's thread")
        proc.send_signal(signal.SIGTERM)
        response = slow.result(TIMEOUT)
    assert response.status_code == 200 and response.json()["slept"] is True
    assert response.headers.get("Connection") == "close"
    assert proc.wait(TIMEOUT) == 0


def test_cli_threads_and_explicit_interface(spawn, free_port) -> None:
    server = start_cli(
        spawn, free_port, "--interface", "wsgi", "--threads", "1", "tests.apps.wsgi_app:app"
    )
    assert server.get("/environ").json()["wsgi.multithread"]["repr"] == "False"


def test_cli_auto_still_serves_a_seed_callback(spawn, free_port) -> None:
    server = start_cli(spawn, free_port, "tests.apps.echo_app:handle_request")
    assert server.get("/echo").json()["path"] == "/echo"


def test_adapter_threads_are_made_in_the_serving_process() -> None:
    adapter = WSGIAdapter(_wsgi, threads=1)
    first = adapter.executor
    assert adapter.executor is first
    adapter._executor_pid = -1  # as if this were a forked child
    assert adapter.executor is not first
    adapter.shutdown()
    first.shutdown()


def test_root_path_becomes_script_name(tmp_path) -> None:
    """``--root-path /app``: SCRIPT_NAME is the prefix, PATH_INFO what follows it
    (taken off only at a segment boundary); the same through the real CLI."""
    from prefork.worker.httputil import HTTPHeaders
    from prefork.worker.request import HTTPRequest
    from prefork.worker.wsgi import build_environ

    def environ_of(target: str) -> tuple[str, str]:
        request = HTTPRequest("GET", target, "HTTP/1.1", HTTPHeaders({"Host": "x"}))
        environ = build_environ(request, True, "/app")
        return environ["SCRIPT_NAME"], environ["PATH_INFO"]

    assert environ_of("/app/x%20y?q=1") == ("/app", "/x y")
    assert environ_of("/app") == ("/app", "")
    assert environ_of("/application/x") == ("/app", "/application/x")
    assert environ_of("/other") == ("/app", "/other")
    # judged on the bytes sent, as ASGI's root_path: an escape is no prefix
    assert environ_of("/%61pp/x") == ("/app", "/app/x")
    assert environ_of("/app%2Fx") == ("/app", "/app/x")
    assert environ_of("http://h/app/x?q") == ("/app", "/x")

    from tests.integration.test_cli_config import Cli

    server = Cli(
        tmp_path,
        "-w",
        "1",
        "--interface",
        "wsgi",
        "--root-path",
        "/app/",
        app="tests.apps.wsgi_app:app",
    )
    try:
        port = server.port()
        server.wait_workers(1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/app/environ")
        environ = json.loads(conn.getresponse().read())
        conn.close()
        assert (environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("/app", "/environ")
        assert server.stop() == 0
    finally:
        server.kill_group()


@pytest.mark.parametrize(
    ("target", "path_info", "query"),
    [
        ("http://example.com?q=/x", "/", "q=/x"),
        ("ftp://example.com/a/b", "/a/b", ""),
        ("http://example.com#/admin", "/", ""),
        ("/p#frag", "/p", ""),
        ("/p?x=1#frag?y", "/p", "x=1"),
        ("/a%23b", "/a#b", ""),
    ],
)
def test_path_info_and_query_of_every_target_form(target, path_info, query) -> None:
    """Absolute-form: the path after the authority, ending at "?" or "#";
    a fragment is never in PATH_INFO or QUERY_STRING (gunicorn drops it too)."""
    from prefork.worker.httputil import HTTPHeaders
    from prefork.worker.request import HTTPRequest
    from prefork.worker.wsgi import build_environ

    request = HTTPRequest("GET", target, "HTTP/1.1", HTTPHeaders({"Host": "x"}))
    environ = build_environ(request, True, "")
    assert (environ["PATH_INFO"], environ["QUERY_STRING"]) == (path_info, query)
    assert environ["RAW_URI"] == target


def test_100_continue_goes_out_when_wsgi_input_is_read(wsgi) -> None:
    """The WSGI thread's first read of ``wsgi.input`` asks for the body."""
    first, rest = post_expecting_continue(wsgi.port, "/digest", b"hello")
    assert first == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert rest.startswith(b"HTTP/1.1 200 "), rest
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["size"] == 5


def test_no_100_continue_when_wsgi_input_is_never_read(wsgi) -> None:
    first, rest = post_expecting_continue(wsgi.port, "/status?code=204", b"hello")
    assert first.startswith(b"HTTP/1.1 204 "), first
    assert rest == b""


def test_wsgi_responses_carry_the_date(wsgi) -> None:
    """RFC 9110 6.6.1, as gunicorn sends it."""
    response = raw_exchange(wsgi.port, b"GET /pid HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    dates = [line for line in header_lines(response) if line.lower().startswith("date:")]
    assert len(dates) == 1, response
    sent = email.utils.parsedate_to_datetime(dates[0].split(":", 1)[1].strip())
    assert abs(sent.timestamp() - time.time()) < 60
