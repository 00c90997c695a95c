"""Shared fixtures: run a server script in a subprocess and stop it by pid.

``spawn`` (per test) and ``module_spawn`` (per module) return a function::

    server = spawn(APPS / "echo_app.py", "--xheaders")       # waits for the port line
    server = spawn(ROOT / "examples/hello.py", "--port", p, ready_port=p)  # waits for a connect

By default the script must print its bound port(s) (or a unix socket path)
as the first line of stdout; ``server.ports`` holds that line, split.  With
``ready_port`` the fixture instead waits until the port accepts a connection.
stderr goes to a file (``server.stderr_text()``), so logs never fill a pipe.
Every process is terminated by pid and waited for with a bounded timeout.

The skip gate (at the end): with ``PREFORK_STRICT_SKIPS=1`` (``.ci/run``
sets it) a test that skips fails the run unless its reason is on
:data:`ALLOWED_SKIPS`, a short table of explained exceptions.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = Path(__file__).resolve().parent / "apps"

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


class ServerProcess:
    """A server script running in a subprocess."""

    def __init__(self, script: str | os.PathLike[str], args: list[str], stderr_path: Path) -> None:
        self.script = str(script)
        self.args = args
        self.stderr_path = stderr_path
        self.ports: list[str] = []
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, self.script, *args],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def port(self) -> int:
        return int(self.ports[0])

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def _fail(self, message: str) -> None:
        self.stop()
        raise RuntimeError(f"{message}\n--- stderr of {self.script} ---\n{self.stderr_text()}")

    def wait_for_port_line(self, timeout: float = START_TIMEOUT) -> None:
        """Read the first stdout line (the bound ports), bounded by ``timeout``."""
        deadline = time.monotonic() + timeout
        out = self.proc.stdout
        assert out is not None
        fd = out.fileno()
        data = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while b"\n" not in data:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._fail(f"no port line from {self.script} within {timeout} s")
                if not sel.select(remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    self._fail(
                        f"{self.script} exited (status {self.proc.wait(1)}) before listening"
                    )
                data += chunk
        self.ports = data.split(b"\n", 1)[0].decode().split()

    def wait_for_connect(
        self, port: int, host: str = "127.0.0.1", timeout: float = START_TIMEOUT
    ) -> None:
        """Poll until ``host:port`` accepts a connection (the script prints nothing)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                self._fail(f"{self.script} exited with status {self.proc.returncode}")
            try:
                socket.create_connection((host, port), timeout=1).close()
            except OSError:
                if time.monotonic() > deadline:
                    self._fail(f"{self.script} did not accept on {host}:{port} within {timeout} s")
                time.sleep(0.02)
            else:
                self.ports = [str(port)]
                return

    def stop(self) -> None:
        """Terminate by pid, wait with a timeout, kill if still there."""
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()
        self._stderr.close()


class _Spawner:
    def __init__(self, tmp_dir: Path) -> None:
        self.tmp_dir = tmp_dir
        self.servers: list[ServerProcess] = []

    def __call__(
        self,
        script: str | os.PathLike[str],
        *args: object,
        ready_port: int | None = None,
        ready_host: str = "127.0.0.1",
    ) -> ServerProcess:
        stderr_path = self.tmp_dir / f"server-{len(self.servers)}.stderr"
        server = ServerProcess(script, [str(a) for a in args], stderr_path)
        self.servers.append(server)
        if ready_port is None:
            server.wait_for_port_line()
        else:
            server.wait_for_connect(ready_port, ready_host)
        return server

    def stop_all(self) -> None:
        for server in reversed(self.servers):
            server.stop()
            if server.proc.returncode not in (0, -15):
                # Shown by pytest with the test's output when it fails.
                print(f"--- stderr of {server.script} {server.args} ---")
                print(server.stderr_text())


@pytest.fixture
def spawn(tmp_path: Path):
    """Start a server subprocess for this test; stopped afterwards."""
    spawner = _Spawner(tmp_path)
    try:
        yield spawner
    finally:
        spawner.stop_all()


