"""Calling server hooks: the views they get and what happens when one raises.

Hooks come from the config file (``def post_fork(server, worker): ...``) and
are called as gunicorn calls them, with the same argument names, so a
gunicorn config file runs unchanged.  ``server`` is the
:class:`~prefork.master.Master` (``server.pid``, ``server.log``,
``server.cfg``, ``server.num_workers``, ``server.worker_pids``, and
gunicorn's ``proc_name``, ``app``, ``address``, ``LISTENERS``, ``WORKERS``);
``worker`` is a :class:`WorkerView` (``worker.pid``, ``worker.index``,
``worker.age``, ``worker.log``, ``worker.cfg``, ``worker.nr`` requests
served, and gunicorn's ``alive``, ``timeout``, ``max_requests``, ``tmp``).
``cfg`` is a :class:`GunicornConfig`: prefork's settings under both their
names and gunicorn's, since migrated hooks read ``server.cfg.keepalive``.
``pre_request``/``post_request`` get a :class:`HookRequest` and a
:class:`HookResponse` shaped as gunicorn's ``Request`` and ``Response``.

A hook that raises is logged with its traceback.  Whether that stops
anything is the caller's decision: ``on_starting`` and ``when_ready`` stop
the start (exit status 2); no other hook ever takes the master down.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from prefork.settings import DEFAULTS, GUNICORN_ALIASES, Config

if TYPE_CHECKING:
    from prefork.scoreboard import Slot, WorkerContext
    from prefork.worker.request import HTTPRequest

__all__ = [
    "GunicornConfig",
    "HookRequest",
    "HookResponse",
    "WorkerTmp",
    "WorkerView",
    "call_hook",
    "gunicorn_config",
    "worker_view",
]

log = logging.getLogger("prefork.master")
worker_log = logging.getLogger("prefork.worker")

#: the hooks that run in a worker process: their failures are the worker's
#: (logged under prefork.worker, as everything else the worker says), not
#: the master's.
WORKER_HOOKS = frozenset(
    {
        "post_fork",
        "post_worker_init",
        "pre_request",
        "post_request",
        "worker_int",
        "worker_abort",
        "worker_exit",
        "ssl_context",
    }
)


def _address(bind: str) -> Any:
    """gunicorn's ``cfg.address`` item for one bind: (host, port) or a unix path."""
    from prefork.bindspec import parse_bind

    try:
        spec = parse_bind(bind)
    except ValueError:
        return bind
    if spec.kind == "unix":
        return spec.path
    if spec.kind == "fd":
        return bind
    return (spec.host or "0.0.0.0", spec.port)


class GunicornConfig:
    """``server.cfg`` / ``worker.cfg``: prefork's settings, readable by gunicorn's names.

    A migrated gunicorn config's hooks read ``server.cfg.keepalive``,
    ``cfg.loglevel``, ``cfg.preload_app``, ``cfg.worker_class_str``...: those
    are prefork's settings under gunicorn's names (the config file's
    aliases), or what prefork's behaviour amounts to for gunicorn settings it
    has no counterpart for.  prefork's own names keep working.  A name that
    is neither raises AttributeError, as gunicorn's ``Config`` does, so a
    typo is not silently None.
    """

    __slots__ = ("_config",)

    def __init__(self, config: Config) -> None:
        object.__setattr__(self, "_config", config)

    def __getattr__(self, name: str) -> Any:
        config: Config = object.__getattribute__(self, "_config")
        alias = GUNICORN_ALIASES.get(name)
        if alias is not None:
            value = getattr(config, alias)
            return list(value) if isinstance(value, tuple) else value
        if name in _DERIVED:
            return _DERIVED[name](config)
        if name.startswith("_") or name == "hooks":
            raise AttributeError(name)
        try:
            return getattr(config, name)
        except AttributeError:
            raise AttributeError(f"'Config' object has no attribute {name!r}") from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the settings cannot be changed from a hook")

    def __repr__(self) -> str:
        return f"<GunicornConfig of {object.__getattribute__(self, '_config')!r}>"


def _log_level(config: Config) -> str:
    return str(config.log_level).lower()


