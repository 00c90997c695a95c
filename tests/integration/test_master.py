"""The master's process model with real processes, signals and a concurrent client load.

Each test runs the product users run: the ``prefork`` command
(``python -m prefork -b 127.0.0.1:0 ... tests.integration.apps.master_app:app``,
from the repository root), whose workers serve the seed application
``apps/master_app.py`` with prefork's own HTTPServer. Only the test of the
Master API itself (``Master.run()`` returning the WorkerContext in each
child, as ``HTTPServer.start(n)`` uses it) runs the stand-in
``apps/echo_master.py``.

A test starts the server with subprocess.Popen in a session of its own,
drives it with signals and a bounded client load on loopback, and reads the
worker states from the master's scoreboard (``PIDFILE.scoreboard``). Every
wait polls a condition with a deadline.

Every process a server starts stays in its session: the workers, the masters
a USR2 upgrade execs, their grandchildren, even inside a pid namespace
(prefork never calls setsid). At the end of every test everything in the
session is killed by pid and reaped, and the test fails if any of it
survives; at the end of the module, likewise for every session it started.
The test process is a child subreaper, so orphans (old and new masters of an
upgrade, workers of a killed master) come back to it rather than to pid 1.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest

from prefork.scoreboard import Scoreboard, SlotSnapshot, SlotState
from tests.conftest import ROOT, wait_for, wait_for_lines

APP = "tests.integration.apps.master_app:app"
STANDIN = Path(__file__).parent / "apps" / "echo_master.py"
FAIL_MESSAGE = "boot failure requested by the test"  # raised by master_app.py
PR_SET_CHILD_SUBREAPER = 36

#: Set in the environment of every server; a process that has replaced its
#: environment with its title (setproctitle) is known by the title instead.
TAG_ENV = "MASTER_TEST_TAG"
RUN_TAG = uuid.uuid4().hex
#: The session of every server this module started, with its start time.
_SESSIONS: dict[int, float] = {}
#: Inherited settings that would change what the server does.
_SCRUBBED_ENV = (
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "WEB_CONCURRENCY",
    "MASTER_APP_FAIL_BOOT",
    "MASTER_APP_FAIL_BOOT_IF",
    "MASTER_APP_HOLD_BOOT_IF",
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")


def _set_subreaper(on: bool) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0, 0, 0, 0)


def _is_ours(p: psutil.Process) -> bool:
    """A process started by this module: our tag in its environment, or a prefork title."""
    try:
        if p.environ().get(TAG_ENV) == RUN_TAG:
            return True
    except (psutil.Error, OSError):
        pass
    return _title(p).startswith("prefork: ")


def _live_members(sessions: dict[int, float]) -> list[psutil.Process]:
    """The live (not zombie) processes of these sessions started by this module.

    A session id cannot be taken by another program while a member of ours
    is left (setsid() fails while a process group of that number exists);
    the start time and the tag (or title) rule out the rest.
    """
    found = []
    for pid in psutil.pids():
        try:
            sid = os.getsid(pid)
            if sid not in sessions:
                continue
            p = psutil.Process(pid)
            if p.create_time() + 0.01 < sessions[sid] or p.status() == psutil.STATUS_ZOMBIE:
                continue
        except (OSError, psutil.Error):
            continue
        if _is_ours(p):
            found.append(p)
    return found


@pytest.fixture(scope="module", autouse=True)
def subreaper() -> Iterator[None]:
    """Orphans of the servers under test (e.g. after kill -9 of a master) come back to us.

    So the teardown can find, kill and reap every process a test left behind,
    and the masters of a USR2 upgrade are reaped by the test, not by pid 1.
    At the end of the module nothing started by it may be left.
    """
    _set_subreaper(True)
    try:
        yield
        left = _live_members(_SESSIONS)
        for p in left:
            _kill_quietly(p.pid)
        assert not left, f"processes started by this module survive: {left}"
    finally:
        _set_subreaper(False)


def _kill_quietly(pid: int, sig: int = signal.SIGKILL) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _no_core_files() -> None:
    """A hung worker gets SIGABRT (traceback dump) before SIGKILL: no core file from tests."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))


