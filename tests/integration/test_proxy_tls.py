"""PROXY protocol in front of TLS (prefork.worker.tls_accept), on uvloop and on asyncio.

``tests/apps/echo_app.py --proxy-protocol --certfile ... --keyfile ...`` in a
subprocess, driven over loopback by hand-made PROXY headers followed by a
real TLS client on the same socket:

* the header is read off the raw connection, then TLS starts on it; the
  address the header names is the request's ``remote_ip`` (and the access
  log's), for every request on the connection; LOCAL means the peer;
* the header and the ClientHello in one segment (nothing after the header
  may be lost), or the header one byte at a time;
* plain HTTP after the header is answered 400 with nginx's words, and
  logged; a missing or malformed header, or something after it that is
  neither TLS nor HTTP, is closed with no answer; a header and then
  silence is closed after ``header_timeout``, without holding up others;
  a failed handshake closes that connection only;
* no descriptor is left behind by any of these, and none is left to the
  garbage collector to close.

Certificates are made by trustme at test time.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import struct
import time
from pathlib import Path

import pytest
import trustme

from prefork.worker.proxy_protocol import V2_SIGNATURE
from prefork.worker.tls_accept import PLAIN_HTTP_ANSWER
from tests.conftest import read_until_closed, wait_for

APP = Path(__file__).resolve().parent.parent / "apps" / "echo_app.py"
TIMEOUT = 5.0
HEADER_TIMEOUT = 1.0
REQUEST = b"GET /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
GET = b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n"


def v1(source: str, port: int = 5555) -> bytes:
    return f"PROXY TCP4 {source} 127.0.0.1 {port} 443\r\n".encode()


def v2(command: int, family: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(payload)) + payload


def v2_ipv4(source: str, port: int = 40000, tlvs: bytes = b"") -> bytes:
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
    return v2(1, 0x11, addresses + struct.pack("!HH", port, 443) + tlvs)


class Server:
    def __init__(self, process, ca: Path, access_log: Path) -> None:
        self.process = process
        self.port = process.port
        self.access_log = access_log
        self.context = ssl.create_default_context(cafile=str(ca))

    def descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def access_lines(self, marker: str) -> list[str]:
        def lines() -> list[str]:
            text = self.access_log.read_text() if self.access_log.exists() else ""
            return [line for line in text.splitlines() if marker in line]

        return wait_for(lines, TIMEOUT, f"an access log line with {marker!r}")


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def server(request, module_spawn, tmp_path_factory) -> Server:
    directory = tmp_path_factory.mktemp(f"proxy-tls-{request.param}")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    leaf.cert_chain_pems[0].write_to_path(str(directory / "server.pem"))
    leaf.private_key_pem.write_to_path(str(directory / "server.key"))
    access_log = directory / "access.log"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFORK_UVLOOP", "1" if request.param == "uvloop" else "0")
        # A socket closed by the garbage collector, not by the code, says so.
        patch.setenv("PYTHONWARNINGS", "always::ResourceWarning")
        process = module_spawn(
            APP,
            "--proxy-protocol",
            "--certfile",
            directory / "server.pem",
            "--keyfile",
            directory / "server.key",
            "--limit",
            f"header_timeout={HEADER_TIMEOUT}",
            "--access-log",
            access_log,
        )
    return Server(process, directory / "ca.pem", access_log)


# -- clients ------------------------------------------------------------------------------


def raw_exchange(server: Server, data: bytes, timeout: float = TIMEOUT) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        return read_until_closed(sock, timeout)


def tls_after_header(server: Server, header: bytes, requests: bytes = REQUEST) -> bytes:
    """``header`` in the clear, then TLS (ssl.wrap_socket) on the same socket."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(header)
        with server.context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(requests)
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return data


