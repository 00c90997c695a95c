"""WebSockets through the shipped proxy configurations, for real.

``deploy/nginx/prefork.conf`` and ``deploy/haproxy/haproxy.cfg`` in front of
``prefork --interface asgi`` serving ``tests/apps/ws_app.py``: the upgrade
passes through (nginx drops hop-by-hop headers unless told: the config's
``map $http_upgrade``), messages flow both ways, and on a HUP roll the
client behind the proxy sees prefork's own close, 1012 Service Restart, and
reconnects to the new worker.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "support"))
import proxy_harness as h  # noqa: E402

from tests.integration.wsclient import RawWebSocket  # noqa: E402

APP = "ws_app:app"
ASGI = ["--interface", "asgi", "--access-log", "off"]


def _echo(ws: RawWebSocket, text: str) -> None:
    ws.send_text(text)
    assert ws.recv_message() == (1, text.encode())


def _roll_and_reconnect(prefork: h.Prefork, port: int, host: str | None) -> None:
    """One WebSocket open through the proxy; HUP: it closes with 1012, and a
    new one reaches the next generation."""
    with RawWebSocket(port, "/echo", host=host, timeout=15) as ws:
        _echo(ws, "before the roll")
        old = set(prefork.worker_pids())
        prefork.send_signal(signal.SIGHUP)
        frame = ws.expect_close(1012, timeout=20)
        assert frame.close_reason == b"server restarting"
    h.wait_for(lambda: set(prefork.worker_pids()).isdisjoint(old), 20, "the new generation")
    with RawWebSocket(port, "/echo", host=host, timeout=15) as ws:
        _echo(ws, "after the roll")
        ws.close()


def test_a_websocket_through_the_nginx_config(workdir: Path, procs: list) -> None:
    prefork = h.Prefork(["--bind", "127.0.0.1:0", *ASGI], workdir, app=APP, workers=1)
    procs.append(prefork)
    listen = h.free_port()
    site = h.nginx_site(listen_port=listen, unix_socket=None, tcp_port=prefork.port)
    nginx = h.Nginx(workdir / "nginx", site)
    procs.append(nginx)
    h.wait_for(lambda: h.connects(listen), 10, "nginx to listen")
    with RawWebSocket(listen, "/echo", host="example.com", timeout=15) as ws:
        _echo(ws, "through nginx")
        ws.send_message(2, b"\x00\xff" * 40000)  # 80 KB: a large frame both ways
        assert ws.recv_message() == (2, b"\x00\xff" * 40000)
        ws.close()
    _roll_and_reconnect(prefork, listen, "example.com")
    assert "[error]" not in nginx.error_log(), nginx.error_log()[-2000:]


def test_a_websocket_through_the_haproxy_config(workdir: Path, procs: list) -> None:
    health = ["--health-ready-path", "/readyz", "--health-live-path", "/livez"]
    prefork = h.Prefork(["--bind", "127.0.0.1:0", *ASGI, *health], workdir, app=APP, workers=1)
    procs.append(prefork)
    http_port = h.free_port()
    servers = {key: f"127.0.0.1:{prefork.port}" for key in h.HAPROXY_SERVERS}
    haproxy = h.HAProxy(
        workdir / "haproxy",
        http_binds=[f"127.0.0.1:{http_port}"],
        proxy_v2_binds=[f"127.0.0.1:{h.free_port()}"],
        servers=servers,
    )
    procs.append(haproxy)
    haproxy.wait_servers("UP", [("be_prefork", "host1"), ("be_prefork", "host2")], timeout=15)
    with RawWebSocket(http_port, "/echo", timeout=15) as ws:
        _echo(ws, "through haproxy")
        ws.close()
    _roll_and_reconnect(prefork, http_port, None)