class Server:
    """One server process tree under test: the ``prefork`` CLI, or the stand-in."""

    def __init__(
        self,
        tmp: Path,
        *args: str,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
        standin: bool = False,
        app: str = APP,
    ) -> None:
        self.tmp = tmp
        self.log_path = tmp / "master.log"
        self.pidfile = tmp / "master.pid"
        self.out_path = tmp / "stdout.log"
        self.out = open(self.out_path, "wb")  # noqa: SIM115 - closed in close()
        if standin:
            self.board_path = tmp / "scoreboard"
            cmd = [
                sys.executable,
                str(STANDIN),
                "--log-file",
                str(self.log_path),
                "--scoreboard",
                str(self.board_path),
                "--pidfile",
                str(self.pidfile),
                *args,
            ]
        else:
            # The CLI maps the scoreboard next to the pidfile.
            self.board_path = Path(f"{self.pidfile}.scoreboard")
            cmd = [
                sys.executable,
                "-m",
                "prefork",
                "-b",
                "127.0.0.1:0",
                "--error-log",
                str(self.log_path),
                "--access-log",
                "off",
                "--pidfile",
                str(self.pidfile),
                # The stand-in's defaults; a test's own options come after and win.
                "--boot-timeout",
                "10",
                "--graceful-timeout",
                "10",
                *args,
                app,
            ]
        full_env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PREFORK_") and k not in _SCRUBBED_ENV
        }
        full_env.update(env or {})
        full_env[TAG_ENV] = RUN_TAG
        # A session of its own: a Ctrl-C in the test's terminal does not reach it,
        # and a test can send a "Ctrl-C" to its whole process group.
        self.proc = subprocess.Popen(
            [*(prefix or []), *cmd],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_no_core_files,
        )
        self.sid = self.proc.pid  # start_new_session: the session leader
        try:
            self.started = psutil.Process(self.proc.pid).create_time()
        except psutil.NoSuchProcess:
            self.started = time.time() - 1
        _SESSIONS[self.sid] = self.started
        self.known: set[int] = {self.proc.pid}
        self.exit_status: dict[int, int] = {}
        self._board: Scoreboard | None = None
        self._board_ino = 0

    # -- observation ---------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """What the processes wrote to their stdout and stderr."""
        return self.out_path.read_text(errors="replace")

    def port(self) -> int:
        m = wait_for(
            lambda: re.search(r"listening on https?://127\.0\.0\.1:(\d+)", self.log()),
            15,
            "the master to log its address",
        )
        return int(m.group(1))

    def members(self) -> list[psutil.Process]:
        """Every live process this server started (its session)."""
        return _live_members({self.sid: self.started})

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is a live process started by this server."""
        try:
            if os.getsid(pid) != self.sid:
                return False
            p = psutil.Process(pid)
            return (
                p.create_time() + 0.01 >= self.started
                and _status(p) not in ("gone", psutil.STATUS_ZOMBIE)
                and _is_ours(p)
            )
        except (OSError, psutil.Error):
            return False

    def pidfile_pid(self) -> int | None:
        """The pid in the pidfile if it names a process of ours.

        Not otherwise: in a pid namespace the master writes 1, which here is init.
        """
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self.owns(pid) else None

    @property
    def master_pid(self) -> int:
        """The current master: the pid in the pidfile (it changes with USR2)."""
        return self.pidfile_pid() or self.proc.pid

    def wait_new_master(self, previous: list[int], timeout: float = 15) -> int:
        """The master a USR2 upgrade started, once it has written the pidfile."""
        pid = wait_for(
            lambda: (p := self.pidfile_pid()) not in previous and p,
            timeout,
            "the new master to write the pidfile",
        )
        self.known.add(pid)
        return pid

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

    # -- exits -----------------------------------------------------------------
    def reap(self, pid: int) -> int | None:
        """The exit code of ``pid`` once it has ended and was reaped here, else None.

        The subprocess.Popen child is left to Popen: reaping it behind its
        back would make ``proc.wait()`` report 0 whatever the real status.
        Others (masters of an upgrade, workers of a killed master) are ours
        to reap once orphaned (we are their subreaper).
        """
        if pid == self.proc.pid:
            return self.proc.poll()
        if pid in self.exit_status:
            return self.exit_status[pid]
        try:
            got, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not (yet) our child, or reaped elsewhere
            return None
        if got == 0:
            return None
        self.exit_status[pid] = os.waitstatus_to_exitcode(status)
        return self.exit_status[pid]

    def wait_exit(self, pid: int, timeout: float, what: str) -> int:
        """Wait until ``pid`` has exited and was reaped here; its exit code."""
        return wait_for(lambda: (code := self.reap(pid)) is not None and (code,), timeout, what)[0]

    # -- teardown ------------------------------------------------------------
    def close(self) -> None:
        """Kill everything this server started, reap it, and check nothing survives.

        Only processes of this server's session are signalled (never a pid
        that might have been reused by another program). The scan repeats
        until none is left, so a master that forks a replacement or a new
        master while being torn down is caught too.

        When the process the test started has already exited (a stop, a
        ``kill -9``, a USR2 hand-over), nothing it started may outlive it:
        not a worker, not a grandchild, not a new master the test did not
        stop and reap itself. The test then fails, after the clean-up.
        """
        try:
            self.children()
            self.slots()
        except psutil.Error:
            pass
        outlived: list[psutil.Process] = []
        if self.proc.poll() is not None:
            try:
                wait_for(lambda: not self.members(), 2, "the server's processes to exit")
            except AssertionError:
                outlived = self.members()
                for p in outlived:
                    print(f"outlived its master: {p.pid} {_title(p)!r}")
        deadline = time.monotonic() + 15
        while True:
            alive = self.members()
            self.known.update(p.pid for p in alive)
            self._reap_zombies()
            if not alive:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"processes of the server survive: {alive}")
            for p in alive:
                _kill_quietly(p.pid, signal.SIGCONT)
                _kill_quietly(p.pid, signal.SIGKILL)
            time.sleep(0.02)
        try:
            self.proc.wait(timeout=10)
        finally:
            self.out.close()
        wait_for(lambda: self._reap_zombies() == 0, 10, "every process of the server to be reaped")
        assert not outlived, f"processes outlived the server's master: {outlived}"

    def _reap_zombies(self) -> int:
        """Reap our zombie children (orphans of the servers come to us); how many are left.

        A zombie's session cannot be read: every zombie child but another
        server's Popen child is reaped (this module starts no other children).
        """
        left = 0
        for kid in psutil.Process().children():
            if _status(kid) != psutil.STATUS_ZOMBIE:
                continue
            if kid.pid in _SESSIONS and kid.pid != self.proc.pid:
                continue
            if self.reap(kid.pid) is None:
                left += 1
        return left


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """``server(*cli_options, env=..., prefix=...)`` runs the prefork CLI on master_app.

    ``standin=True`` runs apps/echo_master.py with its own options instead.
    """
    started: list[Server] = []

    def start(
        *args: str,
        prefix: list[str] | None = None,
        env: dict[str, str] | None = None,
        standin: bool = False,
        app: str = APP,
    ) -> Server:
        s = Server(tmp_path, *args, prefix=prefix, env=env, standin=standin, app=app)
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
            time.sleep(0.002)  # the clients' pace (a steady load, not a wait for anything)
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


def _title(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline()).strip()
    except psutil.NoSuchProcess:
        return "gone"


# --------------------------------------------------------------------------
# Tests


def test_hup_20_times_under_load_fails_no_request(server) -> None:
    srv = server("-w", "2")
    port = srv.port()
    first = srv.wait_workers(2)
    # The real command: process titles name the master and each worker.
    assert _title(psutil.Process(srv.proc.pid)) == "prefork: master"
    titles = sorted(_title(k) for k in srv.children())
    assert titles == ["prefork: worker 0", "prefork: worker 1"]
    with Load(port) as load:
        for generation in range(2, 22):
            srv.signal(signal.SIGHUP)
            # Each roll completes under the load before the next HUP (a HUP
            # sent sooner could merge with a pending one in the kernel).
            wait_for(
                lambda g=generation: f"reload complete: generation {g}" in srv.log(),
                15,
                f"the roll to generation {generation}",
            )
        final = srv.wait_workers(2, timeout=30, generation=21)
    print(f"\n20 HUPs: {load.ok} requests ok, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 200
    assert not set(first) & set(final)
    assert srv.log().count("reload complete") == 20
    assert no_zombies(srv.proc.pid)


def test_ttin_ttou_pairs_under_load(server) -> None:
    srv = server("-w", "2")
    port = srv.port()
    srv.wait_workers(2)
    with Load(port) as load:
        for _ in range(10):
            srv.signal(signal.SIGTTIN)
            srv.wait_workers(3)
            highest = max(srv.slots(), key=lambda s: s.index).pid
            srv.signal(signal.SIGTTOU)
            after = srv.wait_workers(2)
            assert highest not in after, "TTOU must retire the highest-numbered worker"
            assert sorted(s.index for s in srv.slots()) == [0, 1]
    print(f"\n10 TTIN/TTOU pairs: {load.ok} requests ok, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert no_zombies(srv.proc.pid)


def _replaced(srv: Server, pid: int, n: int) -> bool:
    """Whether ``n`` workers are ready and ``pid`` is none of them any more."""
    slots = srv.slots()
    return (
        len(slots) == n
        and all(s.state == SlotState.READY for s in slots)
        and pid not in {s.pid for s in slots}
    )


def test_ttou_retires_a_booting_worker_before_a_ready_one(server, tmp_path: Path) -> None:
    """A worker still booting serves nobody: TTOU retires it, not a ready one
    (here the oldest, which the old rule picked), even when its number is
    not the highest. The gap it leaves in the numbers is filled by the next
    worker started (here the replacement of a crashed worker 2)."""
    hold = tmp_path / "hold-boot"
    srv = server("-w", "3", env={"MASTER_APP_HOLD_BOOT_IF": str(hold)})
    srv.wait_workers(3)
    pid_of = {s.index: s.pid for s in srv.slots()}
    hold.touch()  # from now on a new worker stays booting until the file goes
    os.kill(pid_of[1], signal.SIGKILL)
    booting = wait_for(
        lambda: next(
            (s for s in srv.slots() if s.index == 1 and s.pid not in pid_of.values()), None
        ),
        10,
        "worker 1's replacement to be forked",
    )
    assert booting.state == SlotState.BOOTING
    srv.signal(signal.SIGTTOU)
    wait_for(lambda: "retiring worker" in srv.log(), 10, "the master to retire a worker")
    hold.unlink()
    assert srv.wait_workers(2) == sorted([pid_of[0], pid_of[2]])
    assert f"retiring worker 1 (pid {booting.pid}, gen 1) (scale down)" in srv.log()
    os.kill(pid_of[2], signal.SIGKILL)
    wait_for(lambda: _replaced(srv, pid_of[2], 2), 10, "worker 2 to be replaced")
    assert sorted(s.index for s in srv.slots()) == [0, 1]


def test_ttin_ttou_keep_the_worker_numbers_0_to_n_minus_1(server) -> None:
    """TTOU retires the highest-numbered worker, not the oldest: after TTIN
    then TTOU, and after a TTOU when the oldest worker is a middle number,
    the workers are numbered 0..n-1 (the task id hooks and metrics promise)."""
    srv = server("-w", "2")
    srv.wait_workers(2)

    def indexes() -> list[int]:
        return sorted(s.index for s in srv.slots())

    srv.signal(signal.SIGTTIN)
    srv.wait_workers(3)
    srv.signal(signal.SIGTTOU)
    srv.wait_workers(2)
    assert indexes() == [0, 1]  # the oldest rule left [1, 2]
    srv.signal(signal.SIGTTIN)
    srv.wait_workers(3)
    assert indexes() == [0, 1, 2]
    # Worker 0 restarted is the newest: the oldest is now worker 1.
    first = next(s.pid for s in srv.slots() if s.index == 0)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: _replaced(srv, first, 3), 10, "worker 0 to be replaced")
    srv.signal(signal.SIGTTOU)
    srv.wait_workers(2)
    assert indexes() == [0, 1]  # the oldest rule left [0, 2]


def test_max_requests_recycles_one_at_a_time(server) -> None:
    srv = server("-w", "2", "--max-requests", "50", "--max-requests-jitter", "10")
    port = srv.port()
    srv.wait_workers(2)
    most_draining = 0
    with Load(port) as load:
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            draining = [s for s in srv.slots() if s.state == SlotState.DRAINING]
            most_draining = max(most_draining, len(draining))
            time.sleep(0.01)  # the sampling interval of a 6 s observation, not a wait
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
    # The Master API itself (what HTTPServer.start(n) builds on): Master.run()
    # with no worker entry returns the WorkerContext in each child. The CLI
    # always passes an entry, so this one runs the stand-in.
    srv = server("--workers", "2", "--no-entry", standin=True)
    port = srv.port()
    first = srv.wait_workers(2)
    assert {s.index for s in srv.slots()} == {0, 1}
    titles = {p.pid: _title(p) for p in srv.children()}
    assert sorted(titles.values()) == ["prefork: worker 0", "prefork: worker 1"]
    srv.signal(signal.SIGHUP)
    second = srv.wait_workers(2, generation=2)
    assert not set(first) & set(second)
    assert get(port) in second
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=10) == 0


def test_max_memory_recycles_the_worker_over_the_limit(server) -> None:
    limit = 60 << 20  # an idle worker uses about 20 MiB
    srv = server("-w", "2", "--max-memory", str(limit))
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
    srv = server("-w", "2")
    port = srv.port()
    victim, survivor = srv.wait_workers(2)
    with Load(port, keepalive=1, oneshot=1) as load:
        ok = load.ok
        wait_for(lambda: load.ok >= ok + 50, 10, "50 more requests before the kill")
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
        ok = load.ok
        wait_for(lambda: load.ok >= ok + 50, 10, "50 more requests after the replacement")
    ms = float(m.group(1))
    print(f"\nreplacement accepting {ms:.1f} ms after the SIGKILL'd worker died")
    assert ms < 100
    # Only requests in flight on the killed worker may fail: at most one per client thread.
    assert before == 0, load.failures
    assert len(load.failures) <= 2, load.failures
    assert no_zombies(srv.proc.pid)


def test_sigstop_worker_is_killed_and_replaced(server) -> None:
    timeout = 2.0
    srv = server("-w", "2", "--timeout", str(timeout))
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
    srv = server("-w", "2", "--timeout", str(timeout))
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
    stderr = srv.output()
    assert "Fatal Python error: Aborted" in stderr
    # The Python frame the loop was stuck in: the application's.
    assert re.search(r'File ".*/master_app\.py", line \d+ in block\n', stderr), stderr


def test_kill9_master_during_a_drain_delay_ends_the_delay(server) -> None:
    """--drain-delay keeps a stopping worker serving for a load balancer the
    master's stop informs; with the master killed, the worker served on (and
    held the port) for the whole delay. It now drains at its next heartbeat."""
    srv = server("-w", "1", "--drain-delay", "30", "--graceful-timeout", "60")
    srv.port()
    [worker] = srv.wait_workers(1)
    os.kill(srv.proc.pid, signal.SIGTERM)
    wait_for(lambda: "graceful stop" in srv.log(), 10, "the worker's drain delay to begin")
    os.kill(srv.proc.pid, signal.SIGKILL)
    srv.proc.wait(timeout=5)
    wait_for(
        lambda: srv.reap(worker) is not None or not psutil.pid_exists(worker),
        5,  # (a heartbeat, 1 s, then the drain of no connection)
        "the worker to exit, well before its 30 s drain delay",
    )
    assert "master gone: draining now" in srv.log()


def _get_quietly(port: int, path: str) -> None:
    try:
        get(port, path, timeout=30)
    except (OSError, http.client.HTTPException):
        pass


def test_kill9_master_frees_the_port_within_1s(server) -> None:
    srv = server("-w", "2")
    port = srv.port()
    workers = srv.wait_workers(2)
    get(port)
    os.kill(srv.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    srv.proc.wait(timeout=5)

    def gone() -> bool:
        # The workers are orphaned to us (the subreaper): reaped here.
        return all(srv.reap(pid) is not None or not psutil.pid_exists(pid) for pid in workers)

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
    srv = server(
        "-w", str(n), "--boot-timeout", str(boot_timeout), env={"MASTER_APP_FAIL_BOOT": "1"}
    )
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
    assert log.count(f"RuntimeError: {FAIL_MESSAGE}") == 1


def test_a_crash_loop_is_paced_by_backoff(server) -> None:
    srv = server("-w", "1")
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


def test_failed_boot_during_reload_keeps_serving(server, tmp_path: Path) -> None:
    marker = tmp_path / "fail-boot"
    srv = server("-w", "2", env={"MASTER_APP_FAIL_BOOT_IF": str(marker)})
    port = srv.port()
    old = srv.wait_workers(2)
    with Load(port) as load:
        marker.touch()  # from now on the application fails at import
        srv.signal(signal.SIGHUP)
        wait_for(lambda: "reload aborted" in srv.log(), 10, "the abort")
        ok = load.ok
        wait_for(lambda: load.ok >= ok + 50, 10, "50 more requests after the abort")
    assert srv.wait_workers(2) == old
    assert srv.proc.poll() is None
    assert load.failures == [], load.failures[:5]
    # The replacement failed because the application could not be imported.
    assert f"RuntimeError: {FAIL_MESSAGE} ({marker} exists)" in srv.log()


def test_hup_after_failed_reloads_starts_the_roll_at_once(server, tmp_path: Path) -> None:
    """Three reloads of a bad deploy fail (their back-off reaches 2 s); the
    HUP that brings the fixed code starts its replacement at once."""
    marker = tmp_path / "fail-boot"
    srv = server("-w", "1", env={"MASTER_APP_FAIL_BOOT_IF": str(marker)})
    srv.wait_workers(1)
    marker.touch()  # the bad deploy: the application fails at import
    for failed in range(1, 4):
        srv.signal(signal.SIGHUP)
        wait_for(
            lambda n=failed: srv.log().count("reload aborted") == n,
            15,
            f"reload {failed} to abort",
        )
    marker.unlink()  # the fix
    srv.signal(signal.SIGHUP)
    wait_for(
        lambda: re.search(r"booting worker 0 \(pid \d+, gen 5\) \(reload\)", srv.log()),
        1.0,  # the old back-off would hold it 2 s
        "the reload's replacement to be forked at once",
    )
    srv.wait_workers(1, generation=5)


def test_hup_restarts_a_crash_looping_worker_at_once(server, tmp_path: Path) -> None:
    """A position whose restarts fail to boot (back-off grown to 3.2 s) is
    started again at once by the HUP that brings the fixed code."""
    marker = tmp_path / "fail-boot"
    srv = server("-w", "2", env={"MASTER_APP_FAIL_BOOT_IF": str(marker)})
    srv.wait_workers(2)
    pid_of = {s.index: s.pid for s in srv.slots()}
    marker.touch()  # the bad deploy: every restart fails at import
    os.kill(pid_of[1], signal.SIGKILL)
    wait_for(
        lambda: any(
            float(d) >= 3.0 for d in re.findall(r"worker 1: restart in ([\d.]+) s", srv.log())
        ),
        20,
        "worker 1's back-off to reach 3.2 s",
    )
    marker.unlink()  # the fix
    srv.signal(signal.SIGHUP)
    wait_for(
        lambda: re.search(r"booting worker 1 \(pid \d+, gen 2\)", srv.log()),
        1.5,  # the old back-off would hold it 3.2 s
        "worker 1 to be started at once",
    )
    srv.wait_workers(2, generation=2)


def test_a_failed_usr2_upgrade_leaves_the_old_masters_files(server, tmp_path: Path) -> None:
    """A new master whose workers never get ready exits; the old one keeps
    serving, and keeps its unix socket file and its scoreboard (the new
    master's clean-up removed both: clients of the socket were refused,
    `prefork status` found nothing)."""
    marker = tmp_path / "fail-boot"
    path = tmp_path / "app.sock"
    srv = server("-w", "1", "-b", f"unix:{path}", env={"MASTER_APP_FAIL_BOOT_IF": str(marker)})
    srv.wait_workers(1)
    old = srv.proc.pid
    marker.touch()  # the new master's workers fail at import
    os.kill(old, signal.SIGUSR2)
    wait_for(
        lambda: "before taking over; this master keeps serving" in srv.log(),
        30,
        "the new master to fail",
    )
    assert path.exists(), "the unix socket file was removed"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    board = Scoreboard.attach(str(srv.board_path))
    try:
        assert board.master_pid == old
    finally:
        board.close()
    assert srv.pidfile_pid() == old
    assert srv.proc.poll() is None


def test_pre_exec_runs_in_the_forked_child_not_the_serving_master(server, tmp_path: Path) -> None:
    """gunicorn runs pre_exec in the child it forks for the new master, just
    before the exec; it ran in the serving master, where what a hook closes
    or changes (a connection, a file) was the running service's."""
    marker = tmp_path / "fail-boot"  # (the new master then fails: nothing left over)
    conf = tmp_path / "hooks.py"
    notes = tmp_path / "pre_exec.log"
    conf.write_text(
        "import os\n"
        "def pre_exec(server):\n"
        "    with open(os.environ['HOOK_LOG'], 'a') as f:\n"
        "        f.write(f'{os.getpid()}\\n')\n"
    )
    srv = server(
        "-w", "1", "-c", str(conf),
        env={"MASTER_APP_FAIL_BOOT_IF": str(marker), "HOOK_LOG": str(notes)},
    )  # fmt: skip
    srv.wait_workers(1)
    old = srv.proc.pid
    marker.touch()
    os.kill(old, signal.SIGUSR2)
    started = wait_for(
        lambda: re.search(r"received SIGUSR2: started new master (\d+)", srv.log()),
        30,
        "the new master to start",
    )
    wait_for(lambda: "before taking over; this master keeps serving" in srv.log(), 30, "its end")
    assert notes.read_text().split() == [started.group(1)]  # the child's pid: the new master's
    assert int(started.group(1)) != old


