"""The IOLoop API the README promises, on a real event loop with real sockets.

``prefork.worker.ioloop.IOLoop`` is a thin face over one asyncio loop
(uvloop's when installed). Each test here makes its own ``IOLoop`` (never the
process-wide instance, which belongs to a worker), runs it in this thread
and stops it from what it is testing; a watchdog timer stops it after
``LIMIT`` seconds whatever happens, so no test can hang on a loop. Every
test runs on both loop implementations (``IOLoop.configure(True/False)``).

What the environment variable ``PREFORK_UVLOOP=0`` and the process-wide
``instance()``/``current()`` do is checked in a fresh interpreter, where no
loop exists yet.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvloop  # a dev dependency: the tests run on the loop production uses

from prefork import IOLoop as PublicIOLoop
from prefork import PeriodicCallback as PublicPeriodicCallback
from prefork.worker.ioloop import IOLoop, PeriodicCallback
from tests.conftest import ROOT

LIMIT = 5.0  # the watchdog: no loop in this module runs longer


@pytest.fixture(params=["uvloop", "asyncio"])
def loop(request) -> Iterator[IOLoop]:
    """A fresh IOLoop on the implementation named by the parameter; closed afterwards."""
    IOLoop.configure(request.param == "uvloop")
    try:
        io_loop = IOLoop()
    finally:
        IOLoop.configure(None)
    try:
        yield io_loop
    finally:
        if io_loop.asyncio_loop.is_running():  # pragma: no cover - a broken test
            io_loop.stop()
        io_loop.close()
        asyncio.set_event_loop(None)


class Watchdog:
    """Stops the loop after ``LIMIT`` seconds and remembers that it had to."""

    def __init__(self, io_loop: IOLoop, limit: float = LIMIT) -> None:
        self.fired = False
        self.io_loop = io_loop
        self.handle = io_loop.call_later(limit, self._fire)

    def _fire(self) -> None:
        self.fired = True
        self.io_loop.stop()


def run(io_loop: IOLoop, what: str, setup: Callable[[], object] | None = None) -> float:
    """Run ``io_loop`` until something stops it; fail if only the watchdog did.

    ``setup`` is called on the loop's first iteration (the loop is running
    then). Returns how long the loop ran.
    """
    watchdog = Watchdog(io_loop)
    if setup is not None:
        io_loop.add_callback(setup)
    started = time.monotonic()
    io_loop.start()
    elapsed = time.monotonic() - started
    io_loop.remove_timeout(watchdog.handle)
    assert not watchdog.fired, f"the loop ran {LIMIT} s without {what}"
    return elapsed


# -------------------------------------------------------------------- implementations


def test_public_names_are_the_worker_ones() -> None:
    assert PublicIOLoop is IOLoop
    assert PublicPeriodicCallback is PeriodicCallback


def test_configure_chooses_the_implementation(loop: IOLoop, request) -> None:
    if request.node.callspec.params["loop"] == "uvloop":
        assert isinstance(loop.asyncio_loop, uvloop.Loop)
    else:
        assert not isinstance(loop.asyncio_loop, uvloop.Loop)
        assert isinstance(loop.asyncio_loop, asyncio.SelectorEventLoop)


_PROBE = """
import asyncio, json, os
from prefork import IOLoop
assert not IOLoop.initialized()
loop = IOLoop.instance()
assert IOLoop.current() is loop and IOLoop.initialized()
kind = type(loop.asyncio_loop)
seen = []
loop.add_callback(lambda: (seen.append(asyncio.get_running_loop() is loop.asyncio_loop), loop.stop()))
loop.start()
print(json.dumps({"module": kind.__module__, "name": kind.__name__, "ran": seen}))
"""


@pytest.mark.parametrize(
    ("value", "uvloop_expected"),
    [("0", False), ("off", False), ("1", True), (None, True)],
    ids=["PREFORK_UVLOOP=0", "PREFORK_UVLOOP=off", "PREFORK_UVLOOP=1", "unset"],
)
def test_prefork_uvloop_environment_variable(value: str | None, uvloop_expected: bool) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PREFORK_UVLOOP"}
    if value is not None:
        env["PREFORK_UVLOOP"] = value
    result = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["ran"] == [True], seen  # instance() runs, on that loop
    if uvloop_expected:
        assert seen["module"].startswith("uvloop"), seen
    else:
        assert seen["module"] == "asyncio.unix_events", seen
        assert seen["name"] == "_UnixSelectorEventLoop", seen


# -------------------------------------------------------------------- callbacks


def test_add_callback_from_other_threads_runs_each_once_on_the_loop_thread(
    loop: IOLoop,
) -> None:
    per_thread = 200
    senders = 4
    calls: list[tuple[int, int, int]] = []  # (sender, n, the thread that ran it)
    running = threading.Event()

    def record(sender: int, n: int) -> None:
        calls.append((sender, n, threading.get_ident()))
        if len(calls) == per_thread * senders:
            loop.stop()

    def send(sender: int) -> None:
        assert running.wait(LIMIT)
        for n in range(per_thread):
            loop.add_callback(record, sender, n)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    try:
        run(loop, "every callback", setup=running.set)
    finally:
        running.set()
        for thread in threads:
            thread.join(LIMIT)
    me = threading.get_ident()
    assert len(calls) == per_thread * senders
    assert {ident for _, _, ident in calls} == {me}
    for sender in range(senders):
        # Each sender's callbacks ran once each, in the order it added them.
        assert [n for s, n, _ in calls if s == sender] == list(range(per_thread))


def test_stop_from_another_thread(loop: IOLoop) -> None:
    running = threading.Event()
    stopper = threading.Thread(target=lambda: running.wait(LIMIT) and loop.stop())
    stopper.start()
    try:
        run(loop, "the other thread's stop()", setup=running.set)
    finally:
        running.set()
        stopper.join(LIMIT)
    assert not loop.running()


def test_a_raising_callback_is_logged_and_the_loop_goes_on(
    loop: IOLoop, caplog: pytest.LogCaptureFixture
) -> None:
    after: list[str] = []

    def bad() -> None:
        raise ValueError("boom from a callback")

    loop.add_callback(bad)
    loop.add_callback(lambda: (after.append("ran"), loop.stop()))
    run(loop, "the callback after the raising one")
    assert after == ["ran"]
    assert "boom from a callback" in caplog.text


# -------------------------------------------------------------------- timeouts


def test_add_timeout_with_a_timedelta(loop: IOLoop) -> None:
    fired: list[float] = []
    start = time.monotonic()
    loop.add_timeout(
        datetime.timedelta(milliseconds=150), lambda: (fired.append(time.monotonic()), loop.stop())
    )
    run(loop, "the timedelta timeout")
    assert len(fired) == 1
    # Not before its time (a few ms of timer granularity), and within the limit.
    assert 0.145 <= fired[0] - start < LIMIT, fired[0] - start


def test_add_timeout_with_an_absolute_wall_clock_deadline(loop: IOLoop) -> None:
    fired: list[tuple[float, str]] = []
    deadline = time.time() + 0.15
    loop.add_timeout(deadline, lambda arg: (fired.append((time.time(), arg)), loop.stop()), "x")
    run(loop, "the absolute timeout")
    assert len(fired) == 1
    at, arg = fired[0]
    assert arg == "x"
    assert at >= deadline - 0.005, (at, deadline)


def test_a_deadline_in_the_past_runs_at_once(loop: IOLoop) -> None:
    fired: list[str] = []
    loop.add_timeout(time.time() - 60, lambda: (fired.append("late"), loop.stop()))
    elapsed = run(loop, "the past deadline")
    assert fired == ["late"]
    assert elapsed < 1.0


def test_a_bad_deadline_is_a_type_error(loop: IOLoop) -> None:
    with pytest.raises(TypeError):
        loop.add_timeout("soon", lambda: None)  # type: ignore[arg-type]


def test_timeouts_fire_in_deadline_order_whatever_the_order_added(loop: IOLoop) -> None:
    order: list[int] = []
    now = time.time()
    for n in (3, 1, 2):
        loop.add_timeout(now + n * 0.03, order.append, n)
    loop.add_timeout(now + 0.15, loop.stop)
    run(loop, "the last timeout")
    assert order == [1, 2, 3]


def test_remove_timeout_cancels_only_that_one(loop: IOLoop) -> None:
    fired: list[str] = []
    removed = loop.add_timeout(datetime.timedelta(milliseconds=20), fired.append, "removed")
    loop.add_timeout(datetime.timedelta(milliseconds=10), fired.append, "kept-early")
    # The stop comes after the removed one's deadline: it would have run by then.
    loop.add_timeout(
        datetime.timedelta(milliseconds=100), lambda: (fired.append("kept-late"), loop.stop())
    )
    loop.remove_timeout(removed)
    run(loop, "the last timeout")
    assert fired == ["kept-early", "kept-late"]


def test_remove_timeout_from_inside_an_earlier_callback(loop: IOLoop) -> None:
    fired: list[str] = []
    later = loop.call_later(0.05, fired.append, "later")
    loop.call_later(0.01, lambda: (fired.append("first"), loop.remove_timeout(later)))
    loop.call_later(0.15, loop.stop)
    run(loop, "the stop")
    assert fired == ["first"]


def test_call_later_passes_its_arguments(loop: IOLoop) -> None:
    got: list[tuple] = []
    start = time.monotonic()
    loop.call_later(
        0.05, lambda *args: (got.append((time.monotonic() - start, args)), loop.stop()), 1, "two"
    )
    run(loop, "call_later's callback")
    ((elapsed, args),) = got
    assert args == (1, "two")
    assert elapsed >= 0.045


# -------------------------------------------------------------------- file descriptors


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_add_handler_read_with_a_socketpair(loop: IOLoop, pair) -> None:
    a, b = pair
    events: list[tuple[object, int, bytes]] = []

    def on_read(fd: object, event: int) -> None:
        events.append((fd, event, a.recv(100)))
        if b"".join(e[2] for e in events) == b"pingpong":
            loop.stop()

    loop.add_handler(a.fileno(), on_read, IOLoop.READ)
    sender = threading.Thread(target=lambda: (b.send(b"ping"), b.send(b"pong")))
    try:
        run(loop, "the READ events", setup=sender.start)
    finally:
        sender.join(LIMIT)
    assert events and all(fd == a.fileno() and ev == IOLoop.READ for fd, ev, _ in events)
    assert b"".join(data for _, _, data in events) == b"pingpong"


def test_add_handler_with_a_socket_object_passes_it_back(loop: IOLoop, pair) -> None:
    a, b = pair
    seen: list[object] = []

    def on_read(fd: object, event: int) -> None:
        seen.append(fd)
        a.recv(100)
        loop.stop()

    loop.add_handler(a, on_read, IOLoop.READ)
    b.send(b"x")
    run(loop, "the READ event")
    assert seen == [a]


def test_update_handler_switches_between_read_and_write(loop: IOLoop, pair) -> None:
    a, b = pair
    log: list[str] = []

    def handler(fd: int, event: int) -> None:
        if event == IOLoop.WRITE:
            # An empty socket buffer is writable at once: write, then watch for the echo.
            log.append("write")
            a.send(b"hello")
            loop.update_handler(fd, IOLoop.READ)
        elif event == IOLoop.READ:
            log.append("read:" + a.recv(100).decode())
            loop.stop()

    def echo_back() -> None:
        # b echoes whatever a wrote, so the READ event is a's own write, answered.
        def read_b(fd: int, event: int) -> None:
            data = b.recv(100)
            loop.remove_handler(b.fileno())
            b.send(data.upper())

        loop.add_handler(b.fileno(), read_b, IOLoop.READ)

    loop.add_handler(a.fileno(), handler, IOLoop.WRITE)
    run(loop, "the write, then the read", setup=echo_back)
    assert log == ["write", "read:HELLO"]


def test_read_and_write_together(loop: IOLoop, pair) -> None:
    a, b = pair
    b.send(b"ready")  # a is readable and writable from the start
    seen: set[int] = set()

    def handler(fd: int, event: int) -> None:
        seen.add(event)
        if event == IOLoop.READ:
            a.recv(100)
        if seen == {IOLoop.READ, IOLoop.WRITE}:
            loop.stop()

    loop.add_handler(a.fileno(), handler, IOLoop.READ | IOLoop.WRITE)
    run(loop, "both events")
    loop.remove_handler(a.fileno())  # before the socket closes
    assert seen == {IOLoop.READ, IOLoop.WRITE}


def test_remove_handler_stops_the_events(loop: IOLoop, pair) -> None:
    a, b = pair
    c, d = socket.socketpair()
    removed_calls: list[int] = []
    try:

        def on_a(fd: int, event: int) -> None:
            removed_calls.append(event)
            a.recv(100)

        def on_c(fd: int, event: int) -> None:
            # c's data was sent after a's: by the time the loop sees c readable
            # it has polled with a's data waiting, and a's handler is gone.
            c.recv(100)
            loop.stop()

        loop.add_handler(a.fileno(), on_a, IOLoop.READ)
        loop.remove_handler(a.fileno())
        loop.remove_handler(a.fileno())  # a second removal is harmless
        loop.add_handler(c.fileno(), on_c, IOLoop.READ)
        b.send(b"nobody listens")
        d.send(b"marker")
        run(loop, "the marker on the other socket")
        assert removed_calls == []
        # And the fd may be registered again afterwards.
        loop.remove_handler(c.fileno())
        loop.add_handler(a.fileno(), lambda fd, ev: (a.recv(100), loop.stop()), IOLoop.READ)
        run(loop, "the re-registered handler")
    finally:
        c.close()
        d.close()


def test_remove_handler_after_the_fd_was_closed(loop: IOLoop) -> None:
    """tornado lets a handler's fd be closed before remove_handler (and close())."""
    a, b = socket.socketpair()
    fd = os.dup(a.fileno())
    a.close()
    loop.add_handler(fd, lambda f, ev: None, IOLoop.READ | IOLoop.WRITE)
    os.close(fd)
    loop.remove_handler(fd)
    b.close()
    c, d = socket.socketpair()
    try:
        loop.add_handler(c.fileno(), lambda fd, ev: (c.recv(10), loop.stop()), IOLoop.READ)
        d.send(b"x")
        run(loop, "a handler added after the removal")
    finally:
        loop.remove_handler(c.fileno())
        c.close()
        d.close()


