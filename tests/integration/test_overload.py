"""Overload and deadlines through the real ``prefork`` command: --max-connections,
--max-concurrency (a worker at its limit leaves new connections in the listen
queue for the others, refusing none) and --request-timeout (503, or a close,
and the worker serves on).

Every server is a master with its workers (``Cli``), stopped by the master's
pid; clients are real sockets and ``http.client``.
"""

from __future__ import annotations

import http.client
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import wait_for, wait_for_lines
from tests.integration.test_cli_config import Cli, stop_all
from tests.integration.wsclient import RawWebSocket

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

APP = "tests.integration.apps.overload_app"
TIMEOUT_LINE = "request timed out after"


@pytest.fixture
def serve(tmp_path: Path) -> Iterator:
    """``serve(interface, *args)``: a master serving overload_app, stopped by pid."""
    started: list[Cli] = []

    def start(interface: str, *args: str) -> Cli:
        run_dir = tmp_path / f"server{len(started)}"
        run_dir.mkdir()
        server = Cli(run_dir, "--interface", interface, *args, app=f"{APP}:{interface}")
        started.append(server)
        return server

    yield start
    stop_all(started)


def get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), dict(response.getheaders())
    finally:
        conn.close()


def connections_by_worker(server: Cli) -> dict[int, int]:
    from prefork.scoreboard import Scoreboard

    board = Scoreboard.attach(f"{server.pidfile}.scoreboard")
    try:
        return {s.pid: s.connections for s in board.snapshot() if s.pid > 0}
    finally:
        board.close()


def run_clients(count: int, target) -> tuple[list[threading.Thread], list]:  # type: ignore[no-untyped-def]
    results: list = []

    def client() -> None:
        try:
            results.append(target())
        except Exception as exc:  # (counted: the test requires none)
            results.append(exc)

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


# -- --max-connections / --max-concurrency ----------------------------------------------


def test_max_connections_bounds_each_worker_and_spreads_the_load(serve) -> None:
    """60 clients at once on 2 workers of 10 connections each, a slow endpoint:
    no worker ever holds more than 10 connections (sampled from the
    scoreboard while the load runs), both take a share, and every client is
    answered 200: the others waited in the listen queue, none was refused."""
    server = serve("callback", "-w", "2", "--max-connections", "10")
    port = server.port()
    pids = server.wait_workers(2)
    threads, results = run_clients(60, lambda: get(port, "/busy?s=0.4", timeout=30))
    peak: Counter[int] = Counter()
    samples = 0
    deadline = time.monotonic() + 30
    while any(t.is_alive() for t in threads):
        for pid, count in connections_by_worker(server).items():
            peak[pid] = max(peak[pid], count)
        samples += 1
        assert time.monotonic() < deadline, "the clients did not finish within 30 s"
        time.sleep(0.005)
    for thread in threads:
        thread.join(5)
    assert samples > 20
    assert all(count <= 10 for count in peak.values()), peak
    assert max(peak.values()) == 10  # the limit was reached: this was overload
    statuses = Counter(r[0] if isinstance(r, tuple) else repr(r) for r in results)
    assert statuses == {200: 60}
    served_by = Counter(int(r[1]) for r in results)
    assert set(served_by) == set(pids) and min(served_by.values()) >= 10, served_by
    assert "not accepting" in server.log()  # (the warning, rate-limited per worker)


def test_a_connection_past_the_limit_waits_in_the_queue_until_there_is_room(serve) -> None:
    """One worker, --max-connections 2: a third client connects (the kernel
    completes the handshake) and sends its request, but it is read only once
    one of the first two has closed; then it is answered, not refused."""
    server = serve("callback", "-w", "1", "--max-connections", "2")
    port = server.port()
    server.wait_workers(1)
    first = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(2)]
    for conn in first:  # two keep-alive connections, idle after one request each
        conn.request("GET", "/")
        assert conn.getresponse().read()
    wait_for(lambda: 2 in connections_by_worker(server).values(), 5, "2 open connections")
    third = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        third.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        third.settimeout(0.5)
        with pytest.raises(TimeoutError):
            third.recv(1)  # still in the listen queue: nobody reads it
        assert list(connections_by_worker(server).values()) == [2]
        first[0].close()
        third.settimeout(5)
        answer = b""
        while chunk := third.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    finally:
        third.close()
        first[1].close()


