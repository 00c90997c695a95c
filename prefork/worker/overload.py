"""Overload: how much a worker takes on, and how long a request may take.

``--max-connections`` and ``--max-concurrency`` bound what a worker accepts.
Past either, the worker stops accepting: it stops watching its listening
sockets (their descriptors stay open), so new connections wait in the
kernel's listen queue (``--backlog``), where any other worker with room
takes them.  Nothing is refused and nothing is answered 503 for this.  It
accepts again once it is back below 90% of the limit (hysteresis: a worker at
its limit does not flap with every request).

:class:`AcceptGate` does the accepting itself while a limit is set, instead
of the event loop's server: the loop's ``create_server`` takes every
connection queued at each wake-up (asyncio up to the backlog, libuv until
the queue is empty) and calls the protocol only afterwards, so no protocol
callback could stop it at the limit.  The gate takes at most as many
connections as there is room for (16 per wake-up at most, so that waking
workers share the queue), and hands each one to the loop with
``connect_accepted_socket``.  Without a limit the loop's server accepts, as
before.

:class:`RequestTracker` keeps the requests in flight, oldest first: their
count for ``--max-concurrency``, and their age for ``--request-timeout``,
which the server's sweep (about once a second, or a tenth of the timeout)
checks by looking at the oldest requests only.  No timer per request: a
request costs one dict insertion and one removal, and only when one of
these settings is on.

:class:`~prefork.worker.httpserver.HTTPServer` imports this module only
when one of the three settings is on.
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from typing import TYPE_CHECKING, Any

from prefork.worker.httpserver import RequestObserver

if TYPE_CHECKING:
    import asyncio

    from prefork.worker.httpserver import HTTPServer, ServedConnection
    from prefork.worker.request import HTTPRequest

__all__ = ["AcceptGate", "RequestTracker", "resume_mark"]

error_log = logging.getLogger("prefork.error")

#: Connections taken per wake-up of a listening socket at most.
ACCEPT_BATCH = 16
#: Seconds between two "stopped accepting" warnings of one worker.
_WARN_EVERY = 60.0
#: Seconds accepting pauses when the process is out of file descriptors.
_FD_PAUSE = 0.5
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))

_monotonic = time.monotonic


class _Accepted(socket.socket):
    """An accepted connection's socket, with its family and type as plain
    attributes.  The loop reads them to set the connection up (uvloop: three
    times), and ``socket.socket``'s own properties build an enum member on
    every read (~0.8 µs each here); ``socket.accept()`` reads them too."""

    __slots__ = ("family", "type")  # type: ignore[misc]


def resume_mark(limit: int) -> int:
    """The load at or below which a worker stopped at ``limit`` accepts again:
    90% of it (at least one below)."""
    return limit - max(1, limit // 10)


class RequestTracker(RequestObserver):
    """The requests in flight, in the order they began, with their start time.

    It is the server's observer while ``--max-concurrency`` or
    ``--request-timeout`` is set, and passes every call on to ``inner``
    (the process model's observer: scoreboard, metrics, hooks).
    """

    __slots__ = ("inner", "in_flight", "gate")

    def __init__(self) -> None:
        self.inner: RequestObserver | None = None
        #: request -> monotonic time it was handed to the application
        self.in_flight: dict[HTTPRequest, float] = {}
        self.gate: AcceptGate | None = None

    def request_started(self, request: HTTPRequest) -> None:
        self.in_flight[request] = _monotonic()
        gate = self.gate
        if gate is not None:
            gate.fresh.discard(request.connection)  # (not new any more: in flight)
        inner = self.inner
        if inner is not None:
            inner.request_started(request)

    def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
        """Forget ``request``, and drop its ``on_timeout``: the WSGI adapter's
        holds the response, which holds the request, a reference cycle that
        kept every WSGI request's connection (TLS buffers and all) until the
        cycle collector ran."""
        self.in_flight.pop(request, None)
        request.on_timeout = None
        inner = self.inner
        if inner is not None:
            inner.request_finished(request, status, size)
        gate = self.gate
        if gate is not None and gate.paused:
            gate.check()

    def connections_changed(self, count: int, websockets: int) -> None:
        inner = self.inner
        if inner is not None:
            inner.connections_changed(count, websockets)

    def request_rejected(self, status: int) -> None:
        inner = self.inner
        if inner is not None:
            inner.request_rejected(status)

    def expired(self, timeout: float) -> list[tuple[HTTPRequest, float]]:
        """The requests in flight for ``timeout`` seconds or more, with their age.

        The dict is in the order requests began, so the walk stops at the
        first one still within its time.
        """
        now = _monotonic()
        found = []
        for request, started in self.in_flight.items():
            age = now - started
            if age < timeout:
                break
            found.append((request, age))
        return found


class AcceptGate:
    """Accepts from a server's listening sockets while it is below its limits.

    ``max_connections``: connections open or being set up (TLS handshakes
    included).  ``max_concurrency``: requests in flight, plus connections
    that have not begun a request yet (each is most likely bringing one).
    """

    def __init__(self, server: HTTPServer, tracker: RequestTracker | None) -> None:
        config = server.config
        self.server = server
        self.max_connections = config.max_connections
        self.max_concurrency = config.max_concurrency if tracker is not None else 0
        self._resume_connections = resume_mark(self.max_connections)
        self._resume_concurrency = resume_mark(self.max_concurrency)
        self.tracker = tracker
        if tracker is not None and self.max_concurrency:
            tracker.gate = self  # (its requests' ends may let the gate accept again)
        #: accepted connections that have not begun a request (max_concurrency only)
        self.fresh: set[Any] = set()
        self.sockets: list[socket.socket] = []
        #: listening socket -> family, type and protocol of its connections
        self._kinds: dict[socket.socket, tuple[socket.AddressFamily, socket.SocketKind, int]] = {}
        self.paused = False
        self.closed = False
        #: times the gate stopped accepting (for the rate-limited warning)
        self.pauses = 0
        self._warned = -_WARN_EVERY
        self._retry: asyncio.TimerHandle | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The server's loop (resolved when first used: in the worker, after the fork)."""
        return self.server.asyncio_loop

    # -- load ------------------------------------------------------------------------

    def room(self) -> int:
        """How many more connections the worker may take now (ACCEPT_BATCH at most)."""
        server = self.server
        setting_up = len(server._adopting)
        room = ACCEPT_BATCH
        if self.max_connections:
            room = min(room, self.max_connections - len(server._connections) - setting_up)
        if self.max_concurrency:
            tracker = self.tracker
            assert tracker is not None
            busy = len(tracker.in_flight) + len(self.fresh) + setting_up
            room = min(room, self.max_concurrency - busy)
        return room

    def _below_resume_marks(self) -> bool:
        server = self.server
        setting_up = len(server._adopting)
        if (
            self.max_connections
            and len(server._connections) + setting_up > self._resume_connections
        ):
            return False
        if self.max_concurrency:
            tracker = self.tracker
            assert tracker is not None
            busy = len(tracker.in_flight) + len(self.fresh) + setting_up
            if busy > self._resume_concurrency:
                return False
        return True

    # -- the server's calls ------------------------------------------------------------

    def add(self, sock: socket.socket) -> None:
        """Accept from ``sock`` (a listening socket) from now on."""
        self.sockets.append(sock)
        self._kinds[sock] = (sock.family, sock.type, sock.proto)
        if not self.paused and not self.closed:
            self.loop.add_reader(sock.fileno(), self._readable, sock)

    def connection_opened(self, conn: ServedConnection) -> None:
        if self.max_concurrency and not getattr(conn, "is_websocket", False):
            self.fresh.add(conn)

    def connection_closed(self, conn: ServedConnection) -> None:
        self.fresh.discard(conn)
        if self.paused:
            self.check()

    def check(self) -> None:
        """Accept again if the worker is back below the resume marks."""
        if self.paused and not self.closed and self._retry is None and self._below_resume_marks():
            self._resume()

    def close(self) -> None:
        """Stop accepting for good and close the listening sockets."""
        if self.closed:
            return
        self.closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if not self.paused:
            self._remove_readers()
        for sock in self.sockets:
            sock.close()

    # -- accepting -------------------------------------------------------------------

    def _readable(self, sock: socket.socket) -> None:
        # As many as there is room for, up to ACCEPT_BATCH: a socket with
        # more queued stays readable and the loop calls again after a turn.
        # (One per wake-up costs more: a loop turn per connection is dearer
        # than the failing accept that ends a batch.)
        room = self.room()
        if room > 0:
            room -= self._accept(sock, room)
        if room <= 0 and not self.closed and self.room() <= 0:
            self._pause()

    def _accept(self, sock: socket.socket, count: int) -> int:
        """Accept up to ``count`` connections from ``sock``; how many were taken."""
        family, kind, proto = self._kinds[sock]
        taken = 0
        while taken < count:
            try:
                fd, _address = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                break  # the queue is empty (another worker took the rest)
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._out_of_resources(exc)
                    break
                if exc.errno == errno.EBADF or sock.fileno() < 0:
                    break  # closed under us
                continue  # ECONNABORTED and the like: that client is gone, next
            conn = _Accepted(family, kind, proto, fileno=fd)
            conn.family = family  # type: ignore[misc]
            conn.type = kind  # type: ignore[misc]
            conn.setblocking(False)
            self.server._adopt(conn)
            taken += 1
        return taken

    def _out_of_resources(self, exc: OSError) -> None:
        error_log.error(
            "Cannot accept connections: %s; pausing %.1f s (see --max-connections and ulimit -n)",
            exc,
            _FD_PAUSE,
        )
        if not self.paused:
            self.paused = True
            self._remove_readers()
        if self._retry is None:
            self._retry = self.loop.call_later(_FD_PAUSE, self._retry_accepting)

    def _retry_accepting(self) -> None:
        self._retry = None
        self.check()

    def _pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self.pauses += 1
        self._remove_readers()
        now = _monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            error_log.warning("%s; new connections wait in the listen queue", self._why())
            self.pauses = 0

    def _why(self) -> str:
        server = self.server
        parts = []
        if self.max_connections:
            count = len(server._connections) + len(server._adopting)
            parts.append(f"{count} connections of --max-connections {self.max_connections}")
        if self.max_concurrency:
            tracker = self.tracker
            assert tracker is not None
            setting_up = len(server._adopting)  # (counted by room() too)
            parts.append(
                f"{len(tracker.in_flight)} requests in flight "
                f"(+{len(self.fresh)} new connections, +{setting_up} being set up) "
                f"of --max-concurrency {self.max_concurrency}"
            )
        again = (
            f" (stopped {self.pauses} times since the last such line)" if self.pauses > 1 else ""
        )
        return f"worker at its limit, not accepting{again}: {', '.join(parts)}"

    def _resume(self) -> None:
        self.paused = False
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self.loop.add_reader(sock.fileno(), self._readable, sock)

    def _remove_readers(self) -> None:
        for sock in self.sockets:
            if sock.fileno() >= 0:
                self.loop.remove_reader(sock.fileno())
