"""Metrics through the real ``prefork`` command: ``--metrics-path`` in the workers,
``--metrics-bind`` in the master, the application's prometheus_client counters,
``prefork status --json`` and ``prefork top --once``.

Every scrape is parsed with prometheus_client's own text parser.  Each server
is a real master with two workers (tests.integration.apps.metrics_app), stopped
by the master's pid and waited for; a worker is killed by its pid.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, wait_for
from tests.integration.test_cli_config import Cli, _env, stop_all

APP = "tests.integration.apps.metrics_app:app"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def server(tmp_path: Path):
    started: list[Cli] = []

    def start(*args: str) -> Cli:
        cli = Cli(tmp_path, "-w", "2", *args, app=APP)
        started.append(cli)
        return cli

    yield start
    stop_all(started)


def request(
    port: int, path: str = "/", method: str = "GET", body: bytes | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def scrape(port: int) -> Samples:
    status, body = request(port, "/metrics")
    assert status == 200
    return parse(body.decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _labels), v in samples.items() if n == name)


def per_worker(samples: Samples, name: str) -> dict[str, float]:
    """pid -> value of a per-worker series."""
    return {dict(labels)["pid"]: v for (n, labels), v in samples.items() if n == name}


class Load:
    """Requests from several threads at once, each on a new connection (so both
    workers take some); counts what was sent, by kind."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lock = threading.Lock()
        self.sent = {"GET": 0, "POST": 0, "404": 0, "count": 0}
        self.body_bytes = 0

    def run(self, rounds: int, threads: int = 4) -> None:
        def one_thread(seed: int) -> None:
            for i in range(rounds):
                kind = ("GET", "POST", "404", "count")[(i + seed) % 4]
                if kind == "POST":
                    body = b"x" * (10 + i)
                    status, _ = request(self.port, "/upload", "POST", body)
                elif kind == "404":
                    status, _ = request(self.port, "/status?code=404")
                elif kind == "count":
                    status, _ = request(self.port, "/count")
                else:
                    status, _ = request(self.port, "/")
                assert status == (404 if kind == "404" else 200)
                with self.lock:
                    self.sent[kind] += 1
                    if kind == "POST":
                        self.body_bytes += len(body)

        workers = [threading.Thread(target=one_thread, args=(n,)) for n in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(60)
        assert not any(t.is_alive() for t in workers)

    @property
    def requests(self) -> int:
        return sum(self.sent.values())


def settled_scrape(port: int, load: Load, scrapes_before: int) -> tuple[Samples, int]:
    """Scrape until the totals include every request sent (a request is counted
    just after its response went out: a scrape served by the other worker may be a
    hair early).  Never more than was sent.  Returns the samples and the scrapes made."""
    scrapes = scrapes_before
    found: Samples = {}

    def complete() -> bool:
        nonlocal scrapes, found
        found = scrape(load.port)
        expected = load.requests + scrapes  # (earlier scrapes are GET 200s too)
        scrapes += 1
        counted = total(found, "prefork_http_requests_total")
        assert counted <= expected, (counted, expected)
        return counted == expected

    wait_for(complete, 10, "every request in the metrics")
    return found, scrapes


def test_request_counters_add_up_exactly_under_load_from_two_workers(server) -> None:
    cli = server("--metrics-path", "/metrics")
    port = cli.port()
    cli.wait_workers(2)
    load = Load(port)
    load.run(rounds=40)
    # Both workers must have answered some of it (more rounds if the kernel favoured one).
    for _ in range(10):
        found, scrapes = settled_scrape(port, load, 0)
        if len([v for v in per_worker(found, "prefork_worker_requests_total").values() if v]) == 2:
            break
        load.run(rounds=8)
    else:
        raise AssertionError("one worker answered everything")
    # A malformed request is refused before the application: counted apart.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        raw.sendall(b"GARBAGE\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 400")
    found, scrapes = settled_scrape(port, load, scrapes)
    assert value(found, "prefork_http_rejected_requests_total", status="400") == 1

    get_2xx = load.sent["GET"] + load.sent["count"] + (scrapes - 1)  # (this scrape not yet)
    assert value(found, "prefork_http_requests_total", method="GET", status="2xx") == get_2xx
    assert (
        value(found, "prefork_http_requests_total", method="POST", status="2xx")
        == load.sent["POST"]
    )
    assert (
        value(found, "prefork_http_requests_total", method="GET", status="4xx") == load.sent["404"]
    )
    everything = load.requests + scrapes - 1
    assert total(found, "prefork_http_requests_total") == everything
    assert sum(per_worker(found, "prefork_worker_requests_total").values()) == everything
    assert value(found, "prefork_http_request_duration_seconds_count") == everything
    assert value(found, "prefork_http_request_duration_seconds_bucket", le="+Inf") == everything
    assert value(found, "prefork_http_request_body_bytes_total") == load.body_bytes
    assert value(found, "prefork_http_response_body_bytes_total") > 0
    assert value(found, "prefork_workers", state="ready") == 2
    assert value(found, "prefork_workers_desired") == 2
    assert value(found, "prefork_worker_starts_total", reason="start") == 2
    assert len(per_worker(found, "prefork_worker_resident_memory_bytes")) == 2
    assert value(found, "prefork_master_resident_memory_bytes") > 0
    listener = f"127.0.0.1:{port}"
    assert value(found, "prefork_listen_queue_max", listener=listener) > 0
    assert ("prefork_listen_queue", frozenset({("listener", listener)})) in found
    # The scrape in progress is the one request in flight.
    assert total(found, "prefork_worker_requests_in_flight") == 1
    assert cli.stop() == 0


def test_a_killed_workers_series_leave_and_totals_never_go_down(server) -> None:
    cli = server("--metrics-path", "/metrics")
    port = cli.port()
    pids = cli.wait_workers(2)
    load = Load(port)
    load.run(rounds=20)
    # The victim: a worker that served some of the load, but not the last scrape
    # (that one counts its scrape just after answering; the victim has counted all).
    scrapes = 0
    for _attempt in range(20):
        before, scrapes = settled_scrape(port, load, scrapes)
        idle = [
            int(pid)
            for pid, n in per_worker(before, "prefork_worker_requests_in_flight").items()
            if n == 0 and per_worker(before, "prefork_worker_requests_total")[pid] > 0
        ]
        if idle:
            break
        load.run(rounds=4)
    else:
        raise AssertionError("no worker to kill")
    victim = idle[0]
    assert victim in pids
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(w := cli.ready_workers()) == 2 and victim not in w, 15, "a replacement")
    after = scrape(port)
    assert str(victim) not in per_worker(after, "prefork_worker_requests_total")
    assert str(victim) not in per_worker(after, "prefork_worker_connections")
    assert len(per_worker(after, "prefork_worker_requests_total")) == 2
    # Every counter and histogram sample is at least what it was (the dead
    # worker's counts were folded into the master's retired totals).
    for key, old in before.items():
        name, _labels = key
        if name.startswith("prefork_worker_") and not name.startswith(
            ("prefork_worker_starts", "prefork_worker_exits")
        ):
            continue  # per-worker series: the victim's left
        if name.endswith(("_total", "_bucket", "_count", "_sum")) and name.startswith("prefork_"):
            assert after.get(key, 0.0) >= old, key
    after, scrapes = settled_scrape(port, load, scrapes + 1)  # (+1: the scrape above)
    assert value(after, "prefork_worker_exits_total", reason="crash") == 1
    assert value(after, "prefork_worker_starts_total", reason="restart") == 1
    assert cli.stop() == 0