@pytest.fixture(scope="module")
def module_spawn(tmp_path_factory: pytest.TempPathFactory):
    """Like ``spawn``, shared by the tests of one module."""
    spawner = _Spawner(tmp_path_factory.mktemp("servers"))
    try:
        yield spawner
    finally:
        spawner.stop_all()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll ``predicate`` until it returns something truthy, and return that.

    Fails with AssertionError naming ``what`` after ``timeout`` seconds: the
    bounded wait every test uses instead of a sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends on ``sock`` until it closes (a reset ends it
    too); fails if it does not close within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"the server did not close the connection; got {data!r}"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        except TimeoutError:
            continue
        if not chunk:
            return data
        data += chunk


def read_to_the_end(sock: socket.socket, timeout: float = 5.0) -> tuple[bytes, str]:
    """Everything the server sends on ``sock``, and how it ended: "reset",
    "clean close" (a FIN), or "no end" after ``timeout`` seconds.  A body
    that only the close delimits (HTTP/1.0, no length) is whole only after
    a clean close: a cut one must end with a reset."""
    received = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received, "reset"
        if not chunk:
            return received, "clean close"
        received += chunk
    return received, "no end"


def post_expecting_continue(
    port: int, path: str, body: bytes, timeout: float = 5.0
) -> tuple[bytes, bytes]:
    """POST ``body`` with ``Expect: 100-continue`` as curl does: send the head,
    then wait for the server's first answer before sending the body.

    Returns (the first answer's head, all that followed until the close): after
    a ``100 Continue`` the body is sent and the rest is the final response;
    otherwise the first answer was the final one (the request says
    ``Connection: close``, so the server closes after it either way).
    """
    head = (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Expect: 100-continue\r\nConnection: close\r\n\r\n" % (path.encode(), len(body))
    )
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        deadline = time.monotonic() + timeout
        data = b""
        while b"\r\n\r\n" not in data:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no answer to the head within {timeout} s; got {data!r}"
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            assert chunk, f"closed before a whole answer head; got {data!r}"
            data += chunk
        end = data.index(b"\r\n\r\n") + 4
        first, rest = data[:end], data[end:]
        if first.startswith(b"HTTP/1.1 100 "):
            sock.sendall(body)
        return first, rest + read_until_closed(sock, timeout)


def wait_for_lines(
    path: str | os.PathLike[str], count: int, timeout: float, what: str
) -> list[str]:
    """Wait until the file ``path`` has at least ``count`` lines; return them.

    For events a test application writes to a file (e.g. "this request has
    started"), so that a test acts on the event instead of a guessed sleep.
    """

    def lines() -> list[str] | None:
        try:
            found = Path(path).read_text().splitlines()
        except FileNotFoundError:
            return None
        return found if len(found) >= count else None

    return wait_for(lines, timeout, what)