def test_term_finishes_inflight_and_backlog_then_exits_0(server) -> None:
    srv = server("-w", "2", "--graceful-timeout", "15")
    port = srv.port()
    workers = srv.wait_workers(2)
    results: dict[str, list] = {"sleep": [], "queued": []}
    lock = threading.Lock()

    def fetch(kind: str, path: str, started: threading.Event) -> None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
            conn.connect()
            conn.request("GET", path)
            started.set()  # the request is in the kernel (on loopback, in the server's queue)
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

    marks = srv.tmp / "sleep-started"
    threads = [spawn("sleep", f"/sleep?s=2&mark={quote(str(marks))}") for _ in range(4)]
    wait_for_lines(marks, 4, 5, "the application to start the four sleeping requests")
    # Stop the workers so the next connections wait in the listen backlog.
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        threads += [spawn("queued", "/") for _ in range(4)]
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
    srv = server("-w", "2")
    port = srv.port()
    workers = srv.wait_workers(2)
    with Load(port, keepalive=1, oneshot=1):
        os.killpg(srv.proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        started = time.monotonic()
        status = srv.proc.wait(timeout=10)
    elapsed = time.monotonic() - started
    output = srv.log() + srv.output()
    print(f"\nCtrl-C: exit {status} after {elapsed:.2f} s")
    assert status == 0
    assert elapsed < 3
    assert "fast stop" in output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    wait_for(lambda: not any(psutil.pid_exists(p) for p in workers), 2, "the workers to exit")


def test_usr1_reopens_logs_in_master_and_every_worker(server, tmp_path: Path) -> None:
    srv = server("-w", "3")
    srv.port()
    workers = srv.wait_workers(3)
    wait_for(lambda: "all 3 worker(s) ready" in srv.log(), 5, "the master to log the boot")
    moved = tmp_path / "master.log.1"
    before = srv.log()
    shutil.move(srv.log_path, moved)
    srv.signal(signal.SIGUSR1)
    processes = [srv.proc.pid, *workers]

    def log_files(pid: int) -> set[str]:
        return {f.path for f in psutil.Process(pid).open_files() if f.path.endswith(".log")}

    def all_reopened() -> bool:
        # Each process has the new file open, and the moved one no longer.
        return "received SIGUSR1" in srv.log() and all(
            log_files(pid) == {str(srv.log_path), str(srv.out_path)} for pid in processes
        )

    wait_for(all_reopened, 5, "every process to open the new log file")
    # Every worker writes to the new file: each logs its graceful stop there.
    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 0
    text = srv.log()
    for pid in workers:
        assert f"(pid {pid}): graceful stop" in text
    assert "received SIGUSR1" in text and "exiting (status 0)" in text
    assert moved.read_text() == before  # nothing more went to the moved file


def test_signal_storm_keeps_the_right_worker_count(server) -> None:
    srv = server("-w", "2")
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
    master = srv.master_pid
    merged = 0
    started = time.monotonic()
    for i, sig in enumerate(sigs):
        if _pending_signals(master) & (1 << (sig - 1)):
            merged += 1
        os.kill(master, sig)
        # The pace is the thing under test: 100 signals in about a second.
        time.sleep(max(0.0, started + (i + 1) * 0.01 - time.monotonic()))
    sent = time.monotonic() - started

    def master_lines() -> list[str]:
        return re.findall(r"received SIG(TTIN|TTOU|HUP|USR1)", srv.log())

    wait_for(
        lambda: len(master_lines()) >= len(sigs) - merged,
        15,
        f"the master to handle at least {len(sigs) - merged} signals",
    )
    storm = (1 << (signal.SIGHUP - 1)) | (1 << (signal.SIGUSR1 - 1))
    storm |= (1 << (signal.SIGTTIN - 1)) | (1 << (signal.SIGTTOU - 1))
    wait_for(lambda: not _pending_signals(master) & storm, 5, "no storm signal left pending")

    def expected_from_the_log() -> tuple[list[str], int, int]:
        """(the master's lines, the worker count they imply, the last target it logged)."""
        text = srv.log()  # one read: the lines and the target agree
        lines = re.findall(r"received SIG(TTIN|TTOU|HUP|USR1)", text)
        target = 2
        for m in re.finditer(r"received SIGTT(?:IN|OU): workers \d+ -> (\d+)", text):
            target = int(m.group(1))
        expected = 2
        for kind in lines:
            if kind == "TTIN":
                expected += 1
            elif kind == "TTOU":
                expected = max(1, expected - 1)
        return lines, expected, target

    def settled() -> tuple[list[str], int, list[int]] | None:
        # Every HUP's roll is over (each HUP is a new generation), no
        # replacement is still to be forked, no old worker is still draining,
        # and the state matches everything the master logged, read before and
        # after looking at the workers (a late line would start over).
        lines, expected, target = expected_from_the_log()
        assert target == expected, (target, expected, lines)
        generation = 1 + lines.count("HUP")
        slots = srv.slots()
        if len(slots) != expected or any(
            s.state != SlotState.READY or s.generation != generation for s in slots
        ):
            return None
        kids = srv.children()
        if len(kids) != expected or any(_status(k) == psutil.STATUS_ZOMBIE for k in kids):
            return None
        if master_lines() != lines:
            return None
        return lines, expected, sorted(s.pid for s in slots)

    lines, expected, pids = wait_for(settled, 60, "the workers to match the master's log")
    print(
        f"\n100 signals in {sent:.2f} s: {len(lines)} handled, "
        f"at most {merged} merged by the kernel, {expected} workers"
    )
    assert sorted(k.pid for k in srv.children()) == pids
    assert get(port) in pids
    orphans = [p for p in psutil.Process().children() if p.pid in srv.known - {srv.proc.pid}]
    assert orphans == []


def test_master_as_pid1_stops_gracefully_and_reaps_orphans(server, tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare is not installed (util-linux; .ci/run installs it)"
    probe = subprocess.run(
        [unshare, "-p", "-f", "--mount-proc", "true"], capture_output=True, timeout=10
    )
    if probe.returncode != 0:
        pytest.skip(f"unshare -p fails here: {probe.stderr.decode().strip()}")
    srv = server("-w", "2", prefix=[unshare, "-p", "-f", "--mount-proc"])
    port = srv.port()

    def master() -> psutil.Process | None:
        kids = psutil.Process(srv.proc.pid).children()
        return kids[0] if kids else None

    m = wait_for(master, 10, "the namespaced master")
    srv.known.add(m.pid)
    assert _title(m) == "prefork: master"
    assert srv.pidfile.read_text().strip() == "1"  # its own pid, in its namespace
    wait_for(lambda: len(m.children()) == 2, 10, "two workers")
    for _ in range(3):
        get(port, "/orphan?s=0.3")
    wait_for(lambda: srv.log().count("reaped unknown child") >= 3, 10, "the orphans to be reaped")
    assert not [k for k in m.children(recursive=True) if _status(k) == psutil.STATUS_ZOMBIE]
    os.kill(m.pid, signal.SIGTERM)
    assert srv.proc.wait(timeout=15) == 0
    assert "graceful stop" in srv.log() and "exiting (status 0)" in srv.log()


def test_usr2_tells_websockets_the_service_restarts(server) -> None:
    """A USR2 hand-over replaces the service: the old master's WebSockets
    close with 1012 Service Restart (reconnect), as on a HUP roll, not 1001
    Going Away (stay away), and the new master serves the next one."""
    from tests.integration.wsclient import RawWebSocket

    srv = server("-w", "1", "--interface", "asgi", app="tests.apps.ws_app:app")
    port = srv.port()
    srv.wait_workers(1)
    with RawWebSocket(port) as ws:
        ws.send_text("before")
        assert ws.recv_message() == (1, b"before")
        old = srv.proc.pid
        os.kill(old, signal.SIGUSR2)
        frame = ws.expect_close(1012, timeout=20)
        assert frame.close_reason == b"server restarting"
    new = srv.wait_new_master([old])
    assert srv.wait_exit(old, 20, "the old master to exit") == 0
    workers = srv.wait_workers(1)
    with RawWebSocket(port) as ws:
        ws.send_text("after")
        assert ws.recv_message() == (1, b"after")
        ws.close()
    # Stop the new master by pid and reap it (with its worker).
    os.kill(new, signal.SIGTERM)
    assert srv.wait_exit(new, 15, "the new master to exit") == 0
    wait_for(lambda: not any(srv.owns(p) for p in workers), 5, "its worker to exit")
    assert srv.members() == []


def test_three_usr2_upgrades_under_load_fail_no_request(server) -> None:
    srv = server("-w", "2")
    port = srv.port()
    srv.wait_workers(2)
    masters = [srv.proc.pid]
    oldbin = Path(f"{srv.pidfile}.oldbin")
    with Load(port) as load:
        for _ in range(3):
            old = masters[-1]
            os.kill(old, signal.SIGUSR2)
            masters.append(srv.wait_new_master(masters))
            # The old master hands over and exits 0; the test reaps it (we are
            # its parent, or its subreaper once its own parent is gone).
            assert srv.wait_exit(old, 20, "the old master to exit") == 0
            srv.wait_workers(2, timeout=15)
            assert not oldbin.exists()
    print(f"\n3 USR2 upgrades: {load.ok} requests ok, {len(load.failures)} failed")
    assert load.failures == [], load.failures[:5]
    assert srv.proc.returncode == 0
    assert srv.log().count("upgrade complete") == 3
    # A second USR2 while an upgrade is in progress is ignored.
    current = masters[-1]
    os.kill(current, signal.SIGUSR2)
    # The first one is being handled (else the two could merge in the kernel).
    wait_for(
        lambda: srv.log().count("received SIGUSR2: started new master") == 4,
        10,
        "the fourth upgrade to start",
    )
    os.kill(current, signal.SIGUSR2)
    wait_for(
        lambda: "already in progress; ignored" in srv.log(), 10, "the second USR2 to be ignored"
    )
    last = srv.wait_new_master(masters)
    masters.append(last)
    assert srv.wait_exit(current, 20, "the fourth old master to exit") == 0
    wait_for(lambda: srv.log().count("upgrade complete") == 4, 20, "the fourth upgrade")
    assert srv.log().count("already in progress; ignored") == 1
    # Stop the last master by pid and reap it: no master of the upgrades is left.
    workers = srv.wait_workers(2)
    os.kill(last, signal.SIGTERM)
    assert srv.wait_exit(last, 15, "the last master to exit") == 0
    assert not srv.pidfile.exists() and not oldbin.exists()
    wait_for(lambda: not any(srv.owns(p) for p in workers), 5, "its workers to exit")
    assert srv.members() == [], "a master or worker of the upgrades survives"


STATUS_ROW = re.compile(
    r"^\s*(?P<slot>\d+)\s+(?P<pid>\d+)\s+(?P<gen>\d+)\s+(?P<age>\d+)s\s+(?P<state>\w+)\s+"
    r"(?P<requests>\d+)\s+(?P<conns>\d+)\s+(?P<ws>\d+)\s+(?P<rss>\S+)  (?P<current>.*)$"
)


def _status_command(pidfile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork", "status", "--pidfile", str(pidfile)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_prefork_status_shows_the_workers_of_a_running_master(server, tmp_path: Path) -> None:
    """``prefork status --pidfile`` against the real CLI master: one row per worker."""
    srv = server("-w", "2")
    port = srv.port()
    workers = srv.wait_workers(2)
    served = Counter(get(port) for _ in range(6))
    # The scoreboard counts a request once it is finished.
    wait_for(
        lambda: sum(s.requests for s in srv.slots()) == 6, 5, "the scoreboard to count 6 requests"
    )
    marks = tmp_path / "status-sleep-started"
    sleeper = threading.Thread(
        target=_get_quietly, args=(port, f"/sleep?s=20&mark={quote(str(marks))}"), daemon=True
    )
    sleeper.start()
    (line,) = wait_for_lines(marks, 1, 5, "the sleeping request to start")
    busy = int(line.split()[1])

    result = _status_command(srv.pidfile)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"master pid {srv.proc.pid}", lines
    assert lines[1].split() == [
        "slot", "pid", "gen", "age", "state", "requests", "conns", "ws", "rss", "current"
    ]  # fmt: skip
    rows = {}
    for text in lines[2:]:
        match = STATUS_ROW.match(text)
        assert match, f"not a worker row: {text!r}\n{result.stdout}"
        rows[int(match["pid"])] = match
    assert sorted(rows) == workers, result.stdout
    for pid, row in rows.items():
        assert row["state"] == "ready" and row["gen"] == "1", result.stdout
        assert int(row["requests"]) == served[pid], (served, result.stdout)
        assert re.fullmatch(r"\d+(\.\d)?[KMG]", row["rss"]), row["rss"]
        assert int(row["age"]) < 60
        assert row["ws"] == "0"  # a callback app has no WebSockets
    # What the busy worker is serving now, and for how long.
    current = rows[busy]["current"]
    assert re.fullmatch(r"GET /sleep\?s=20&mark=\S+ \(\d+\.\ds\)", current), result.stdout
    assert int(rows[busy]["conns"]) >= 1
    (idle,) = set(workers) - {busy}
    assert rows[idle]["current"] == "" and rows[idle]["conns"] == "0", result.stdout

    # Once the master is gone: no running master, status 1.
    srv.signal(signal.SIGINT)
    assert srv.proc.wait(timeout=10) == 0
    sleeper.join(10)
    result = _status_command(srv.pidfile)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no running master" in result.stdout, result.stdout
