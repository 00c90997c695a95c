"""TLS through the real CLI (--certfile/--keyfile/--ca-certs/--cert-reqs), checked by real clients.

What it proves (issue 4, item 5):

* ``openssl s_client`` negotiates TLS 1.3 with ALPN http/1.1 and a verified
  chain, and gets the application's answer over it; TLS 1.2 is accepted,
  TLS 1.1 is not (the default minimum is 1.2); a client offering only h2
  gets no ALPN protocol rather than a failed handshake.
* --cert-reqs required + --ca-certs: a client without a certificate, or with
  one from a CA the server does not trust, gets no answer (curl and Python);
  a client with a good certificate is served and the application sees it.
  --cert-reqs optional serves both.
* A PROXY header in front of the TLS handshake is read before the handshake,
  and the client it names is who the application, the access log, ASGI's
  scope["client"] and WSGI's REMOTE_ADDR see: curl --haproxy-protocol
  https://...; HAProxy in TCP mode passing TLS through with send-proxy-v2
  and with send-proxy (v1), curl behind it on another loopback address; a
  v2 header made by hand, then TLS on the same socket.  Plain HTTP sent to
  the TLS port after the header is answered 400 ("The plain HTTP request
  was sent to HTTPS port"), as nginx does, through HAProxy and directly;
  without PROXY protocol it is closed at once (never a hang).
* Certificates swapped on disk (a new certificate from a second CA) + HUP
  of the master, under a concurrent load of new and keep-alive TLS
  connections: 0 failed requests, and every handshake after the roll sees
  the new certificate (Python and openssl s_client).  A broken certificate
  on disk + HUP keeps the running workers (and the old certificate) serving.

Certificates come from trustme at test time; no key is committed.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import proxy_harness as h  # noqa: E402
from proxy_load import failures, run_load  # noqa: E402

from prefork.worker.proxy_protocol import V2_SIGNATURE  # noqa: E402

REQUEST = b"GET /tls HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"


class Pki:
    """Two server CAs, a client CA, and the certificates they issue, as files."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.ca1, self.ca2, client_ca = trustme.CA(), trustme.CA(), trustme.CA()
        self.ca1_pem = self._write("ca1.pem", self.ca1.cert_pem)
        self.ca2_pem = self._write("ca2.pem", self.ca2.cert_pem)
        self.both_pem = directory / "ca-both.pem"
        self.both_pem.write_bytes(self.ca1.cert_pem.bytes() + self.ca2.cert_pem.bytes())
        self.client_ca_pem = self._write("client-ca.pem", client_ca.cert_pem)
        self.server1 = self.ca1.issue_cert("localhost", "127.0.0.1", "::1")
        self.server2 = self.ca2.issue_cert("localhost", "127.0.0.1", "::1")
        # What the server is started with; swapped in place by the reload test.
        self.cert = directory / "server.pem"
        self.key = directory / "server.key"
        self.install(self.server1)
        client = client_ca.issue_cert("client@example.com", common_name="good-client")
        self.client_cert, self.client_key = self._pair("client", client)
        stranger = self.ca2.issue_cert("stranger@example.com", common_name="stranger")
        self.stranger_cert, self.stranger_key = self._pair("stranger", stranger)

    def _write(self, name: str, blob) -> Path:
        path = self.dir / name
        blob.write_to_path(str(path))
        return path

    def _pair(self, name: str, leaf) -> tuple[Path, Path]:
        cert = self.dir / f"{name}.pem"
        cert.write_bytes(b"".join(p.bytes() for p in leaf.cert_chain_pems))
        return cert, self._write(f"{name}.key", leaf.private_key_pem)

    def install(self, leaf) -> None:
        """Put ``leaf`` at server.pem/server.key, each file replaced atomically."""
        for path, data in (
            (self.cert, b"".join(p.bytes() for p in leaf.cert_chain_pems)),
            (self.key, leaf.private_key_pem.bytes()),
        ):
            fresh = path.with_suffix(".new")
            fresh.write_bytes(data)
            fresh.replace(path)

    def server_args(self) -> list[object]:
        return ["--certfile", self.cert, "--keyfile", self.key]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path / "pki")


