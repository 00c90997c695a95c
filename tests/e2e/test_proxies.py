"""prefork behind real proxies: nginx, HAProxy, curl's PROXY header, two "hosts" in netns.

What each part proves (issue 4, "Proxies" and "Health"):

* The deploy files are valid (``nginx -t``, ``haproxy -dW -c``) and keep the
  timeout order: the proxy closes idle upstream connections before prefork's
  --keep-alive does; HAProxy marks a draining host DOWN before its
  --drain-delay ends.
* deploy/nginx/prefork.conf, run for real over a unix and a TCP upstream:
  the application sees the client's address when nginx is trusted (a unix
  peer always is; over TCP when --forwarded-allow-ips names nginx's address)
  and nginx's own address when it is not; what the client claims in
  X-Real-Ip / X-Forwarded-For / X-Scheme never wins.  HUP of prefork several
  times under wrk through nginx: 0 non-2xx answers, 0 socket errors.
* PROXY protocol: ``curl --haproxy-protocol`` and hand-made v1/v2 headers
  reach the application with the address they carry; a header from a peer
  that is not trusted, a connection without a header and a malformed header
  are closed with no answer.  deploy/haproxy/haproxy.cfg's send-proxy-v2
  section delivers the client's IPv4 and IPv6 address; its health checks
  (which carry a PROXY header themselves) pass.
* Health paths are answered before the application; during a graceful stop
  with --drain-delay the readiness path says 503 while requests still get
  200, then the listeners close and the master exits 0.
* Two prefork instances in two network namespaces behind HAProxy (in a third
  namespace, with the client): TERM one under load, HAProxy takes it out on
  its readiness checks while it still serves, and no client request fails.

Client addresses: the client connects from 127.0.0.2 and the proxy from
127.0.0.1, so the two can be told apart on loopback.  The netns test uses
10.213.1.0/30 and 10.213.2.0/30, which exist only inside the namespaces it
makes and deletes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))

import proxy_harness as h  # noqa: E402
from proxy_load import failures  # noqa: E402

from prefork.config import SETTINGS  # noqa: E402
from prefork.worker.proxy_protocol import V2_SIGNATURE  # noqa: E402
from tests.conftest import wait_for_lines  # noqa: E402

PREFORK_KEEP_ALIVE = next(s.default for s in SETTINGS if s.name == "keep_alive")
CLIENT = "127.0.0.2"  # the "client" machine on loopback
PROXY = "127.0.0.1"  # where nginx / HAProxy connect from
ELSEWHERE = "10.213.255.1"  # a trusted-proxy address that is not the real proxy (never contacted)


def root_only():
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def loopback_client_ok() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((CLIENT, 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not loopback_client_ok(), reason=f"cannot bind {CLIENT}")


# -- the deploy files ------------------------------------------------------------------------


def _seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)?", value)
    assert match, value
    number = float(match.group(1))
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]


def _active(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_nginx_deploy_conf_is_valid(workdir: Path) -> None:
    site = h.nginx_site(listen_port=h.free_port(), unix_socket="/run/x.sock", tcp_port=None)
    conf = workdir / "nginx.conf"
    (workdir / "prefork.conf").write_text(site)
    conf.write_text(
        f"pid {workdir}/nginx.pid; error_log {workdir}/error.log;\n"
        f"events {{}}\nhttp {{ include {workdir}/prefork.conf; }}\n"
    )
    result = h.run(["nginx", "-t", "-p", str(workdir), "-c", str(conf)])
    assert result.returncode == 0, result.stderr
    assert "[warn]" not in result.stderr and "[emerg]" not in result.stderr, result.stderr


def test_nginx_upstream_keepalive_is_shorter_than_prefork_keep_alive() -> None:
    text = _active(h.NGINX_DEPLOY.read_text())
    upstreams = re.findall(r"upstream\s+(\w+)\s*\{(.*?)\}", text, re.S)
    assert {name for name, _ in upstreams} == {"prefork", "prefork_tcp"}
    for name, body in upstreams:
        timeout = re.search(r"keepalive_timeout\s+(\S+);", body)
        assert timeout, f"upstream {name}: no keepalive_timeout (nginx's default is 60 s)"
        assert _seconds(timeout.group(1)) < PREFORK_KEEP_ALIVE, name
        assert re.search(r"keepalive\s+\d+;", body), f"upstream {name}: no keepalive pool"
    location = text[text.index("location /") :]
    assert "proxy_http_version 1.1;" in location
    # Connection is empty (keep-alive) unless the client asked for an upgrade.
    assert "proxy_set_header Connection $connection_upgrade;" in location
    assert "proxy_set_header Upgrade $http_upgrade;" in location
    assert re.search(
        r"map \$http_upgrade \$connection_upgrade \{\s*default upgrade;\s*''\s*'';", text
    )
    for header in ("X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "X-Scheme", "Host"):
        assert f"proxy_set_header {header} " in location, header


def test_haproxy_deploy_cfg_is_valid() -> None:
    result = h.run(["haproxy", "-dW", "-c", "-f", str(h.HAPROXY_DEPLOY)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr


def test_haproxy_timeouts_are_in_order() -> None:
    raw = h.HAPROXY_DEPLOY.read_text()
    text = _active(raw)
    timeouts = {k: _seconds(v) for k, v in re.findall(r"timeout\s+([\w-]+)\s+(\S+)", text)}
    defaults = re.findall(r"default-server\s+(.*)", text)
    assert len(defaults) == 2
    drain_delay = float(re.search(r"--drain-delay\s+(\d+(?:\.\d+)?)", raw).group(1))
    for line in defaults:
        options = dict(re.findall(r"([\w-]+)\s+(\d+\w*)", line))
        inter, fall = _seconds(options["inter"]), int(options["fall"])
        assert timeouts["check"] <= inter, "a check must end before the next one starts"
        # TERM -> readiness 503 -> DOWN after `fall` failed checks, before the drain ends.
        assert inter * fall + timeouts["check"] < drain_delay
        purge = _seconds(options.get("pool-purge-delay", "5s"))  # HAProxy's default: 5 s
        assert purge < PREFORK_KEEP_ALIVE
    graceful = next(s.default for s in SETTINGS if s.name == "graceful_timeout")
    assert timeouts["server"] <= graceful
    ping = next(s.default for s in SETTINGS if s.name == "ws_ping_interval")
    assert timeouts["tunnel"] > ping  # an idle WebSocket is pinged before HAProxy cuts it
    assert "option httpchk" in text and "uri /readyz" in text
    assert "send-proxy-v2" in text
    for header in ("X-Real-IP", "X-Forwarded-Proto"):
        assert f"set-header {header}" in text, header
    assert "option forwardfor" in text and "del-header X-Scheme" in text


# -- nginx in front ------------------------------------------------------------------------


def _start_behind_nginx(
    workdir: Path, procs: list, upstream: str, allow: str, extra: tuple = ()
) -> tuple[h.Prefork, h.Nginx, int]:
    sock = workdir / "prefork.sock"
    args: list[object] = ["--xheaders", "--forwarded-allow-ips", allow, "--access-log", "off"]
    if upstream == "unix":
        # nginx's workers run as nobody:nogroup; the socket is theirs by group.
        args += ["--bind", f"unix:{sock}", "--unix-socket-mode", "660", "--group", "nogroup"]
    else:
        args += ["--bind", f"{PROXY}:0"]
    prefork = h.Prefork([*args, *extra], workdir, app_dir=h.APPS)
    procs.append(prefork)
    listen = h.free_port()
    site = h.nginx_site(
        listen_port=listen,
        unix_socket=str(sock) if upstream == "unix" else None,
        tcp_port=prefork.port if upstream == "tcp" else None,
    )
    nginx = h.Nginx(workdir / "nginx", site)
    procs.append(nginx)
    h.wait_for(lambda: h.connects(listen), 10, "nginx to listen")
    return prefork, nginx, listen


def _wait_served(nginx: h.Nginx, count: int, what: str) -> int:
    """Wait until nginx's access log has ``count`` lines of /load; return how many it has."""
    path = nginx.prefix / "access.log"

    def served() -> int:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = text.count(" /load HTTP/1.1")
        return found if found >= count else 0

    return h.wait_for(served, 15, what)


