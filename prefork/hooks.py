"""Calling server hooks: the views they get and what happens when one raises.

Hooks come from the config file (``def post_fork(server, worker): ...``) and
are called as gunicorn calls them, with the same argument names, so a
gunicorn config file runs unchanged.  ``server`` is the
:class:`~prefork.master.Master` (``server.pid``, ``server.log``,
``server.cfg``, ``server.num_workers``, ``server.worker_pids``); ``worker``
is a :class:`WorkerView` (``worker.pid``, ``worker.index``, ``worker.age``,
``worker.log``, ``worker.cfg``, ``worker.nr`` requests served).

A hook that raises is logged with its traceback.  Whether that stops
anything is the caller's decision: ``on_starting`` and ``when_ready`` stop
the start (exit status 2); no other hook ever takes the master down.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

from prefork.settings import DEFAULTS, Config

if TYPE_CHECKING:
    from prefork.scoreboard import Slot, WorkerContext

__all__ = ["WorkerView", "call_hook", "worker_view"]

log = logging.getLogger("prefork.master")


class WorkerView:
    """What a hook sees of one worker, in the master or in the worker itself."""

    def __init__(
        self,
        index: int,
        generation: int,
        slot: Slot | None,
        config: Config = DEFAULTS,
        pid: int | None = None,
        ppid: int | None = None,
    ) -> None:
        #: the worker's number, 0..n-1, stable across its restarts
        self.index = index
        #: the reload generation it was forked in (gunicorn's ``age`` counts forks)
        self.generation = generation
        self.age = generation
        self.slot = slot
        self.cfg = self.config = config
        #: None in ``pre_fork`` (not forked yet)
        self.pid = pid
        self.ppid = ppid if ppid is not None else os.getpid()
        self.log = logging.getLogger("prefork.worker")

    @property
    def nr(self) -> int:
        """Requests this worker has served so far (from its scoreboard slot)."""
        return self.slot.requests if self.slot is not None else 0

    @property
    def booted(self) -> bool:
        return bool(self.slot is not None and self.slot.booted)

    def __repr__(self) -> str:
        return f"<worker {self.index} pid {self.pid}>"


def worker_view(ctx: WorkerContext) -> WorkerView:
    """The hooks' view of this worker, in the worker process."""
    return WorkerView(ctx.index, ctx.generation, ctx.slot, ctx.config, os.getpid(), ctx.master_pid)


def call_hook(config: Config, name: str, *args: Any) -> bool:
    """Call hook ``name`` if the config file defines it; False if it raised.

    The traceback goes to the log of the process the hook runs in.
    """
    hook = getattr(config.hooks, name)
    if hook is None:
        return True
    try:
        hook(*args)
    except Exception:
        log.exception("server hook %s raised", name)
        return False
    except SystemExit as exc:
        # (sys.exit() in a hook is its failure too, named as such: it ended
        # the master with a bare message that did not say where it came from)
        log.error("server hook %s called sys.exit(%r)", name, exc.code)
        return False
    return True
