"""TLS in one worker process: ssl_options as a dict and as an SSLContext.

Certificates are made at test time with trustme (no private key is
committed).  Servers are ``tests/apps/echo_app.py`` in a subprocess.
"""

from __future__ import annotations

import contextlib
import email.utils
import http.client
import re
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest
import requests
import trustme

from prefork import HTTPServer
from tests.conftest import read_until_closed, wait_for

APP = Path(__file__).resolve().parent.parent / "apps" / "echo_app.py"
TIMEOUT = 5.0


class Certs:
    def __init__(self, directory: Path) -> None:
        ca = trustme.CA()
        self.ca = directory / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca))
        server = ca.issue_cert("127.0.0.1", "localhost", "::1")
        self.server_cert = directory / "server.pem"
        self.server_key = directory / "server.key"
        server.cert_chain_pems[0].write_to_path(str(self.server_cert))
        server.private_key_pem.write_to_path(str(self.server_key))
        client = ca.issue_cert("client.example", common_name="test-client")
        self.client_cert = directory / "client.pem"
        self.client_key = directory / "client.key"
        client.cert_chain_pems[0].write_to_path(str(self.client_cert))
        client.private_key_pem.write_to_path(str(self.client_key))
        # A client certificate from a CA the server does not trust.
        stranger = trustme.CA().issue_cert("stranger.example", common_name="stranger")
        self.stranger_cert = directory / "stranger.pem"
        self.stranger_key = directory / "stranger.key"
        stranger.cert_chain_pems[0].write_to_path(str(self.stranger_cert))
        stranger.private_key_pem.write_to_path(str(self.stranger_key))

    def server_args(self) -> list[object]:
        return ["--certfile", self.server_cert, "--keyfile", self.server_key]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return Certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_dict(module_spawn, certs):
    return module_spawn(APP, *certs.server_args())


@pytest.fixture(scope="module")
def tls_context(module_spawn, certs):
    return module_spawn(APP, *certs.server_args(), "--ssl-context")


@pytest.fixture(scope="module")
def tls_mutual(module_spawn, certs):
    return module_spawn(
        APP, *certs.server_args(), "--cert-reqs", "required", "--ca-certs", certs.ca
    )


@pytest.fixture(params=["dict", "context"])
def tls_server(request, tls_dict, tls_context):
    return {"dict": tls_dict, "context": tls_context}[request.param]


def https_echo(port: int, certs: Certs, **kwargs) -> dict:
    response = requests.get(
        f"https://127.0.0.1:{port}/echo?x=1", verify=str(certs.ca), timeout=TIMEOUT, **kwargs
    )
    assert response.status_code == 200
    return response.json()


# ---------------------------------------------------------------- basics


def test_requests_with_verify_ca(tls_server, certs):
    data = https_echo(tls_server.port, certs)
    assert data["protocol"] == "https"
    assert data["full_url"] == f"https://127.0.0.1:{tls_server.port}/echo?x=1"
    assert data["arguments"] == {"x": ["1"]}
    assert data["ssl_certificate"] is None  # no client certificate was sent
    assert data["ssl_certificate_binary_len"] is None


def test_unverified_client_refuses_the_self_made_ca(tls_dict):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{tls_dict.port}/echo", timeout=TIMEOUT)


def test_keep_alive_over_tls(tls_server, certs):
    context = ssl.create_default_context(cafile=str(certs.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", tls_server.port, context=context, timeout=5)
    try:
        conn.request("GET", "/echo?n=1")
        first = conn.getresponse()
        first.read()
        sock = conn.sock
        conn.request("GET", "/framed?pieces=3")
        second = conn.getresponse()
        assert second.getheader("Transfer-Encoding") == "chunked"
        assert second.read() == b"piece0;piece1;piece2;"
        assert conn.sock is sock, "the connection was not reused"
    finally:
        conn.close()


def test_openssl_s_client_alpn_and_protocol(tls_server, certs):
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{tls_server.port}",
            "-alpn",
            "http/1.1",
            "-CAfile",
            str(certs.ca),
        ],
        input=b"",
        capture_output=True,
        timeout=10,
    )
    output = result.stdout.decode(errors="replace")
    assert "ALPN protocol: http/1.1" in output, output
    # "New, TLSv1.3, Cipher is ..." (the session block may not be printed
    # before stdin's EOF ends s_client).
    assert re.search(r"New, TLSv1\.[23], Cipher is|Protocol\s*:\s*TLSv1\.[23]\b", output), output
    assert "Verify return code: 0 (ok)" in output


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_below_1_2_is_refused(tls_dict):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot even offer TLS < 1.2")
    with socket.create_connection(("127.0.0.1", tls_dict.port), timeout=TIMEOUT) as raw:
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            with context.wrap_socket(raw) as tls:
                tls.recv(1)


