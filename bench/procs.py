"""Server processes: start in a session of their own, probe, measure, stop, reap.

Each server runs in a new session (``start_new_session``), so that its whole
tree (master, workers, orphans) can be found by session id and killed by
process group, and the harness can prove it left nothing running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class Running:
    """A started server: its Popen, and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 3) -> str:
        """The last lines of the server's output, to say why it failed in one row."""
        try:
            text = self.log_path.read_text(errors="replace").strip()
        except OSError:
            return ""
        return " | ".join(text.splitlines()[-lines:])


def free_port() -> int:
    """A port that was free a moment ago (each start gets a fresh one)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(name: str, command: list[str], log_path: Path, cpu: int | None) -> Running:
    """Start ``command`` in a new session, pinned to ``cpu`` (inherited by its workers)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=_pythonpath())
    env.pop("WEB_CONCURRENCY", None)  # -w/--workers decide, not the caller's environment
    with open(log_path, "ab") as log:  # one log per server, appended start after start
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
        )
    return Running(name, process, log_path)


def _pythonpath() -> str:
    """The repo root first, so ``bench.apps`` imports in every server and worker."""
    existing = os.environ.get("PYTHONPATH")
    return f"{ROOT}{os.pathsep}{existing}" if existing else str(ROOT)


def probe(port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, int | None]:
    """One GET on a new connection: (status, X-Pid), or (0, None) when it failed."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request.encode())
            data = _read_head(sock)
    except OSError:
        return 0, None
    return _status_and_pid(data)


def _read_head(sock: socket.socket) -> bytes:
    """Bytes up to the end of the response head (or the close)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _status_and_pid(data: bytes) -> tuple[int, int | None]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    try:
        status = int(head[0].split()[1])
    except (IndexError, ValueError):
        return 0, None
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-pid" and value.strip().isdigit():
            return status, int(value.strip())
    return status, None


def wait_ready(server: Running, port: int, timeout: float = START_TIMEOUT) -> str | None:
    """Poll with new connections until a 200 comes; None when ready, else why not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return f"exited with status {server.process.returncode}: {server.log_tail()}"
        if probe(port, timeout=1.0)[0] == 200:
            return None
        time.sleep(0.005)
    return f"no response within {timeout:.0f} s: {server.log_tail()}"


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (empty when it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """RSS summed over the whole tree, in bytes (shared pages counted per process)."""
    total = 0
    for process in tree(pid):
        try:
            total += process.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def tree_threads(pid: int) -> int:
    """Threads summed over the whole tree (master, workers and their helper threads)."""
    total = 0
    for process in tree(pid):
        try:
            total += process.num_threads()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


def cpu_fraction(pid: int, wall: float) -> float | None:
    """CPU (user + system) that ``pid`` used so far over ``wall`` seconds: cores busy."""
    if wall < 0.5:
        return None
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    return (times.user + times.system) / wall


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by the whole tree."""
    total = 0.0
    for process in tree(pid):
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += times.user + times.system
    return total


BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq", "steal")


def cpus_busy(cpus: set[int]) -> float:
    """CPU seconds the given cores spent busy since boot.

    Interrupt time counts (the kernel charges a process's softirq work to its
    system time, so it is in the process figures too), and so does steal (a
    virtual machine's neighbours: a disturbance like any other); guest time
    is already inside user time.
    """
    per_cpu = psutil.cpu_times(percpu=True)
    return sum(
        getattr(per_cpu[cpu], field, 0.0)
        for cpu in cpus
        if cpu < len(per_cpu)
        for field in BUSY_FIELDS
    )


def session_members(sid: int) -> list[int]:
    """Pids still alive (not zombies) in session ``sid``: what a stop left behind."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getsid(process.pid) == sid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def stop(server: Running) -> list[int]:
    """SIGTERM the master, wait, then SIGKILL what is left; return pids still alive.

    The master gets the first word (a graceful stop is part of what users
    run).  While it lives, its process group is certainly ours, so a stuck
    master is killed with its group; after it is reaped, stragglers (tornado's
    children do not die with their parent) are found by session id and
    killed by pid, so no reused id is ever signalled.
    """
    process = server.process
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            process.wait(STOP_TIMEOUT)
    for pid in session_members(server.pid):
        _kill(pid)
    return _wait_session_empty(server.pid)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_session_empty(sid: int, timeout: float = 3.0) -> list[int]:
    deadline = time.monotonic() + timeout
    left = session_members(sid)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = session_members(sid)
    return left


def burst(port: int, count: int = 8, timeout: float = 1.0) -> list[int]:
    """``count`` GETs on as many connections queued at once; the X-Pids that answered.

    Queuing them together lets every accepting worker take some: one
    connection at a time tends to go to whichever worker is already awake.
    """
    request = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    sockets = []
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            sockets.append(sock)
            sock.sendall(request)
    except OSError:
        pass
    pids = []
    for sock in sockets:
        with sock:  # closed at once: gunicorn lingers on a close until the client's FIN
            pid = _read_pid(sock)
        if pid is not None:
            pids.append(pid)
    return pids


def _read_pid(sock: socket.socket) -> int | None:
    try:
        data = _read_head(sock)
    except OSError:
        return None
    status, pid = _status_and_pid(data)
    return pid if status == 200 else None
