"""prefork under systemd, exercised for real: the units, socket activation, sd_notify.

* ``systemd-analyze verify`` on ``deploy/systemd/`` prints no warning (it
  exits 0 on unknown keys and bad values, so its output is what counts);
  the notify-reload drop-in is refused by systemd < 253, which documents
  its version floor.
* ``systemd-socket-activate`` hands prefork an IPv4, an IPv6 and a unix
  socket (named fds); connections opened before prefork even started are
  all answered, and the workers never see ``LISTEN_*``.
* A NOTIFY_SOCKET receiver (``support/notify_receiver.py``) plays systemd's
  side of sd_notify: READY=1 only once a request is answered, RELOADING=1
  (with MONOTONIC_USEC) then READY=1 around HUP, STATUS=, STOPPING=1,
  MAINPID= after a USR2 upgrade, WATCHDOG=1 pings.
* As root, a real systemd booted in private namespaces
  (``support/ns_systemd.sh``) runs the shipped units: start, reload under
  load with no failed request, stop, start and restart.

Every process is started in its own session and stopped by pid with a
bounded wait. A missing program fails its tests (``.ci/run`` installs them
all); only the real systemd in namespaces is skipped where it cannot run
(not root, no namespaces, no hybrid cgroup layout: see tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = Path(__file__).resolve().parent / "support"
UNITS = ROOT / "deploy" / "systemd"
sys.path.insert(0, str(SUPPORT))

from http_client import get, read_response, send_request  # noqa: E402
from notify_receiver import Message, NotifyReceiver  # noqa: E402

from tests.conftest import wait_for  # noqa: E402

#: The prefork command in the shipped unit files, replaced by this Python's
#: ``-m prefork`` wherever a unit is run or verified (verify checks that the
#: ExecStart= binary exists and is executable).
UNIT_PREFORK = "/usr/local/bin/prefork"
APP = "sd_app:app"  # tests/e2e/support/sd_app.py
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def systemd_version() -> int:
    out = subprocess.run(
        ["systemd-analyze", "--version"], capture_output=True, text=True, timeout=10
    ).stdout
    match = re.match(r"systemd (\d+)", out)
    assert match, out
    return int(match.group(1))


# --------------------------------------------------------------------------- processes


class Proc:
    """A process in its own session, output to files, stopped by pid."""

    def __init__(self, args: list[str], tmp: Path, name: str, env: dict[str, str]) -> None:
        self.args = args
        self.stdout_path = tmp / f"{name}.stdout"
        self.stderr_path = tmp / f"{name}.stderr"
        self._out = open(self.stdout_path, "wb")  # noqa: SIM115 - closed in stop()
        self._err = open(self.stderr_path, "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            args,
            cwd=SUPPORT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,
        )
        self.extra_pids: set[int] = set()  # e.g. a new master started by USR2

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait_stderr(self, pattern: str, count: int = 1, timeout: float = START_TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.stderr()
            if len(re.findall(pattern, text)) >= count:
                return text
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {pattern!r} in stderr of {self.args}:\n{text}")
            time.sleep(0.02)

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            # Say what the process was doing: its log is the only witness.
            raise AssertionError(
                f"{self.popen.args[0]} still running after {timeout} s\n"
                f"--- its stderr ---\n{self.stderr()[-6000:]}"
            ) from None

    def stop(self) -> None:
        """TERM the process and every descendant still there, bounded; then KILL."""
        pids = set(self.extra_pids)
        for pid in [self.pid, *self.extra_pids]:
            try:
                pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
            except psutil.Error:
                pass
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(STOP_TIMEOUT)
        stop_pids(pids - {self.pid})
        self._out.close()
        self._err.close()


def stop_pids(pids: set[int]) -> None:
    """TERM these pids, wait up to STOP_TIMEOUT, KILL the rest (only if still the same process)."""
    procs = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            proc.terminate()
            procs.append(proc)
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=STOP_TIMEOUT)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=STOP_TIMEOUT)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[list[Proc]]:
    started: list[Proc] = []
    try:
        yield started
    finally:
        for proc in reversed(started):
            proc.stop()


def prefork_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTEN_", "WATCHDOG_"))}
    env.pop("NOTIFY_SOCKET", None)
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=str(SUPPORT), **extra)
    return env


def start_prefork(
    procs: list[Proc], tmp: Path, *args: str, env: dict[str, str], name: str = "prefork"
) -> Proc:
    cmd = [sys.executable, "-m", "prefork", "--access-log", "off", *args, APP]
    proc = Proc(cmd, tmp, name, env)
    procs.append(proc)
    return proc


def free_port_v4_v6() -> int:
    """A port free on both 127.0.0.1 and ::1 a moment ago."""
    for _ in range(50):
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
            s6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s6.bind(("::1", 0))
            port = s6.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
                try:
                    s4.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise AssertionError("no port free on both loopback addresses")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# =========================================================================== unit files


def render_units(directory: Path, port: int | None = None) -> tuple[Path, Path]:
    """Copy the shipped units into ``directory``, ExecStart pointing at this Python."""
    directory.mkdir(parents=True, exist_ok=True)
    service = (UNITS / "prefork.service").read_text()
    assert UNIT_PREFORK in service
    service = service.replace(UNIT_PREFORK, f"{sys.executable} -m prefork")
    socket_unit = (UNITS / "prefork.socket").read_text()
    if port is not None:
        socket_unit = socket_unit.replace(":8000", f":{port}")
    (directory / "prefork.service").write_text(service)
    (directory / "prefork.socket").write_text(socket_unit)
    return directory / "prefork.service", directory / "prefork.socket"


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=units[0].parent,
    )


def test_units_verify_without_any_warning(tmp_path):
    """``systemd-analyze verify`` exits 0 even on unknown keys: no output line is allowed.

    The units are verified as shipped except the ExecStart=/ExecStartPre=/
    ExecReload= binary (``/usr/local/bin/prefork``), which must exist for
    verify: it becomes this interpreter's ``-m prefork``.
    """
    service, socket_unit = render_units(tmp_path / "units")
    result = verify(service, socket_unit)
    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).strip()
    assert output == "", output

    # The check would catch a mistake (verify still exits 0 on these).
    broken = service.read_text().replace("KillMode=mixed", "KillMode=mixd\nTimeoutStopSecs=5")
    service.write_text(broken)
    result = verify(service, socket_unit)
    assert "Failed to parse kill mode" in result.stderr
    assert "Unknown key 'TimeoutStopSecs'" in result.stderr


def test_notify_reload_dropin_needs_systemd_253(tmp_path):
    """The drop-in is clean on systemd >= 253; older ones say so (its version floor)."""
    service, socket_unit = render_units(tmp_path / "units")
    dropin_dir = tmp_path / "units" / "prefork.service.d"
    dropin_dir.mkdir()
    dropin = (UNITS / "prefork-notify-reload.conf").read_text()
    assert "253" in dropin  # the floor is written in the file
    assert re.search(r"(?m)^ExecReload=$", dropin)  # the kill-based reload is cleared
    (dropin_dir / "notify-reload.conf").write_text(dropin)
    result = verify(service, socket_unit)
    assert result.returncode == 0, result.stderr
    output = (result.stdout + result.stderr).strip()
    if systemd_version() >= 253:
        assert output == "", output
    else:
        assert "Failed to parse service type, ignoring: notify-reload" in output, output


def test_service_hardening_exposure(tmp_path):
    """``systemd-analyze security`` scores the hardening options: keep it 'OK' (< 4.5)."""
    service, _socket = render_units(tmp_path / "units")
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=45", str(service)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr


# =========================================================================== socket activation


def test_socket_activation_ipv4_ipv6_unix(procs, tmp_path, ipv6):
    """systemd-socket-activate binds 3 sockets and execs prefork on the first connection.

    Connections opened before prefork started (it is exec'd only once the
    first one arrives) wait in the kernel's queues and are all answered.
    The workers see no LISTEN_* variable (only the master may use them).
    """
    port = free_port_v4_v6()
    unix_path = str(tmp_path / "prefork.sock")
    cmd = [
        "systemd-socket-activate",
        "-l", f"127.0.0.1:{port}",
        "-l", f"[::1]:{port}",
        "-l", unix_path,
        "--fdname=http:http6:unix",
        "-E", "PYTHONPATH",
        "-E", "PYTHONUNBUFFERED",
        sys.executable, "-m", "prefork", "-w", "2", "--access-log", "off", APP,
    ]  # fmt: skip
    proc = Proc(cmd, tmp_path, "socket-activate", prefork_env())
    procs.append(proc)
    proc.wait_stderr(r"Listening on ", count=3)

    addresses = [("127.0.0.1", port), ("::1", port), unix_path]
    early = []
    for address in addresses * 3:
        if isinstance(address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(START_TIMEOUT)
            sock.connect(address)
        else:
            sock = socket.create_connection(address, timeout=START_TIMEOUT)
        early.append(sock)
    for sock in early:  # all sent before any worker exists
        send_request(sock, "/env")
    answers = []
    for sock in early:
        with sock:
            status, body = read_response(sock)
        assert status == 200
        answers.append(body)

    master = proc.pid  # exec keeps the pid: LISTEN_PID named it
    assert all(a["ppid"] == master and a["pid"] != master for a in answers), answers
    for body in answers:
        assert "PYTHONPATH" in body["env"], body  # the environment really is reported
        leaked = [name for name in body["env"] if name.startswith("LISTEN_")]
        assert leaked == [], f"worker {body['pid']} sees {leaked}"
    assert "LISTEN_FDNAMES has" not in proc.stderr()  # 3 names for 3 fds
    for address in addresses:  # and afterwards, on each socket
        assert get(address, "/")["pid"] != master

    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr()


def test_socket_activation_leaves_inherited_unix_socket_file(procs, tmp_path):
    """A unix socket passed by systemd belongs to systemd: prefork must not unlink it.

    With ``ListenStream=/run/prefork.sock`` in prefork.socket, ``systemctl
    restart prefork.service`` would otherwise leave systemd listening on a
    socket that no client can reach by its path any more.
    """
    unix_path = str(tmp_path / "prefork.sock")
    cmd = [
        "systemd-socket-activate", "-l", unix_path, "-E", "PYTHONPATH",
        sys.executable, "-m", "prefork", "-w", "1", "--access-log", "off", APP,
    ]  # fmt: skip
    proc = Proc(cmd, tmp_path, "socket-activate", prefork_env())
    procs.append(proc)
    proc.wait_stderr(r"Listening on ")
    assert get(unix_path, "/", timeout=START_TIMEOUT)["pid"]
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.stderr()
    assert os.path.exists(unix_path), "prefork removed the socket file that systemd created"


# =========================================================================== sd_notify


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[NotifyReceiver]:
    recv = NotifyReceiver(str(tmp_path / "notify.sock"))
    try:
        yield recv
    finally:
        recv.close()


def worker_pids(master: int) -> set[int]:
    try:
        return {c.pid for c in psutil.Process(master).children()}
    except psutil.Error:
        return set()


def test_notify_ready_reload_status_stopping(procs, tmp_path, receiver):
    """READY=1 only once workers answer; RELOADING=1/READY=1 around HUP; STATUS=; STOPPING=1."""
    port = free_port()
    address = ("127.0.0.1", port)
    at_ready: list[tuple[Message, object, set[int]]] = []
    master_pid: list[int] = []

    def probe(message: Message) -> None:
        # Runs in the receiver thread as the message arrives, before the test
        # sees it: what can a client do at the very moment systemd hears READY?
        if message.has("READY", "1"):
            try:
                answer: object = get(address, "/", timeout=2.0)
            except Exception as exc:
                answer = exc
            pids = worker_pids(master_pid[0]) if master_pid else set()
            at_ready.append((message, answer, pids))

    receiver.on_message(probe)
    env = prefork_env(NOTIFY_SOCKET=receiver.path)
    proc = start_prefork(procs, tmp_path, "-b", f"127.0.0.1:{port}", "-w", "2", env=env)
    master_pid.append(proc.pid)

    first, ready = receiver.wait_for("READY", "1", timeout=START_TIMEOUT)
    # At the moment the first READY=1 arrived, a request was answered by a worker.
    _message, answer, _pids = at_ready[0]
    assert isinstance(answer, dict), f"READY=1 arrived but a request failed: {answer!r}"
    assert answer["pid"] != proc.pid
    assert ready.pid == proc.pid
    status = [m.get("STATUS") for m in receiver.snapshot() if m.get("STATUS")]
    assert status and "2" in status[0] and "worker" in status[0], status

    # HUP: RELOADING=1 with MONOTONIC_USEC (taken after the signal), then READY=1
    # once the new generation serves. Requests keep working meanwhile.
    before = worker_pids(proc.pid)
    assert len(before) == 2
    failures: list[str] = []
    answered: list[int] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                answered.append(get(address, "/", timeout=5.0)["pid"])
            except Exception as exc:
                failures.append(repr(exc))

    client = threading.Thread(target=hammer, daemon=True)
    client.start()
    sent_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    proc.signal(signal.SIGHUP)
    index, reloading = receiver.wait_for("RELOADING", "1", after=first + 1)
    assert sum(m.has("READY") for m in receiver.snapshot()[:index]) == 1
    monotonic_usec = int(reloading.get("MONOTONIC_USEC") or 0)
    assert sent_usec <= monotonic_usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    _index, _ready2 = receiver.wait_for("READY", "1", after=index + 1)
    _msg, answer, pids_at_ready = at_ready[1]
    assert isinstance(answer, dict), answer
    assert len(pids_at_ready - before) >= 2, "READY=1 after HUP before the new workers existed"
    # Requests go on after READY=1, answered by the new generation.
    after_ready = len(answered)
    wait_for(
        lambda: len([p for p in answered[after_ready:] if p not in before]) >= 20,
        10,
        "20 answers from the new workers after READY=1",
    )
    stop.set()
    client.join(10)
    assert failures == []
    assert set(answered) & before, "no request was answered by the old workers"

    proc.signal(signal.SIGTERM)
    receiver.wait_for("STOPPING", "1", after=index + 1)
    assert proc.wait() == 0, proc.stderr()
    senders = {m.pid for m in receiver.snapshot()}
    assert senders == {proc.pid}, "only the master talks to systemd"


def test_notify_mainpid_after_usr2_upgrade(procs, tmp_path, receiver):
    """USR2: the new master announces itself with MAINPID=<its pid> and serves."""
    port = free_port()
    env = prefork_env(NOTIFY_SOCKET=receiver.path)
    proc = start_prefork(procs, tmp_path, "-b", f"127.0.0.1:{port}", "-w", "1", env=env)
    first, _ = receiver.wait_for("READY", "1", timeout=START_TIMEOUT)
    proc.signal(signal.SIGUSR2)
    _index, mainpid = receiver.wait_for("MAINPID", after=first + 1, timeout=START_TIMEOUT)
    new_master = int(mainpid.get("MAINPID") or 0)
    proc.extra_pids.add(new_master)
    assert new_master != proc.pid
    assert mainpid.pid == new_master  # sent by the new master itself
    assert proc.wait() == 0  # the old master retired
    assert psutil.Process(new_master).is_running()
    assert get(("127.0.0.1", port))["pid"] in worker_pids(new_master)


def test_notify_usr2_handover_does_not_announce_a_stop(procs, tmp_path, receiver):
    """Under systemd the hand-over must not look like a stop.

    systemd (NotifyAccess=all) takes STOPPING=1 from any process of the unit
    and moves the service to "deactivating"; and if the old main process
    exits before MAINPID= names the new one, the service is over. So:
    MAINPID=<new> first, and no STOPPING=1 from the retiring master.
    (test_real_systemd_usr2_upgrade_keeps_the_service shows the effect.)
    """
    port = free_port()
    env = prefork_env(NOTIFY_SOCKET=receiver.path)
    proc = start_prefork(procs, tmp_path, "-b", f"127.0.0.1:{port}", "-w", "1", env=env)
    first, _ = receiver.wait_for("READY", "1", timeout=START_TIMEOUT)
    proc.signal(signal.SIGUSR2)
    index, mainpid = receiver.wait_for("MAINPID", after=first + 1, timeout=START_TIMEOUT)
    proc.extra_pids.add(int(mainpid.get("MAINPID") or 0))
    assert proc.wait() == 0
    # Whatever the old master sent before it exited has been received.
    receiver.barrier()
    after_ready = receiver.snapshot()[first + 1 :]
    stopping = [m for m in after_ready if m.has("STOPPING")]
    assert stopping == [], f"hand-over announced a stop: {after_ready}"
    old_exit_seen_after = [m for m in after_ready if m.pid == proc.pid]
    assert all(m.monotonic >= mainpid.monotonic for m in old_exit_seen_after)


def test_notify_watchdog_pings(procs, tmp_path, receiver):
    """WATCHDOG_USEC=1 s: pings about every 0.5 s from the master, none while it is stopped."""
    port = free_port()
    env = prefork_env(NOTIFY_SOCKET=receiver.path, WATCHDOG_USEC="1000000")
    # WATCHDOG_PID names the main process, as systemd sets it: exec keeps the pid.
    cmd = [
        "/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$@"', "sh",
        sys.executable, "-m", "prefork", "--access-log", "off",
        "-b", f"127.0.0.1:{port}", "-w", "1", APP,
    ]  # fmt: skip
    proc = Proc(cmd, tmp_path, "prefork", env)
    procs.append(proc)
    first, _ = receiver.wait_for("READY", "1", timeout=START_TIMEOUT)
    wait_for(
        lambda: len([m for m in receiver.snapshot()[first:] if m.has("WATCHDOG", "1")]) >= 4,
        5,
        "4 WATCHDOG=1 pings",
    )
    pings = [m for m in receiver.snapshot()[first:] if m.has("WATCHDOG", "1")]
    assert {m.pid for m in pings} == {proc.pid}
    gaps = [b.monotonic - a.monotonic for a, b in zip(pings, pings[1:], strict=False)]
    assert max(gaps) < 0.9, gaps  # at most about half of WATCHDOG_USEC apart

    os.kill(proc.pid, signal.SIGSTOP)  # a wedged master must stop pinging
    try:
        wait_for(
            lambda: psutil.Process(proc.pid).status() == psutil.STATUS_STOPPED,
            5,
            "the master to be stopped",
        )
        count = receiver.barrier() + 1  # pings sent before the stop are received by now
        # The thing under test: 1.5 s (three ping intervals) of silence.
        time.sleep(1.5)
        assert not any(m.has("WATCHDOG") for m in receiver.snapshot()[count:])
    finally:
        os.kill(proc.pid, signal.SIGCONT)


def test_notify_watchdog_ignored_for_another_pid(procs, tmp_path, receiver):
    """WATCHDOG_PID names another process: the variables are not for this one, no ping."""
    port = free_port()
    env = prefork_env(NOTIFY_SOCKET=receiver.path, WATCHDOG_USEC="400000", WATCHDOG_PID="1")
    proc = start_prefork(procs, tmp_path, "-b", f"127.0.0.1:{port}", "-w", "1", env=env)
    first, _ = receiver.wait_for("READY", "1", timeout=START_TIMEOUT)
    # The thing under test: no ping in 1 s (2.5 x WATCHDOG_USEC).
    time.sleep(1.0)
    assert not any(m.has("WATCHDOG") for m in receiver.snapshot())
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0


def test_workers_do_not_inherit_notify_variables(procs, tmp_path, receiver):
    port = free_port()
    env = prefork_env(NOTIFY_SOCKET=receiver.path, WATCHDOG_USEC="30000000")
    start_prefork(procs, tmp_path, "-b", f"127.0.0.1:{port}", "-w", "1", env=env)
    receiver.wait_for("READY", "1", timeout=START_TIMEOUT)
    seen = get(("127.0.0.1", port), "/env")["env"]
    assert "PYTHONPATH" in seen, seen  # the environment really is reported
    leaked = sorted(set(seen) & {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"})
    assert leaked == []


# =========================================================================== a real systemd

NS_PORT = 18580  # inside the private network namespace: nothing else listens there


class NsSystemd:
    """A systemd booted by support/ns_systemd.sh, driven with nsenter + systemctl."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.cgroup = f"pftest-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self.log = workdir / "prefork.log"
        self.console = workdir / "console.log"
        self._out = open(workdir / "boot.out", "wb")  # noqa: SIM115 - closed in close()
        # systemd logs to /dev/console only if it is a terminal: give it a pty
        # and copy what it writes to console.log.
        self._pty, self._tty = os.openpty()
        self._reader = threading.Thread(target=self._read_console, daemon=True)
        self._reader.start()
        self.popen = subprocess.Popen(
            ["bash", str(SUPPORT / "ns_systemd.sh"), "host", str(workdir), self.cgroup]
            + [os.ttyname(self._tty)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = 0  # systemd's pid on the host
        self._private_tmp_before = set(self._private_tmp_dirs())

    @staticmethod
    def _private_tmp_dirs() -> list[Path]:
        return [*Path("/tmp").glob("systemd-private-*-prefork.service-*")]

    def _read_console(self) -> None:
        with open(self.console, "wb") as out:
            while True:
                try:
                    data = os.read(self._pty, 65536)
                except OSError:  # EIO once the last user of the tty is gone
                    return
                if not data:
                    return
                out.write(data.replace(b"\r", b""))
                out.flush()

    def boot(self, timeout: float = 30.0) -> str | None:
        """None once running, else why not."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                return f"exited with {self.popen.returncode}: {self.boot_output()}"
            if not self.pid:
                try:
                    children = psutil.Process(self.popen.pid).children()
                    # (a child may exit between the two calls: unshare's own
                    # fork before systemd; asked again on the next turn)
                    if children and children[0].name() == "systemd":
                        self.pid = children[0].pid
                except psutil.Error:
                    pass
            if self.pid:
                state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
                if state in ("running", "degraded"):
                    return None
            time.sleep(0.1)
        return f"not running after {timeout} s: {self.boot_output()}"

    def boot_output(self) -> str:
        text = (self.workdir / "boot.out").read_text(errors="replace")
        if self.console.exists():
            text += self.console.read_text(errors="replace")
        return text[-3000:]

    def nsenter(self, *namespaces: str) -> list[str]:
        return ["nsenter", "-t", str(self.pid), *namespaces, "--"]

    def run(
        self, *cmd: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        full = self.nsenter("-m", "-p", "-n", "-u", "-i", "-C") + list(cmd)
        result = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(
                f"{cmd} -> {result.returncode}\n{result.stdout}{result.stderr}\n"
                f"--- prefork log ---\n{self.prefork_log()[-3000:]}\n"
                f"--- systemd ---\n{self.console_log()[-3000:]}"
            )
        return result

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, "-p", ",".join(properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def get(self, path: str = "/", unix: str | None = None) -> dict:
        """A request from inside the namespaces (TCP port NS_PORT, or the unix socket)."""
        code = (
            "import json,sys;sys.path.insert(0,%r);from http_client import get;"
            "sys.stdout.write(json.dumps(get(%r or ('127.0.0.1',%d),%r)))"
            % (str(SUPPORT), unix, NS_PORT, path)
        )
        result = subprocess.run(
            self.nsenter("-m", "-n") + [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout)

    def load(self, stop_file: Path) -> subprocess.Popen[str]:
        """support/load.py inside the namespace until ``stop_file`` exists."""
        args = [sys.executable, str(SUPPORT / "load.py"), "--port", str(NS_PORT)]
        args += ["--duration", "60", "--stop-file", str(stop_file), "--close", "4"]
        args += ["--keepalive", "2", "--progress", str(self.progress_file(stop_file))]
        proc = subprocess.Popen(
            self.nsenter("-n") + args, stdout=subprocess.PIPE, text=True, start_new_session=True
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "started"
        return proc

    @staticmethod
    def progress_file(stop_file: Path) -> Path:
        return stop_file.with_name(stop_file.name + ".progress")

    def wait_load(self, stop_file: Path, more: int, what: str) -> None:
        """Wait until the load has ``more`` successful requests more than now."""

        def ok() -> int:
            try:
                return int(self.progress_file(stop_file).read_text().split()[0])
            except (FileNotFoundError, IndexError, ValueError):
                return 0

        target = ok() + more
        wait_for(lambda: ok() >= target, 20, what)

    @staticmethod
    def load_result(proc: subprocess.Popen[str], stop_file: Path) -> dict:
        stop_file.touch()
        try:
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        return json.loads(out.strip().splitlines()[-1])

    def prefork_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def console_log(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def wait_log(self, pattern: str, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.prefork_log())) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {pattern!r} in:\n{self.prefork_log()[-3000:]}")
            time.sleep(0.05)

    def wait_console(self, pattern: str, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(re.findall(pattern, self.console_log())) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"no {count} x {pattern!r} in:\n{self.console_log()[-3000:]}")
            time.sleep(0.05)

    def close(self) -> None:
        if self.pid:
            try:
                self.run(
                    "systemctl",
                    "stop",
                    "prefork.service",
                    "prefork.socket",
                    timeout=60,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pass
            # SIGKILL of the namespace's PID 1 ends every process in it, and
            # runs no shutdown unit (which could touch shared file systems).
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_TIMEOUT)
        self._out.close()
        os.close(self._tty)
        self._reader.join(5)
        os.close(self._pty)
        # PrivateTmp= directories live in the host's /tmp; systemd removes them
        # when the service stops, but not if it was killed first.
        for path in set(self._private_tmp_dirs()) - self._private_tmp_before:
            shutil.rmtree(path, ignore_errors=True)
        for hierarchy in ("unified", "systemd"):
            top = Path("/sys/fs/cgroup") / hierarchy / self.cgroup
            if top.exists():
                for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda t: -len(t[0])):
                    for _ in range(50):
                        try:
                            os.rmdir(dirpath)
                            break
                        except FileNotFoundError:
                            break
                        except OSError:
                            time.sleep(0.1)  # processes still being reaped


def write_ns_units(workdir: Path) -> None:
    units = workdir / "units"
    service, socket_unit = render_units(units, port=NS_PORT)
    # The unix socket alternative of prefork.socket, as written there.
    text = socket_unit.read_text()
    assert "#ListenStream=/run/prefork.sock" in text
    socket_unit.write_text(text.replace("#ListenStream=/run/", "ListenStream=/run/"))
    (units / "pftest.target").write_text(
        "[Unit]\nDescription=prefork tests\nDefaultDependencies=no\n"
    )
    # Test-only differences from the shipped unit, as drop-ins:
    # * DefaultDependencies=no: no sysinit.target (see ns_systemd.sh);
    # * root instead of the prefork user (none exists here), and ProtectHome=no
    #   because this Python or the repository may live under /root or /home
    #   (and PrivateTmp=no if one of them lives under /tmp, which it hides);
    # * the test application, 2 workers, logs to a file (no journald runs).
    (units / "prefork.socket.d").mkdir()
    (units / "prefork.socket.d" / "test.conf").write_text("[Unit]\nDefaultDependencies=no\n")
    private_tmp = ""
    for path in (Path(sys.prefix), Path(sys.executable).parent, ROOT):
        if path.resolve().parts[1:2] == ("tmp",) or path.resolve().parts[1:3] == ("var", "tmp"):
            private_tmp = "PrivateTmp=no\n"
    (units / "prefork.service.d").mkdir()
    (units / "prefork.service.d" / "test.conf").write_text(
        "[Unit]\nDefaultDependencies=no\n"
        f"[Service]\nUser=\nGroup=\nProtectHome=no\n{private_tmp}"
        f"WorkingDirectory={SUPPORT}\n"
        f"Environment=PREFORK_APP={APP} PREFORK_WORKERS=2 PREFORK_ACCESS_LOG=off\n"
        f"StandardOutput=append:{workdir / 'prefork.log'}\n"
        f"StandardError=append:{workdir / 'prefork.log'}\n"
    )


@pytest.fixture(scope="module")
def ns_systemd(tmp_path_factory) -> Iterator[NsSystemd]:
    if os.geteuid() != 0:
        pytest.skip("a real systemd in namespaces needs root")
    # .ci/run installs these (util-linux, iproute2, systemd): missing is a failure.
    for binary in ("unshare", "nsenter", "ip"):
        assert shutil.which(binary), f"{binary} is not installed"
    assert os.path.exists("/lib/systemd/systemd"), "/lib/systemd/systemd is missing (apt: systemd)"
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--net", "--cgroup", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot create pid/mount/net/cgroup namespaces: {probe.stderr.strip()}")
    for hierarchy in ("unified", "systemd"):
        if not os.path.isdir(f"/sys/fs/cgroup/{hierarchy}"):
            pytest.skip(f"/sys/fs/cgroup/{hierarchy} is missing (the recipe needs a hybrid layout)")
    workdir = tmp_path_factory.mktemp("nssystemd")
    write_ns_units(workdir)
    ns = NsSystemd(workdir)
    try:
        why = ns.boot()
        if why is not None:
            raise AssertionError(f"systemd did not boot in namespaces: {why}")
        yield ns
    finally:
        ns.close()


def test_real_systemd_start_reload_under_load_stop_restart(ns_systemd, tmp_path):
    ns = ns_systemd
    ns.run("systemctl", "start", "prefork.socket", "prefork.service", timeout=120)
    state = ns.show("prefork.service", "ActiveState", "SubState", "MainPID", "StatusText")
    assert (state["ActiveState"], state["SubState"]) == ("active", "running"), state
    assert "2 workers" in state["StatusText"], state  # STATUS= from the master
    main_pid = state["MainPID"]
    first = ns.get("/env")
    assert first["ppid"] == int(main_pid)
    assert "PATH" in first["env"], first  # the environment really is reported
    assert not [n for n in first["env"] if n.startswith("LISTEN_")]

    # Reload under load: ExecReload= checks the settings, then HUP; systemd
    # shows "reloading" until READY=1. Twice, and no request may fail.
    stop_file = tmp_path / "stop-load"
    load = ns.load(stop_file)
    ns.wait_load(stop_file, 50, "the load to get going")
    for generation in (2, 3):
        ns.run("systemctl", "reload", "prefork.service", timeout=60)
        ns.wait_log(rf"reload complete: generation {generation}")
        ns.wait_load(stop_file, 50, f"50 more requests after reload {generation}")
    result = ns.load_result(load, stop_file)
    assert result["failed"] == 0, result
    assert result["ok"] > 100, result
    assert result["stuck_threads"] == 0, result
    assert len(result["pids"]) >= 4, "the load saw the old and the new workers"
    after = ns.show("prefork.service", "ActiveState", "MainPID")
    assert after == {"ActiveState": "active", "MainPID": main_pid}, after
    ns.wait_console(r"Reloaded prefork\.service", count=2)  # systemd saw both READY=1

    # Stop: TERM to the master only (KillMode=mixed); it drains and exits 0
    # before TimeoutStopSec, so systemd never has to kill a worker.
    started = time.monotonic()
    ns.run("systemctl", "stop", "prefork.service", timeout=60)
    assert time.monotonic() - started < 10
    state = ns.show("prefork.service", "ActiveState", "Result", "ExecMainStatus")
    assert state == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    assert "SIGKILL" not in ns.console_log(), ns.console_log()[-3000:]
    assert f"master {main_pid} exiting (status 0)" in ns.prefork_log()

    # Start again, then restart under load: the socket unit keeps the
    # listening sockets, so connections wait in the queue instead of failing.
    ns.run("systemctl", "start", "prefork.service", timeout=120)
    assert ns.get("/")["pid"]
    stop_file = tmp_path / "stop-load-2"
    load = ns.load(stop_file)
    ns.wait_load(stop_file, 50, "the load to get going")
    ns.run("systemctl", "restart", "prefork.service", timeout=120)
    ns.wait_load(stop_file, 50, "50 more requests after the restart")
    result = ns.load_result(load, stop_file)
    assert result["failed"] == 0, result
    assert result["ok"] > 50, result
    new_main = ns.show("prefork.service", "MainPID")["MainPID"]
    assert new_main not in ("0", main_pid)
    ns.run("systemctl", "stop", "prefork.service", timeout=60)


def test_real_systemd_unix_socket_survives_service_restart(ns_systemd):
    """ListenStream=/run/prefork.sock keeps answering across `systemctl restart prefork.service`.

    (The same bug without systemd: test_socket_activation_leaves_inherited_unix_socket_file.
    The shipped sandbox, ProtectSystem=strict included, does not stop the unlink.)
    """
    ns = ns_systemd
    path = "/run/prefork.sock"
    ns.run("systemctl", "stop", "prefork.service", timeout=60)
    ns.run("systemctl", "restart", "prefork.socket", timeout=60)  # (re)creates the file
    ns.run("systemctl", "start", "prefork.service", timeout=120)
    assert ns.get("/", unix=path)["pid"]
    ns.run("systemctl", "restart", "prefork.service", timeout=120)
    try:
        assert ns.get("/", unix=path)["pid"]
    finally:
        ns.run("systemctl", "stop", "prefork.service", timeout=60)
        ns.run("systemctl", "restart", "prefork.socket", timeout=60)


def test_real_systemd_usr2_upgrade_keeps_the_service(ns_systemd):
    ns = ns_systemd
    ns.run("systemctl", "reset-failed", "prefork.service", check=False)
    ns.run("systemctl", "start", "prefork.socket", "prefork.service", timeout=120)
    old = ns.show("prefork.service", "MainPID")["MainPID"]
    try:
        ns.run("systemctl", "kill", "--kill-who=main", "-s", "USR2", "prefork.service")
        ns.wait_log(r"upgrade complete")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            state = ns.show("prefork.service", "ActiveState", "MainPID")
            if state["MainPID"] not in ("0", old):
                break
            time.sleep(0.1)
        ns.wait_log(rf"master {old} exiting")  # the old master has retired
        state = ns.show("prefork.service", "ActiveState", "SubState", "MainPID")
        assert state["ActiveState"] == "active", state
        assert state["MainPID"] not in ("0", old), state
        assert ns.get("/env")["ppid"] == int(state["MainPID"])
    finally:
        # A service left in "stop-sigterm" would take TimeoutStopSec to stop.
        ns.run("systemctl", "kill", "-s", "KILL", "prefork.service", check=False)
        ns.run("systemctl", "stop", "prefork.service", timeout=60, check=False)
        ns.run("systemctl", "reset-failed", "prefork.service", check=False)