# ---------------------------------------------------------------- client certificates


def test_client_without_certificate_fails_when_required(tls_mutual, certs):
    with pytest.raises(requests.exceptions.ConnectionError):
        https_echo(tls_mutual.port, certs)
    assert tls_mutual.proc.poll() is None


def test_client_with_an_untrusted_certificate_fails(tls_mutual, certs):
    with pytest.raises(requests.exceptions.ConnectionError):
        https_echo(tls_mutual.port, certs, cert=(str(certs.stranger_cert), str(certs.stranger_key)))


def test_client_certificate_seen_by_the_application(tls_mutual, certs):
    data = https_echo(tls_mutual.port, certs, cert=(str(certs.client_cert), str(certs.client_key)))
    certificate = data["ssl_certificate"]
    assert certificate is not None
    subject = {name: value for rdn in certificate["subject"] for name, value in rdn}
    assert subject["commonName"] == "test-client"
    assert ["DNS", "client.example"] in certificate["subjectAltName"]
    assert data["ssl_certificate_binary_len"] > 0
    assert data["protocol"] == "https"


def test_mutual_tls_server_still_serves_after_a_refused_client(tls_mutual, certs):
    client_cert = (str(certs.client_cert), str(certs.client_key))
    for _ in range(2):
        with pytest.raises(requests.exceptions.ConnectionError):
            https_echo(tls_mutual.port, certs)
        assert https_echo(tls_mutual.port, certs, cert=client_cert)["ssl_certificate"]


# ---------------------------------------------------------------- failed handshakes


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x16\x03\x01\x00\x05hello" + b"\x00" * 50, id="garbage-record"),
        pytest.param(bytes(range(256)) * 4, id="garbage-bytes"),
    ],
)
def test_failed_handshake_closes_only_that_connection(tls_dict, certs, data):
    # A healthy TLS connection opened before the bad one survives it.
    context = ssl.create_default_context(cafile=str(certs.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", tls_dict.port, context=context, timeout=5)
    try:
        conn.request("GET", "/echo?before=1")
        conn.getresponse().read()
        with socket.create_connection(("127.0.0.1", tls_dict.port), timeout=TIMEOUT) as bad:
            try:
                bad.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            answer = read_until_closed(bad)
        assert not answer.startswith(b"HTTP/"), answer
        conn.request("GET", "/echo?after=1")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read()
    finally:
        conn.close()
    assert tls_dict.proc.poll() is None
    assert https_echo(tls_dict.port, certs)["protocol"] == "https"


@pytest.mark.parametrize("uvloop", ["1", "0"], ids=["uvloop", "asyncio"])
def test_plain_http_to_the_tls_port_is_answered_400_and_closed(
    spawn, certs, monkeypatch, uvloop
) -> None:
    """nginx's answer, at once, whether the request came whole or a byte at a
    time; the connection then closes; TLS clients are not affected.  On both
    loops (their TLS transports differ).  With a Date, as every 4xx of an
    origin server with a clock (RFC 9110 6.6.1) and the server's other refusals."""
    from prefork.worker.tls_accept import PLAIN_HTTP_ANSWER

    monkeypatch.setenv("PREFORK_UVLOOP", uvloop)  # (the server process inherits it)
    server = spawn(APP, *certs.server_args())
    for pieces in ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], [b"P", b"OST /x HTTP/1.1\r\n"]):
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as plain:
            start = time.monotonic()
            for piece in pieces:
                plain.sendall(piece)
            answer = read_until_closed(plain)
            assert time.monotonic() - start < 2
            date = re.search(rb"\r\nDate: ([^\r]+ GMT)\r\n", answer)
            assert date is not None, answer
            assert email.utils.parsedate_to_datetime(date.group(1).decode()).year >= 2024
            assert answer.replace(date.group(0), b"\r\n", 1) == PLAIN_HTTP_ANSWER
    assert https_echo(server.port, certs)["protocol"] == "https"


def test_stalled_handshake_does_not_block_other_clients(spawn, certs):
    server = spawn(APP, *certs.server_args(), "--limit", "header_timeout=1")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as stalled:
        stalled.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then nothing
        start = time.monotonic()
        assert https_echo(server.port, certs)["protocol"] == "https"
        assert time.monotonic() - start < 1.0
        # The stalled handshake is given up after the header timeout.
        read_until_closed(stalled, timeout=4)
        assert time.monotonic() - start < 4


# ---------------------------------------------------------------- configuration errors


def _callback(request):  # never called
    raise AssertionError


@pytest.mark.parametrize("key", ["certfile", "keyfile", "ca_certs"])
def test_missing_file_is_a_value_error_at_construction(tmp_path, certs, key):
    options = {"certfile": str(certs.server_cert), "keyfile": str(certs.server_key)}
    options[key] = str(tmp_path / "missing.pem")
    if key == "ca_certs":
        options["cert_reqs"] = ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match=key):
        HTTPServer(_callback, ssl_options=options)


