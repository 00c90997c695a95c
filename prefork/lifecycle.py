"""The worker's side of the process-model contract, on an asyncio event loop.

Every kind of worker (the HTTP server, a test app) does the same things to be
supervised well, so they live here, free of HTTP:

* die with the master: ``PR_SET_PDEATHSIG(SIGTERM)`` then, at once, a
  ``getppid()`` check (the master may have died before the prctl), and the
  same check on every heartbeat;
* a heartbeat written *by the event loop* (a loop timer, not a thread), so a
  worker whose loop is blocked stops beating and is seen as hung;
* signals: TERM = graceful stop, QUIT and INT = fast stop (Ctrl-C reaches the
  whole process group), USR1 = reopen log files, ABRT = dump every thread's
  Python traceback to stderr even if the loop is blocked (``faulthandler``),
  after which the process ends; the master sends ABRT to a hung worker,
  then SIGKILL;
* readiness: ``mark_ready()`` flips the slot and wakes the master through
  the notify pipe, which gates reloads and recycles;
* ``max_requests``: ``request_done()`` counts, and at the limit asks the
  master to recycle this worker. The master starts the replacement, waits
  until it is ready, then sends TERM, which calls ``graceful_stop``. That
  way capacity never dips and at most one worker recycles at a time.
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import traceback
from collections.abc import Callable
from typing import Any

from prefork.process import (
    reopen_log_files,
    run_exit_hook,
    set_parent_death_signal,
    term_received_during_boot,
)
from prefork.scoreboard import WorkerContext

__all__ = ["WorkerLifecycle", "install", "install_abort_hook", "report_waiting_tasks_after"]

log = logging.getLogger("prefork.worker")


class WorkerLifecycle:
    """What ``install`` returns: the hooks a worker calls as it runs."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        ctx: WorkerContext,
        graceful_stop: Callable[[], None],
        fast_stop: Callable[[], None],
        reopen_logs: Callable[[], None] | None,
    ) -> None:
        self.loop = loop
        self.ctx = ctx
        self._graceful_stop = graceful_stop
        self._fast_stop = fast_stop
        self._reopen_logs = reopen_logs
        self._requests = 0
        self._recycle_asked = False
        self._timer: asyncio.TimerHandle | None = None
        self.stopping: str | None = None  # None, "graceful" or "fast"
        #: called once if the master dies while a graceful stop is under way
        #: (the worker's --drain-delay is for a load balancer the master's
        #: stop informs: without the master it ends at once)
        self.on_master_gone: Callable[[], None] | None = None

    # -- called by the worker -------------------------------------------------
    def mark_ready(self) -> None:
        """The worker is accepting: tell the master now rather than at its next tick."""
        self.ctx.slot.set_ready()
        self._notify()

    def request_done(self) -> None:
        """Count one finished request; at ``max_requests`` ask the master for a recycle.

        The master answers with TERM once the replacement is ready (that TERM
        calls ``graceful_stop``). If the master is gone, stop at once instead.
        """
        self._requests += 1
        limit = self.ctx.max_requests
        if limit <= 0 or self._recycle_asked or self._requests < limit:
            return
        self._recycle_asked = True
        if self.ctx.notify_fd < 0 or os.getppid() != self.ctx.master_pid:
            self.graceful_stop()
            return
        self.ctx.slot.request_recycle()
        self._notify()

    def graceful_stop(self) -> None:
        """Start a graceful stop once; later calls do nothing."""
        if self.stopping is not None:
            return
        self.stopping = "graceful"
        self.ctx.slot.set_draining()
        self._graceful_stop()

    def fast_stop(self) -> None:
        """Start a fast stop (also after a graceful one began); later calls do nothing."""
        if self.stopping == "fast":
            return
        self.stopping = "fast"
        self.ctx.slot.set_draining()
        self._fast_stop()

    def close(self) -> None:
        """Stop the heartbeat and remove the signal handlers (before the loop closes)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sig in _HANDLED:
            try:
                self.loop.remove_signal_handler(sig)
            except (RuntimeError, ValueError):
                pass

    # -- internals -------------------------------------------------------------
    def _notify(self) -> None:
        if self.ctx.notify_fd < 0:
            return
        try:
            os.write(self.ctx.notify_fd, b"!")
        except OSError:  # pipe full (the master will see the slot on its tick) or gone
            pass

    def _beat(self) -> None:
        self.ctx.slot.heartbeat()
        if os.getppid() != self.ctx.master_pid:
            if self.stopping is None:
                log.warning(
                    "worker %d: master %d is gone, stopping", os.getpid(), self.ctx.master_pid
                )
                self.graceful_stop()
            elif self.on_master_gone is not None:
                callback, self.on_master_gone = self.on_master_gone, None
                callback()
        self._timer = self.loop.call_later(self.ctx.heartbeat_interval, self._beat)

    def _on_usr1(self) -> None:
        if self._reopen_logs is not None:
            self._reopen_logs()
        else:
            reopen_log_files()
        # In the new file: the operator (and logrotate's tests) can see each
        # worker has let go of the old one.
        log.info("worker %d: reopened its log files (SIGUSR1)", os.getpid())


_HANDLED = (signal.SIGTERM, signal.SIGQUIT, signal.SIGINT, signal.SIGUSR1)


def enable_hang_tracebacks() -> None:
    """The master's SIGABRT to a hung worker prints every thread's traceback.

    Called as the worker starts (a hang while importing the application or
    in its lifespan startup is the likeliest kind at boot) and again by
    :func:`install`.  SIGABRT cannot be ``faulthandler.register()``ed;
    ``enable()`` covers it (and SIGSEGV & co.): the tracebacks, then the
    default action.
    """
    if faulthandler.is_enabled():
        return
    try:
        faulthandler.enable(all_threads=True)
    except (RuntimeError, ValueError, AttributeError, OSError):
        log.warning("worker %d: no usable stderr, hang tracebacks are lost", os.getpid())


def report_waiting_tasks_after(
    loop: asyncio.AbstractEventLoop, boot_timeout: float, what: str
) -> asyncio.TimerHandle:
    """Log where the loop's tasks wait if ``what`` is still running well
    before ``boot_timeout`` (cancel the handle once it is done).

    A startup that awaits for ever (a database that never answers) leaves
    the loop idle: the SIGABRT traceback at ``--boot-timeout`` then shows
    only the loop waiting in ``run_until_complete``, never the await the
    application is stuck on.  The tasks' own stacks do.
    """
    delay = max(boot_timeout * 0.5, boot_timeout - 5.0)

    def report() -> None:
        lines = []
        for task in asyncio.all_tasks(loop):
            frames = _await_chain(task.get_coro())
            if not any(_is_applications(frame) for frame in frames):
                continue  # (prefork's own: the lifespan's driver, its queue)
            chain = traceback.StackSummary.extract((frame, frame.f_lineno) for frame in frames)
            lines.append(f"  task {task.get_name()}:\n" + "".join(chain.format()).rstrip("\n"))
        log.warning(
            "worker %d: %s still running after %.1f s (--boot-timeout %g); its tasks wait at:\n%s",
            os.getpid(),
            what,
            delay,
            boot_timeout,
            "\n".join(lines) or "  (no task of the application's)",
        )

    return loop.call_later(delay, report)


_NOT_APPLICATION = (
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
    os.path.dirname(os.path.abspath(asyncio.__file__)) + os.sep,
)


def _is_applications(frame: Any) -> bool:
    return not os.path.abspath(frame.f_code.co_filename).startswith(_NOT_APPLICATION)


def _await_chain(coro: Any) -> list[Any]:
    """The frames of a suspended coroutine and of everything it awaits, in
    turn (``Task.get_stack`` gives only the outermost one)."""
    frames = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return frames


def install(
    loop: asyncio.AbstractEventLoop,
    ctx: WorkerContext,
    *,
    graceful_stop: Callable[[], None],
    fast_stop: Callable[[], None],
    reopen_logs: Callable[[], None] | None = None,
) -> WorkerLifecycle:
    """Wire a worker's event loop to the master. Call it in the worker, on its loop's thread.

    ``graceful_stop``: stop accepting (after accepting what is queued), finish
    in-flight requests with ``Connection: close``, close idle keep-alive
    connections after a short grace, then let the process exit.
    ``fast_stop``: close everything now and exit. Each is called at most once.
    ``reopen_logs`` defaults to reopening every ``logging.FileHandler``.
    Call ``mark_ready()`` on the result once the sockets are being served.
    """
    lc = WorkerLifecycle(loop, ctx, graceful_stop, fast_stop, reopen_logs)
    # The handlers change hands with the signals blocked, until the loop
    # runs: a TERM in between stays pending in the kernel and reaches the
    # loop's handler, instead of being lost.  (uvloop writes a signal to its
    # wakeup fd only once run_forever() has set it up; a TERM that came
    # after add_signal_handler() and before that was dropped, and the
    # worker, just booted, served on until the master's SIGKILL.)  Blocking
    # also runs the boot-time handler of a TERM already received (CPython
    # checks pending signals in pthread_sigmask), so the check below sees it.
    signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
    loop.call_soon(signal.pthread_sigmask, signal.SIG_UNBLOCK, _HANDLED)
    set_parent_death_signal(signal.SIGTERM)
    enable_hang_tracebacks()
    loop.add_signal_handler(signal.SIGTERM, lc.graceful_stop)
    loop.add_signal_handler(signal.SIGQUIT, lc.fast_stop)
    loop.add_signal_handler(signal.SIGINT, lc.fast_stop)
    loop.add_signal_handler(signal.SIGUSR1, lc._on_usr1)
    ctx.slot.heartbeat()
    lc._timer = loop.call_later(ctx.heartbeat_interval, lc._beat)
    if term_received_during_boot():
        loop.call_soon(lc.graceful_stop)
    if os.getppid() != ctx.master_pid:
        # The master died before PR_SET_PDEATHSIG was set: the signal will never come.
        loop.call_soon(lc.graceful_stop)
    return lc


def install_abort_hook(hook: Callable[[], object]) -> None:
    """On SIGABRT (the master's "you are hung"): tracebacks, ``hook()``, then abort.

    Only used when a ``worker_abort`` server hook exists.  It is a Python
    signal handler, so it runs only if the loop is stuck in Python code (a
    sleep, a busy loop, a lock wait): a worker stuck inside C code stays
    silent and the master's SIGKILL follows.  Without the hook,
    ``faulthandler`` dumps the tracebacks even then.
    """

    def on_abort(signum: int, frame: object) -> None:
        try:
            faulthandler.dump_traceback(all_threads=True)
        except (RuntimeError, ValueError, OSError):
            pass
        try:
            hook()
            run_exit_hook()  # worker_exit, after worker_abort (as gunicorn's)
        finally:
            signal.signal(signal.SIGABRT, signal.SIG_DFL)
            os.abort()

    signal.signal(signal.SIGABRT, on_abort)
