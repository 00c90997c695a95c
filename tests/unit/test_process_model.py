"""In-process checks of the process model's building blocks: scoreboard, pre-fork check, lifecycle."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from prefork import lifecycle
from prefork.master import Master, check_no_event_loop
from prefork.process import describe_status, read_pidfile, remove_pidfile, write_pidfile
from prefork.scoreboard import Scoreboard, SlotState, WorkerContext, task_id


def test_slot_round_trip_and_fork_visibility() -> None:
    board = Scoreboard(4)
    slot = board.slots[2]
    slot.reset(0, 7, 1)
    pid = os.fork()
    if pid == 0:  # the worker side writes; the parent must see it
        slot.set_pid(os.getpid())
        slot.set_ready()
        slot.request_started("GET /é" + "x" * 200)
        slot.set_connections(3)
        os._exit(0)
    os.waitpid(pid, 0)
    snap = slot.snapshot()
    assert (snap.pid, snap.generation, snap.index, snap.state) == (pid, 7, 1, SlotState.READY)
    assert snap.connections == 3 and slot.booted
    assert snap.current.startswith("GET /é") and len(snap.current.encode()) <= 100
    assert "serving 'GET /é" in snap.describe()
    slot.request_finished()
    slot.request_recycle()
    snap = slot.snapshot()
    assert snap.requests == 1 and snap.current == "" and snap.recycle_requested
    assert [s.number for s in board.snapshot()] == [2]
    slot.clear()
    assert board.snapshot() == []


def test_file_backed_scoreboard_is_readable_by_another_process(tmp_path) -> None:
    path = str(tmp_path / "board")
    board = Scoreboard(2, path)
    board.slots[0].reset(1234, 1, 0)
    reader = Scoreboard.attach(path)
    assert reader.snapshot()[0].pid == 1234 and reader.master_pid == os.getpid()
    # A second board at the same path (a USR2 master) replaces the file, not the old mapping.
    newer = Scoreboard(2, path)
    assert board.slots[0].snapshot().pid == 1234
    board.close(unlink=True)
    assert os.path.exists(path)
    newer.close(unlink=True)
    assert not os.path.exists(path)


def test_boot_error_is_reported_once_until_a_worker_was_ready() -> None:
    board = Scoreboard(1)
    assert board.claim_boot_error_report() is True
    assert board.claim_boot_error_report() is False
    board.set_ever_ready()
    assert board.claim_boot_error_report() is True


def test_prefork_check_refuses_an_existing_event_loop() -> None:
    check_no_event_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with pytest.raises(RuntimeError, match="create the IOLoop after start"):
            check_no_event_loop()
        sock = socket.socket()
        try:
            with pytest.raises(RuntimeError, match="event loop already exists"):
                Master([sock], workers=1).run()
        finally:
            sock.close()
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    check_no_event_loop()


def test_pidfile_is_atomic_and_removed_only_if_ours(tmp_path) -> None:
    path = str(tmp_path / "x.pid")
    write_pidfile(path, 4242)
    assert read_pidfile(path) == 4242
    remove_pidfile(path)  # not ours
    assert read_pidfile(path) == 4242
    write_pidfile(path)
    remove_pidfile(path)
    assert not os.path.exists(path)
    assert os.listdir(tmp_path) == []


def test_describe_status() -> None:
    assert describe_status(3 << 8) == "exit status 3"
    assert describe_status(signal.SIGKILL) == "killed by SIGKILL"


def _ctx(board: Scoreboard, max_requests: int = 0) -> WorkerContext:
    slot = board.slots[0]
    slot.reset(os.getpid(), 1, 0)
    r, w = os.pipe2(os.O_NONBLOCK)
    return WorkerContext(
        index=0,
        generation=1,
        sockets=[],
        slot=slot,
        master_pid=os.getppid(),
        heartbeat_interval=0.02,
        max_requests=max_requests,
        graceful_timeout=1.0,
        notify_fd=w,
        extra={"notify_r": r},
    )


def test_lifecycle_heartbeat_ready_signals_and_max_requests() -> None:
    board = Scoreboard(1)
    ctx = _ctx(board, max_requests=3)
    calls: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        lc = lifecycle.install(
            loop,
            ctx,
            graceful_stop=lambda: calls.append("graceful"),
            fast_stop=lambda: calls.append("fast"),
            reopen_logs=lambda: calls.append("reopen"),
        )
        lc.mark_ready()
        assert ctx.slot.state == SlotState.READY
        assert os.read(ctx.extra["notify_r"], 10) == b"!"  # type: ignore[arg-type]
        beat = ctx.slot.last_heartbeat
        deadline = time.monotonic() + 5
        while ctx.slot.last_heartbeat == beat and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))  # the loop runs: nothing else does
        assert ctx.slot.last_heartbeat > beat  # written by the loop itself

        for _ in range(3):
            lc.request_done()
        assert ctx.slot.recycle_requested and calls == []  # the master decides when

        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 5
        while len(calls) < 3 and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.01))
        assert calls == ["reopen", "graceful", "fast"]
        assert ctx.slot.state == SlotState.DRAINING
        lc.close()
    finally:
        loop.close()
        asyncio.set_event_loop(None)
        ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)  # undo PR_SET_PDEATHSIG on the test runner
        os.close(ctx.notify_fd)
        os.close(ctx.extra["notify_r"])  # type: ignore[arg-type]


_TERM_BEFORE_THE_LOOP_RUNS = """
import asyncio, os, signal, sys
from prefork import lifecycle
from prefork.scoreboard import Scoreboard
from tests.unit.test_process_model import _ctx

