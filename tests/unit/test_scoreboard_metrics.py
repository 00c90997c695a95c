"""The metrics in the scoreboard and their text, in one process: per-request
accounting, the fold of a dead worker into the retired totals, the layout
version, the carry-over of a USR2 upgrade, the listen queue from TCP_INFO,
exit reasons, and the application's multiprocess directory."""

from __future__ import annotations

import os
import socket
import struct
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from prefork import appmetrics, counters, metrics
from prefork.children import Worker
from prefork.counters import DURATION_BUCKETS
from prefork.scoreboard import VERSION, Scoreboard, ScoreboardVersionError


def samples(board: Scoreboard, sockets=()) -> dict[tuple[str, frozenset], float]:
    found = {}
    for family in text_string_to_metric_families(metrics.render(board, sockets).decode()):
        for s in family.samples:
            found[(s.name, frozenset(s.labels.items()))] = s.value
    return found


def value(found, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def serve(slot, method: str, status: int, seconds: float, received=0, sent=0) -> None:
    slot.request_begun(f"{method} /x")
    slot.request_done(method, status, received, sent, seconds)


def test_requests_are_counted_by_method_status_duration_and_bytes() -> None:
    board = Scoreboard(4)
    slot = board.slots[1]
    slot.reset(4242, 1, 0)
    serve(slot, "GET", 200, 0.001, sent=13)
    serve(slot, "GET", 404, 0.02)
    serve(slot, "POST", 201, 0.3, received=100, sent=2)
    serve(slot, "BREW", 418, 20.0)  # another method, beyond the last bucket
    serve(slot, "GET", 0, -1.0)  # no status; the clock stepped back
    slot.request_begun("GET /slow")  # one still in flight
    slot.request_rejected(431)
    slot.request_rejected(400)
    slot.request_rejected(499)
    found = samples(board)
    assert value(found, "prefork_http_requests_total", method="GET", status="2xx") == 1
    assert value(found, "prefork_http_requests_total", method="GET", status="4xx") == 1
    assert value(found, "prefork_http_requests_total", method="POST", status="2xx") == 1
    assert value(found, "prefork_http_requests_total", method="other", status="4xx") == 1
    assert value(found, "prefork_http_requests_total", method="GET", status="other") == 1
    assert value(found, "prefork_http_request_duration_seconds_count") == 5
    assert value(found, "prefork_http_request_duration_seconds_sum") == pytest.approx(20.321)
    cumulative = [
        value(found, "prefork_http_request_duration_seconds_bucket", le=repr(b))
        for b in DURATION_BUCKETS
    ]
    assert cumulative[:3] == [2, 2, 3]  # 0.001 and 0 (clamped); 0.02 <= 0.025
    assert value(found, "prefork_http_request_duration_seconds_bucket", le="0.5") == 4
    assert value(found, "prefork_http_request_duration_seconds_bucket", le="10.0") == 4
    assert value(found, "prefork_http_request_duration_seconds_bucket", le="+Inf") == 5
    assert value(found, "prefork_http_request_body_bytes_total") == 100
    assert value(found, "prefork_http_response_body_bytes_total") == 15
    assert value(found, "prefork_http_rejected_requests_total", status="431") == 1
    assert value(found, "prefork_http_rejected_requests_total", status="400") == 1
    assert value(found, "prefork_http_rejected_requests_total", status="other") == 1
    assert value(found, "prefork_worker_requests_total", worker="0", pid="4242") == 5
    assert value(found, "prefork_worker_requests_in_flight", worker="0", pid="4242") == 1
    snap = slot.snapshot()
    assert (snap.requests, snap.in_flight, snap.current) == (5, 1, "GET /slow")
    board.close()


def test_a_reaped_workers_counts_join_the_retired_totals() -> None:
    board = Scoreboard(2)
    a, b = board.slots
    a.reset(1001, 1, 0)
    b.reset(1002, 1, 1)
    for _ in range(3):
        serve(a, "GET", 200, 0.01, sent=5)
    serve(b, "PUT", 500, 0.2)
    a.request_rejected(408)
    before = samples(board)
    board.master.count_exit("crash")
    board.retire(a)  # the master reaped it
    after = samples(board)
    assert a.snapshot().pid == 0  # cleared
    for (name, labels), old in before.items():
        if name.startswith("prefork_http_"):
            assert after[(name, labels)] == old, name
    assert value(after, "prefork_worker_requests_total", worker="0", pid="1001") == 0
    assert ("prefork_worker_requests_total", frozenset({("worker", "0"), ("pid", "1001")})) not in (
        after
    )
    assert value(after, "prefork_worker_exits_total", reason="crash") == 1
    # A new worker in the same slot starts from zero; totals go on from there.
    a.reset(1003, 1, 0)
    serve(a, "GET", 200, 0.01)
    again = samples(board)
    assert value(again, "prefork_http_requests_total", method="GET", status="2xx") == 4
    assert value(again, "prefork_worker_requests_total", worker="0", pid="1003") == 1
    board.close()


def test_master_counters_and_desired_workers() -> None:
    board = Scoreboard(2)
    board.master.count_start("start")
    board.master.count_start("start")
    board.master.count_start("recycle")
    board.master.count_exit("recycle")
    board.master.count_reload()
    board.master.count_upgrade()
    board.master.set_info(2, 3)
    found = samples(board)
    assert value(found, "prefork_worker_starts_total", reason="start") == 2
    assert value(found, "prefork_worker_starts_total", reason="recycle") == 1
    assert value(found, "prefork_worker_exits_total", reason="recycle") == 1
    assert value(found, "prefork_reloads_total") == 1
    assert value(found, "prefork_upgrades_total") == 1
    assert value(found, "prefork_workers_desired") == 2
    assert value(found, "prefork_generation") == 3
    assert value(found, "prefork_scoreboard_version") == VERSION
    board.close()


def test_a_new_master_inherits_the_counters_of_the_old_one(tmp_path: Path) -> None:
    path = str(tmp_path / "board")
    old = Scoreboard(2, path)
    slot = old.slots[0]
    slot.reset(2001, 1, 0)
    serve(slot, "GET", 200, 0.01)
    serve(slot, "GET", 200, 0.01)
    old.retire(old.slots[0])
    old.slots[1].reset(2002, 1, 1)
    serve(old.slots[1], "POST", 200, 0.01)  # a live worker of the old master
    old.master.count_reload()
    old.master.count_start("start")
    seen = Scoreboard.attach(path)
    new = Scoreboard(4, path)  # renamed over the old file
    new.inherit(seen)
    seen.close()
    found = samples(new)
    assert value(found, "prefork_http_requests_total", method="GET", status="2xx") == 2
    assert value(found, "prefork_http_requests_total", method="POST", status="2xx") == 1
    assert value(found, "prefork_reloads_total") == 1
    assert value(found, "prefork_worker_starts_total", reason="start") == 1
    new.close(unlink=True)
    old.close()


def test_attach_refuses_another_layout_version_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "board"
    Scoreboard(2, str(path)).close()
    data = bytearray(path.read_bytes())
    struct.pack_into("=I", data, 8, 1)  # what prefork before the metrics wrote
    path.write_bytes(bytes(data))
    with pytest.raises(ScoreboardVersionError, match="layout version 1, this prefork reads"):
        Scoreboard.attach(str(path))
    path.write_bytes(b"PREFORK1" + b"\0" * 8)
    with pytest.raises(ValueError, match="not a prefork scoreboard"):
        Scoreboard.attach(str(path))


def test_status_says_why_it_cannot_read_an_old_scoreboard(tmp_path: Path, capsys) -> None:
    from prefork import status

    pidfile = tmp_path / "master.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live process
    Scoreboard(2, f"{pidfile}.scoreboard").close()
    data = bytearray(Path(f"{pidfile}.scoreboard").read_bytes())
    struct.pack_into("=I", data, 8, 1)
    Path(f"{pidfile}.scoreboard").write_bytes(bytes(data))
    assert status.main(["--pidfile", str(pidfile), "--json"]) == 1
    assert "layout version 1" in capsys.readouterr().out


def test_status_reads_the_pidfile_from_the_environment(tmp_path: Path, capsys, monkeypatch) -> None:
    """As the master does (PREFORK_PIDFILE): `prefork status` with no option
    finds the same master (it required --pidfile)."""
    from prefork import status

    pidfile = tmp_path / "master.pid"
    pidfile.write_text("999999999\n")  # no such process
    monkeypatch.setenv("PREFORK_PIDFILE", str(pidfile))
    assert status.main([]) == 1
    assert f"no running master (pidfile {str(pidfile)!r})" in capsys.readouterr().out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")
def test_listen_queue_from_tcp_info() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(7)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        [(name, queued, backlog)] = metrics.listen_queues([listener])
        assert name == "127.0.0.1:%d" % listener.getsockname()[1]
        assert (queued, backlog) == (3, 7)
        unix = socket.socket(socket.AF_UNIX)
        assert metrics.listen_queues([unix]) == []  # not TCP: nothing to say
        unix.close()
    finally:
        for c in clients:
            c.close()
        listener.close()
    assert metrics.listen_queues([listener]) == []  # closed


def test_exit_reasons() -> None:
    board = Scoreboard(1)
    slot = board.slots[0]

    def worker(**state) -> Worker:
        w = Worker(1, 0, slot, 1, 0.0, "start")
        for name, v in state.items():
            setattr(w, name, v)
        return w

    assert worker(ready_at=1.0).exit_reason() == "crash"
    assert worker().exit_reason() == "boot_failure"
    assert worker(ready_at=1.0, aborted_at=5.0).exit_reason() == "timeout"
    assert worker(aborted_at=5.0).exit_reason() == "timeout"
    for retiring, reason in (
        ("recycle", "recycle"),
        ("reload", "reload"),
        ("scale down", "scale_down"),
        ("stop", "stop"),
        ("self", "drained"),
    ):
        assert worker(ready_at=1.0, retiring=retiring, killed=True).exit_reason() == reason
        assert reason in counters.EXIT_REASONS
    board.close()


def test_the_multiprocess_directory_is_made_owned_and_removed(monkeypatch) -> None:
    monkeypatch.delenv(appmetrics.ENV, raising=False)
    monkeypatch.delenv(appmetrics.ENV.lower(), raising=False)
    monkeypatch.delenv(appmetrics.OWNED_ENV, raising=False)
    monkeypatch.setattr(appmetrics, "_current", None)
    made = appmetrics.prepare()
    assert made is not None and made.owned and os.path.isdir(made.path)
    assert os.environ[appmetrics.ENV] == made.path
    assert appmetrics.prepare() is made  # once per master
    made.worker_exited(123456)  # nothing to remove: no error
    made.remove()
    assert not os.path.exists(made.path) and appmetrics.ENV not in os.environ


def test_a_users_directory_is_used_and_kept(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(appmetrics.ENV, str(tmp_path))
    monkeypatch.delenv(appmetrics.OWNED_ENV, raising=False)
    monkeypatch.setattr(appmetrics, "_current", None)
    given = appmetrics.prepare()
    assert given is not None and not given.owned and given.path == str(tmp_path)
    given.remove()
    assert tmp_path.is_dir()
    assert appmetrics.render().startswith(b"") and isinstance(appmetrics.render(), bytes)
    monkeypatch.setattr(appmetrics, "_current", None)
    # A master exec'd by USR2 inherits the old master's directory: not the user's.
    monkeypatch.setenv(appmetrics.OWNED_ENV, str(tmp_path))
    fresh = appmetrics.prepare()
    assert fresh is not None and fresh.owned and fresh.path != str(tmp_path)
    fresh.remove()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="a writer process beside the reader")
def test_a_reader_never_sees_a_counter_go_down_while_a_worker_writes() -> None:
    """struct.pack_into zero-fills its target before packing: the master,
    reading while a worker counted, saw 0 (a counter reset to Prometheus; a
    probe caught worker_requests_total 108950 -> 0 under load) or a heartbeat
    of 0. Writes are whole copies now: every read is old or new."""
    import time

    board = Scoreboard(2)
    slot = board.slots[0]
    slot.reset(os.getpid(), 1, 0)
    serve(slot, "GET", 200, 0.001)
    child = os.fork()
    if child == 0:  # the worker: count as fast as it can for a while
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                for _ in range(200):
                    serve(slot, "GET", 200, 0.001)
                    slot.heartbeat()
        finally:
            os._exit(0)
    try:
        last_requests, last_duration, reads = 0, 0.0, 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            seen = slot.snapshot(with_counts=True)
            assert seen.counts is not None
            assert seen.requests >= last_requests, (seen.requests, last_requests)
            assert seen.counts.duration_sum >= last_duration
            assert seen.heartbeat > 0.0
            last_requests, last_duration = seen.requests, seen.counts.duration_sum
            reads += 1
        assert reads > 1000 and last_requests > 1000  # (both sides really ran)
    finally:
        os.waitpid(child, 0)


def test_status_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`prefork status | head -2`: the reader gone, no BrokenPipeError traceback."""
    import subprocess

    pidfile = tmp_path / "master.pid"
    pidfile.write_text(f"{os.getpid()}\n")  # a live process
    board = Scoreboard(2, f"{pidfile}.scoreboard")
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefork", "status", "--pidfile", str(pidfile)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before anything is written
        stderr = proc.stderr.read().decode()
        assert proc.wait(30) == 1
    finally:
        board.close()
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