@root_only()
@pytest.mark.parametrize(
    ("upstream", "allow", "expected"),
    [
        ("unix", PROXY, CLIENT),
        ("unix", ELSEWHERE, CLIENT),  # a unix peer is trusted by design
        ("tcp", PROXY, CLIENT),
        ("tcp", f"{ELSEWHERE},127.0.0.0/30", CLIENT),  # a network, in a list
        ("tcp", ELSEWHERE, PROXY),  # nginx not trusted: its own address
    ],
    ids=["unix", "unix-allow-elsewhere", "tcp-trusted", "tcp-trusted-network", "tcp-untrusted"],
)
def test_nginx_client_address(
    workdir: Path, procs: list, upstream: str, allow: str, expected: str
) -> None:
    _, nginx, port = _start_behind_nginx(workdir, procs, upstream, allow)
    url = f"http://127.0.0.1:{port}/who"
    host = ["-H", "Host: example.com"]
    seen = h.curl_json("--interface", CLIENT, *host, url)
    assert seen["by"] == "app" and seen["remote_ip"] == expected, seen
    assert seen["headers"]["X-Real-Ip"] == CLIENT
    assert seen["headers"]["Host"] == "example.com"
    assert seen["protocol"] == "http"

    # What the client claims never wins: nginx overwrites X-Real-IP and X-Scheme
    # and appends the real peer to X-Forwarded-For (read right to left).
    spoof = [
        "-H",
        "X-Real-IP: 198.51.100.1",
        "-H",
        "X-Forwarded-For: 198.51.100.2",
        "-H",
        "X-Scheme: https",
        "-H",
        "X-Forwarded-Proto: https",
    ]
    seen = h.curl_json("--interface", CLIENT, *host, *spoof, url)
    assert seen["remote_ip"] == expected, seen
    assert seen["protocol"] == "http", seen
    assert seen["headers"]["X-Forwarded-For"] == f"198.51.100.2, {CLIENT}"

    # Keep-alive to the upstream: nginx sends HTTP/1.1 with no Connection header.
    assert seen["headers"]["Connection"] is None

    # A Host this site does not serve gets no answer at all (444).
    result = h.run(["curl", "-sS", "--max-time", "10", "-H", "Host: other.example", url])
    assert result.returncode == 52 and result.stdout == "", result  # "Empty reply"
    assert "[emerg]" not in nginx.error_log()


