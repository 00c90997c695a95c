"""``--statsd-host`` through the real ``prefork`` command, received by a real
UDP socket standing in for statsd (statsd is datagrams of text lines): the
names, types, prefix and tags gunicorn's statsd sends, counted across two
workers, the workers gauge following TTIN, and prefork's own error lines
counted.  Masters are stopped by pid and waited for."""

from __future__ import annotations

import http.client
import signal
import socket
import sys
from collections import Counter
from pathlib import Path

import pytest

from prefork.statsd import MAX_PACKET, StatsdClient
from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, stop_all

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

APP = "tests.apps.asgi_app:app"
TIMEOUT = 10.0


class Statsd:
    """A UDP socket on loopback that keeps every line it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self.sizes: list[int] = []

    def receive(self) -> list[str]:
        """What has arrived so far (reads until nothing comes for 0.1 s)."""
        while True:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return self.lines
            self.sizes.append(len(data))
            self.lines.extend(data.decode().split("\n"))

    def counters(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for line in self.receive():
            name, _, rest = line.partition(":")
            value, kind, *_tags = rest.split("|")
            if kind == "c":
                totals[name] += int(value)
        return totals

    def close(self) -> None:
        self.sock.close()


def get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_statsd_gets_gunicorns_metrics_from_every_worker(tmp_path: Path) -> None:
    statsd = Statsd()
    started: list[Cli] = []
    try:
        server = Cli(
            tmp_path,
            "-w", "2", "--interface", "asgi",
            "--statsd-host", f"127.0.0.1:{statsd.port}",
            "--statsd-prefix", "shop", "--dogstatsd-tags", "env:test,team:web",
            app=APP,
        )  # fmt: skip
        started.append(server)
        server.wait_workers(2)
        port = server.port()
        statuses = [get(port, "/status/200") for _ in range(6)]
        statuses += [get(port, "/status/404"), get(port, "/misuse/raise")]
        assert statuses == [200] * 6 + [404, 500]
        want = {
            "shop.gunicorn.requests": 8,
            "shop.gunicorn.request.status.200": 6,
            "shop.gunicorn.request.status.404": 1,
            "shop.gunicorn.request.status.500": 1,
            "shop.gunicorn.log.exception": 1,  # the application's traceback, logged
        }
        # Workers send what they counted within a second: summed over both.
        wait_for(
            lambda: all(statsd.counters()[k] >= v for k, v in want.items()),
            TIMEOUT,
            "the counters from the workers",
        )
        assert {k: statsd.counters()[k] for k in want} == want
        lines = statsd.receive()
        assert all(line.endswith("|#env:test,team:web") for line in lines), lines
        durations = [line for line in lines if line.startswith("shop.gunicorn.request.duration:")]
        assert len(durations) == 8 and all("|ms|" in line for line in durations), durations
        assert "shop.gunicorn.workers:2|g|#env:test,team:web" in lines
        server.proc.send_signal(signal.SIGTTIN)
        wait_for(
            lambda: "shop.gunicorn.workers:3|g|#env:test,team:web" in statsd.receive(),
            TIMEOUT,
            "the workers gauge after TTIN",
        )
        assert server.stop() == 0
    finally:
        stop_all(started)
        statsd.close()


def test_a_statsd_that_is_not_there_costs_nothing(tmp_path: Path) -> None:
    """No statsd at the address (a unix datagram socket that does not exist:
    every send fails, which UDP would not even say): every request is still
    answered and nothing is logged; the figures are lost, nothing else.  The
    worker's last figures are sent (and fail) as it stops."""
    started: list[Cli] = []
    try:
        server = Cli(
            tmp_path, "-w", "1", "--interface", "asgi",
            "--statsd-host", f"unix:{tmp_path / 'no-statsd.sock'}", app=APP,
        )  # fmt: skip
        started.append(server)
        server.wait_workers(1)
        port = server.port()
        assert [get(port, "/status/200") for _ in range(3)] == [200] * 3
        assert server.stop() == 0
        output = server.log() + (tmp_path / "out.log").read_text(errors="replace")
        assert "ERROR" not in output and "Traceback" not in output, output
    finally:
        stop_all(started)


def test_packets_hold_several_lines_and_stay_under_the_size() -> None:
    statsd = Statsd()
    try:
        client = StatsdClient(f"127.0.0.1:{statsd.port}", "p", schedule=lambda delay, cb: None)
        for status in [200] * 300 + [503] * 2:
            client.request(status, 0.0125)
        client.flush()
        lines = statsd.receive()
        assert len(lines) == 302 + 3  # a duration each, and three counters
        assert "p.gunicorn.requests:302|c" in lines and "p.gunicorn.request.status.503:2|c" in lines
        assert lines.count("p.gunicorn.request.duration:12.500|ms") == 302
        assert all(size <= MAX_PACKET for size in statsd.sizes)
        assert len(statsd.sizes) < 20  # many lines per datagram, not one each
        client.close()
    finally:
        statsd.close()


@pytest.mark.parametrize(
    ("address", "error"),
    [("x:abc", "invalid port"), (":8125", "expected HOST:PORT"), ("unix:", "needs a socket path")],
)
def test_a_bad_statsd_address_is_exit_2_naming_the_setting(address: str, error: str) -> None:
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "prefork", "--statsd-host", address, APP],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("prefork: error: --statsd-host: ") and error in result.stderr
