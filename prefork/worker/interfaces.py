"""Which application interface serves an application: ``--interface``.

The interfaces (the tornado-style request callback, WSGI, ASGI) are siblings
that never import each other; choosing between them is this module's one job.
``auto`` reads the application's signature: an ``async`` callable of three
arguments is ASGI 3 (a class whose instances are async callables is ASGI 2,
served through a wrapper), a plain callable of two is WSGI, of one a callback.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any

from prefork.settings import Config
from prefork.worker.request import HTTPRequest
from prefork.worker.wsgi import DEFAULT_THREADS, WSGIAdapter

__all__ = [
    "INTERFACES",
    "InterfaceMismatch",
    "check_interface",
    "detect_interface",
    "is_wsgi_app",
    "request_callback_for",
]

error_log = logging.getLogger("prefork.error")

#: the names ``--interface`` accepts besides ``auto``
INTERFACES = ("callback", "wsgi", "asgi")


def _is_async(app: Any) -> bool:
    """A coroutine function, or an object whose ``__call__`` is one (ASGI 3)."""
    while isinstance(app, functools.partial):
        app = app.func
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)  # noqa: B004 - the method, not callable()
    return call is not None and inspect.iscoroutinefunction(call)


def detect_interface(app: Callable[..., Any]) -> str | None:
    """``"asgi"``, ``"wsgi"``, ``"callback"``, or None when the signature does not tell.

    The rule: a request callback is called with one argument (the request),
    a WSGI application with two (environ, start_response).  What accepts
    exactly one of those is that kind; what accepts both (``*args``, optional
    parameters) or whose signature cannot be read (some builtins) is
    undecided.  Functions, bound methods, classes, ``functools.partial``,
    decorated functions (``__wrapped__``) and objects with ``__call__``
    (Flask, Django's WSGIHandler, middleware) are all inspected.
    """
    if inspect.isclass(app):
        from prefork.worker.asgi import is_asgi2

        if is_asgi2(app):
            return "asgi"  # (ASGI 2: the adapter wraps it)
    if _is_async(app):
        return "asgi"
    try:
        signature = inspect.signature(app)
    except (TypeError, ValueError):
        return None

    def takes(count: int) -> bool:
        try:
            signature.bind(*([None] * count))
        except TypeError:
            return False
        return True

    one, two = takes(1), takes(2)
    if one == two:
        return None
    return "callback" if one else "wsgi"


class InterfaceMismatch(ValueError):
    """``--interface X`` names a kind the application's signature plainly is not."""


_LOOKS = {
    "asgi": "an ASGI application (async, scope/receive/send)",
    "wsgi": "a WSGI application (environ, start_response)",
    "callback": "a request callback (one argument: the request)",
}


def check_interface(app: Callable[..., Any], interface: str) -> None:
    """Raise InterfaceMismatch when ``interface`` (not ``auto``) contradicts what
    :func:`detect_interface` reads off the signature, so that a wrong
    ``--interface`` fails the boot with one line instead of a 500 per request.
    An undecided signature is served as asked."""
    if interface == "seed":
        interface = "callback"
    if interface not in INTERFACES:
        return
    found = detect_interface(app)
    if found is not None and found != interface:
        raise InterfaceMismatch(
            f"--interface {interface}, but it looks like {_LOOKS[found]}: "
            f"use --interface {found} (or auto)"
        )


def is_wsgi_app(app: Callable[..., Any]) -> bool:
    """True when :func:`detect_interface` says ``app`` is a WSGI application."""
    return detect_interface(app) == "wsgi"


def request_callback_for(
    app: Callable[..., Any],
    interface: str = "auto",
    threads: int = DEFAULT_THREADS,
    config: Config | None = None,
) -> Callable[[HTTPRequest], Any]:
    """The request callback that serves ``app`` (``--interface auto|callback|wsgi|asgi``).

    ``auto`` decides by :func:`detect_interface`; when that cannot tell, the
    application is served as a request callback and a warning says so.
    ``seed`` is accepted as an old name of ``callback``.
    """
    if interface == "seed":
        interface = "callback"
    check_interface(app, interface)
    if interface == "auto":
        found = detect_interface(app)
        if found is None:
            error_log.warning(
                "Cannot tell from the signature of %r whether it is a WSGI application "
                "or a request callback; serving it as a request callback "
                "(use --interface wsgi to change that)",
                app,
            )
            found = "callback"
        interface = found
    if interface == "wsgi":
        return WSGIAdapter(app, threads=threads, root_path=config.root_path if config else "")
    if interface == "callback":
        return app
    if interface == "asgi":
        from prefork.worker.asgi import ASGIAdapter

        return ASGIAdapter(app, config)
    raise ValueError(f"unknown interface {interface!r} (expected auto, callback, wsgi or asgi)")
