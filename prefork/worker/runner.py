"""Run an HTTPServer as a supervised worker of the prefork master.

This joins the two halves: the master hands each forked worker a
:class:`~prefork.scoreboard.WorkerContext`; :func:`attach` wires an
:class:`HTTPServer` to it -- the scoreboard slot counts requests and
connections, the worker's lifecycle (heartbeat, signals, parent death) is
installed on the server's loop, the worker reports ready once its sockets are
served, and a graceful stop drains the server and then stops the IOLoop, so
that ``IOLoop.instance().start()`` returns in the application's code.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefork.hooks import HookRequest, HookResponse, WorkerView, call_hook, worker_view
from prefork.lifecycle import WorkerLifecycle, install, install_abort_hook
from prefork.scoreboard import WorkerContext
from prefork.settings import Config
from prefork.statsd import StatsdClient
from prefork.statsd import close_all as close_statsd
from prefork.statsd import start as start_statsd
from prefork.worker import accesslog
from prefork.worker.httpserver import HTTPServer, RequestObserver
from prefork.worker.ioloop import IOLoop

if TYPE_CHECKING:
    from prefork.scoreboard import Slot
    from prefork.worker.request import HTTPRequest

__all__ = ["attach", "fork_and_attach"]

log = logging.getLogger("prefork.worker")

# How often a draining worker checks whether its last connection is gone.
_DRAIN_POLL = 0.02
# The clock of HTTPRequest._start_time (request durations in the metrics).
_wall_clock = time.time


class _SlotObserver(RequestObserver):
    """Reports a server's requests and connections into a scoreboard slot."""

    __slots__ = ("slot", "lifecycle", "_recycling")

    def __init__(self, slot: Slot, lifecycle: WorkerLifecycle | None = None) -> None:
        self.slot = slot
        self.set_lifecycle(lifecycle)

    def set_lifecycle(self, lifecycle: WorkerLifecycle | None) -> None:
        """Count requests in ``lifecycle`` too, when it recycles at max_requests.

        Without max_requests the slot's count is the only one needed, and a
        request is spared the call.
        """
        self.lifecycle = lifecycle
        recycles = lifecycle is not None and lifecycle.ctx.max_requests > 0
        self._recycling = lifecycle if recycles else None

    def request_started(self, request: HTTPRequest) -> None:
        self.slot.request_started(request.method + " " + request.uri)

    def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
        self.slot.request_finished()
        recycling = self._recycling
        if recycling is not None:
            recycling.request_done()

    def connections_changed(self, count: int, websockets: int) -> None:
        self.slot.set_connections(count)
        self.slot.set_websockets(websockets)


class _MetricsObserver(_SlotObserver):
    """With metrics on: also requests in flight, by method and status class,
    body bytes and durations (``Slot.request_begun``/``request_done``), and
    requests refused before the application saw them."""

    __slots__ = ()

    def request_started(self, request: HTTPRequest) -> None:
        self.slot.request_begun(request.method + " " + request.uri)

    def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
        stream = request.body_stream
        self.slot.request_done(
            request.method,
            status,
            len(request.body) if stream is None else stream.received,
            size,
            _wall_clock() - request._start_time,
        )
        recycling = self._recycling
        if recycling is not None:
            recycling.request_done()

    def request_rejected(self, status: int) -> None:
        self.slot.request_rejected(status)


class _HookedObserver(_SlotObserver):
    """A slot observer that also calls ``pre_request`` / ``post_request``.

    Used only when the config file defines one of them, so that a server
    without request hooks pays nothing for them.
    """

    __slots__ = ("view", "config")

    def __init__(self, slot: Slot, view: WorkerView, config: Config) -> None:
        super().__init__(slot)
        self.view = view
        self.config = config

    def request_started(self, request: HTTPRequest) -> None:
        super().request_started(request)
        # (one req for both hooks: what pre_request stores on it, post_request finds)
        request.hook_request = req = HookRequest(request)
        call_hook(self.config, "pre_request", self.view, req)

    def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
        super().request_finished(request, status, size)  # worker.nr counts this one
        req, request.hook_request = request.hook_request, None  # (no cycle left to collect)
        if self.config.hooks.post_request is not None:
            environ = request.wsgi_environ if request.wsgi_environ is not None else {}
            resp = HookResponse(status, size, request.response_headers)
            call_hook(
                self.config, "post_request", self.view, req or HookRequest(request), environ, resp
            )


