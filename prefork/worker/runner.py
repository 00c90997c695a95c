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

import logging
import os
import socket
import time
from typing import TYPE_CHECKING

from prefork.lifecycle import WorkerLifecycle, install
from prefork.scoreboard import WorkerContext
from prefork.worker.httpserver import HTTPServer, RequestObserver
from prefork.worker.ioloop import IOLoop

if TYPE_CHECKING:
    from prefork.scoreboard import Slot
    from prefork.worker.request import HTTPRequest

__all__ = ["attach", "fork_and_attach"]

log = logging.getLogger("prefork.worker")

# How often a draining worker checks whether its last connection is gone.
_DRAIN_POLL = 0.02


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

    def request_finished(self, request: HTTPRequest) -> None:
        self.slot.request_finished()
        recycling = self._recycling
        if recycling is not None:
            recycling.request_done()

    def connections_changed(self, count: int) -> None:
        self.slot.set_connections(count)


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
    observer = _SlotObserver(ctx.slot)
    server.observer = observer

    def graceful_stop() -> None:
        log.info("worker %d (pid %d): graceful stop", ctx.index, os.getpid())
        server.set_not_ready()
        # The master kills at graceful_timeout; close what is left just before.
        give_up = aloop.time() + max(ctx.graceful_timeout - 0.5, 0.1)
        if server.drain_delay > 0:
            # Keep serving (readiness says 503) so the load balancer takes
            # this instance out before its listeners close.
            aloop.call_later(server.drain_delay, drain, give_up)
        else:
            drain(give_up)

    def drain(give_up: float) -> None:
        server.drain()

        def check() -> None:
            if server.connection_count == 0 and not server.accepting_queued:
                loop.stop()
            elif aloop.time() >= give_up:
                log.warning(
                    "worker %d: %d connection(s) still open at graceful_timeout; closing them",
                    ctx.index,
                    server.connection_count,
                )
                server.close_connections_now()
                loop.stop()
            else:
                aloop.call_later(_DRAIN_POLL, check)

        aloop.call_later(_DRAIN_POLL, check)

    def fast_stop() -> None:
        server.stop()
        server.close_connections_now()
        loop.stop()

    lifecycle = install(aloop, ctx, graceful_stop=graceful_stop, fast_stop=fast_stop)
    observer.set_lifecycle(lifecycle)
    server.when_listening(lifecycle.mark_ready)
    return lifecycle


def fork_and_attach(server: HTTPServer, sockets: list[socket.socket], num_processes: int) -> None:
    """``HTTPServer.start(n)``: become the master here, a worker in each child.

    In the parent this never returns (the master exits when it stops).  In
    each child it returns once the server is attached to a fresh IOLoop.
    """
    from prefork.master import Master

    started = time.monotonic()
    master = Master(sockets=sockets, workers=num_processes)
    ctx = master.run()
    # A fresh loop in the child: nothing from the parent's process may be reused.
    IOLoop.clear_instance()
    server.io_loop = None
    server._loop = None
    server.add_sockets(ctx.sockets)
    attach(server, ctx)
    log.debug("worker %d forked in %.3f s", ctx.index, time.monotonic() - started)