class MasterWatch:
    """What tests read of a ``prefork`` CLI master started with ``--error-log`` and
    ``--pidfile``: its port (from the log) and its ready workers (from the
    scoreboard next to the pidfile).  The class using it has ``proc``
    (a Popen), ``pidfile`` (a Path) and ``log()`` (the error log's text)."""

    proc: subprocess.Popen[bytes]
    pidfile: Path

    def log(self) -> str:
        raise NotImplementedError

    def port(self) -> int:
        match = wait_for(
            lambda: (
                self.proc.poll() is None
                and re.search(r"listening on https?://127\.0\.0\.1:(\d+)", self.log())
            ),
            20,
            "the master to log its address",
        )
        return int(match.group(1))

    def ready_workers(self, generation: int | None = None) -> list[int]:
        from prefork.scoreboard import Scoreboard, SlotState

        try:
            board = Scoreboard.attach(f"{self.pidfile}.scoreboard")
        except (OSError, ValueError):
            return []
        try:
            return sorted(
                s.pid
                for s in board.snapshot()
                if s.pid > 0
                and s.state == SlotState.READY
                and (generation is None or s.generation == generation)
            )
        finally:
            board.close()

    def wait_workers(self, n: int, generation: int | None = None) -> list[int]:
        """Exactly ``n`` workers, all ready (and of ``generation``)."""

        def settled() -> list[int] | None:
            pids = self.ready_workers(generation)
            return pids if len(pids) == n and len(self.ready_workers()) == n else None

        return wait_for(settled, 30, f"{n} ready worker(s)")

    def _group_alive(self) -> bool:
        """Whether any process of the master's group is left (workers stay in it)."""
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def kill_group(self) -> None:
        """SIGKILL whatever of the group is left (a test's last resort)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for scripts that take --port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """``free_port(host="127.0.0.1")``: a port number for scripts that take --port."""
    return _free_port


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def ipv6():
    """Skip the test when ::1 cannot be bound on this host."""
    if not ipv6_loopback_available():
        pytest.skip("IPv6 loopback (::1) cannot be bound on this host")
    return "::1"


# ---------------------------------------------------------------- the skip gate

#: The only reasons a test may skip under ``PREFORK_STRICT_SKIPS=1``: (a regular
#: expression the whole reason must match, why that skip is legitimate). A
#: program that ``.ci/run`` installs, a dev dependency, a deploy file or a
#: setting is never a reason: its test fails instead.
ALLOWED_SKIPS: list[tuple[str, str]] = [
    (
        r"IPv6 loopback \(::1\) cannot be bound on this host|no IPv6 loopback \(::1\) here",
        # Containers (Docker's default network) often have no ::1 at all; the
        # same code paths run over IPv4 there, only the IPv6 cases cannot run.
        "the host has no IPv6 loopback",
    ),
    (
        r"needs root( \(.*\))?|a real systemd in namespaces needs root",
        # Binding port 81, switching to nobody, network and pid namespaces
        # need root; CI runs as root (it installs with apt), so this only
        # skips on a developer's unprivileged run.
        "not root",
    ),
    (
        r"cannot create pid/mount/net/cgroup namespaces: .*|unshare -p fails here: .*",
        # An unprivileged container (no CAP_SYS_ADMIN, or a seccomp profile
        # that forbids unshare) cannot make namespaces, even as root.
        "namespaces are not allowed here",
    ),
    (
        r"/sys/fs/cgroup/(unified|systemd) is missing \(the recipe needs a hybrid layout\)",
        # A real systemd as PID 1 of a private namespace needs the hybrid
        # cgroup layout; a host with only cgroup v2 cannot boot it that way.
        # The units are still verified (systemd-analyze) and sd_notify,
        # socket activation and the watchdog are tested without it.
        "no hybrid cgroup layout for a real systemd in namespaces",
    ),
    (
        r"nobody can read this interpreter: nothing to show here",
        # The test shows that prefork needs nothing of an interpreter nobody
        # cannot read; with a world-readable one that situation cannot arise.
        "the interpreter is readable by nobody",
    ),
    (
        r"this OpenSSL cannot even offer TLS < 1\.2",
        # An OpenSSL built without TLS 1.0/1.1 cannot make the client side of
        # the test; the server's refusal cannot be shown with it.
        "the client cannot offer old TLS",
    ),
]

STRICT_SKIPS_VARIABLE = "PREFORK_STRICT_SKIPS"


def allowed_skip(reason: str) -> str | None:
    """The allow-list entry (its short name) that ``reason`` matches, else None."""
    for pattern, name in ALLOWED_SKIPS:
        if re.fullmatch(pattern, reason):
            return name
    return None


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


class SkipGate:
    """Collects every skip; fails the session on one that is not allowed."""

    def __init__(self) -> None:
        self.allowed: list[tuple[str, str, str]] = []  # (nodeid, reason, entry)
        self.offending: list[tuple[str, str]] = []  # (nodeid, reason)

    def _record(self, report: pytest.CollectReport | pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return  # an xfail is reported as skipped; it is not a skip
        reason = _skip_reason(report)
        entry = allowed_skip(reason)
        if entry is None:
            self.offending.append((report.nodeid, reason))
        else:
            self.allowed.append((report.nodeid, reason, entry))

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._record(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        self._record(report)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        if self.offending and session.exitstatus in passing:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter) -> None:
        write = terminalreporter.write_line
        if self.allowed:
            terminalreporter.section("skips on the allow-list (tests/conftest.py)")
            for nodeid, reason, entry in self.allowed:
                write(f"{nodeid}: {reason} [{entry}]")
        if self.offending:
            terminalreporter.section(
                f"{STRICT_SKIPS_VARIABLE}=1: skips not on the allow-list", red=True
            )
            for nodeid, reason in self.offending:
                write(f"{nodeid}: {reason}", red=True)
            write(
                f"{len(self.offending)} test(s) skipped for a reason that is not on "
                "ALLOWED_SKIPS in tests/conftest.py: the run fails.",
                red=True,
            )


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get(STRICT_SKIPS_VARIABLE) == "1":
        config.pluginmanager.register(SkipGate(), "prefork-skip-gate")
