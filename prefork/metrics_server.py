"""``--metrics-bind``: the master's own metrics listener.

The master has no event loop, and its loop must never wait on a client: the
listener is bound by the master's loop (before the first fork; after a USR2
upgrade, retried each second until the old master lets the address go), and
served by one daemon thread that blocks no signal handling (every signal is
blocked in it, so they all reach the main thread) and waits on nothing
without a timeout.  It answers one connection at a time, ``Connection:
close``: a request head within IO_TIMEOUT seconds, the answer written within
IO_TIMEOUT more, else the connection is dropped.  A slow scraper delays other
scrapers, never supervision.

Workers never see the listener: the master's fork closes it in the child
(``close_in_child``), and it is not inheritable across exec.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence

from prefork import appmetrics, metrics
from prefork.scoreboard import Scoreboard

__all__ = ["MetricsServer"]

log = logging.getLogger("prefork.master")

#: Seconds a scraper has to send its request head, and again to read the answer.
IO_TIMEOUT = 5.0
#: Seconds between attempts to bind an address still held by an old master (USR2).
RETRY_INTERVAL = 1.0
_MAX_HEAD = 8192


class MetricsServer:
    """Serves the metrics text on ``spec`` (``HOST:PORT`` or ``unix:PATH``) from a thread."""

    def __init__(self, spec: str, paths: Iterable[str], unix_mode: int = 0o600) -> None:
        self.spec = spec
        #: request paths answered with the metrics (others: 404)
        self.paths = set(paths)
        self.unix_mode = unix_mode
        self.listeners: list[socket.socket] = []
        self._unix: list[tuple[str, int]] = []  # (path, inode) of socket files we made
        self._board: Scoreboard | None = None
        self._sockets: Callable[[], Sequence[socket.socket]] = list
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r = self._wake_w = -1
        self._retry_at: float | None = None
        self._errors_logged = 0
        # The thread's selector and the connection it serves: a worker forked
        # meanwhile inherits their fds, and closes them (close_in_child).
        self._selector: selectors.BaseSelector | None = None
        self._conn: socket.socket | None = None

    # -- the master's loop ---------------------------------------------------------
    def bind(self, retry_if_busy: bool = False) -> None:
        """Bind now; an address in use with ``retry_if_busy`` is retried by ``poll``.

        Raises OSError or ValueError (naming the spec) otherwise.
        """
        from prefork.sockets import listeners_from_specs

        try:
            self.listeners = listeners_from_specs([self.spec], 64, unix_mode=self.unix_mode)
        except OSError as exc:
            if retry_if_busy and exc.errno == errno.EADDRINUSE:
                log.info("metrics: %s is in use (the old master's?): retrying", self.spec)
                self._retry_at = time.monotonic() + RETRY_INTERVAL
                return
            raise
        self._remember_unix_files()

    def start(self, board: Scoreboard, sockets: Callable[[], Sequence[socket.socket]]) -> None:
        """Serve ``board`` (and the listen queues of ``sockets()``) once bound."""
        self._board = board
        self._sockets = sockets
        if self.listeners:
            self._start_thread()

    def poll(self, now: float) -> None:
        """Called on every pass of the master's loop: retry a busy address."""
        if self._retry_at is None or now < self._retry_at or self._stop.is_set():
            return
        try:
            self.bind()
        except (OSError, ValueError) as exc:
            busy = isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE
            if not busy:
                log.error("metrics: cannot bind %s: %s; retrying", self.spec, exc)
            self._retry_at = now + RETRY_INTERVAL * (1 if busy else 10)
            return
        self._retry_at = None
        log.info("metrics: listening on %s", self.spec)
        if self._board is not None:
            self._start_thread()

    def close(self) -> None:
        """Stop the thread (bounded wait), close the listener, remove its socket file."""
        self._stop.set()
        if self._wake_w >= 0:
            try:
                os.write(self._wake_w, b"!")
            except OSError:
                pass
        conn = self._conn
        if conn is not None:  # a scraper being served: end it now, not at its timeout
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(IO_TIMEOUT + 1.0)
        for sock in self.listeners:
            sock.close()
        self.listeners = []
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        for path, inode in self._unix:
            try:
                if os.stat(path).st_ino == inode:  # not a new master's
                    os.unlink(path)
            except OSError:
                pass
        self._unix = []

    def close_in_child(self) -> None:
        """In a freshly forked worker: let go of the listener (no thread runs here)."""
        for sock in [*self.listeners, self._conn]:
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self.listeners = []
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._wake_r = self._wake_w = -1
        self._unix = []

    # -- internals -----------------------------------------------------------------
    def _remember_unix_files(self) -> None:
        for sock in self.listeners:
            if sock.family != socket.AF_UNIX:
                continue
            name = sock.getsockname()
            if isinstance(name, bytes):
                name = os.fsdecode(name)
            if name and not name.startswith("\0"):
                try:
                    st = os.stat(name)
                except OSError:
                    continue
                if stat.S_ISSOCK(st.st_mode):
                    self._unix.append((name, st.st_ino))

    def _start_thread(self) -> None:
        if self._thread is not None:
            return
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="prefork-metrics", daemon=True)
        # Started with every signal blocked, so the thread inherits the mask:
        # signals keep going to the main thread, which the master's loop is.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            self._selector = selector
            for sock in self.listeners:
                selector.register(sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stop.is_set():
                try:
                    events = selector.select(1.0)
                except OSError:
                    return
                for key, _mask in events:
                    if key.fileobj == self._wake_r or self._stop.is_set():
                        return
                    listener = key.fileobj
                    if not isinstance(listener, socket.socket):
                        continue
                    try:
                        conn, _address = listener.accept()
                    except OSError:
                        continue
                    self._conn = conn
                    try:
                        self._serve(conn)
                    except Exception as exc:
                        self._log_error(exc)
                    finally:
                        self._conn = None
                        conn.close()

    def _log_error(self, exc: BaseException) -> None:
        if self._errors_logged < 10:  # a misbehaving scraper must not flood the log
            self._errors_logged += 1
            log.warning("metrics: a scrape failed: %s: %s", type(exc).__name__, exc)

    def _serve(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + IO_TIMEOUT
        conn.settimeout(IO_TIMEOUT)
        head = b""
        while b"\r\n\r\n" not in head and b"\n\n" not in head:
            if len(head) > _MAX_HEAD or time.monotonic() > deadline:
                return
            try:
                chunk = conn.recv(4096)
            except (TimeoutError, OSError):
                return
            if not chunk:
                if not head:
                    return
                break
            head += chunk
        line = head.split(b"\n", 1)[0].decode("latin-1").strip().split()
        if len(line) != 3 or not line[2].startswith("HTTP/"):
            self._send(conn, deadline, 400, b"bad request\n")
            return
        method, target = line[0], line[1]
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self._send(conn, deadline, 405, b"GET only\n", [("Allow", "GET, HEAD")])
        elif path not in self.paths:
            self._send(conn, deadline, 404, f"metrics are at {min(self.paths)}\n".encode())
        else:
            body = self._render()
            self._send(
                conn,
                deadline,
                200,
                body,
                [("Content-Type", metrics.CONTENT_TYPE)],
                head_only=method == "HEAD",
            )

    def _render(self) -> bytes:
        assert self._board is not None
        own = metrics.render(self._board, self._sockets())
        try:
            app = appmetrics.render()
        except Exception as exc:  # the application's registry: never our failure
            self._log_error(exc)
            app = b""
        return own + app

    def _send(
        self,
        conn: socket.socket,
        deadline: float,
        status: int,
        body: bytes,
        headers: Sequence[tuple[str, str]] = (),
        head_only: bool = False,
    ) -> None:
        reasons = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
        lines = [f"HTTP/1.1 {status} {reasons[status]}"]
        if not any(name == "Content-Type" for name, _ in headers):
            lines.append("Content-Type: text/plain; charset=utf-8")
        lines += [f"{name}: {value}" for name, value in headers]
        lines += [f"Content-Length: {len(body)}", "Cache-Control: no-store", "Connection: close"]
        data = memoryview(("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body))
        while data:
            remaining = deadline + IO_TIMEOUT - time.monotonic()
            if remaining <= 0:
                return
            conn.settimeout(remaining)
            try:
                sent = conn.send(data)
            except (TimeoutError, OSError):
                return
            data = data[sent:]
