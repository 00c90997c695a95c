"""prefork: a pre-fork HTTP/1.1 server framework.

A master process binds the listening sockets, forks one worker per CPU and
supervises them; each worker runs its own event loop with the classic
``tornado.httpserver`` API (HTTPServer, HTTPRequest, HTTPConnection,
HTTPHeaders, IOLoop), hardened against request smuggling and slow clients.

The names below are imported on first use: ``import prefork`` (the master's
own modules, the settings, the CLI) loads nothing of the HTTP stack.  The CLI
master does import the worker stack (asyncio, ssl, uvloop) once, just before
it forks, so that the workers share those pages with it and a replacement
worker serves within milliseconds (see ``prefork.cli``); it never creates an
event loop.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_NAMES = {
    "HTTPServer": "prefork.worker.httpserver",
    "HTTPRequest": "prefork.worker.httpserver",
    "HTTPConnection": "prefork.worker.httpserver",
    "HTTPHeaders": "prefork.worker.httputil",
    "HTTPFile": "prefork.worker.httputil",
    "IOLoop": "prefork.worker.ioloop",
    "PeriodicCallback": "prefork.worker.ioloop",
}
_MODULES = {
    "httpserver": "prefork.worker.httpserver",
    "httputil": "prefork.worker.httputil",
    "ioloop": "prefork.worker.ioloop",
}

__all__ = sorted([*_NAMES, *_MODULES])


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(_MODULES[name])
    else:
        raise AttributeError(f"module 'prefork' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES, *_MODULES])