def attach(
    server: HTTPServer, ctx: WorkerContext, io_loop: IOLoop | None = None
) -> WorkerLifecycle:
    """Make ``server`` a supervised worker serving ``ctx.sockets``.

    Call in the forked worker, before starting the IOLoop.  On TERM the
    server answers what is queued and in flight, closes idle keep-alive
    connections after a short grace, and stops the loop once the last
    connection is gone (or just before ``graceful_timeout``, when the
    master would kill it anyway).
    """
    loop = io_loop or IOLoop.current()
    aloop = loop.asyncio_loop
    config = ctx.config
    view = worker_view(ctx)
    # (gunicorn's worker.wsgi / worker.app: the application, where there is one)
    app = getattr(server.request_callback, "app", None)
    view.wsgi = view.app = app if app is not None else server.request_callback
    view.sockets = list(ctx.sockets)
    hooks = config.hooks
    observer = _observer(ctx, view)
    statsd = start_statsd(config, aloop.call_later) if config.statsd_host else None
    server.set_observer(observer if statsd is None else _StatsdObserver(observer, statsd))
    if config.metrics_path:
        server.builtin_routes[config.metrics_path] = _metrics_route(ctx)

    def graceful_stop() -> None:
        view.alive = False
        log.info("worker %d (pid %d): graceful stop", ctx.index, os.getpid())
        server.set_not_ready()
        # WebSocket clients learn why: replaced (1012) or gone for good (1001).
        server.drain_close_code = 1012 if ctx.slot.restarting else 1001
        # The master kills at graceful_timeout: close what is left just before,
        # keeping the interface's shutdown its time (ASGI: the cancelled
        # applications' cleanup and the lifespan shutdown; at most a quarter).
        now = aloop.time()
        server.stop_deadline = now + max(ctx.graceful_timeout - 0.5, 0.1)
        reserve = getattr(server.request_callback, "shutdown_reserve", 0.0)
        reserve = min(reserve, ctx.graceful_timeout / 4)
        give_up = max(server.stop_deadline - reserve, now + 0.1)
        if server.drain_delay > 0 and os.getppid() == ctx.master_pid:
            # Keep serving (readiness says 503) so the load balancer takes
            # this instance out before its listeners close.  Not without the
            # master: its death must free the port at once (see on_master_gone).
            delayed.append(aloop.call_later(server.drain_delay, drain, give_up))
            delayed.append(give_up)
        else:
            drain(give_up)

    #: the --drain-delay's timer and its give_up time, while it runs
    delayed: list[Any] = []

    def drain_now() -> None:
        """The master died during the drain delay: the delay ends now."""
        if delayed:
            handle, give_up = delayed
            handle.cancel()
            log.warning("worker %d: master gone: draining now", ctx.index)
            drain(give_up)

    def drain(give_up: float) -> None:
        delayed.clear()
        server.drain()

        def check() -> None:
            if server.connection_count == 0 and not server.accepting_queued:
                loop.stop()
            elif aloop.time() >= give_up:
                log.warning(
                    "worker %d: %d connection(s) still open at graceful_timeout "
                    "(less %.1f s kept for the shutdown); closing them",
                    ctx.index,
                    server.connection_count,
                    (server.stop_deadline or give_up) - give_up,
                )
                server.close_connections_now()
                loop.stop()
            else:
                aloop.call_later(_DRAIN_POLL, check)

        aloop.call_later(_DRAIN_POLL, check)

    def fast_stop() -> None:
        view.alive = False
        call_hook(config, "worker_int", view)
        server.stop()
        server.close_connections_now()
        loop.stop()

    lifecycle = install(aloop, ctx, graceful_stop=graceful_stop, fast_stop=fast_stop)
    lifecycle.on_master_gone = drain_now
    observer.set_lifecycle(lifecycle)
    if hooks.worker_abort is not None:
        install_abort_hook(lambda: call_hook(config, "worker_abort", view))

    def ready() -> None:
        call_hook(config, "post_worker_init", view)
        lifecycle.mark_ready()

    server.when_listening(ready)
    return lifecycle


