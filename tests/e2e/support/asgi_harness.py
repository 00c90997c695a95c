"""Run a ``prefork`` master serving an ASGI application, and drive it (test_asgi_apps.py).

* :class:`Server` / :func:`running`: ``python -m prefork --interface asgi -w 2
  -b 127.0.0.1:0 --pidfile ... --error-log ... MODULE:APP`` in a session of its
  own, with ``APP_EVENTS_LOG`` naming the file where the application writes
  what happens inside the workers (``tests/apps/asgi_events.py``); the port
  is read from the log, ready workers from the scoreboard, and the master is
  stopped by pid and waited for, its whole process group gone afterwards.
* :func:`ws_connect` / :func:`ws_on_every_worker` / :func:`close_code`: chat
  WebSockets through the ``websockets`` client library.
* :class:`Load`: GET requests on fresh connections in a thread, failures counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.conftest import ROOT, MasterWatch, wait_for

#: The graceful timeout the servers run with; a stop must end well within it.
GRACEFUL = 10.0
#: Bound on one client operation (a request, a WebSocket message).
IO_TIMEOUT = 10.0


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_")}
    for name in (
        "LISTEN_FDS",
        "LISTEN_PID",
        "NOTIFY_SOCKET",
        "WEB_CONCURRENCY",
        "DJANGO_SETTINGS_MODULE",
    ):
        env.pop(name, None)
    env.update(extra)
    return env


class Server(MasterWatch):
    """One ``prefork`` master serving an ASGI application, and its workers."""

    def __init__(self, tmp: Path, app: str, *args: str, env: dict[str, str] | None = None) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp / "error.log"
        self.pidfile = tmp / "master.pid"
        self.events_path = tmp / "events.log"
        self.out = open(tmp / "out.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "prefork",
            "--interface",
            "asgi",
            "-w",
            "2",
            "-b",
            "127.0.0.1:0",
            "--pidfile",
            str(self.pidfile),
            "--error-log",
            str(self.log_path),
            "--access-log",
            "off",
            "--graceful-timeout",
            str(GRACEFUL),
            *args,
            app,
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env({"APP_EVENTS_LOG": str(self.events_path), **(env or {})}),
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.status: int | None = None

    # -- observation -----------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def events(self) -> list[list[str]]:
        """The application's event lines, each split into words (see asgi_events.py)."""
        try:
            return [line.split() for line in self.events_path.read_text().splitlines()]
        except FileNotFoundError:
            return []

    def wait_event(self, *words: str, timeout: float = IO_TIMEOUT) -> list[str]:
        """Wait for an event line whose first words are ``words`` (PID as a string, or '*')."""

        def found() -> list[str] | None:
            for line in self.events():
                if len(line) >= len(words) and all(
                    w == "*" or w == have for w, have in zip(words, line, strict=False)
                ):
                    return line
            return None

        return wait_for(found, timeout, f"the event {' '.join(words)!r}")

    # -- the end ---------------------------------------------------------------------
    def wait_exit(self, timeout: float) -> int:
        try:
            self.status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait(5)
            raise AssertionError(f"the master did not exit within {timeout} s") from None
        finally:
            self.out.close()
        wait_for(lambda: not self._group_alive(), 5, "the master's workers to exit")
        return self.status

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the master by pid, wait for it, and require its group to be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(GRACEFUL + 5)


@contextlib.contextmanager
def running(tmp: Path, app: str, *args: str, env: dict[str, str] | None = None):
    """A started server; stopped by pid (TERM) and reaped at the end, whatever happens."""
    server = Server(tmp, app, *args, env=env)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            try:
                server.stop()
            except AssertionError:
                pass
        server.kill_group()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.proc.wait(5)
        server.out.close()


def client(port: int) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=IO_TIMEOUT, trust_env=False)


def events_of(server: Server, name: str) -> list[list[str]]:
    return [line for line in server.events() if line[0] == name]


# ------------------------------------------------------------------ WebSocket helpers


def ws_connect(stack: contextlib.ExitStack, port: int, name: str) -> tuple[ClientConnection, dict]:
    """Open a chat WebSocket; return it with its welcome message (which names the worker)."""
    ws = stack.enter_context(
        connect(
            f"ws://127.0.0.1:{port}/chat?name={name}",
            open_timeout=IO_TIMEOUT,
            close_timeout=IO_TIMEOUT,
            proxy=None,
        )
    )
    welcome = json.loads(ws.recv(timeout=IO_TIMEOUT))
    assert welcome["type"] == "welcome" and welcome["name"] == name, welcome
    return ws, welcome


def ws_on_every_worker(
    stack: contextlib.ExitStack, port: int, workers: list[int], per_worker: int, prefix: str
) -> dict[int, list[tuple[str, ClientConnection]]]:
    """Open chat WebSockets until every worker holds at least ``per_worker`` of them.

    Which worker accepts a connection is the kernel's choice; 40 tries bound it.
    """
    by_worker: dict[int, list[tuple[str, ClientConnection]]] = {pid: [] for pid in workers}
    for i in range(40):
        if all(len(v) >= per_worker for v in by_worker.values()):
            return by_worker
        name = f"{prefix}{i}"
        ws, welcome = ws_connect(stack, port, name)
        assert welcome["pid"] in by_worker, (welcome, workers)
        by_worker[welcome["pid"]].append((name, ws))
    raise AssertionError(f"40 WebSockets did not reach every worker: {by_worker}")


def close_code(ws: ClientConnection, timeout: float = GRACEFUL) -> tuple[int | None, str]:
    """Read until the server closes; the close code and reason it sent."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("the server did not close the WebSocket in time")
        try:
            ws.recv(timeout=remaining)
        except ConnectionClosed as exc:
            if exc.rcvd is None:
                return None, ""
            return exc.rcvd.code, exc.rcvd.reason
        except TimeoutError:
            continue


# ------------------------------------------------------------------ the HTTP load


class Load:
    """GET /json in a loop, each on a fresh connection; every failure is recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.pids: set[int] = set()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        url = f"http://127.0.0.1:{self.port}/json"
        while not self._stop.is_set():
            try:
                response = httpx.get(url, timeout=IO_TIMEOUT, trust_env=False)
                if response.status_code == 200:
                    self.pids.add(response.json()["pid"])
                    self.ok += 1
                else:
                    self.failures.append(f"status {response.status_code}: {response.text[:200]}")
            except (httpx.HTTPError, OSError, ValueError) as exc:
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(IO_TIMEOUT + 5)
        assert not self._thread.is_alive()