def test_the_applications_counter_is_summed_over_the_workers(server) -> None:
    cli = server("--metrics-path", "/metrics")
    port = cli.port()
    cli.wait_workers(2)
    status, multiproc_dir = request(port, "/env")
    assert status == 200 and multiproc_dir and Path(multiproc_dir.decode()).is_dir()
    counted_by: set[str] = set()
    hits = 0
    for _ in range(200):  # until both workers have counted some
        status, pid = request(port, "/count")
        assert status == 200
        hits += 1
        counted_by.add(pid.decode().strip())
        if len(counted_by) == 2 and hits >= 20:
            break
    assert len(counted_by) == 2
    found = scrape(port)
    assert value(found, "app_hits_total") == hits
    # After a worker dies its counts stay in the sum (the prometheus_client files stay).
    victim = int(sorted(counted_by)[0])
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: len(w := cli.ready_workers()) == 2 and victim not in w, 15, "a replacement")
    assert value(scrape(port), "app_hits_total") == hits
    assert cli.stop() == 0
    assert not Path(multiproc_dir.decode()).exists()  # the master removed its directory


def unix_get(path: str, target: str) -> tuple[int, bytes]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_metrics_bind_on_a_unix_socket_is_answered_by_the_master(server, tmp_path: Path) -> None:
    path = str(tmp_path / "metrics.sock")
    cli = server("--metrics-bind", f"unix:{path}")
    port = cli.port()
    pids = cli.wait_workers(2)
    assert request(port, "/metrics")[0] == 200  # (no --metrics-path: the application's answer)

    def counted() -> tuple[Samples, bytes] | None:
        status, body = unix_get(path, "/metrics")
        assert status == 200
        found = parse(body.decode())
        # (the request above is counted just after its answer went out)
        return (found, body) if total(found, "prefork_http_requests_total") == 1 else None

    found, body = wait_for(counted, 10, "the request in the metrics")
    assert sorted(int(p) for p in per_worker(found, "prefork_worker_requests_total")) == pids
    assert "app_hits_total" in body.decode()  # the application's registry follows
    assert unix_get(path, "/elsewhere")[0] == 404
    # A scraper that connects and says nothing blocks neither the master nor the next scrape
    # for long: the master still supervises (a worker killed now is replaced).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
        idle.connect(path)
        os.kill(pids[0], signal.SIGKILL)
        wait_for(
            lambda: len(w := cli.ready_workers()) == 2 and pids[0] not in w, 15, "a replacement"
        )
    assert unix_get(path, "/metrics")[0] == 200
    assert cli.stop() == 0
    assert not os.path.exists(path)