loop = {new_loop}
calls = []
lc = lifecycle.install(
    loop, _ctx(Scoreboard(1)),
    graceful_stop=lambda: calls.append("graceful"), fast_stop=lambda: calls.append("fast"),
)
os.kill(os.getpid(), signal.SIGTERM)  # the handlers are the loop's; the loop is not running
loop.run_until_complete(asyncio.sleep(0.3))
print(calls)
"""


@pytest.mark.parametrize(
    "new_loop",
    ["__import__('uvloop').new_event_loop()", "asyncio.new_event_loop()"],
    ids=["uvloop", "asyncio"],
)
def test_a_term_between_the_handlers_and_the_first_loop_turn_is_not_lost(new_loop: str) -> None:
    """A worker gets TERM just as it boots (the master stopping at once):
    with uvloop a signal that came after ``add_signal_handler`` and before
    ``run_forever`` was dropped (no wakeup fd yet), and the worker served on
    until the master's SIGKILL.  The signals stay blocked until the loop runs."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-c", _TERM_BEFORE_THE_LOOP_RUNS.format(new_loop=new_loop)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['graceful']", result.stderr


def test_task_id_is_none_outside_a_worker() -> None:
    assert task_id() is None


def test_parent_death_signal_does_not_look_for_the_c_library(monkeypatch) -> None:
    """find_library("c") runs ldconfig as a child: the loaded libc is used instead."""
    import ctypes.util

    from prefork import process

    def no_lookup(name: str) -> None:
        raise AssertionError(f"find_library({name!r}) called")

    monkeypatch.setattr(ctypes.util, "find_library", no_lookup)
    process._libc.cache_clear()
    if sys.platform.startswith("linux"):
        assert process.set_parent_death_signal(0) is True  # 0: clear it again


def test_timeout_0_never_finds_a_ready_worker_hung() -> None:
    """gunicorn's ``timeout = 0``: no heartbeat deadline once a worker is
    ready (the master refused it, and an age > 0 would have been 'hung')."""
    import subprocess

    from prefork.children import Worker

    board = Scoreboard(1)
    slot = board.slots[0]
    slot.reset(0, 1, 0)
    # (SIGABRT ignored: were it sent, the stand-in worker would not dump core)
    child = subprocess.Popen(
        ["sleep", "60"], preexec_fn=lambda: signal.signal(signal.SIGABRT, signal.SIG_IGN)
    )
    try:
        worker = Worker(child.pid, 0, slot, 1, 0.0, "start")
        worker.ready_at = 1.0
        worker.check_deadlines(slot.last_heartbeat + 3600.0, 0.0, 60.0)
        assert worker.aborted_at is None and not worker.killed
        worker.check_deadlines(slot.last_heartbeat + 3600.0, 30.0, 60.0)
        assert worker.aborted_at is not None  # (a timeout does find it hung)
    finally:
        child.kill()
        child.wait(5)
        board.close()