#: gunicorn settings read in hooks that are not a prefork setting under
#: another name: what prefork's settings (or its fixed behaviour) amount to.
_DERIVED: dict[str, Any] = {
    "bind": lambda c: list(c.bind),
    "address": lambda c: [_address(b) for b in c.bind],
    "loglevel": _log_level,
    "worker_class": lambda c: "prefork",
    "worker_class_str": lambda c: "prefork",
    "is_ssl": lambda c: bool(c.certfile),
    "daemon": lambda c: False,
    "proc_name": lambda c: c.proc_name or "prefork",
    "default_proc_name": lambda c: "prefork",
    "uid": lambda c: os.geteuid(),
    "gid": lambda c: os.getegid(),
    "reload_extra_files": lambda c: list(c.reload_extra_files),
    "sendfile": lambda c: True,
    "worker_tmp_dir": lambda c: None,
    "secure_scheme_headers": lambda c: {},
    "logconfig": lambda c: None,
    "logconfig_dict": lambda c: {},
    "settings": lambda c: {},
    "ssl_options": lambda c: {},
}


def gunicorn_config(config: Config) -> GunicornConfig:
    """The ``cfg`` hooks see for ``config``."""
    return GunicornConfig(config)


class WorkerTmp:
    """``worker.tmp``: gunicorn's heartbeat file, as hooks use it.

    gunicorn's workers prove they are alive by touching a temporary file
    (``worker.tmp.notify()``, which some hooks call from long work so as not
    to be killed); prefork's heartbeat is the scoreboard slot, so
    ``notify()`` beats there when there is one and otherwise does nothing.
    """

    def __init__(self, slot: Slot | None) -> None:
        self._slot = slot
        self._last = 0.0

    def notify(self) -> None:
        import time

        self._last = time.monotonic()
        beat = getattr(self._slot, "heartbeat", None)
        if callable(beat):
            beat()

    def last_update(self) -> float:
        return self._last

    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass


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
        self.config = config
        #: gunicorn's and prefork's setting names (see GunicornConfig)
        self.cfg = GunicornConfig(config)
        #: "[booting]" in ``pre_fork`` (not forked yet), as gunicorn has it
        self.pid: int | str = pid if pid is not None else "[booting]"
        self.ppid = ppid if ppid is not None else os.getpid()
        self.log = logging.getLogger("prefork.worker")
        #: gunicorn's: True until the worker is told to stop
        self.alive = True
        #: gunicorn's ``worker.timeout`` is the heartbeat interval it must
        #: keep (half of ``timeout``)
        self.timeout = config.timeout / 2.0
        #: the requests after which it is recycled (gunicorn: sys.maxsize
        #: when there is no limit); the jitter is prefork's to draw
        self.max_requests = config.max_requests or sys.maxsize
        self.tmp = WorkerTmp(slot)
        #: the WSGI application, when the worker serves one (set in the worker)
        self.wsgi: Any = None
        self.app: Any = None
        self.sockets: list[Any] = []

    @property
    def nr(self) -> int:
        """Requests this worker has served so far (from its scoreboard slot)."""
        return self.slot.requests if self.slot is not None else 0

    @property
    def booted(self) -> bool:
        return bool(self.slot is not None and self.slot.booted)

    def __repr__(self) -> str:
        return f"<worker {self.index} pid {self.pid}>"


class HookHeaders(list[tuple[str, str]]):
    """``req.headers``: gunicorn's list of ``(NAME, value)`` pairs, names
    upper-cased as gunicorn stores them (``for name, value in req.headers``).

    ``get(name)`` (any case) is kept for hooks written against prefork's
    mapping, which ``req.headers.get("X-Request-Id")`` read before.
    """

    def get(self, name: str, default: Any = None) -> Any:
        key = name.upper()
        values = [value for n, value in self if n == key]
        return ",".join(values) if values else default


