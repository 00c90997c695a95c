"""The master's process model with real processes, signals and a concurrent client load.

Each test starts ``apps/echo_master.py`` (a tiny HTTP responder run under
prefork's Master) with subprocess.Popen, drives it with signals and a bounded
client load on loopback, and in a finally block kills it by pid, reaps it and
checks with psutil that none of its processes survive. Every wait polls a
condition with a deadline. The worker states come from the master's
scoreboard, mapped from a file (``--scoreboard``).
"""

from __future__ import annotations

import ctypes
import http.client
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from prefork.scoreboard import Scoreboard, SlotSnapshot, SlotState
from tests.conftest import wait_for

APP = Path(__file__).parent / "apps" / "echo_master.py"
PR_SET_CHILD_SUBREAPER = 36

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


@pytest.fixture(scope="module", autouse=True)
def subreaper() -> Iterator[None]:
    """Orphans of the servers under test (e.g. after kill -9 of a master) come back to us.

    So the teardown can find and check every process a test left behind,
    and old masters of a USR2 upgrade can be reaped.
    """
    _set_subreaper(True)
    yield
    _set_subreaper(False)


class Server:
    """One echo_master.py process tree under test."""

    def __init__(self, tmp: Path, *args: str, prefix: list[str] | None = None) -> None:
        self.tmp = tmp
        self.log_path = tmp / "master.log"
        self.board_path = tmp / "scoreboard"
        self.pidfile = tmp / "master.pid"
        self.out = open(tmp / "stdout.log", "wb")
        cmd = [
            *(prefix or []),
            sys.executable,
            str(APP),
            "--log-file",
            str(self.log_path),
            "--scoreboard",
            str(self.board_path),
            "--pidfile",
            str(self.pidfile),
            *args,
        ]
        # A session of its own: a Ctrl-C in the test's terminal does not reach it,
        # and a test can send a "Ctrl-C" to its whole process group.
        self.proc = subprocess.Popen(
            cmd, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.known: set[int] = {self.proc.pid}
        self._board: Scoreboard | None = None
        self._board_ino = 0

    # -- observation ---------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def port(self) -> int:
        m = wait_for(
            lambda: re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.log()),
            15,
            "the master to log its address",
        )
        return int(m.group(1))

    @property
    def master_pid(self) -> int:
        """The current master: the pid in the pidfile (it changes with USR2)."""
        try:
            return int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return self.proc.pid

    def board(self) -> Scoreboard | None:
        try:
            ino = os.stat(self.board_path).st_ino
        except FileNotFoundError:
            return None
        if self._board is None or ino != self._board_ino:
            try:
                self._board = Scoreboard.attach(str(self.board_path))
            except (OSError, ValueError):
                return None
            self._board_ino = ino
        return self._board

    def slots(self) -> list[SlotSnapshot]:
        board = self.board()
        if board is None:
            return []
        snaps = [s for s in board.snapshot() if s.pid > 0]
        self.known.update(s.pid for s in snaps)
        return snaps

    def ready(self) -> list[SlotSnapshot]:
        return [s for s in self.slots() if s.state == SlotState.READY]

    def wait_workers(self, n: int, timeout: float = 15, generation: int | None = None) -> list[int]:
        """Wait until exactly ``n`` workers exist and all are ready (of ``generation``)."""

        def settled() -> list[int] | None:
            slots = self.slots()
            ok = len(slots) == n and all(s.state == SlotState.READY for s in slots)
            if ok and generation is not None:
                ok = all(s.generation == generation for s in slots)
            if not ok:
                return None
            return sorted(s.pid for s in slots)

        return wait_for(settled, timeout, f"{n} ready worker(s)")

    def children(self) -> list[psutil.Process]:
        try:
            kids = psutil.Process(self.master_pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        self.known.update(k.pid for k in kids)
        return kids

    def signal(self, sig: int) -> None:
        os.kill(self.master_pid, sig)

    # -- teardown ------------------------------------------------------------
    def close(self) -> None:
        """Kill everything this server started, reap it, and check nothing survives."""
        self.children()
        self.slots()
        for pid in sorted(self.known):
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.out.close()

        def all_gone() -> bool:
            alive = []
            for pid in self.known:
                try:
                    p = psutil.Process(pid)
                    if p.status() == psutil.STATUS_ZOMBIE:
                        _reap(pid)
                        continue
                    alive.append(pid)
                except psutil.NoSuchProcess:
                    continue
            return not alive

        wait_for(all_gone, 10, "every process of the server to be gone")


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(*args: str, prefix: list[str] | None = None) -> Server:
        s = Server(tmp_path, *args, prefix=prefix)
        started.append(s)
        return s

    yield start
    for s in started:
        s.close()


class Load:
    """Client threads hammering the server until stopped: keep-alive and one-shot connections."""

    def __init__(self, port: int, keepalive: int = 2, oneshot: int = 2, path: str = "/") -> None:
        self.port = port
        self.path = path
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failures: list[str] = []
        self.pids: Counter[int] = Counter()
        self.threads = [
            threading.Thread(target=self._run, args=(True,), daemon=True) for _ in range(keepalive)
        ] + [threading.Thread(target=self._run, args=(False,), daemon=True) for _ in range(oneshot)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        wait_for(lambda: self.ok >= 20, 10, "the load to get going")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(timeout=15)

    def _run(self, keepalive: bool) -> None:
        conn: http.client.HTTPConnection | None = None
        reused = False
        while not self.stop_event.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                    reused = False
                headers = {} if keepalive else {"Connection": "close"}
                conn.request("GET", self.path, headers=headers)
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
                with self.lock:
                    self.ok += 1
                    self.pids[int(body)] += 1
                reused = True
                if resp.will_close or not keepalive:
                    conn.close()
                    conn = None
            except Exception as e:
                where = "reused keep-alive connection" if reused else "new connection"
                with self.lock:
                    self.failures.append(f"{type(e).__name__} on a {where}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
            time.sleep(0.002)
        if conn is not None:
            conn.close()


def get(port: int, path: str = "/", timeout: float = 10) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        assert resp.status == 200
        return int(resp.read())
    finally:
        conn.close()


def _pending_signals(pid: int) -> int:
    """The process-wide pending signal mask (``ShdPnd`` in /proc/PID/status)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("ShdPnd:"):
                    return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def no_zombies(pid: int) -> bool:
    try:
        kids = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return True
    return not [k for k in kids if _status(k) == psutil.STATUS_ZOMBIE]


def _status(p: psutil.Process) -> str:
    try:
        return p.status()
    except psutil.NoSuchProcess:
        return "gone"


# --------------------------------------------------------------------------
# Tests


def test_hup_20_times_under_load_fails_no_request(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    first = srv.wait_workers(2)
    with Load(port) as load:
        for _ in range(20):
            srv.signal(signal.SIGHUP)
            time.sleep(0.5)
        final = srv.wait_workers(2, timeout=30, generation=21)
    print(f"\n20 HUPs: {load.ok} requests ok, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 200
    assert not set(first) & set(final)
    assert srv.log().count("reload complete") >= 1
    assert no_zombies(srv.proc.pid)


def test_ttin_ttou_pairs_under_load(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    srv.wait_workers(2)
    with Load(port) as load:
        for _ in range(10):
            srv.signal(signal.SIGTTIN)
            srv.wait_workers(3)
            oldest = min(srv.slots(), key=lambda s: s.boot_time).pid
            srv.signal(signal.SIGTTOU)
            after = srv.wait_workers(2)
            assert oldest not in after, "TTOU must retire the oldest worker"
    print(f"\n10 TTIN/TTOU pairs: {load.ok} requests ok, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert no_zombies(srv.proc.pid)


def test_max_requests_recycles_one_at_a_time(server) -> None:
    srv = server("--workers", "2", "--max-requests", "50", "--max-requests-jitter", "10")
    port = srv.port()
    srv.wait_workers(2)
    most_draining = 0
    with Load(port) as load:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            draining = [s for s in srv.slots() if s.state == SlotState.DRAINING]
            most_draining = max(most_draining, len(draining))
            time.sleep(0.01)
    recycles = srv.log().count("reached max_requests")
    print(
        f"\nmax_requests=50: {load.ok} requests ok, {len(load.failures)} failed, "
        f"{recycles} recycles, {len(load.pids)} worker pids, at most {most_draining} draining"
    )
    assert load.failures == [], load.failures[:5]
    assert recycles >= 3
    assert most_draining <= 1
    srv.wait_workers(2)


def test_run_returns_the_context_in_each_child_without_an_entry(server) -> None:
    srv = server("--workers", "2", "--no-entry")
    port = srv.port()
    first = srv.wait_workers(2)
    assert {s.index for s in srv.slots()} == {0, 1}
    titles = {p.pid: " ".join(p.cmdline()).strip() for p in srv.children()}
    assert sorted(titles.values()) == ["prefork: worker 0", "prefork: worker 1"]
    srv.signal(signal.SIGHUP)
    second = srv.wait_workers(2, generation=2)
    assert not set(first) & set(second)
    assert get(port) in second
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=10) == 0


def test_max_memory_recycles_the_worker_over_the_limit(server) -> None:
    limit = 60 << 20  # an idle worker uses about 20 MiB
    srv = server("--workers", "2", "--max-memory", str(limit))
    port = srv.port()
    first = srv.wait_workers(2)
    with Load(port) as load:
        fat = get(port, "/leak?s=64")
        assert fat in first
        wait_for(lambda: not psutil.pid_exists(fat), 10, "the fat worker to be recycled")
        after = srv.wait_workers(2)
    print(f"\nmax_memory: {load.ok} requests ok, {len(load.failures)} failed")
    assert fat not in after
    assert re.search(rf"pid {fat}, gen 1\) uses [\d.]+ MiB > max_memory 60.0 MiB", srv.log())
    assert load.failures == [], load.failures[:5]


def test_sigkill_of_a_worker_is_replaced_within_100ms(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    victim, survivor = srv.wait_workers(2)
    with Load(port, keepalive=1, oneshot=1) as load:
        time.sleep(0.3)
        before = len(load.failures)
        os.kill(victim, signal.SIGKILL)
        m = wait_for(
            lambda: re.search(
                r"ready: accepting ([\d.]+) ms after its predecessor died", srv.log()
            ),
            5,
            "the replacement to be ready",
        )
        new = wait_for(
            lambda: [p for p in srv.wait_workers(2) if p not in (victim, survivor)],
            5,
            "a new worker pid",
        )
        wait_for(lambda: load.pids[new[0]] > 0, 10, "the replacement to serve a request")
        time.sleep(0.3)
    ms = float(m.group(1))
    print(f"\nreplacement accepting {ms:.1f} ms after the SIGKILL'd worker died")
    assert ms < 100
    # Only requests in flight on the killed worker may fail: at most one per client thread.
    assert before == 0, load.failures
    assert len(load.failures) <= 2, load.failures
    assert no_zombies(srv.proc.pid)


def test_sigstop_worker_is_killed_and_replaced(server) -> None:
    timeout = 2.0
    srv = server("--workers", "2", "--timeout", str(timeout))
    port = srv.port()
    victim, other = srv.wait_workers(2)
    get(port)
    os.kill(victim, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        new = wait_for(
            lambda: [p for p in srv.wait_workers(2, timeout=10) if p not in (victim, other)],
            timeout + 5,
            "a replacement for the stopped worker",
        )
        elapsed = time.monotonic() - stopped_at
        assert not psutil.pid_exists(victim) or _status(psutil.Process(victim)) == "zombie"
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except ProcessLookupError:
            pass
    print(f"\nSIGSTOP'd worker killed and replaced after {elapsed:.2f} s (timeout {timeout} s)")
    assert elapsed <= timeout + 1.0
    line = next(ln for ln in srv.log().splitlines() if "is hung" in ln)
    assert f"pid {victim}" in line and "no heartbeat" in line and "request(s) served" in line
    assert "process is stopped: SIGKILL" in line
    assert new and get(port) in (new[0], other)


def test_blocked_loop_dumps_its_traceback_then_is_replaced(server) -> None:
    timeout = 2.0
    srv = server("--workers", "2", "--timeout", str(timeout))
    port = srv.port()
    before = srv.wait_workers(2)
    blocker = threading.Thread(target=lambda: _get_quietly(port, "/block?s=60"), daemon=True)
    blocker.start()
    victim = wait_for(
        lambda: next((s.pid for s in srv.slots() if s.current.startswith("GET /block")), None),
        5,
        "a worker to block",
    )
    blocked_at = time.monotonic()
    wait_for(lambda: not psutil.pid_exists(victim), timeout + 3, "the hung worker to be killed")
    after = srv.wait_workers(2)
    elapsed = time.monotonic() - blocked_at
    print(f"\nblocked worker killed and replaced after {elapsed:.2f} s (timeout {timeout} s)")
    assert elapsed <= timeout + 2.0
    assert victim not in after and set(before) - {victim} <= set(after)
    line = next(ln for ln in srv.log().splitlines() if "is hung" in ln)
    assert f"pid {victim}" in line and "serving 'GET /block?s=60'" in line and "SIGABRT" in line
    stderr = (srv.tmp / "stdout.log").read_text(errors="replace")
    assert "Fatal Python error: Aborted" in stderr
    assert "in handle" in stderr  # the Python frame the loop was stuck in


def _get_quietly(port: int, path: str) -> None:
    try:
        get(port, path, timeout=30)
    except (OSError, http.client.HTTPException):
        pass


def test_kill9_master_frees_the_port_within_1s(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    workers = srv.wait_workers(2)
    get(port)
    os.kill(srv.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    srv.proc.wait(timeout=5)

    def gone() -> bool:
        for pid in workers:
            if psutil.pid_exists(pid):
                if _status(psutil.Process(pid)) != psutil.STATUS_ZOMBIE:
                    return False
                _reap(pid)
        return True

    wait_for(gone, 1.0, "every worker to exit after kill -9 of the master", interval=0.005)

    def bindable() -> bool:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
            return True
        except OSError:
            return False
        finally:
            s.close()

    wait_for(bindable, max(0.05, 1.0 - (time.monotonic() - killed_at)), "the port to be free")
    print(
        f"\nworkers gone and port free {1000 * (time.monotonic() - killed_at):.0f} ms after kill -9"
    )


def test_boot_failure_exits_3_without_fork_storm(server) -> None:
    n, boot_timeout = 2, 10.0
    srv = server("--workers", str(n), "--fail-boot", "--boot-timeout", str(boot_timeout))
    started = time.monotonic()
    status = srv.proc.wait(timeout=boot_timeout + 5)
    elapsed = time.monotonic() - started
    log = srv.log()
    forks = log.count("booting worker")
    print(f"\nboot failure: exit {status} after {elapsed:.2f} s, {forks} fork(s)")
    assert status == 3
    assert elapsed < boot_timeout
    assert forks < 2 * n
    assert log.count("worker failed to boot (exit status 3); see its error above") == 1
    assert log.count("RuntimeError: boot failure requested by the test") == 1


def test_a_crash_loop_is_paced_by_backoff(server) -> None:
    srv = server("--workers", "1")
    port = srv.port()
    srv.wait_workers(1)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            get(port, "/crash", timeout=2)
        except (OSError, http.client.HTTPException):
            pass
    forks = srv.log().count("booting worker")
    print(f"\ncrash loop: {forks} forks in 3 s")
    assert 4 <= forks <= 10  # 0, 0.1, 0.2, 0.4, 0.8, 1.6 s apart: not hundreds
    assert "is flapping" in srv.log()
    assert srv.proc.poll() is None


def test_failed_boot_during_reload_keeps_serving(server) -> None:
    srv = server("--workers", "2", "--fail-boot-from-generation", "2")
    port = srv.port()
    old = srv.wait_workers(2)
    with Load(port) as load:
        srv.signal(signal.SIGHUP)
        wait_for(lambda: "reload aborted" in srv.log() or "aborted" in srv.log(), 10, "the abort")
        time.sleep(0.5)
    assert srv.wait_workers(2) == old
    assert srv.proc.poll() is None
    assert load.failures == [], load.failures[:5]


def test_term_finishes_inflight_and_backlog_then_exits_0(server) -> None:
    srv = server("--workers", "2", "--graceful-timeout", "15")
    port = srv.port()
    workers = srv.wait_workers(2)
    results: dict[str, list] = {"sleep": [], "queued": []}
    lock = threading.Lock()

    def fetch(kind: str, path: str, started: threading.Event) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.connect()
            started.set()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            with lock:
                results[kind].append((resp.status, int(body), resp.getheader("Connection")))
        except Exception as e:
            started.set()
            with lock:
                results[kind].append(("error", repr(e), None))

    def spawn(kind: str, path: str) -> threading.Thread:
        started = threading.Event()
        t = threading.Thread(target=fetch, args=(kind, path, started), daemon=True)
        t.start()
        assert started.wait(5)
        return t

    threads = [spawn("sleep", "/sleep?s=2") for _ in range(4)]
    wait_for(
        lambda: sum(s.connections for s in srv.slots()) >= 4,
        5,
        "the sleeping requests to be in flight",
    )
    # Stop the workers so the next connections wait in the listen backlog.
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        threads += [spawn("queued", "/") for _ in range(4)]
        time.sleep(0.1)  # let the requests reach the kernel; nothing to poll for
        srv.signal(signal.SIGTERM)
        wait_for(lambda: "graceful stop" in srv.log(), 5, "the master to start the stop")
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    status = srv.proc.wait(timeout=15)
    for t in threads:
        t.join(timeout=5)
    print(f"\nTERM: exit {status}; results {results}")
    assert status == 0
    assert len(results["sleep"]) == 4 and len(results["queued"]) == 4
    for status_code, _pid, _conn in results["sleep"] + results["queued"]:
        assert status_code == 200, results
    assert all(conn == "close" for _s, _p, conn in results["sleep"])
    assert not srv.pidfile.exists()


def test_ctrl_c_to_the_process_group_stops_fast_and_quietly(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    workers = srv.wait_workers(2)
    with Load(port, keepalive=1, oneshot=1):
        os.killpg(srv.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        started = time.monotonic()
        status = srv.proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    output = srv.log() + (srv.tmp / "stdout.log").read_text(errors="replace")
    print(f"\nCtrl-C: exit {status} after {elapsed:.2f} s")
    assert status == 0
    assert elapsed < 3
    assert "fast stop" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    wait_for(lambda: not any(psutil.pid_exists(p) for p in workers), 2, "the workers to exit")


def test_usr1_reopens_logs_in_master_and_every_worker(server, tmp_path: Path) -> None:
    srv = server("--workers", "3")
    srv.port()
    workers = srv.wait_workers(3)
    shutil.move(srv.log_path, tmp_path / "master.log.1")
    srv.signal(signal.SIGUSR1)

    def all_reopened() -> bool:
        text = srv.log()
        return "reopened" in text and all(
            f"worker {pid} reopened its log files" in text for pid in workers
        )

    wait_for(all_reopened, 5, "every worker to write to the new log file")
    assert "received SIGUSR1" in srv.log()
    assert "received SIGUSR1" not in (tmp_path / "master.log.1").read_text()


def test_signal_storm_keeps_the_right_worker_count(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    srv.wait_workers(2)
    rng = random.Random(1234)
    sigs = (
        [signal.SIGHUP] * 20 + [signal.SIGTTIN] * 30 + [signal.SIGTTOU] * 30 + [signal.SIGUSR1] * 20
    )
    rng.shuffle(sigs)
    # Standard signals are not queued: the kernel merges a signal into one of the
    # same number still pending, before the master can see it. Count the sends
    # that may have been merged that way (the same signal pending just before
    # the send: an over-estimate), so that "handled >= sent - merged" proves the
    # master itself lost none.
    merged = 0
    started = time.monotonic()
    for i, sig in enumerate(sigs):
        if _pending_signals(srv.master_pid) & (1 << (sig - 1)):
            merged += 1
        srv.signal(sig)
        time.sleep(max(0.0, started + (i + 1) * 0.01 - time.monotonic()))
    sent = time.monotonic() - started

    def master_lines() -> list[str]:
        return re.findall(r"received SIG(TTIN|TTOU|HUP|USR1)", srv.log())

    wait_for(
        lambda: len(master_lines()) >= len(sigs) - merged,
        15,
        f"the master to handle at least {len(sigs) - merged} signals",
    )
    time.sleep(0.2)  # nothing more is coming: the last ones may still be logged
    target = 2
    for m in re.finditer(r"received SIGTT(?:IN|OU): workers \d+ -> (\d+)", srv.log()):
        target = int(m.group(1))
    expected = 2
    for kind in master_lines():
        if kind == "TTIN":
            expected += 1
        elif kind == "TTOU":
            expected = max(1, expected - 1)
    assert target == expected
    pids = srv.wait_workers(expected, timeout=60)
    print(
        f"\n100 signals in {sent:.2f} s: {len(master_lines())} handled, "
        f"at most {merged} merged by the kernel, {expected} workers"
    )

    def settled() -> bool:
        kids = srv.children()
        return len(kids) == expected and all(_status(k) != psutil.STATUS_ZOMBIE for k in kids)

    wait_for(settled, 30, f"exactly {expected} live children and no zombie")
    assert sorted(k.pid for k in srv.children()) == pids
    assert get(port) in pids
    orphans = [p for p in psutil.Process().children() if p.pid in srv.known - {srv.proc.pid}]
    assert orphans == []


def test_master_as_pid1_stops_gracefully_and_reaps_orphans(server, tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("unshare not installed")
    probe = subprocess.run(
        [unshare, "-p", "-f", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare -p fails here: {probe.stderr.decode().strip()}")
    srv = server("--workers", "2", prefix=[unshare, "-p", "-f", "--mount-proc"])
    port = srv.port()

    def master() -> psutil.Process | None:
        kids = psutil.Process(srv.proc.pid).children()
        return kids[0] if kids else None

    m = wait_for(master, 10, "the namespaced master")
    srv.known.add(m.pid)
    wait_for(lambda: len(m.children()) == 2, 10, "two workers")
    for _ in range(3):
        get(port, "/orphan?s=0.3")
    wait_for(lambda: srv.log().count("reaped unknown child") >= 3, 10, "the orphans to be reaped")
    assert not [k for k in m.children(recursive=True) if _status(k) == psutil.STATUS_ZOMBIE]
    os.kill(m.pid, signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 0
    assert "graceful stop" in srv.log() and "exiting (status 0)" in srv.log()


def test_three_usr2_upgrades_under_load_fail_no_request(server) -> None:
    srv = server("--workers", "2")
    port = srv.port()
    srv.wait_workers(2)
    masters = [srv.proc.pid]
    with Load(port) as load:
        for _ in range(3):
            old = srv.master_pid
            os.kill(old, signal.SIGUSR2)
            new = wait_for(
                lambda old=old: srv.master_pid != old and srv.master_pid,
                15,
                "the new master to write the pidfile",
            )
            srv.known.add(new)
            masters.append(new)

            def old_gone(old: int = old) -> bool:
                try:
                    p = psutil.Process(old)
                except psutil.NoSuchProcess:
                    return True
                if _status(p) == psutil.STATUS_ZOMBIE:
                    _reap(old)
                    return True
                return False

            wait_for(old_gone, 20, "the old master to exit")
            srv.wait_workers(2, timeout=15)
            assert not Path(str(srv.pidfile) + ".oldbin").exists()
    print(f"\n3 USR2 upgrades: {load.ok} requests ok, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert srv.proc.returncode == 0 or srv.proc.wait(timeout=5) == 0
    assert srv.log().count("upgrade complete") == 3
    # A second USR2 while an upgrade is in progress is ignored.
    current = srv.master_pid
    os.kill(current, signal.SIGUSR2)
    time.sleep(0.05)
    os.kill(current, signal.SIGUSR2)
    wait_for(
        lambda: "already in progress; ignored" in srv.log(), 10, "the second USR2 to be ignored"
    )
    wait_for(lambda: srv.log().count("upgrade complete") == 4, 20, "the fourth upgrade")