def test_handler_registration_errors(loop: IOLoop, pair) -> None:
    a, _b = pair
    loop.add_handler(a.fileno(), lambda fd, ev: None, IOLoop.READ)
    with pytest.raises(ValueError, match="already registered"):
        loop.add_handler(a.fileno(), lambda fd, ev: None, IOLoop.READ)
    loop.remove_handler(a.fileno())
    with pytest.raises(ValueError, match="not registered"):
        loop.update_handler(a.fileno(), IOLoop.WRITE)


def test_close_all_fds_closes_the_registered_ones() -> None:
    IOLoop.configure(False)
    try:
        io_loop = IOLoop()
    finally:
        IOLoop.configure(None)
    a, b = socket.socketpair()
    try:
        fd = os.dup(a.fileno())
        io_loop.add_handler(fd, lambda f, ev: None, IOLoop.READ)
        io_loop.close(all_fds=True)
        with pytest.raises(OSError):
            os.fstat(fd)
    finally:
        a.close()
        b.close()


# -------------------------------------------------------------------- PeriodicCallback


def test_periodic_callback_start_and_stop(loop: IOLoop) -> None:
    period_ms = 30
    calls: list[float] = []
    start = time.monotonic()
    periodic: PeriodicCallback

    def tick() -> None:
        calls.append(time.monotonic() - start)
        if len(calls) == 3:
            periodic.stop()
            # Three more periods: a periodic callback that did not stop would run in them.
            loop.call_later(3 * period_ms / 1000, loop.stop)

    periodic = PeriodicCallback(tick, period_ms, io_loop=loop)
    assert not periodic.is_running()
    periodic.start()
    assert periodic.is_running()
    run(loop, "three periodic calls")
    assert not periodic.is_running()
    assert len(calls) == 3, calls
    # Anchored at start(): the n-th run is n periods later, never early.
    for n, at in enumerate(calls, 1):
        assert at >= n * period_ms / 1000 - 0.005, calls


def test_periodic_callback_restarts_and_takes_a_timedelta(loop: IOLoop) -> None:
    calls: list[str] = []
    periodic = PeriodicCallback(
        lambda: (calls.append("tick"), periodic.stop(), loop.stop()),
        datetime.timedelta(milliseconds=10),
        io_loop=loop,
    )
    assert periodic.callback_time == 10
    for _ in range(2):
        periodic.start()
        run(loop, "the periodic call")
    assert calls == ["tick", "tick"]


def test_periodic_callback_survives_an_exception(
    loop: IOLoop, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    periodic: PeriodicCallback

    def tick() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("periodic boom")
        periodic.stop()
        loop.stop()

    periodic = PeriodicCallback(tick, 10, io_loop=loop)
    periodic.start()
    run(loop, "the second periodic call")
    assert len(calls) == 2
    assert "periodic boom" in caplog.text


@pytest.mark.parametrize("bad", [0, -5])
def test_periodic_callback_needs_a_positive_period(bad: int) -> None:
    with pytest.raises(ValueError):
        PeriodicCallback(lambda: None, bad)