class HookRequest:
    """What ``pre_request`` and ``post_request`` get as ``req``: gunicorn's
    ``Request`` attributes over prefork's request.

    One per request, made only when one of those hooks is defined, and the
    same object in both hooks: a hook that stores ``req.start = time.time()``
    in ``pre_request`` finds it in ``post_request``, as in gunicorn.  Any
    other attribute is the prefork request's (``remote_ip``, ``host``...).
    """

    def __init__(self, request: HTTPRequest) -> None:
        self._request = request
        self.method = request.method
        self.uri = request.uri
        self.path = request.path
        self.query = request.query
        self.fragment = request.uri.partition("#")[2]
        major, _, minor = request.version.partition("/")[2].partition(".")
        #: (1, 1), as gunicorn's
        self.version = (int(major or 1), int(minor or 0))
        self.headers = HookHeaders(
            (name.upper(), value) for name, value in request.headers.get_all()
        )
        self.trailers = request.trailers
        #: "https" on TLS (or as trusted forwarding headers say), else "http"
        self.scheme = request.protocol
        connection = request.connection
        address = getattr(connection, "address", None)
        #: the client's address: (ip, port) over TCP, "" over a unix socket
        self.peer_addr = address if address is not None else ""
        self.remote_addr = self.peer_addr

    @property
    def body(self) -> io.BytesIO:
        """The request body as a file (gunicorn's ``req.body.read()``); a
        copy, so reading it takes nothing from the application."""
        return io.BytesIO(self._request.body)

    def should_close(self) -> bool:
        connection = self._request.connection
        return not getattr(connection, "_keep_alive", True)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._request, name)

    def __repr__(self) -> str:
        return f"<HookRequest {self.method} {self.uri}>"


#: not a response's headers for gunicorn (hop-by-hop, dropped from resp.headers)
_HOP_BY_HOP = frozenset(
    "connection keep-alive proxy-authenticate proxy-authorization te trailers "
    "transfer-encoding upgrade".split()
)


class HookResponse:
    """What the ``post_request`` hook gets as ``resp`` (gunicorn's names).

    ``headers`` are the ones the application gave (WSGI ``start_response``,
    ASGI, ``write_headers``) less hop-by-hop ones, as gunicorn keeps them; a
    callback that writes its head as raw bytes gives none.
    ``response_length`` is the application's Content-Length (None without
    one, as in gunicorn); ``sent`` the body bytes sent.
    """

    def __init__(
        self, status_code: int, sent: int, headers: list[tuple[str, str]] | None = None
    ) -> None:
        from prefork.worker.response import REASONS

        self.status_code = status_code
        self.status = f"{status_code} {REASONS.get(status_code, '')}".rstrip()
        #: body bytes sent
        self.sent = sent
        self.headers = [
            (name, value) for name, value in headers or () if name.lower() not in _HOP_BY_HOP
        ]
        self.response_length: int | None = None
        for name, value in self.headers:
            if name.lower() == "content-length":
                try:
                    self.response_length = int(value)
                except ValueError:
                    pass
        self.chunked = any(
            name.lower() == "transfer-encoding" and "chunked" in value.lower()
            for name, value in headers or ()
        )
        self.headers_sent = True
        self.version = "prefork"


def worker_view(ctx: WorkerContext) -> WorkerView:
    """The hooks' view of this worker, in the worker process."""
    return WorkerView(ctx.index, ctx.generation, ctx.slot, ctx.config, os.getpid(), ctx.master_pid)


def call_hook(config: Config, name: str, *args: Any) -> bool:
    """Call hook ``name`` if the config file defines it; False if it raised.

    The traceback goes to the log of the process the hook runs in: a worker
    hook's under ``prefork.worker`` (with the worker's pid), a master hook's
    under ``prefork.master``.
    """
    hook = getattr(config.hooks, name)
    if hook is None:
        return True
    try:
        hook(*args)
    except Exception:
        (worker_log if name in WORKER_HOOKS else log).exception("server hook %s raised", name)
        return False
    except SystemExit as exc:
        # (sys.exit() in a hook is its failure too, named as such: it ended
        # the master with a bare message that did not say where it came from)
        (worker_log if name in WORKER_HOOKS else log).error(
            "server hook %s called sys.exit(%r)", name, exc.code
        )
        return False
    return True
