"""HTTPServer: the seed's non-blocking HTTP server, on asyncio transports.

The tornado 2.x API, unchanged for callers::

    def handle_request(request):
        message = b"You requested " + request.uri.encode() + b"\\n"
        request.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s"
                      % (len(message), message))
        request.finish()

    http_server = httpserver.HTTPServer(handle_request)
    http_server.listen(8888)
    ioloop.IOLoop.instance().start()

or, one process per CPU, supervised by a prefork master::

    http_server.bind(8888)
    http_server.start(0)      # forks; returns in each worker
    ioloop.IOLoop.instance().start()

Every setting of :class:`~prefork.settings.Config` can be given as a
keyword argument (``HTTPServer(cb, max_body_size=10 << 20)``), or all of
them at once as ``config=``: the command line builds the same object.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from prefork.settings import Config, make_config
from prefork.sockets import DEFAULT_BACKLOG, INHERIT_ENV, bind_sockets, sockets_from_environment
from prefork.worker import httpdate
from prefork.worker.connection import HTTPConnection
from prefork.worker.httputil import HTTPFile, HTTPHeaders
from prefork.worker.ioloop import IOLoop
from prefork.worker.request import HTTPRequest
from prefork.worker.tls import hooked_context, options_from_config, server_context
from prefork.worker.tls_accept import TLSAcceptor
from prefork.worker.xheaders import XHEADERS_ALL, XHEADERS_FORWARDED, parse_networks

if TYPE_CHECKING:
    from prefork.worker.overload import AcceptGate, RequestTracker

__all__ = ["HTTPServer", "HTTPRequest", "HTTPConnection", "HTTPHeaders", "HTTPFile"]

error_log = logging.getLogger("prefork.error")

# At most this many queued connections are taken per listening socket when
# a worker stops (they are served before it exits).
_MAX_DRAIN_ACCEPTS = 4096


class ServedConnection(Protocol):
    """What the server needs of each connection it serves (HTTP or WebSocket)."""

    #: loop time at which ``on_timeout`` is due (0: none)
    deadline: float

    def start_drain(self) -> None: ...

    def on_timeout(self) -> None: ...

    def close(self) -> None: ...


class RequestObserver:
    """Hooks the process model attaches to a server (scoreboard, recycling).

    Connections call ``server.observer`` directly, once as a request is
    handed to the application and once as its response is complete (after
    the access log line): these two calls are on every request's path.
    """

    def request_started(self, request: HTTPRequest) -> None:
        pass

    def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
        """``status`` and ``size`` (body bytes) of the response just completed."""

    def connections_changed(self, count: int, websockets: int) -> None:
        """``count`` open connections, ``websockets`` of them WebSockets."""

    def request_rejected(self, status: int) -> None:
        """A request was refused with ``status`` before the application saw it."""


class HTTPServer:
    """A non-blocking, single-threaded HTTP/1.1 server (tornado 2.x API)."""

    def __init__(
        self,
        request_callback: Callable[[HTTPRequest], Any],
        no_keep_alive: bool = False,
        io_loop: IOLoop | None = None,
        xheaders: bool = False,
        ssl_options: ssl.SSLContext | dict[str, Any] | None = None,
        *,
        config: Config | None = None,
        **settings: Any,
    ) -> None:
        """``config``: every setting at once (what the CLI passes); ``settings``:
        any of them by name (``max_body_size=1 << 20``), applied on top.

        Without ``config``, ``xheaders=True`` trusts every peer's X-Forwarded-*
        headers, as the seed did (``forwarded_allow_ips="*"``); pass
        ``forwarded_allow_ips`` to narrow it.  ``keep_alive_timeout`` is an alias
        of ``keep_alive`` (the seed's limit name).
        """
        if "keep_alive_timeout" in settings:
            settings["keep_alive"] = settings.pop("keep_alive_timeout")
        if config is None:
            # The seed's trust rule: no forwarded header unless xheaders=True,
            # then from every peer (the command line's: X-Forwarded-For/-Proto
            # from loopback, --proxy-headers).
            settings.setdefault("forwarded_allow_ips", "*")
            settings.setdefault("proxy_headers", False)
        if no_keep_alive:
            settings["keep_alive"] = 0
        if xheaders:
            settings["xheaders"] = True
        try:
            self.config: Config = make_config(config, **settings)
        except TypeError as exc:
            raise TypeError(f"HTTPServer() got an {exc}") from None
        config = self.config
        self.request_callback = request_callback
        #: a graceful stop's end (loop time) before the master's kill (None: no stop yet)
        self.stop_deadline: float | None = None
        self.io_loop = io_loop
        if ssl_options is None:
            ssl_options = options_from_config(config)
            if ssl_options and config.hooks.ssl_context is not None:
                # (the config file's gunicorn ssl_context hook makes the context)
                ssl_options = hooked_context(config, ssl_options)
        self.ssl_options = ssl_options
        self.ssl_context = server_context(ssl_options) if ssl_options else None
        #: peers whose X-Forwarded-* / X-Real-Ip and PROXY headers are trusted
        #: (None: everyone, the seed's xheaders behaviour).
        self.trusted_networks = parse_networks(config.forwarded_allow_ips)
        # Read on every connection: kept as plain attributes, derived once.
        self.no_keep_alive = config.keep_alive == 0
        #: which forwarded headers trusted peers may set: XHEADERS_ALL
        #: (--xheaders, tornado's four), XHEADERS_FORWARDED (--proxy-headers:
        #: X-Forwarded-For and -Proto, uvicorn's two) or 0
        self.xheaders = (
            XHEADERS_ALL if config.xheaders else XHEADERS_FORWARDED if config.proxy_headers else 0
        )
        self.proxy_protocol = config.proxy_protocol
        self.drain_delay = config.drain_delay
        self.ready = True
        #: request target -> built-in handler answered before the application.
        self.builtin_routes: dict[str, Callable[[HTTPRequest], Any]] = {}
        if config.health_live_path:
            self.builtin_routes[config.health_live_path] = self._answer_live
        if config.health_ready_path:
            self.builtin_routes[config.health_ready_path] = self._answer_ready
        self.observer: RequestObserver | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending_sockets: list[socket.socket] = []
        self._sockets: list[socket.socket] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._starting: set[asyncio.Future[Any]] = set()
        #: connections accepted here being set up (connect_accepted_socket)
        self._adopting: set[Coroutine[Any, Any, Any]] = set()
        self._listening_callbacks: list[Callable[[], Any]] = []
        #: HTTP connections and the long-lived sessions that took one over
        #: (WebSocket): everything a drain must close.
        self._connections: set[ServedConnection] = set()
        #: the WebSocket close code a drain sends: 1001 (Going Away) on a
        #: stop, 1012 (Service Restart) when the worker is being replaced.
        self.drain_close_code = 1001
        #: how many of the connections are WebSockets (``prefork status``)
        self.websocket_count = 0
        self._sweeper: asyncio.TimerHandle | None = None
        #: loop time the sweep next looks at every connection's deadline
        self._connections_due = 0.0
        self._started = False
        self._stopped = False
        #: --max-concurrency, --request-timeout: the requests in flight (then
        #: the observer the connections call; set_observer wraps into it).
        self._tracker: RequestTracker | None = None
        #: --max-connections, --max-concurrency: the gate that accepts (else
        #: the loop's server does).
        self._gate: AcceptGate | None = None
        if config.max_connections or config.max_concurrency or config.request_timeout:
            from prefork.worker.overload import AcceptGate, RequestTracker

            if config.max_concurrency or config.request_timeout:
                self._tracker = RequestTracker()
                self.observer = self._tracker
            if config.max_connections or config.max_concurrency:
                self._gate = AcceptGate(self, self._tracker)

    def set_observer(self, observer: RequestObserver | None) -> None:
        """Attach the process model's hooks (scoreboard, metrics, request hooks).

        Use this rather than setting :attr:`observer`: with
        ``max_concurrency`` or ``request_timeout`` the server's own request
        tracking is the observer, and passes every call on to ``observer``.
        """
        if self._tracker is not None:
            self._tracker.inner = observer
        else:
            self.observer = observer

    # -- the loop -----------------------------------------------------------------

    @property
    def asyncio_loop(self) -> asyncio.AbstractEventLoop:
        """The asyncio loop this server's connections run on."""
        if self._loop is None:
            self._loop = (self.io_loop or IOLoop.current()).asyncio_loop
        return self._loop

    # -- trust and health ---------------------------------------------------------

    def peer_trusted(self, remote_ip: str | None, is_unix: bool) -> bool:
        """May this peer speak for the client (X-Forwarded-*, PROXY)?

        Unix-socket peers are local processes allowed by the socket's file
        mode, so they are trusted.
        """
        networks = self.trusted_networks
        if networks is None or is_unix:
            return True
        try:
            address = ipaddress.ip_address(remote_ip or "")
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in networks)

    def set_not_ready(self) -> None:
        """Readiness answers 503 from now on (a drain has begun)."""
        self.ready = False

    @staticmethod
    def _answer(request: HTTPRequest, status: int, text: bytes) -> None:
        request.write_headers(
            status, [("Content-Type", "text/plain"), ("Cache-Control", "no-store")]
        )
        request.write(text)
        request.finish()

    def _answer_live(self, request: HTTPRequest) -> None:
        self._answer(request, 200, b"ok\n")

    def _answer_ready(self, request: HTTPRequest) -> None:
        if self.ready:
            self._answer(request, 200, b"ready\n")
        else:
            self._answer(request, 503, b"draining\n")

    # -- sockets ------------------------------------------------------------------

    def listen(self, port: int, address: str = "", **kwargs: Any) -> None:
        """Bind to ``port`` on ``address`` ("" = all interfaces) and serve here."""
        self.add_sockets(bind_sockets(port, address or None, **kwargs))

    def bind(
        self,
        port: int,
        address: str | None = None,
        family: int = socket.AF_UNSPEC,
        backlog: int = DEFAULT_BACKLOG,
        reuse_port: bool = False,
    ) -> None:
        """Bind sockets now; they serve once :meth:`start` is called.

        In a master started by a USR2 upgrade the listening sockets are
        inherited from the old master (``PREFORK_FDS``) instead of bound again.
        """
        inherited = _take_inherited_sockets()
        if inherited is not None:
            sockets = inherited
        else:
            sockets = bind_sockets(port, address or None, family, backlog, reuse_port=reuse_port)
        if self._started:
            self.add_sockets(sockets)
        else:
            self._pending_sockets.extend(sockets)

    def add_sockets(self, sockets: list[socket.socket]) -> None:
        """Serve connections accepted on already-listening sockets."""
        for sock in sockets:
            self.add_socket(sock)

    def add_socket(self, sock: socket.socket) -> None:
        """Serve connections accepted on one already-listening socket."""
        loop = self.asyncio_loop
        self._sockets.append(sock)
        if self._sweeper is None:
            self._schedule_sweep()
        if self._gate is not None:
            # (a limit is set: the gate accepts, only while there is room)
            self._gate.add(sock)
            if self._listening_callbacks and not self._starting:
                loop.call_soon(self._now_listening)
            return
        task = loop.create_task(
            loop.create_server(self._protocol_factory(), sock=sock, backlog=self.config.backlog)
        )
        self._starting.add(task)
        task.add_done_callback(self._server_started)

    def _server_started(self, task: asyncio.Future[Any]) -> None:
        self._starting.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            error_log.error("Cannot serve a listening socket: %s", exc)
            return
        server = task.result()
        self._servers.append(server)
        if self._stopped:
            server.close()
        elif not self._starting:
            self._now_listening()

    def _now_listening(self) -> None:
        callbacks, self._listening_callbacks = self._listening_callbacks, []
        for callback in callbacks:
            callback()

    def when_listening(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once every added socket is being served."""
        serving = self._servers or (self._gate is not None and self._gate.sockets)
        if serving and not self._starting:
            self.asyncio_loop.call_soon(callback)
        else:
            self._listening_callbacks.append(callback)

    def _protocol_factory(self) -> Callable[[], asyncio.Protocol]:
        """What serves an accepted connection.

        Listeners always accept in the clear: with TLS a :class:`TLSAcceptor`
        looks at the first bytes (a PROXY header, plain HTTP sent to the HTTPS
        port) and then starts TLS on the connection itself.
        """
        if self.ssl_context is not None:
            return self._make_tls_acceptor
        return self._make_connection

    def _make_tls_acceptor(self) -> TLSAcceptor:
        return TLSAcceptor(self, self._make_connection, self.proxy_protocol)

    def _make_connection(self) -> HTTPConnection:
        return HTTPConnection(
            None,
            None,
            self.request_callback,
            self.no_keep_alive,
            self.xheaders,
            server=self,
        )

    # -- processes ----------------------------------------------------------------

    def start(self, num_processes: int | None = 1) -> None:
        """Start serving the sockets from :meth:`bind`.

        ``1`` serves in this process.  ``0`` or ``None`` forks one worker per
        usable CPU (affinity and cgroup quota), ``n > 1`` forks ``n``.  The
        parent then never returns: it becomes the master and supervises the
        workers (restart on crash, graceful stop on TERM, ...).  In each
        worker ``start`` returns and the caller starts the IOLoop.
        """
        if self._started:
            raise RuntimeError("HTTPServer.start() called twice")
        self._started = True
        sockets, self._pending_sockets = self._pending_sockets, []
        if num_processes == 1:
            self.add_sockets(sockets)
            return
        from prefork.worker.runner import fork_and_attach

        fork_and_attach(self, sockets, num_processes or 0)

    def stop(self) -> None:
        """Stop accepting connections (idempotent); open ones carry on."""
        if self._stopped:
            return
        self._stopped = True
        if self._gate is not None:
            self._gate.close()
        for server in self._servers:
            server.close()
        for task in list(self._starting):
            task.cancel()
        for sock in self._pending_sockets:
            sock.close()
        self._pending_sockets = []

    def accept_queued(self) -> int:
        """Take the connections already queued on the listening sockets.

        Called on a graceful stop before :meth:`stop`, so that connections
        the kernel had accepted for us are answered, not reset.
        """
        # (past --max-connections / --max-concurrency too: what the kernel
        # queued for this worker is answered, never reset)
        taken = 0
        for sock in self._sockets:
            for _ in range(_MAX_DRAIN_ACCEPTS):
                try:
                    conn, _address = sock.accept()
                except OSError:  # empty queue (EAGAIN), or already closed
                    break
                conn.setblocking(False)
                taken += 1
                self._adopt(conn)
        return taken

    def _adopt(self, conn: socket.socket) -> None:
        """Serve ``conn``, a connection accepted here (not by the loop's server).

        ``loop.connect_accepted_socket`` is a coroutine that waits once (for
        ``connection_made``): it is stepped here
        through those waits rather than wrapped in a Task, which costs 2-4 µs
        more per connection (measured with uvloop; with a limit set, every
        connection comes this way).
        """
        loop = self.asyncio_loop
        coro = loop.connect_accepted_socket(self._protocol_factory(), conn)
        self._adopting.add(coro)
        self._step_adoption(coro, None)

    def _step_adoption(self, coro: Coroutine[Any, Any, Any], _awaited: Any) -> None:
        """Run ``coro`` to its next wait (a future: resumed once it is done) or its end."""
        try:
            awaited = coro.send(None)
        except StopIteration:
            self._adopted(coro)
        except Exception as exc:
            # (a TLS handshake that failed or timed out: that connection only)
            error_log.debug("Setting up an accepted connection failed: %r", exc)
            self._adopted(coro)
        else:
            if awaited is None:  # (a bare yield: a turn of the loop)
                self.asyncio_loop.call_soon(self._step_adoption, coro, None)
                return
            awaited._asyncio_future_blocking = False  # (as a Task does)
            awaited.add_done_callback(functools.partial(self._step_adoption, coro))

    def _adopted(self, coro: Coroutine[Any, Any, Any]) -> None:
        self._adopting.discard(coro)
        gate = self._gate
        if gate is not None and gate.paused:
            gate.check()

    @property
    def accepting_queued(self) -> bool:
        """True while connections taken by :meth:`accept_queued` are being set up."""
        return bool(self._adopting)

    def drain(self) -> None:
        """Graceful stop: answer what is queued and in flight, then close.

        Busy connections close after their current response, which says
        ``Connection: close``; idle keep-alive connections get a short grace
        (``drain_grace``) in which a request that was already on its way is
        still answered, then close.
        """
        self.ready = False
        self.accept_queued()
        self.stop()
        for conn in list(self._connections):
            conn.start_drain()

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def close_connections_now(self) -> None:
        """Fast stop: close every connection at once."""
        for conn in list(self._connections):
            conn.close()

    # -- bookkeeping (called by connections) ----------------------------------------

    def _connection_opened(self, conn: ServedConnection) -> None:
        replaces = getattr(conn, "replaces", None)
        if replaces is not None:  # after a TLS handshake: one client, counted once
            conn.replaces = None  # type: ignore[union-attr,attr-defined]
            replaces.handed_over()
            if self._gate is not None:
                self._gate.fresh.discard(replaces)  # (the new one is fresh in its place)
        self._connections.add(conn)
        if getattr(conn, "is_websocket", False):
            self.websocket_count += 1
        if self._gate is not None:
            self._gate.connection_opened(conn)
        if self._stopped:
            conn.start_drain()
        observer = self.observer
        if observer is not None:
            observer.connections_changed(len(self._connections), self.websocket_count)

    def _connection_closed(self, conn: ServedConnection) -> None:
        if conn in self._connections and getattr(conn, "is_websocket", False):
            self.websocket_count -= 1
        self._connections.discard(conn)
        observer = self.observer
        if observer is not None:
            observer.connections_changed(len(self._connections), self.websocket_count)
        if self._gate is not None:
            self._gate.connection_closed(conn)

    # -- timeouts -------------------------------------------------------------------

    def _sweep_interval(self) -> float:
        config = self.config
        shortest = min(
            config.header_timeout,
            config.body_timeout,
            config.keep_alive or config.header_timeout,
            config.drain_grace,
        )
        return max(0.05, min(1.0, shortest / 4))

    def _schedule_sweep(self) -> None:
        interval = self._sweep_interval()
        if self.config.request_timeout:
            # The oldest requests are looked at more often than the
            # connections: a tenth of the timeout, when under a second.
            interval = max(0.05, min(interval, self.config.request_timeout / 10))
        self._sweeper = self.asyncio_loop.call_later(interval, self._sweep)

    def _sweep(self) -> None:
        """Close connections whose deadline has passed (one timer per server),
        and give up requests in flight past ``request_timeout``; bring the
        responses' Date up to now (at least once a second)."""
        httpdate.refresh()
        now = self.asyncio_loop.time()
        if now >= self._connections_due:
            self._connections_due = now + self._sweep_interval() - 0.01
            for conn in list(self._connections):
                deadline = conn.deadline
                if deadline and deadline <= now:
                    try:
                        conn.on_timeout()
                    except Exception:
                        error_log.exception("Error closing a timed-out connection")
        if self._tracker is not None and self.config.request_timeout:
            self._time_out_requests(self._tracker)
        if self._stopped and not self._connections:
            self._sweeper = None
            return
        self._schedule_sweep()

    def _time_out_requests(self, tracker: RequestTracker) -> None:
        """--request-timeout: give up the requests in flight for too long."""
        for request, age in tracker.expired(self.config.request_timeout):
            conn = request.connection
            try:
                if conn is not None:
                    conn.request_timed_out(request, age)
            except Exception:
                error_log.exception("Error giving up a timed-out request")
            # (its connection finished it; if it could not, it is forgotten,
            # its on_timeout too: see RequestTracker.request_finished)
            tracker.in_flight.pop(request, None)
            request.on_timeout = None


_inherited_taken = False


def _take_inherited_sockets() -> list[socket.socket] | None:
    """The sockets a re-executed master inherited, once per process (else None)."""
    global _inherited_taken
    if not os.environ.get(INHERIT_ENV):
        return [] if _inherited_taken else None
    _inherited_taken = True
    return sockets_from_environment()