def test_certfile_that_is_not_a_certificate_is_a_value_error(tmp_path):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ValueError):
        HTTPServer(_callback, ssl_options={"certfile": str(bogus)})


def test_valid_ssl_options_construct(certs):
    server = HTTPServer(
        _callback,
        ssl_options={"certfile": str(certs.server_cert), "keyfile": str(certs.server_key)},
    )
    assert isinstance(server.ssl_context, ssl.SSLContext)
    assert server.ssl_context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_a_client_ending_its_tls_side_after_its_request_is_no_warning(tls_dict, certs):
    """TLS has no half-close: after the client's close_notify the TLS layer
    closes the connection whatever the protocol returns, and logged asyncio's
    "returning true from eof_received() has no effect when using ssl" for
    every such client (a log any client could fill); the application sees the
    client gone. The request and the close_notify leave in one write, so the
    EOF comes while the request is in hand."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    with socket.create_connection(("127.0.0.1", tls_dict.port), timeout=TIMEOUT) as sock:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                assert data, "the server closed during the handshake"
                incoming.write(data)
        sock.sendall(outgoing.read())
        tls.write(b"GET /delay?ms=200&i=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.unwrap()  # close_notify, behind the request
        sock.sendall(outgoing.read())
        with contextlib.suppress(OSError):  # the server acts on the EOF: it closes
            while sock.recv(65536):
                pass
    assert https_echo(tls_dict.port, certs)  # the worker serves on
    assert "eof_received() has no effect" not in tls_dict.stderr_text()


@pytest.mark.parametrize("interface", ["asgi", "wsgi", "callback", "websocket"])
def test_a_client_leaving_a_tls_stream_is_no_warning_on_asyncio(
    spawn, certs, free_port, monkeypatch, tmp_path, interface
) -> None:
    """On asyncio's loop (not uvloop) a client that resets a TLS connection
    while the application streams marked only the socket's transport closed;
    the TLS transport said open until connection_lost, a loop turn later, and
    each write meanwhile was logged from the fifth on ("socket.send() raised
    exception.", a line per write: a log any client could fill)."""
    monkeypatch.setenv("PREFORK_UVLOOP", "0")
    port = free_port()
    access = tmp_path / "access.log"
    mark = tmp_path / "ended"
    monkeypatch.setenv("ENDLESS_MARK", str(mark))
    websocket = interface == "websocket"
    interface = "asgi" if websocket else interface
    server = spawn(
        "-m", "prefork", "-b", f"127.0.0.1:{port}", "-w", "1", *certs.server_args(),
        "--interface", interface, "--access-log", access, "--chdir", APP.parent,
        "--no-ws-per-message-deflate", f"endless_stream:{interface}",
        ready_port=port,
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(certs.ca))
    clients = 8
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    if websocket:
        request = (
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    for _ in range(clients):
        raw = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(request)
            got = 0
            while got < 300_000:
                chunk = tls.recv(65536)
                assert chunk, "the stream ended early"
                got += len(chunk)
            # Unread data in the socket: the close is a reset.
            tls.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if websocket:  # (its access-log line is written at the upgrade: the app says when it ended)
        wait_for(
            lambda: mark.exists() and mark.read_text().count("ended") == clients,
            TIMEOUT * 2,
            "the application to see each WebSocket end",
        )
    else:
        wait_for(
            lambda: access.exists() and access.read_text().count('"GET / HTTP/1.1" 200') == clients,
            TIMEOUT * 2,
            "an access-log line for each stream the client left",
        )
    assert server.proc.poll() is None
    errors = server.stderr_text()
    assert "raised exception" not in errors and "SSL connection is closed" not in errors, errors


def test_ciphers_restrict_what_a_tls_1_2_client_may_use(spawn, certs, free_port) -> None:
    """``--ciphers`` (gunicorn's ``ciphers``) reaches the listener: a TLS 1.2
    client offering only ciphers outside the list is refused, one offering
    the list's gets it."""
    port = free_port()
    spawn(
        "-m", "prefork", "-b", f"127.0.0.1:{port}", "-w", "1", *certs.server_args(),
        "--ciphers", "ECDHE+AESGCM:!AES128", "--chdir", APP.parent, "endless_stream:callback",
        ready_port=port,
    )  # fmt: skip

    def handshake(client_ciphers: str) -> str:
        context = ssl.create_default_context(cafile=str(certs.ca))
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(client_ciphers)
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                return tls.cipher()[0]  # type: ignore[index]

    assert "AES256-GCM" in handshake("ECDHE+AESGCM")
    with pytest.raises(ssl.SSLError):
        handshake("ECDHE+AESGCM:!AES256")