@root_only()
@pytest.mark.parametrize("upstream", ["unix", "tcp"])
def test_nginx_hup_under_wrk(workdir: Path, procs: list, upstream: str) -> None:
    prefork, nginx, port = _start_behind_nginx(workdir, procs, upstream, PROXY)
    first = set(prefork.worker_pids())
    wrk = h.Proc(
        [
            "wrk",
            "-t2",
            "-c16",
            "-d9s",
            "--timeout",
            "5s",
            "-H",
            "Host: example.com",
            f"http://127.0.0.1:{port}/load",
        ],
        workdir,
        "wrk",
    )
    procs.append(wrk)
    # nginx logs each request it proxied: the load flows before the first HUP
    # and between the reloads.
    served = _wait_served(nginx, 100, "wrk's requests through nginx")
    for generation in (2, 3, 4):
        prefork.hup_and_wait(generation, timeout=15)
        served = _wait_served(nginx, served + 100, f"requests after reload {generation}")
    assert wrk.alive(), "wrk ended before the last reload: lengthen -d"
    status = wrk.wait(30)
    out = wrk.stdout()
    assert status == 0, out + wrk.stderr()
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    assert requests > 500, out
    assert "Non-2xx or 3xx responses" not in out, out
    assert "Socket errors" not in out, out
    # Every worker of the first generation was replaced, the master stayed.
    assert prefork.alive()
    h.wait_for(lambda: first.isdisjoint(prefork.worker_pids()), 15, "the old workers to exit")
    # nginx never had to retry a request prefork dropped on a reused connection.
    errors = [line for line in nginx.error_log().splitlines() if "[error]" in line]
    assert not errors, errors[:5]
    print(f"wrk through nginx ({upstream}) across 3 HUPs: {requests} requests, 0 errors")