def test_a_graceful_stop_answers_what_waited_in_the_queue(serve) -> None:
    """TERM while the worker is at its limit with more clients queued: the
    stopping worker answers them too (past its limit, as without one), none
    is reset."""
    import signal

    server = serve("callback", "-w", "1", "--max-connections", "2")
    port = server.port()
    server.wait_workers(1)
    busy, busy_results = run_clients(2, lambda: get(port, "/busy?s=1"))
    wait_for(lambda: 2 in connections_by_worker(server).values(), 5, "2 open connections")
    queued = []
    for _ in range(2):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        queued.append(sock)
    try:
        server.proc.send_signal(signal.SIGTERM)
        for sock in queued:
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer
            assert b"Connection: close" in answer
    finally:
        for sock in queued:
            sock.close()
    for thread in busy:
        thread.join(10)
    assert [r[0] for r in busy_results] == [200, 200]
    assert server.stop() == 0


def test_max_concurrency_bounds_requests_in_flight_per_worker(serve) -> None:
    """40 clients at once, 2 workers of 5 requests in flight each: the
    application never sees more than 5 at once in a worker, and every
    client is answered."""
    server = serve("callback", "-w", "2", "--max-concurrency", "5")
    port = server.port()
    pids = server.wait_workers(2)
    threads, results = run_clients(40, lambda: get(port, "/busy?s=0.2", timeout=30))
    for thread in threads:
        thread.join(30)
    assert Counter(r[0] if isinstance(r, tuple) else repr(r) for r in results) == {200: 40}
    peaks: dict[int, int] = {}

    def ask() -> bool:  # each worker's peak (a connection each: any worker may answer)
        pid, peak = get(port, "/peak")[1].split()
        peaks[int(pid)] = int(peak)
        return len(peaks) == 2

    wait_for(ask, 10, "both workers' peaks")
    assert set(peaks) == set(pids)
    assert all(1 <= peak <= 5 for peak in peaks.values()), peaks
    assert max(peaks.values()) == 5  # the limit was reached


# -- --request-timeout -------------------------------------------------------------------


def _worker_pid(port: int) -> int:
    status, body, _ = get(port, "/")
    assert status == 200
    return int(body)


def _timeout_lines(server: Cli) -> list[str]:
    return [line for line in server.log().splitlines() if TIMEOUT_LINE in line]


@pytest.mark.parametrize("interface", ["callback", "asgi", "wsgi"])
def test_a_request_past_the_timeout_gets_503_and_the_worker_serves_on(
    serve, tmp_path: Path, interface: str
) -> None:
    mark = tmp_path / "mark"
    server = serve(interface, "-w", "1", "--request-timeout", "1", "--threads", "2")
    port = server.port()
    server.wait_workers(1)
    pid = _worker_pid(port)
    started = time.monotonic()
    status, body, headers = get(port, f"/hold?s=3&mark={mark}")
    took = time.monotonic() - started
    assert status == 503, body
    assert headers["Connection"] == "close"
    assert b"timed out" in body
    assert 1.0 <= took < 2.9, took  # (the application would answer at 3 s)
    lines = wait_for(lambda: _timeout_lines(server), 5, "the timeout's log line")
    assert len(lines) == 1
    assert "WARNING" in lines[0] and "prefork.error" in lines[0]
    assert f"GET /hold?s=3&mark={mark} from 127.0.0.1" in lines[0]
    assert _worker_pid(port) == pid  # the same worker serves the next request
    if interface == "asgi":
        # The application's task was cancelled: it saw CancelledError.
        assert wait_for_lines(mark, 2, 5, "the cancel mark") == [
            f"started {pid}",
            f"cancelled {pid}",
        ]
    elif interface == "wsgi":
        # A thread cannot be cancelled: it runs on to its end, and is logged.
        assert "its WSGI thread runs on until the application returns" in lines[0]
        assert "1 of 2 thread(s) run abandoned requests" in lines[0]
        assert wait_for_lines(mark, 2, 5, "the thread's end") == [
            f"started {pid}",
            f"returned {pid}",
        ]
        wait_for(
            lambda: "WSGI application returned" in server.log(), 5, "the abandoned thread's line"
        )
    else:
        # The callback's late write and finish go nowhere, and break nothing.
        assert wait_for_lines(mark, 2, 5, "the late finish") == [
            f"started {pid}",
            f"returned {pid}",
        ]
    assert _worker_pid(port) == pid
    assert server.stop() == 0
    assert "Traceback" not in server.log()  # (nor at the worker's exit)


