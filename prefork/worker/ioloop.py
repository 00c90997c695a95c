"""The classic IOLoop API as a thin face over an asyncio event loop.

Seed code calls ``IOLoop.instance().start()``, ``add_timeout`` and
``add_handler``; modern code wants asyncio.  One asyncio loop per process
serves both: the HTTP connections are asyncio Protocols driven by it directly
(the fast path), and this class only translates the classic calls.

uvloop is used when it is installed, unless ``PREFORK_UVLOOP=0`` is set in
the environment or :meth:`IOLoop.configure` says otherwise.

Nothing here may run in a pre-fork master before it forks: a loop created
before ``fork()`` would be shared by every child (tornado's oldest trap).
:meth:`IOLoop.initialized` lets the master refuse that with a clear error.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["IOLoop", "PeriodicCallback", "new_event_loop", "preload_event_loop_module"]

log = logging.getLogger("prefork.error")

_use_uvloop: bool | None = None


def _uvloop_wanted() -> bool:
    if _use_uvloop is not None:
        return _use_uvloop
    return os.environ.get("PREFORK_UVLOOP", "1").lower() not in ("0", "false", "no", "off")


def preload_event_loop_module() -> None:
    """Import uvloop (when it will be used) without creating a loop.

    A pre-fork master calls this so that its workers inherit the module
    instead of each importing it after the fork.
    """
    if _uvloop_wanted():
        try:
            import uvloop  # noqa: F401
        except ImportError:
            pass


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new asyncio loop: uvloop's when installed and wanted."""
    if _uvloop_wanted():
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class IOLoop:
    """A level-triggered I/O loop with the tornado 2.x method names."""

    NONE = 0
    READ = 0x001
    WRITE = 0x004
    ERROR = 0x018

    _instance: IOLoop | None = None
    _instance_lock = threading.Lock()

    def __init__(self, asyncio_loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.asyncio_loop = asyncio_loop or new_event_loop()
        self._handlers: dict[int, tuple[Callable[[int, int], Any], int]] = {}
        self._running = False

    # -- the process-wide instance ------------------------------------------

    @classmethod
    def instance(cls) -> IOLoop:
        """The process-wide loop, created on first use."""
        if cls._instance is None:
            with cls._instance_lock:
                if cls._instance is None:
                    cls._instance = cls()
        return cls._instance

    @classmethod
    def current(cls) -> IOLoop:
        """The same as :meth:`instance` (the modern name)."""
        return cls.instance()

    @classmethod
    def initialized(cls) -> bool:
        """Whether the process-wide loop exists (checked before forking)."""
        return cls._instance is not None

    def install(self) -> None:
        """Make this loop the process-wide instance (it must not exist yet)."""
        if IOLoop._instance is not None:
            raise RuntimeError("an IOLoop instance already exists in this process")
        IOLoop._instance = self

    @classmethod
    def clear_instance(cls) -> None:
        """Forget the process-wide loop (a forked child starts afresh)."""
        cls._instance = None

    @staticmethod
    def configure(use_uvloop: bool | None) -> None:
        """Choose the loop implementation for loops created from now on.

        ``True``: uvloop when installed; ``False``: asyncio's own loop;
        ``None``: decided by ``PREFORK_UVLOOP`` (default: uvloop).
        """
        global _use_uvloop
        _use_uvloop = use_uvloop

    # -- running -------------------------------------------------------------

    def start(self) -> None:
        """Run until :meth:`stop` is called."""
        asyncio.set_event_loop(self.asyncio_loop)
        self._running = True
        try:
            self.asyncio_loop.run_forever()
        finally:
            self._running = False

    def stop(self) -> None:
        """Stop the loop after the current iteration (safe from any thread)."""
        loop = self.asyncio_loop
        if loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.stop()
        else:
            loop.call_soon_threadsafe(loop.stop)

    def running(self) -> bool:
        return self._running

    def close(self, all_fds: bool = False) -> None:
        """Free the loop; with ``all_fds`` also close the registered fds."""
        for fd in list(self._handlers):
            self.remove_handler(fd)
            if all_fds:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.asyncio_loop.close()
        if IOLoop._instance is self:
            IOLoop._instance = None

    @staticmethod
    def time() -> float:
        """The clock ``add_timeout`` deadlines are measured on."""
        return time.time()

    # -- callbacks and timeouts ---------------------------------------------

    def add_callback(self, callback: Callable[..., Any], *args: Any) -> None:
        """Run ``callback`` on the next iteration; safe from any thread."""
        self.asyncio_loop.call_soon_threadsafe(self._run_callback, callback, args)

    def _run_callback(self, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        try:
            callback(*args)
        except Exception:
            self.handle_callback_exception(callback)

    def handle_callback_exception(self, callback: Callable[..., Any]) -> None:
        """Log an exception from a callback; the loop keeps running."""
        log.error("Exception in callback %r", callback, exc_info=True)

    def add_timeout(
        self,
        deadline: float | datetime.timedelta,
        callback: Callable[..., Any],
        *args: Any,
    ) -> asyncio.TimerHandle:
        """Run ``callback`` at ``deadline`` (a ``time.time()`` value or a timedelta)."""
        if isinstance(deadline, datetime.timedelta):
            delay = deadline.total_seconds()
        elif isinstance(deadline, (int, float)):
            delay = deadline - time.time()
        else:
            raise TypeError(f"unsupported deadline {deadline!r}")
        return self.call_later(delay, callback, *args)

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any
    ) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds."""
        return self.asyncio_loop.call_later(max(delay, 0), self._run_callback, callback, args)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        """Run ``callback(*args)`` at ``when`` on the :meth:`time` clock."""
        return self.add_timeout(when, callback, *args)

    def remove_timeout(self, timeout: asyncio.TimerHandle) -> None:
        """Cancel a timeout returned by :meth:`add_timeout` or :meth:`call_later`."""
        timeout.cancel()

    # -- file descriptors ------------------------------------------------------

    def add_handler(self, fd: Any, handler: Callable[[Any, int], Any], events: int) -> None:
        """Call ``handler(fd, events)`` whenever ``fd`` is ready for ``events``."""
        fileno = fd if isinstance(fd, int) else fd.fileno()
        if fileno in self._handlers:
            raise ValueError(f"fd {fileno} already registered")
        self._handlers[fileno] = (lambda f, e: handler(fd, e), 0)
        self._set_events(fileno, events)

    def update_handler(self, fd: Any, events: int) -> None:
        """Change the events ``fd`` is watched for."""
        fileno = fd if isinstance(fd, int) else fd.fileno()
        if fileno not in self._handlers:
            raise ValueError(f"fd {fileno} is not registered")
        self._set_events(fileno, events)

    def remove_handler(self, fd: Any) -> None:
        """Stop watching ``fd`` (pending events for it are dropped)."""
        fileno = fd if isinstance(fd, int) else fd.fileno()
        entry = self._handlers.pop(fileno, None)
        if entry is None:
            return
        # The fd may already be closed (tornado allows closing first): the
        # loop's bookkeeping for it goes all the same.
        try:
            if entry[1] & self.READ:
                self.asyncio_loop.remove_reader(fileno)
        except OSError:
            pass
        try:
            if entry[1] & self.WRITE:
                self.asyncio_loop.remove_writer(fileno)
        except OSError:
            pass

    def _set_events(self, fileno: int, events: int) -> None:
        handler, old = self._handlers[fileno]
        loop = self.asyncio_loop
        # asyncio reports errors and hang-ups as readiness of whatever is
        # watched, so ERROR is implied, as it was with epoll.
        if events & self.READ and not old & self.READ:
            loop.add_reader(fileno, self._dispatch, fileno, self.READ)
        elif not events & self.READ and old & self.READ:
            loop.remove_reader(fileno)
        if events & self.WRITE and not old & self.WRITE:
            loop.add_writer(fileno, self._dispatch, fileno, self.WRITE)
        elif not events & self.WRITE and old & self.WRITE:
            loop.remove_writer(fileno)
        self._handlers[fileno] = (handler, events)

    def _dispatch(self, fileno: int, event: int) -> None:
        entry = self._handlers.get(fileno)
        if entry is None:
            return
        try:
            entry[0](fileno, event)
        except Exception:
            self.handle_callback_exception(entry[0])


class PeriodicCallback:
    """Run ``callback`` every ``callback_time`` milliseconds while started.

    The schedule is anchored at :meth:`start` (tornado 2.4): the first run is
    one period later, and periods missed while the loop was busy are skipped
    rather than run in a burst.
    """

    def __init__(
        self,
        callback: Callable[[], Any],
        callback_time: float | datetime.timedelta,
        io_loop: IOLoop | None = None,
    ) -> None:
        if isinstance(callback_time, datetime.timedelta):
            callback_time = callback_time.total_seconds() * 1000
        if callback_time <= 0:
            raise ValueError("callback_time must be positive")
        self.callback = callback
        self.callback_time = callback_time
        self.io_loop = io_loop
        self._timeout: asyncio.TimerHandle | None = None
        self._next = 0.0
        self._running = False

    def start(self) -> None:
        loop = self.io_loop or IOLoop.current()
        self.io_loop = loop
        self._running = True
        self._next = loop.asyncio_loop.time()
        self._schedule()

    def stop(self) -> None:
        self._running = False
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def is_running(self) -> bool:
        return self._running

    def _schedule(self) -> None:
        assert self.io_loop is not None
        aloop = self.io_loop.asyncio_loop
        period = self.callback_time / 1000.0
        now = aloop.time()
        self._next += period
        if self._next <= now:
            self._next += ((now - self._next) // period + 1) * period
        self._timeout = aloop.call_at(self._next, self._run)

    def _run(self) -> None:
        if not self._running:
            return
        try:
            self.callback()
        except Exception:
            log.error("Exception in periodic callback %r", self.callback, exc_info=True)
        if self._running:
            self._schedule()