def tls_in_one_segment_with_header(server: Server, header: bytes) -> bytes:
    """``header`` and the ClientHello in one send: they reach the server together."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = server.context.wrap_bio(incoming, outgoing, server_hostname="localhost")
        prefix = header

        def flush() -> None:
            nonlocal prefix
            data, prefix = prefix + outgoing.read(), b""
            if data:
                sock.sendall(data)

        def fill() -> bool:
            chunk = sock.recv(65536)
            if chunk:
                incoming.write(chunk)
            else:
                incoming.write_eof()
            return bool(chunk)

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                assert fill(), "closed during the handshake"
        tls.write(REQUEST)
        flush()
        data = b""
        while True:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                if not fill():
                    break
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            data += chunk
    return data


def remote_ips(responses: bytes) -> list[str]:
    assert responses.startswith(b"HTTP/1.1 200 "), responses[:300]
    return [m.decode() for m in re.findall(rb'"remote_ip": "([^"]*)"', responses)]


def protocols(responses: bytes) -> list[str]:
    return [m.decode() for m in re.findall(rb'"protocol": "([^"]*)"', responses)]


# -- served --------------------------------------------------------------------------------


def test_header_then_tls_every_request_is_from_the_named_client(server: Server) -> None:
    keep_alive = REQUEST.replace(b"Connection: close\r\n", b"")
    responses = tls_after_header(server, v1("203.0.113.7"), keep_alive + REQUEST)
    assert remote_ips(responses) == ["203.0.113.7"] * 2, responses
    assert protocols(responses) == ["https"] * 2
    lines = server.access_lines("203.0.113.7 ")
    assert len(lines) == 2 and all('"GET /echo HTTP/1.1" 200' in line for line in lines), lines


def test_header_and_client_hello_in_one_segment(server: Server) -> None:
    header = v2_ipv4("198.51.100.20", tlvs=b"\x04\x00\x03pad")  # with a NOOP TLV
    responses = tls_in_one_segment_with_header(server, header)
    assert remote_ips(responses) == ["198.51.100.20"], responses
    v1_header = v1("198.51.100.21")
    assert remote_ips(tls_in_one_segment_with_header(server, v1_header)) == ["198.51.100.21"]


def test_header_one_byte_at_a_time(server: Server) -> None:
    header = v2_ipv4("198.51.100.30")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in header:
            sock.sendall(bytes([byte]))
            time.sleep(0.002)  # the thing under test: one byte per segment, trickled
        with server.context.wrap_socket(sock, server_hostname="localhost") as tls:
            tls.sendall(REQUEST)
            responses = read_until_closed(tls)
    assert remote_ips(responses) == ["198.51.100.30"], responses


def test_local_command_and_unknown_mean_the_peer(server: Server) -> None:
    assert remote_ips(tls_after_header(server, v2(0, 0x00, b""))) == ["127.0.0.1"]
    assert remote_ips(tls_after_header(server, b"PROXY UNKNOWN\r\n")) == ["127.0.0.1"]


# -- refused -------------------------------------------------------------------------------


def _without_date(answer: bytes) -> bytes:
    """The answer less its Date line (the one part that changes)."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\n", answer, count=1)


def test_plain_http_after_the_header_is_answered_400(server: Server) -> None:
    answer = raw_exchange(server, v1("203.0.113.9") + GET)
    assert _without_date(answer) == PLAIN_HTTP_ANSWER, answer
    assert b"400 The plain HTTP request was sent to HTTPS port\n" in answer
    assert server.access_lines("203.0.113.9 ")[0].endswith('"-" 400 - "-" "-"')
    # A client that keeps its side open still gets the answer, then the close.
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        sock.sendall(v2_ipv4("203.0.113.10") + GET)
        assert _without_date(read_until_closed(sock)) == PLAIN_HTTP_ANSWER


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,  # TLS, no header
        GET,  # plain HTTP, no header
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n\x16\x03\x01",  # a field missing
        v2(1, 0x12, b"\0" * 12) + b"\x16\x03\x01",  # DGRAM
        b"PROXY " + b"9" * 200,  # too long
        v1("203.0.113.7") + b"\x00\x01\x02 garbage",  # neither TLS nor HTTP after it
    ],
    ids=["tls-no-header", "http-no-header", "v1-short", "v2-dgram", "v1-too-long", "garbage"],
)
def test_missing_or_malformed_header_closes_without_an_answer(server: Server, data) -> None:
    assert raw_exchange(server, data) == b""


def test_silence_after_the_header_is_closed_at_the_header_timeout(server: Server) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as silent:
        silent.sendall(v1("203.0.113.11"))
        start = time.monotonic()
        # Others are served meanwhile.
        assert remote_ips(tls_after_header(server, v1("203.0.113.12"))) == ["203.0.113.12"]
        assert read_until_closed(silent, timeout=HEADER_TIMEOUT + 3) == b""
        assert time.monotonic() - start >= HEADER_TIMEOUT - 0.3


def test_failed_handshake_after_the_header_closes_that_connection_only(server: Server) -> None:
    record = b"\x16\x03\x01\x00\x05hello" + b"\x00" * 50
    assert raw_exchange(server, v1("203.0.113.13") + record) == b""
    assert remote_ips(tls_after_header(server, v1("203.0.113.14"))) == ["203.0.113.14"]


def test_no_descriptor_is_left_behind(server: Server) -> None:
    # (settle: the connections of earlier tests are closed by now or soon)
    before = wait_for(lambda: server.descriptors(), TIMEOUT, "the descriptor count")
    for _ in range(3):
        tls_after_header(server, v1("203.0.113.15"))
        tls_in_one_segment_with_header(server, v2_ipv4("203.0.113.16"))
        raw_exchange(server, v1("203.0.113.17") + GET)
        raw_exchange(server, b"PROXY garbage\r\n")
        raw_exchange(server, v1("203.0.113.18") + b"\x16\x03\x01\x00\x05hello" + b"\x00" * 50)
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(b"PROXY TCP4 203.0")  # closed by the client mid-header
        with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
            sock.sendall(v1("203.0.113.19") + b"\x16\x03\x01")  # ... and mid-handshake
    wait_for(
        lambda: server.descriptors() <= before,
        TIMEOUT,
        f"the server's descriptors to go back to {before} (now {server.descriptors()})",
        interval=0.05,
    )
    errors = server.process.stderr_text()
    assert "ResourceWarning" not in errors and "Traceback" not in errors, errors