class _HookedMetricsObserver(_HookedObserver, _MetricsObserver):
    __slots__ = ()


class _StatsdObserver(RequestObserver):
    """``--statsd-host``: each response counted for statsd (see
    :mod:`prefork.statsd`), then passed on to the slot observer."""

    __slots__ = ("inner", "client")

    def __init__(self, inner: _SlotObserver, client: StatsdClient) -> None:
        self.inner = inner
        self.client = client

    def request_started(self, request: HTTPRequest) -> None:
        self.inner.request_started(request)

    def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
        self.client.request(status, _wall_clock() - request._start_time)
        self.inner.request_finished(request, status, size)

    def connections_changed(self, count: int, websockets: int) -> None:
        self.inner.connections_changed(count, websockets)

    def request_rejected(self, status: int) -> None:
        self.client.request(status, 0.0)  # (gunicorn counts its refusals as requests too)
        self.inner.request_rejected(status)


def _observer(ctx: WorkerContext, view: WorkerView) -> _SlotObserver:
    """The slot observer: with request hooks or not, with metrics or not.

    Per-request metrics cost 0.7-1 µs of CPU per request (bench/micro.py,
    ``connection+scoreboard+metrics``): only paid when something serves them
    (--metrics-path, --metrics-bind).
    """
    config = ctx.config
    hooked = config.hooks.pre_request is not None or config.hooks.post_request is not None
    if config.metrics_path or config.metrics_bind:
        if hooked:
            return _HookedMetricsObserver(ctx.slot, view, config)
        return _MetricsObserver(ctx.slot)
    return _HookedObserver(ctx.slot, view, config) if hooked else _SlotObserver(ctx.slot)


def _metrics_route(ctx: WorkerContext) -> Callable[[HTTPRequest], None]:
    """``--metrics-path``: every worker's figures from the scoreboard, then the
    application's prometheus_client metrics (answered before the application)."""
    from prefork import appmetrics, metrics

    board = ctx.scoreboard

    def answer(request: HTTPRequest) -> None:
        if board is None:
            status, body = 503, b"no scoreboard in this worker\n"
        else:
            status, body = 200, metrics.render(board, ctx.sockets)
            try:
                body += appmetrics.render()
            except Exception:
                log.exception("application metrics (prometheus_client) failed")
        request.write_headers(
            status, [("Content-Type", metrics.CONTENT_TYPE), ("Cache-Control", "no-store")]
        )
        request.write(body)
        request.finish()

    return answer


def fork_and_attach(server: HTTPServer, sockets: list[socket.socket], num_processes: int) -> None:
    """``HTTPServer.start(n)``: become the master here, a worker in each child.

    In the parent this never returns (the master exits when it stops).  In
    each child it returns once the server is attached to a fresh IOLoop.
    """
    from prefork import process
    from prefork.master import Master

    started = time.monotonic()
    master = Master(sockets=sockets, config=server.config, workers=num_processes)
    ctx = master.run()
    # (this child exits through the interpreter: the batched access log's
    # pending lines, whether or not its handler is still on logging's list;
    # registered first, so it runs after the worker_exit hook)
    atexit.register(accesslog.close)
    atexit.register(close_statsd)  # (--statsd-host: the last second's figures)
    view = worker_view(ctx)
    process.set_exit_hook(lambda: call_hook(ctx.config, "worker_exit", master, view))
    atexit.register(process.run_exit_hook)
    # A fresh loop in the child: nothing from the parent's process may be reused.
    IOLoop.clear_instance()
    server.io_loop = None
    server._loop = None
    server.add_sockets(ctx.sockets)
    attach(server, ctx)
    log.debug("worker %d forked in %.3f s", ctx.index, time.monotonic() - started)
