"""The batched access log through the real ``prefork`` command.

Every answered request has its line: written while the server runs (a lone
line within the flush interval, half a second), and none lost on a
graceful stop, a HUP roll, a recycle (max-requests) or a USR1 reopen.  Load
comes from client threads on keep-alive connections, each request with a
unique path; what a client saw answered is what the log must hold.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from prefork.worker import accesslog
from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, get

COMBINED = re.compile(
    r"^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "
    r'"GET (/\S*) HTTP/1\.1" (\d{3}) (\d+|-) "[^"]*" "[^"]*"$'
)


class Load:
    """Client threads asking for ``/?id=T-N`` until stopped; ``answered`` is every id
    whose response arrived whole."""

    def __init__(self, port: int, threads: int = 4) -> None:
        self.port = port
        self.answered: set[str] = set()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(threads)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, number: int) -> None:
        count = 0
        conn: http.client.HTTPConnection | None = None
        while not self.stopping.is_set():
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            ident = f"{number}-{count}"
            count += 1
            try:
                conn.request("GET", f"/?id={ident}")
                response = conn.getresponse()
                response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = None  # the server closed (a stop, a roll): a new connection
                continue
            if response.status == 200:
                with self.lock:
                    self.answered.add(ident)
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    def wait_answered(self, n: int) -> None:
        wait_for(lambda: len(self.answered) >= n, 20, f"{n} answered requests")

    def stop(self) -> set[str]:
        self.stopping.set()
        for thread in self.threads:
            thread.join(15)
            assert not thread.is_alive(), "a load thread did not stop"
        return set(self.answered)


def logged_ids(*paths: Path) -> list[str]:
    ids: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            match = COMBINED.match(line)
            assert match, f"not a whole combined line: {line!r}"
            target = match.group(1)
            if "?id=" in target:
                ids.append(target.split("?id=", 1)[1])
    return ids


def assert_every_answer_logged(answered: set[str], ids: list[str]) -> None:
    assert answered, "the load got no answer at all"
    assert len(ids) == len(set(ids)), "a line was written twice"
    missing = answered - set(ids)
    assert not missing, (
        f"{len(missing)} answered request(s) without a line, e.g. {sorted(missing)[:5]}"
    )


def test_a_line_is_written_while_the_server_runs(cli, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server: Cli = cli("-w", "1", "--access-log", str(log))
    port = server.port()
    status, _ = get(port, "/?id=first")
    assert status == 200
    # No stop, no flush from outside: a lone line goes out within FLUSH_INTERVAL.
    start = time.monotonic()
    wait_for(lambda: "first" in logged_ids(log), 2.0, "the line")
    assert time.monotonic() - start < accesslog.FLUSH_INTERVAL + 0.5
    assert server.stop() == 0


def test_no_line_lost_on_a_graceful_stop_under_load(cli, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server: Cli = cli("-w", "2", "--access-log", str(log))
    load = Load(server.port())
    load.wait_answered(300)
    assert server.stop() == 0  # TERM with requests in flight
    assert_every_answer_logged(load.stop(), logged_ids(log))


def test_no_line_lost_across_a_hup_roll_and_recycling(cli, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server: Cli = cli("-w", "2", "--max-requests", "150", "--access-log", str(log))
    load = Load(server.port())
    load.wait_answered(200)
    old = set(server.wait_workers(2))
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_for(lambda: not old & set(server.ready_workers()), 30, "the HUP roll to replace both")
    answered_before = len(load.answered)
    load.wait_answered(answered_before + 400)  # and recycling at 150 requests goes on
    assert server.stop() == 0
    assert "reached max_requests" in server.log()  # recycling happened under the load
    assert_every_answer_logged(load.stop(), logged_ids(log))


def test_no_line_lost_across_a_usr1_reopen(cli, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    rotated = tmp_path / "access.log.1"
    server: Cli = cli("-w", "2", "--access-log", str(log))
    load = Load(server.port())
    load.wait_answered(200)
    os.rename(log, rotated)  # what logrotate does before it signals
    os.kill(server.proc.pid, signal.SIGUSR1)

    # Both workers write to the new file once they reopened it.
    def both_reopened() -> bool:
        if not log.exists():
            return False
        pids = server.ready_workers()
        seen = {int(get(server.port(), "/")[1]) for _ in range(20)}  # the app answers its pid
        return bool(seen) and set(pids) <= seen and len(logged_ids(log)) > 0

    wait_for(both_reopened, 20, "the workers to write to the reopened file")
    load.wait_answered(len(load.answered) + 200)
    assert server.stop() == 0
    assert_every_answer_logged(load.stop(), logged_ids(rotated, log))


def test_lines_from_two_workers_on_one_stdout_never_interleave(cli, tmp_path: Path) -> None:
    server: Cli = cli("-w", "2", "--access-log", "-")
    load = Load(server.port(), threads=6)
    load.wait_answered(1500)
    assert server.stop() == 0
    lines = [
        line for line in (tmp_path / "out.log").read_text().splitlines() if "GET /?id=" in line
    ]
    ids = []
    for line in lines:
        match = COMBINED.match(line)
        assert match, f"a broken line in stdout: {line!r}"
        ids.append(match.group(1).split("?id=", 1)[1])
    assert_every_answer_logged(load.stop(), ids)


def test_json_lines_round_trip_quotes_backslashes_and_non_ascii(cli, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server: Cli = cli("-w", "1", "--access-log", str(log), "--access-log-format", "json")
    port = server.port()
    agent = 'say "hi" \\ caf\xe9'
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.putrequest("GET", "/json?a=%22", skip_accept_encoding=True)
    conn.putheader("User-Agent", agent.encode("latin-1"))
    conn.putheader("Referer", "http://example.com/\\")
    conn.endheaders()
    assert conn.getresponse().status == 200
    conn.close()
    record = wait_for(
        lambda: (
            next(
                (json.loads(line) for line in log.read_text().splitlines() if "/json" in line), None
            )
            if log.exists()
            else None
        ),
        2,
        "the JSON line",
    )
    assert record["user_agent"] == agent
    assert record["referer"] == "http://example.com/\\"
    assert record["uri"] == "/json?a=%22"
    assert record["status"] == 200 and record["method"] == "GET"
    assert record["remote_ip"] == "127.0.0.1"
    assert isinstance(record["duration_ms"], float) and record["duration_ms"] >= 0
    assert server.stop() == 0


def _logged_line(log: Path, marker: str) -> str:
    """The access log line that holds ``marker`` (lines are written in
    batches: waited for, 2 s at most)."""
    return wait_for(
        lambda: (
            next((x for x in log.read_text().splitlines() if marker in x), None)
            if log.exists()
            else None
        ),
        2,
        f"the line with {marker}",
    )


def test_combined_line_escapes_quotes_in_headers(cli, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    server: Cli = cli("-w", "1", "--access-log", str(log))
    conn = http.client.HTTPConnection("127.0.0.1", server.port(), timeout=10)
    conn.request("GET", "/quoted", headers={"User-Agent": 'a "b" \\c'})
    assert conn.getresponse().status == 200
    conn.close()
    line = _logged_line(log, "/quoted")
    assert line.endswith('"-" "a \\"b\\" \\\\c"'), line
    assert server.stop() == 0


def test_combined_line_escapes_bytes_that_are_not_printable_ascii(cli, tmp_path: Path) -> None:
    """As nginx: a TAB and obs-text bytes in a header value are written \\xHH
    (they went raw: invisible C1 controls, a byte no reader could tell)."""
    log = tmp_path / "access.log"
    server: Cli = cli("-w", "1", "--access-log", str(log))
    with socket.create_connection(("127.0.0.1", server.port()), timeout=10) as sock:
        sock.sendall(
            b"GET /bytes HTTP/1.1\r\nHost: x\r\nUser-Agent: a\tb\xff\xfe\x80\r\n"
            b"Referer: r\xe9f\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    line = _logged_line(log, "/bytes")
    assert line.endswith('"r\\xE9f" "a\\x09b\\xFF\\xFE\\x80"'), line
    assert server.stop() == 0


def test_access_log_logging_goes_through_the_logging_module(cli, tmp_path: Path) -> None:
    server: Cli = cli("-w", "1", "--access-log", "logging")
    status, _ = get(server.port(), "/?id=via-logging")
    assert status == 200
    # A LogRecord on prefork.access, propagated to the root handler: the error log.
    wait_for(
        lambda: re.search(
            r"\[INFO\] prefork\.access: 127\.0\.0\.1 .*GET /\?id=via-logging", server.log()
        ),
        2,
        "the line in the error log",
    )
    assert server.stop() == 0


# -- the writer, on a pipe -------------------------------------------------------------


def test_write_lines_writes_whole_lines_of_at_most_pipe_buf(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[bytes] = []
    real_write = os.write

    def short_write(fd: int, data) -> int:  # type: ignore[no-untyped-def]
        asked.append(bytes(data))
        return real_write(fd, bytes(data)[: max(1, len(data) // 2)])  # short writes too

    lines = [f"line {n} " + "x" * (n % 300) for n in range(400)] + ["long " + "y" * 9000, "end"]
    read_fd, write_fd = os.pipe()
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b"")), daemon=True
    )
    reader.start()
    monkeypatch.setattr(os, "write", short_write)
    accesslog.write_lines(write_fd, lines)
    monkeypatch.setattr(os, "write", real_write)
    os.close(write_fd)
    reader.join(10)
    os.close(read_fd)
    assert b"".join(chunks).decode().split("\n") == [*lines, ""]
    assert len(asked) > 20
    # Each piece handed to os.write ends a line, and holds at most WRITE_SIZE
    # bytes unless it is one line longer than that.
    assert all(piece.endswith(b"\n") for piece in asked)
    assert all(len(piece) <= accesslog.WRITE_SIZE or piece.count(b"\n") == 1 for piece in asked)