def run_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork", *args],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_status_json_and_top_once_show_the_workers(server) -> None:
    cli = server()
    port = cli.port()
    pids = cli.wait_workers(2)
    for _ in range(5):
        assert request(port)[0] == 200

    def status() -> dict | None:
        done = run_command("status", "--pidfile", str(cli.pidfile), "--json")
        assert done.returncode == 0, done.stderr
        state = json.loads(done.stdout)
        # (a request is counted just after its answer went out)
        return state if sum(w["requests"] for w in state["workers"]) == 5 else None

    state = wait_for(status, 15, "the five requests in prefork status --json")
    assert state["master"]["pid"] == cli.proc.pid
    assert state["master"]["workers_desired"] == 2
    assert state["master"]["worker_starts"]["start"] == 2
    assert state["master"]["scoreboard_version"] == 2
    assert sorted(w["pid"] for w in state["workers"]) == pids
    assert sum(w["requests"] for w in state["workers"]) == 5
    assert {w["state"] for w in state["workers"]} == {"ready"}
    assert all(w["rss_bytes"] > 0 for w in state["workers"])

    top = run_command("top", "--pidfile", str(cli.pidfile), "--once", "--interval", "0.2")
    assert top.returncode == 0, top.stderr
    assert f"master {cli.proc.pid}" in top.stdout
    for pid in pids:
        assert any(line.split()[1:2] == [str(pid)] for line in top.stdout.splitlines()), pid
    assert "\x1b[" not in top.stdout  # one plain frame, no screen control
    assert cli.stop() == 0
    gone = run_command("status", "--pidfile", str(cli.pidfile), "--json")
    assert gone.returncode == 1


def test_a_usr2_upgrade_carries_the_counters_over(tmp_path: Path) -> None:
    """The new master reads the old scoreboard (same layout version) before it
    replaces it, and takes the metrics address over once the old master lets it go."""
    from tests.integration.test_master import Server, _set_subreaper

    path = str(tmp_path / "metrics.sock")
    _set_subreaper(True)  # the new master is orphaned to us when the old one exits
    srv = Server(tmp_path, "-w", "2", "--metrics-bind", f"unix:{path}")
    try:
        port = srv.port()
        srv.wait_workers(2)
        for _ in range(30):
            assert request(port)[0] == 200

        def counted() -> Samples | None:
            found = parse(unix_get(path, "/metrics")[1].decode())
            return found if total(found, "prefork_http_requests_total") == 30 else None

        before = wait_for(counted, 10, "the requests in the metrics")
        assert value(before, "prefork_upgrades_total") == 0
        old = srv.proc.pid
        os.kill(old, signal.SIGUSR2)
        new = srv.wait_new_master([old])
        assert srv.wait_exit(old, 20, "the old master to exit") == 0
        srv.wait_workers(2)

        def upgraded() -> Samples | None:
            try:
                found = parse(unix_get(path, "/metrics")[1].decode())
            except OSError:  # between the old master's listener and the new one's
                return None
            return found if value(found, "prefork_upgrades_total") == 1 else None

        after = wait_for(upgraded, 15, "the new master to answer on the metrics socket")
        assert total(after, "prefork_http_requests_total") == 30
        assert value(after, "prefork_http_request_duration_seconds_count") == 30
        assert value(after, "prefork_worker_starts_total", reason="start") == 4  # 2 + 2
        # (the old workers' exits after the hand-over are counted by the old master only)
        assert value(after, "prefork_master_resident_memory_bytes") > 0
        os.kill(new, signal.SIGTERM)
        assert srv.wait_exit(new, 15, "the new master to exit") == 0
        assert not os.path.exists(path)
    finally:
        try:
            srv.close()
        finally:
            _set_subreaper(False)


def test_the_master_responder_bounds_a_slow_scraper(tmp_path: Path, monkeypatch) -> None:
    """In process: a scraper that sends nothing is dropped after IO_TIMEOUT, the
    next one is answered; HEAD and other methods; the thread stops on close."""
    from prefork import metrics_server
    from prefork.scoreboard import Scoreboard

    monkeypatch.setattr(metrics_server, "IO_TIMEOUT", 0.5)
    board = Scoreboard(4)
    board.slots[0].reset(os.getpid(), 1, 0)
    path = str(tmp_path / "m.sock")
    srv = metrics_server.MetricsServer(f"unix:{path}", ["/metrics"])
    srv.bind()
    srv.start(board, list)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(path)
            started = time.monotonic()
            status, body = unix_get(path, "/metrics")
            assert status == 200
            assert time.monotonic() - started < 3
            assert idle.recv(10) == b""  # dropped, unanswered
        found = parse(body.decode())
        assert per_worker(found, "prefork_worker_requests_total") == {str(os.getpid()): 0}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 405")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(path)
            sock.sendall(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head = sock.recv(65536)
            assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
    finally:
        srv.close()
        board.close()
    assert srv._thread is not None and not srv._thread.is_alive()
    assert not os.path.exists(path)