def _start(tmp_path: Path, procs: list, *args: object, workers: int = 2) -> h.Prefork:
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", "--access-log", "off", *args], tmp_path, workers=workers
    )
    procs.append(server)
    return server


def s_client(port: int, *args: str, data: bytes = b"") -> tuple[int, str]:
    result = h.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost"]
        + list(args),
        input=data.decode(),
    )
    return result.returncode, result.stdout + result.stderr


def _context(cafile: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def _https_get(port: int, context: ssl.SSLContext, path: str = "/tls") -> tuple[int, bytes, bytes]:
    """(status, body, the server certificate in DER) on a new TLS connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
            tls.sendall(REQUEST.replace(b"/tls", path.encode()))
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    status, body = h.http_body(data)
    return status, body, der


def _refused(port: int, context: ssl.SSLContext) -> str:
    """Why a TLS client got no answer; fails the test if it did get one."""
    try:
        status, body, _ = _https_get(port, context)
    except (OSError, ValueError, IndexError) as exc:  # ssl.SSLError is an OSError
        return f"{type(exc).__name__}: {exc}"
    raise AssertionError(f"expected no answer, got {status}: {body[:200]!r}")


def _der(leaf) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


# -- handshake ---------------------------------------------------------------------------


def test_s_client_negotiates_tls13_and_alpn(tmp_path: Path, procs: list, pki: Pki) -> None:
    server = _start(tmp_path, procs, *pki.server_args())
    assert server.addresses == [f"https://127.0.0.1:{server.port}"]  # (the log says TLS)
    rc, out = s_client(
        server.port,
        "-alpn",
        "http/1.1",
        "-CAfile",
        str(pki.ca1_pem),
        "-verify_return_error",
        "-ign_eof",
        data=REQUEST,
    )
    assert rc == 0, out
    assert "New, TLSv1.3, Cipher is" in out, out
    assert "ALPN protocol: http/1.1" in out, out
    assert "Verify return code: 0 (ok)" in out, out
    assert "HTTP/1.1 200 OK" in out and '"protocol": "https"' in out, out


def test_tls_versions_and_alpn_choices(tmp_path: Path, procs: list, pki: Pki) -> None:
    server = _start(tmp_path, procs, *pki.server_args(), workers=1)
    ca = ["-CAfile", str(pki.ca1_pem)]
    rc, out = s_client(server.port, "-tls1_2", *ca)
    assert rc == 0 and "New, TLSv1.2, Cipher is" in out, out
    # TLS 1.1 is refused by the server (the client is allowed to offer it here).
    rc, out = s_client(server.port, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", *ca)
    assert rc != 0 and "New, TLSv1.1" not in out, out
    assert "New, (NONE), Cipher is (NONE)" in out or "alert" in out, out
    # Offering only h2: the handshake succeeds with no ALPN protocol chosen.
    rc, out = s_client(server.port, "-alpn", "h2", *ca)
    assert rc == 0 and "No ALPN negotiated" in out, out


# -- client certificates -----------------------------------------------------------------


def test_client_certificate_required(tmp_path: Path, procs: list, pki: Pki) -> None:
    server = _start(
        tmp_path,
        procs,
        *pki.server_args(),
        "--cert-reqs",
        "required",
        "--ca-certs",
        pki.client_ca_pem,
    )
    port = server.port
    url = f"https://localhost:{port}/cert"
    curl = ["curl", "-sS", "--max-time", "10", "--resolve", f"localhost:{port}:127.0.0.1"]
    curl += ["--cacert", str(pki.ca1_pem)]
    # No certificate: no answer.
    result = h.run([*curl, url])
    assert result.returncode != 0 and result.stdout == "", result
    assert _refused(port, _context(pki.ca1_pem))
    # A certificate from a CA the server does not trust: no answer.
    result = h.run([*curl, "--cert", str(pki.stranger_cert), "--key", str(pki.stranger_key), url])
    assert result.returncode != 0 and result.stdout == "", result
    assert _refused(port, _context(pki.ca1_pem, pki.stranger_cert, pki.stranger_key))
    # A good certificate: served, and the application sees who it is.
    seen = h.curl_json(*curl[4:], "--cert", pki.client_cert, "--key", pki.client_key, url)
    subject = dict(pair[0] for pair in seen["cert"]["subject"])
    assert subject["commonName"] == "good-client", seen["cert"]
    status, _, _ = _https_get(port, _context(pki.ca1_pem, pki.client_cert, pki.client_key))
    assert status == 200


def test_client_certificate_optional(tmp_path: Path, procs: list, pki: Pki) -> None:
    server = _start(
        tmp_path,
        procs,
        *pki.server_args(),
        "--cert-reqs",
        "optional",
        "--ca-certs",
        pki.client_ca_pem,
        workers=1,
    )
    import json

    status, body, _ = _https_get(server.port, _context(pki.ca1_pem), "/cert")
    assert status == 200 and json.loads(body)["cert"] is None
    context = _context(pki.ca1_pem, pki.client_cert, pki.client_key)
    status, body, _ = _https_get(server.port, context, "/cert")
    assert status == 200 and json.loads(body)["cert"] is not None


# -- certificate roll on HUP ---------------------------------------------------------------


def test_certificates_swapped_on_disk_and_hup_under_load(
    tmp_path: Path, procs: list, pki: Pki
) -> None:
    server = _start(tmp_path, procs, *pki.server_args(), workers=2)
    port = server.port
    assert _https_get(port, _context(pki.ca1_pem))[2] == _der(pki.server1)
    first = set(server.worker_pids())

    stop = threading.Event()
    results: list[dict] = []
    live: dict = {}
    load = threading.Thread(
        target=lambda: results.append(
            run_load(
                f"https://127.0.0.1:{port}/slow?ms=5",
                duration=60,
                concurrency=6,
                keep_alive=None,  # half the threads reuse connections, half do not
                ssl_context=_context(pki.both_pem),
                stop=stop,
                live=live,
            )
        )
    )
    load.start()
    try:
        h.wait_for(lambda: live.get("ok", 0) >= 50, 15, "50 requests before the roll")
        pki.install(pki.server2)
        server.hup_and_wait(2, timeout=30)
        ok = live["ok"]
        h.wait_for(lambda: live["ok"] >= ok + 60, 15, "60 more requests after the roll")
    finally:
        stop.set()
        load.join(30)
    assert results, "the load thread did not finish"
    result = results[0]
    summary = {k: result[k] for k in ("requests", "ok", "non_2xx", "errors")}
    print(f"TLS load across the certificate roll: {summary}")
    assert failures(result) == 0, (summary, result["error_samples"])
    assert result["requests"] > 100, summary
    h.wait_for(lambda: first.isdisjoint(server.worker_pids()), 15, "the old workers to exit")

    # Every new handshake now sees the new certificate, from the second CA ...
    for _ in range(6):
        assert _https_get(port, _context(pki.ca2_pem))[2] == _der(pki.server2)
    assert "CERTIFICATE_VERIFY_FAILED" in _refused(port, _context(pki.ca1_pem))
    # ... as openssl s_client reports too.
    rc, out = s_client(port, "-CAfile", str(pki.ca2_pem), "-verify_return_error")
    assert rc == 0 and "Verify return code: 0 (ok)" in out, out


def test_broken_certificate_on_disk_keeps_serving_the_old_one(
    tmp_path: Path, procs: list, pki: Pki
) -> None:
    server = _start(tmp_path, procs, *pki.server_args(), workers=2)
    port = server.port
    first = set(server.worker_pids())
    pki.cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    server.send_signal(signal.SIGHUP)
    # The master tries it before any worker does, so the reload is refused
    # (one line, no worker traceback) ...
    h.wait_for(
        lambda: "reload failed, keeping the old configuration" in server.stderr(),
        30,
        "the reload to be refused",
    )
    assert "--certfile/--keyfile: cannot load certfile" in server.stderr()
    assert "Traceback" not in server.stderr()
    # ... and the running workers serve on, with the certificate they loaded.
    assert server.alive()
    assert set(server.worker_pids()) == first
    for _ in range(6):
        status, _, der = _https_get(port, _context(pki.ca1_pem))
        assert status == 200 and der == _der(pki.server1)
    # Once a good certificate is back, the next HUP rolls to it.
    pki.install(pki.server2)
    server.send_signal(signal.SIGHUP)
    h.wait_for(lambda: "reload complete" in server.stderr(), 30, "the second reload")
    # (retired workers finish draining just after "reload complete")
    h.wait_for(lambda: first.isdisjoint(server.worker_pids()), 15, "the old workers to exit")
    for _ in range(6):
        assert _https_get(port, _context(pki.ca2_pem))[2] == _der(pki.server2)


def test_plain_http_to_the_tls_port_is_answered_400(tmp_path: Path, procs: list, pki: Pki) -> None:
    """No PROXY protocol: a plain HTTP request on the TLS port gets nginx's 400
    at once (not a failed handshake's bare close, nor a hang until the header
    timeout), and TLS clients are served as before.  Behind --proxy-protocol
    the same (below)."""
    server = _start(tmp_path, procs, *pki.server_args(), workers=1)
    start = time.monotonic()
    result = h.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{server.port}/plain"])
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result
    assert result.stdout == "400 The plain HTTP request was sent to HTTPS port\n", result
    assert elapsed < 5, elapsed
    status = h.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{server.port}/"]
    )
    assert status.stdout == "400", status
    assert _https_get(server.port, _context(pki.ca1_pem))[0] == 200


# -- PROXY protocol in front of TLS --------------------------------------------------------


CLIENT = "127.0.0.2"  # the client "machine" on loopback; HAProxy connects from 127.0.0.1
PLAIN_TO_TLS = "The plain HTTP request was sent to HTTPS port"
_STATUS_LAST = ["-w", "\n%{http_code}"]

# HAProxy at layer 4 passing TLS through, the client's address in a PROXY header.
HAPROXY_TLS_PASSTHROUGH = """
global
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 3s
    timeout client 30s
    timeout server 30s

listen li_tls_passthrough
    bind 127.0.0.1:{listen}
    server prefork 127.0.0.1:{upstream} {send_proxy}
"""


def _loopback_client_ok() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((CLIENT, 0))
    except OSError:
        return False
    return True


def _proxy_v2(source: str, source_port: int) -> bytes:
    """A PROXY v2 header (PROXY command, TCP over IPv4) naming ``source``."""
    addresses = socket.inet_aton(source) + socket.inet_aton("127.0.0.1")
    payload = addresses + struct.pack("!HH", source_port, 443)
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, 0x11, len(payload)) + payload


def _tls_after_header(port: int, cafile: Path, header: bytes, path: str) -> tuple[int, bytes]:
    """``header`` in the clear, then a TLS handshake and one request on the same socket."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(header)
        with _context(cafile).wrap_socket(raw, server_hostname="localhost") as tls:
            request = f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            tls.sendall(request.encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    return h.http_body(data)


def _access_lines(path: Path, marker: str) -> list[str]:
    """The access log lines (written in batches: waited for) that contain ``marker``."""

    def lines() -> list[str]:
        text = path.read_text(errors="replace") if path.exists() else ""
        return [line for line in text.splitlines() if marker in line]

    return h.wait_for(lines, 10, f"an access log line with {marker}")


def test_proxy_protocol_header_before_the_tls_handshake(
    tmp_path: Path, procs: list, pki: Pki
) -> None:
    """The PROXY header comes first on the wire, the TLS handshake after it."""
    server = _start(
        tmp_path,
        procs,
        *pki.server_args(),
        "--proxy-protocol",
        "--forwarded-allow-ips",
        "127.0.0.1",
        workers=1,
    )
    port = server.port
    seen = h.curl_json(
        "--haproxy-protocol",
        "--cacert",
        pki.ca1_pem,
        "--resolve",
        f"localhost:{port}:127.0.0.1",
        f"https://localhost:{port}/pp-tls",
    )
    assert seen["remote_ip"] == "127.0.0.1" and seen["protocol"] == "https", seen
    # The address came from the header: curl put 127.0.0.1 there, and a
    # hand-made header names another one, on the same TLS listener.
    header = _proxy_v2("203.0.113.7", 40000)
    status, body = _tls_after_header(port, pki.ca1_pem, header, "/pp-tls-by-hand")
    assert status == 200 and json.loads(body)["remote_ip"] == "203.0.113.7", body
    # Plain HTTP to the TLS port (after the header): nginx's answer, not a hang.
    result = h.run(
        ["curl", "-sS", "--max-time", "10", "--haproxy-protocol", *_STATUS_LAST]
        + [f"http://127.0.0.1:{port}/plain"]
    )
    assert result.returncode == 0 and result.stdout.endswith("\n400"), result
    assert PLAIN_TO_TLS in result.stdout, result


@pytest.mark.skipif(not _loopback_client_ok(), reason=f"cannot bind {CLIENT}")
@pytest.mark.parametrize("send_proxy", ["send-proxy-v2", "send-proxy"])
def test_haproxy_passes_tls_through_with_a_proxy_header(
    tmp_path: Path, procs: list, pki: Pki, send_proxy: str
) -> None:
    """HAProxy in TCP mode (TLS passed through, not terminated) with send-proxy(-v2)."""
    access_log = tmp_path / "access.log"
    server = _start(
        tmp_path,
        procs,
        *pki.server_args(),
        "--proxy-protocol",
        "--forwarded-allow-ips",
        "127.0.0.1",
        "--access-log",
        access_log,
        workers=1,
    )
    listen = h.free_port()
    config = HAPROXY_TLS_PASSTHROUGH.format(
        listen=listen, upstream=server.port, send_proxy=send_proxy
    )
    procs.append(h.HAProxy(tmp_path / "haproxy", config=config))
    curl = ["--cacert", pki.ca1_pem, "--resolve", f"localhost:{listen}:127.0.0.1"]
    curl += ["--interface", CLIENT]
    path = f"/through-haproxy-{send_proxy}"
    # Two requests on one TLS connection (curl reuses it), each from the client.
    url = f"https://localhost:{listen}{path}"
    result = h.run(
        ["curl", "-sS", "--max-time", "10", "-w", "\n%{num_connects}\n", *curl, url, url]
    )
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[1::2] == ["1", "0"], result.stdout  # (the second reused the connection)
    for seen in map(json.loads, lines[::2]):
        # prefork's peer is HAProxy (127.0.0.1); the header says 127.0.0.2.
        assert seen["remote_ip"] == CLIENT and seen["protocol"] == "https", seen
    lines = _access_lines(access_log, path)
    assert all(line.startswith(f"{CLIENT} - - [") for line in lines), lines
    # Plain HTTP through HAProxy to the TLS port: a clear 400, not a hang.
    result = h.run(
        ["curl", "-sS", "--max-time", "10", *_STATUS_LAST, "--interface", CLIENT]
        + [f"http://127.0.0.1:{listen}/plain"]
    )
    assert result.returncode == 0 and result.stdout.endswith("\n400"), result
    assert PLAIN_TO_TLS in result.stdout, result
    assert _access_lines(access_log, '"-" 400')[0].startswith(f"{CLIENT} "), access_log


@pytest.mark.parametrize(
    ("interface", "app", "path"),
    [("asgi", "asgi_app:app", "/scope"), ("wsgi", "wsgi_app:app", "/environ")],
)
def test_proxy_header_by_hand_then_tls_reaches_asgi_and_wsgi(
    tmp_path: Path, procs: list, pki: Pki, interface: str, app: str, path: str
) -> None:
    """A fabricated v2 header, then TLS on the same socket: scope["client"] / REMOTE_ADDR."""
    access_log = tmp_path / "access.log"
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", *pki.server_args(), "--proxy-protocol"]
        + ["--forwarded-allow-ips", "127.0.0.1", "--interface", interface]
        + ["--access-log", access_log],
        tmp_path,
        app=app,
        workers=1,
    )
    procs.append(server)
    status, body = _tls_after_header(
        server.port, pki.ca1_pem, _proxy_v2("203.0.113.7", 40000), path
    )
    assert status == 200, body
    seen = json.loads(body)
    if interface == "asgi":
        assert seen["client"] == ["203.0.113.7", 40000], seen
        assert seen["scheme"] == "https", seen
    else:
        assert seen["REMOTE_ADDR"] == "203.0.113.7", seen
        assert seen["REMOTE_PORT"] == "40000", seen
        assert seen["wsgi.url_scheme"] == "https", seen
    lines = _access_lines(access_log, f"GET {path} ")
    assert lines[0].startswith("203.0.113.7 - - ["), lines