# -- PROXY protocol ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pp_server(tmp_path_factory):
    """prefork --proxy-protocol, trusting only 127.0.0.1 (so 127.0.0.2 is a stranger)."""
    log_dir = tmp_path_factory.mktemp("pp")
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", "--proxy-protocol", "--forwarded-allow-ips", PROXY],
        log_dir,
        workers=1,
    )
    try:
        yield server
    finally:
        server.stop()


def _v2_header(command: int, family: int, payload: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", 0x20 | command, family, len(payload)) + payload


GET = b"GET /pp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


def _app_answer(response: bytes) -> dict:
    assert response, "the connection was closed without an answer"
    status, body = h.http_body(response)
    assert status == 200, response
    return json.loads(body)


def test_curl_haproxy_protocol_reaches_the_app(pp_server: h.Prefork) -> None:
    url = f"http://127.0.0.1:{pp_server.port}/curl"
    seen = h.curl_json("--haproxy-protocol", url)
    assert seen["remote_ip"] == "127.0.0.1" and seen["path"] == "/curl"
    # curl 7.88 puts its own address in the header; hand-made headers carry others:
    port = pp_server.port
    v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"
    assert _app_answer(h.raw_exchange("127.0.0.1", port, v1 + GET))["remote_ip"] == "203.0.113.7"
    v1_6 = b"PROXY TCP6 2001:db8::7 ::1 5555 80\r\n"
    assert _app_answer(h.raw_exchange("127.0.0.1", port, v1_6 + GET))["remote_ip"] == "2001:db8::7"
    ip4 = socket.inet_aton("198.51.100.20") + socket.inet_aton("127.0.0.1") + b"\x9c\x40\x00\x50"
    v2 = _v2_header(1, 0x11, ip4 + b"\x04\x00\x03pad")  # with a NOOP TLV
    assert _app_answer(h.raw_exchange("127.0.0.1", port, v2 + GET))["remote_ip"] == "198.51.100.20"
    ip6 = socket.inet_pton(socket.AF_INET6, "2001:db8::20") * 2 + b"\x9c\x40\x00\x50"
    v2_6 = _v2_header(1, 0x21, ip6)
    assert _app_answer(h.raw_exchange("127.0.0.1", port, v2_6 + GET))["remote_ip"] == "2001:db8::20"
    # LOCAL (a proxy's own health check) and UNKNOWN: the real peer.
    local = _v2_header(0, 0x00, b"")
    assert _app_answer(h.raw_exchange("127.0.0.1", port, local + GET))["remote_ip"] == "127.0.0.1"
    unknown = b"PROXY UNKNOWN\r\n"
    assert _app_answer(h.raw_exchange("127.0.0.1", port, unknown + GET))["remote_ip"] == "127.0.0.1"


def test_proxy_header_in_pieces_and_keep_alive(pp_server: h.Prefork) -> None:
    """The header may arrive byte by byte; it covers every request on the connection."""
    header = b"PROXY TCP4 203.0.113.9 127.0.0.1 5555 80\r\n"
    request = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", pp_server.port), timeout=5) as sock:
        for byte in header:
            sock.sendall(bytes([byte]))
            time.sleep(0.002)  # the thing under test: one byte per segment, trickled
        sock.sendall(
            request
            + request.replace(b"/a", b"/b").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    bodies = re.findall(rb"\r\n\r\n(\{.*?\})(?=HTTP/|$)", data, re.S)
    assert [json.loads(b)["remote_ip"] for b in bodies] == ["203.0.113.9"] * 2, data


def test_proxy_header_from_untrusted_peer_is_refused(pp_server: h.Prefork) -> None:
    url = f"http://127.0.0.1:{pp_server.port}/"
    result = h.run(
        ["curl", "-sS", "--max-time", "10", "--haproxy-protocol", "--interface", CLIENT, url]
    )
    assert result.returncode in (52, 55, 56) and result.stdout == "", result
    v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n"
    assert h.raw_exchange("127.0.0.1", pp_server.port, v1 + GET, source=CLIENT) == b""
    # The server still answers trusted peers afterwards.
    assert h.curl_json("--haproxy-protocol", url)["remote_ip"] == "127.0.0.1"


@pytest.mark.parametrize(
    "data",
    [
        GET,  # no header at all
        b"PROXY TCP4 203.0.113.7 127.0.0.1 5555\r\n" + GET,  # a field missing
        b"PROXY TCP4 203.0.113.777 127.0.0.1 5555 80\r\n" + GET,
        _v2_header(1, 0x12, b"\0" * 12) + GET,  # DGRAM
        b"PROXY " + b"9" * 200,  # too long
    ],
    ids=["none", "v1-short", "v1-bad-address", "v2-dgram", "v1-too-long"],
)
def test_missing_or_malformed_proxy_header_closes(pp_server: h.Prefork, data: bytes) -> None:
    assert h.raw_exchange("127.0.0.1", pp_server.port, data) == b""


def test_plain_curl_without_proxy_header_gets_no_answer(pp_server: h.Prefork) -> None:
    result = h.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{pp_server.port}/"])
    assert result.returncode in (52, 56) and result.stdout == "", result


# -- HAProxy on loopback -------------------------------------------------------------------


@pytest.fixture(scope="module")
def haproxy_loopback(tmp_path_factory):
    """deploy/haproxy/haproxy.cfg on loopback: both backends, their prefork instances."""
    log_dir = tmp_path_factory.mktemp("haproxy")
    started: list[h.Proc] = []
    try:
        health = ["--health-ready-path", "/readyz", "--health-live-path", "/livez"]
        plain = h.Prefork(
            ["--bind", "127.0.0.1:0", "--xheaders", "--forwarded-allow-ips", PROXY, *health],
            log_dir,
            name="prefork-xheaders",
            workers=1,
        )
        started.append(plain)
        pp = h.Prefork(
            ["--bind", "127.0.0.1:0", "--proxy-protocol", "--forwarded-allow-ips", PROXY, *health],
            log_dir,
            name="prefork-proxy-v2",
            workers=1,
        )
        started.append(pp)
        http_port, v2_port = h.free_port(), h.free_port()
        v2_binds = [f"127.0.0.1:{v2_port}"]
        if _ipv6_loopback():
            v2_binds.append(f"[::1]:{v2_port}")
        servers = {
            ("be_prefork", "host1"): f"127.0.0.1:{plain.port}",
            ("be_prefork", "host2"): f"127.0.0.1:{plain.port}",
            ("li_prefork_proxy_v2", "host1"): f"127.0.0.1:{pp.port}",
            ("li_prefork_proxy_v2", "host2"): f"127.0.0.1:{pp.port}",
        }
        haproxy = h.HAProxy(
            log_dir / "haproxy",
            http_binds=[f"127.0.0.1:{http_port}"],
            proxy_v2_binds=v2_binds,
            servers=servers,
        )
        started.append(haproxy)
        haproxy.wait_servers("UP", servers, timeout=15)
        yield {
            "haproxy": haproxy,
            "plain": plain,
            "pp": pp,
            "http": http_port,
            "v2": v2_port,
            "ipv6": len(v2_binds) == 2,
        }
    finally:
        for proc in reversed(started):
            proc.stop()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_haproxy_forwardfor_client_address(haproxy_loopback) -> None:
    url = f"http://127.0.0.1:{haproxy_loopback['http']}/hap"
    seen = h.curl_json("--interface", CLIENT, url)
    assert seen["remote_ip"] == CLIENT and seen["protocol"] == "http", seen
    spoof = ["-H", "X-Real-IP: 198.51.100.1", "-H", "X-Forwarded-For: 198.51.100.2"]
    spoof += ["-H", "X-Scheme: https", "-H", "X-Forwarded-Proto: https"]
    seen = h.curl_json("--interface", CLIENT, *spoof, url)
    assert seen["remote_ip"] == CLIENT and seen["protocol"] == "http", seen


def test_haproxy_send_proxy_v2_client_address(haproxy_loopback) -> None:
    port = haproxy_loopback["v2"]
    seen = h.curl_json("--interface", CLIENT, f"http://127.0.0.1:{port}/v2")
    # prefork's peer is HAProxy (127.0.0.1, trusted); the header says 127.0.0.2.
    assert seen["remote_ip"] == CLIENT and seen["path"] == "/v2", seen
    if haproxy_loopback["ipv6"]:
        seen = h.curl_json("-g", f"http://[::1]:{port}/v2")
        assert seen["remote_ip"] == "::1", seen


def test_haproxy_health_checks_reach_the_readiness_path(haproxy_loopback) -> None:
    """The checks (with a PROXY header on the v2 side) keep every server UP."""
    haproxy = haproxy_loopback["haproxy"]
    states = haproxy.server_states()
    assert set(states.values()) == {"UP"}, states
    stats = haproxy.command("show stat")
    header = stats.splitlines()[0].lstrip("# ").split(",")
    checked = 0
    for line in stats.splitlines()[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        if row.get("svname", "").startswith("host"):
            assert row["check_status"] == "L7OK", row
            assert row["check_code"] == "200", row
            checked += 1
    assert checked == 4, stats  # host1 and host2 in both backends


# -- health paths --------------------------------------------------------------------------


def _get(port: int, path: str, method: str = "GET", timeout: float = 3.0):
    """(status, body) on a new connection, or the exception's class name."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__, b""
    finally:
        conn.close()


HEALTH = ["--health-live-path", "/livez", "--health-ready-path", "/readyz"]


def test_health_paths_are_answered_before_the_app(tmp_path: Path, procs: list) -> None:
    server = h.Prefork(["--bind", "127.0.0.1:0", *HEALTH], tmp_path, workers=2)
    procs.append(server)
    port = server.port
    assert _get(port, "/livez") == (200, b"ok\n")
    assert _get(port, "/readyz") == (200, b"ready\n")
    assert _get(port, "/readyz", "HEAD") == (200, b"")
    status, body = _get(port, "/other")
    assert status == 200 and json.loads(body)["by"] == "app"


def test_readiness_is_503_during_drain_delay_while_requests_succeed(
    tmp_path: Path, procs: list
) -> None:
    drain_delay = 3.0
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", *HEALTH, "--drain-delay", drain_delay, "--access-log", "off"],
        tmp_path,
        workers=2,
    )
    procs.append(server)
    port = server.port
    assert _get(port, "/readyz")[0] == 200
    slow_result: list = []

    def slow_request() -> None:
        # In flight when the listeners close (at drain_delay): still answered.
        slow_result.append(_get(port, "/slow?ms=1500", timeout=10))

    events: list[tuple[float, str, object]] = []
    terminated = time.monotonic()
    server.send_signal(signal.SIGTERM)
    slow_thread = threading.Thread(target=slow_request)
    started_slow = False
    while server.alive() and time.monotonic() - terminated < drain_delay + 10:
        elapsed = time.monotonic() - terminated
        if not started_slow and elapsed >= drain_delay - 1.0:
            slow_thread.start()
            started_slow = True
        for path in ("/readyz", "/livez", "/app"):
            events.append((time.monotonic() - terminated, path, _get(port, path)[0]))
        time.sleep(0.05)  # the sampling interval of the observation, not a wait
    slow_thread.join(15)
    assert server.wait(15) == 0, server.describe()

    answered = [(t, p, s) for t, p, s in events if isinstance(s, int)]
    refused = [(t, p, s) for t, p, s in events if not isinstance(s, int)]
    # Readiness says 503 at once (allowing the signal's way to the workers) ...
    ready = [(t, s) for t, p, s in answered if p == "/readyz"]
    assert all(s == 503 for t, s in ready if t > 0.5), ready
    assert any(s == 503 for t, s in ready if t < drain_delay - 0.5), ready
    # ... while liveness and the application keep answering 200 ...
    assert all(s == 200 for t, p, s in answered if p != "/readyz"), answered
    assert len([1 for t, p, s in answered if p == "/app"]) >= 10
    # ... until the drain delay is over; then the listeners close.  (Whether a
    # connection made after that is refused or reset: see the test below.)
    assert refused, "the listeners never closed"
    assert all(t >= drain_delay - 0.2 for t, _, _ in refused), refused
    assert max(t for t, _, _ in answered) >= drain_delay - 0.5
    assert slow_result and slow_result[0][0] == 200, slow_result


# -- two hosts behind HAProxy --------------------------------------------------------------


def _answered_2xx(haproxy: h.HAProxy, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The 2xx answers HAProxy has had from each of these servers (its ``show stat``)."""
    lines = haproxy.command("show stat").splitlines()
    header = lines[0].lstrip("# ").split(",")
    counts = {}
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=False))
        key = (row.get("pxname"), row.get("svname"))
        if key in keys:
            counts[key] = int(row.get("hrsp_2xx") or 0)
    return counts


class _Topology:
    """Where the two prefork "hosts", HAProxy and the client run."""

    def __init__(self, netns: h.Netns | None) -> None:
        self.netns = netns
        self.note = ""
        if netns is not None:
            self.lb = netns.add("lb")
            self.host_ns = [netns.add("a"), netns.add("b")]
            netns.link(self.lb, self.host_ns[0], "10.213.1.1/30", "10.213.1.2/30")
            netns.link(self.lb, self.host_ns[1], "10.213.2.1/30", "10.213.2.2/30")
            self.binds = ["10.213.1.2:18560", "10.213.2.2:18560"]
            self.trust = ["10.213.1.1", "10.213.2.1"]
            self.spare = ["10.213.1.2:18561", "10.213.2.2:18561"]  # nothing listens there
        else:
            self.lb = None
            self.host_ns = [None, None]
            ports = [h.free_port(), h.free_port()]
            self.binds = [f"127.0.0.1:{p}" for p in ports]
            self.trust = ["127.0.0.1", "127.0.0.1"]
            self.spare = [f"127.0.0.1:{h.free_port()}", f"127.0.0.1:{h.free_port()}"]

    def client(self, argv: list[str]) -> list[str]:
        return (["ip", "netns", "exec", self.lb] if self.lb else []) + argv


@pytest.fixture
def topology():
    reason = h.netns_usable()
    netns = None if reason else h.Netns(str(os.getpid() % 100000))
    try:
        topo = _Topology(netns)
        if reason:
            topo.note = f"network namespaces unusable ({reason}): two loopback ports instead"
            print(topo.note)
        yield topo
    finally:
        if netns is not None:
            netns.delete()


@root_only()
def test_two_hosts_behind_haproxy_term_one_under_load(
    tmp_path: Path, procs: list, topology: _Topology
) -> None:
    drain_delay = 5.0  # > inter (1 s) x fall (2) + timeout check (1 s), from the deploy file
    hosts = []
    for index, (ns, bind, trust) in enumerate(
        zip(topology.host_ns, topology.binds, topology.trust, strict=True)
    ):
        server = h.Prefork(
            [
                "--bind",
                bind,
                "--xheaders",
                "--forwarded-allow-ips",
                trust,
                *HEALTH,
                "--drain-delay",
                drain_delay,
                "--access-log",
                "off",
            ],
            tmp_path,
            name=f"prefork-host{index + 1}",
            workers=2,
            netns=ns,
        )
        procs.append(server)
        hosts.append(server)
    # Inside the load balancer's own namespace every port is free.
    port, v2_port = (18580, 18581) if topology.lb else (h.free_port(), h.free_port())
    servers = {
        ("be_prefork", "host1"): topology.binds[0],
        ("be_prefork", "host2"): topology.binds[1],
        ("li_prefork_proxy_v2", "host1"): topology.spare[0],
        ("li_prefork_proxy_v2", "host2"): topology.spare[1],
    }
    haproxy = h.HAProxy(
        tmp_path / "haproxy",
        http_binds=[f"127.0.0.1:{port}"],
        proxy_v2_binds=[f"127.0.0.1:{v2_port}"],
        servers=servers,
        netns=topology.lb,
    )
    procs.append(haproxy)
    backend = [("be_prefork", "host1"), ("be_prefork", "host2")]
    haproxy.wait_servers("UP", backend, timeout=20)

    duration = 14.0
    load = h.Proc(
        topology.client(
            [
                sys.executable,
                str(h.SUPPORT / "proxy_load.py"),
                f"http://127.0.0.1:{port}/slow?ms=20",
                "--duration",
                str(duration),
                "--concurrency",
                "8",
            ]
        ),
        tmp_path,
        "load",
    )
    procs.append(load)
    load_started = time.monotonic()
    # Both hosts serve the load before one of them is stopped.
    h.wait_for(
        lambda: all(n >= 20 for n in _answered_2xx(haproxy, backend).values()),
        10,
        "both hosts to answer 20 requests through HAProxy",
    )
    term_at = time.monotonic() - load_started
    hosts[0].send_signal(signal.SIGTERM)
    states: list[tuple[float, str]] = []
    while load.alive() and time.monotonic() - load_started < duration + 20:
        state = haproxy.server_states().get(("be_prefork", "host1"), "?")
        states.append((time.monotonic() - load_started, state))
        time.sleep(0.1)  # the sampling interval of HAProxy's state, not a wait
    assert load.wait(30) == 0, load.describe()
    result = json.loads(load.stdout())
    term_status = hosts[0].wait(30)

    summary = {k: result[k] for k in ("requests", "ok", "non_2xx", "errors", "servers")}
    print(topology.note or "two network namespaces behind HAProxy in a third")
    print(f"load: {summary}; TERM at {term_at:.2f}s")
    assert failures(result) == 0, (summary, result["error_samples"], haproxy.stdout()[-3000:])
    assert result["requests"] > 300, summary
    assert term_status == 0, hosts[0].describe()
    # Both hosts served before the TERM.
    by_server = {server for _, _, server in result["timeline"]}
    assert set(topology.binds) <= by_server, summary
    # HAProxy saw the readiness 503s and took host1 out while it still served.
    down = [t for t, s in states if s.startswith("DOWN")]
    assert down, states
    assert term_at < down[0] < term_at + drain_delay, (term_at, states[:80])
    # After that, only host2 answered (requests in flight on host1 at the moment
    # it went DOWN may finish a little later).
    late = [e for e in result["timeline"] if e[0] > down[0] + 1.0 and e[2] == topology.binds[0]]
    assert not late, late[:5]
    # And host2 kept serving to the end.
    assert any(
        t > term_at + drain_delay + 2 for t, _, s in result["timeline"] if s == topology.binds[1]
    )


def test_no_connection_is_reset_after_the_listeners_close(tmp_path: Path, procs: list) -> None:
    """A client whose connect() succeeded during a graceful stop gets an answer.

    After the drain delay the workers stop accepting.  From then on a new
    connection must be refused at connect (nobody listens) -- not accepted by
    the kernel into a backlog nobody reads and reset later.  A slow request in
    flight keeps one worker (and so the master) alive for 2 s, which is the
    window probed here.
    """
    server = h.Prefork(
        ["--bind", "127.0.0.1:0", "--drain-delay", "0.5", "--access-log", "off"],
        tmp_path,
        workers=2,
    )
    procs.append(server)
    port = server.port
    marks = tmp_path / "slow-started"
    slow_result: list = []
    slow = threading.Thread(
        target=lambda: slow_result.append(
            _get(port, f"/slow?ms=2500&mark={quote(str(marks))}", timeout=10)
        )
    )
    slow.start()
    wait_for_lines(marks, 1, 10, "the slow request to be in flight")
    server.send_signal(signal.SIGTERM)
    outcomes: list[tuple[float, str]] = []
    lock = threading.Lock()
    started = time.monotonic()

    def probe() -> None:
        at = round(time.monotonic() - started, 3)
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError as exc:
            outcome = f"connect: {type(exc).__name__}"
        else:
            try:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                outcome = "answered" if sock.recv(64) else "closed without an answer"
            except OSError as exc:
                outcome = f"after connect: {type(exc).__name__}"
            finally:
                sock.close()
        with lock:
            outcomes.append((at, outcome))

    threads = []
    while server.alive() and time.monotonic() - started < 10:
        thread = threading.Thread(target=probe)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # a probe every 50 ms across the whole stop: the sampling interval
    for thread in threads:
        thread.join(15)
    slow.join(15)
    assert server.wait(15) == 0
    lost = sorted(
        o for o in outcomes if o[1] not in ("answered", "connect: ConnectionRefusedError")
    )
    assert not lost, f"{len(lost)} connection(s) lost: {lost[:5]}"
    # The window was really probed: answers during the drain delay, refusals
    # after the listeners closed (while the slow request kept the master up).
    answered = [at for at, outcome in outcomes if outcome == "answered"]
    refused = [at for at, outcome in outcomes if outcome == "connect: ConnectionRefusedError"]
    assert answered, sorted(outcomes)
    assert refused, sorted(outcomes)
    assert max(answered) < min(refused) + 0.5, sorted(outcomes)
    assert slow_result and slow_result[0][0] == 200, slow_result