def test_wsgi_threads_all_abandoned_queue_new_requests_until_one_returns(
    serve, tmp_path: Path
) -> None:
    """--threads 1: the one thread runs an abandoned request; a request that
    comes meanwhile waits in the pool's queue and gets 503 at its own
    timeout, without the application ever being called for it."""
    mark = tmp_path / "mark"
    server = serve("wsgi", "-w", "1", "--request-timeout", "1", "--threads", "1")
    port = server.port()
    server.wait_workers(1)
    pid = _worker_pid(port)
    assert get(port, f"/hold?s=4&mark={mark}")[0] == 503
    lines = wait_for(lambda: _timeout_lines(server), 5, "the first timeout line")
    assert "all 1 thread(s) of this worker run abandoned requests" in lines[0]
    status, body, _ = get(port, f"/hold?s=0&mark={mark}")
    assert status == 503
    lines = wait_for(lambda: _timeout_lines(server)[1:], 5, "the second timeout line")
    assert "its WSGI call had not started; it will not run" in lines[0]
    assert wait_for_lines(mark, 2, 10, "the first request's end") == [
        f"started {pid}",
        f"returned {pid}",
    ]
    assert _worker_pid(port) == pid  # the thread is free again
    assert Path(mark).read_text().count("started") == 1  # the queued one never ran


def test_a_response_begun_before_the_timeout_is_cut_by_a_close(serve, tmp_path: Path) -> None:
    """ASGI, streaming: the head and a first chunk went out, then the
    application stalled past the timeout: the client sees the connection
    close before the last chunk (never a 503 in the middle of a body)."""
    mark = tmp_path / "mark"
    server = serve("asgi", "-w", "1", "--request-timeout", "1")
    port = server.port()
    server.wait_workers(1)
    pid = _worker_pid(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET /stream?s=5&mark={mark} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"transfer-encoding: chunked" in received.lower()
    assert b"first\n" in received and not received.endswith(b"0\r\n\r\n")
    assert wait_for_lines(mark, 2, 5, "the cancel mark")[1] == f"cancelled {pid}"
    assert len(_timeout_lines(server)) == 1
    assert _worker_pid(port) == pid


def test_a_websocket_is_not_a_request_for_the_timeout(serve) -> None:
    server = serve("asgi", "-w", "1", "--request-timeout", "0.5")
    port = server.port()
    server.wait_workers(1)
    ws = RawWebSocket(port, "/ws?s=1.5")
    try:
        opcode, payload = ws.recv_message(timeout=5)
        assert (opcode, payload) == (1, b"still here")
        ws.close()
    finally:
        ws.sock.close()
    assert _timeout_lines(server) == []


def test_the_limit_holds_on_tls_and_unix_listeners(serve, tmp_path: Path) -> None:
    """The worker accepts by itself while a limit is set: TLS handshakes and
    unix sockets go through the same gate (2 connections at most here)."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    path = tmp_path / "app.sock"
    server = serve(
        "callback",
        *("-w", "1", "--max-connections", "2", "-b", f"unix:{path}"),
        *("--certfile", str(certfile), "--keyfile", str(keyfile)),
    )
    port = server.port()
    server.wait_workers(1)
    context = ssl.create_default_context()
    ca.configure_trust(context)

    def over_tls() -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=20, context=context)
        try:
            conn.request("GET", "/busy?s=0.2")
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def over_unix() -> tuple[int, bytes]:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(20)
            sock.connect(str(path))
            with context.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"GET /busy?s=0.2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
        return int(answer.split()[1]), answer

    threads, results = run_clients(4, over_tls)
    more, unix_results = run_clients(4, over_unix)
    peak = 0
    while any(t.is_alive() for t in threads + more):
        peak = max(peak, *connections_by_worker(server).values())
        time.sleep(0.005)
    assert peak <= 2
    assert [r[0] if isinstance(r, tuple) else r for r in results + unix_results] == [200] * 8
