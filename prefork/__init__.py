"""prefork: a pre-fork HTTP/1.1 server framework.

A master process binds the listening sockets, forks one worker per CPU and
supervises them; each worker runs its own event loop with the classic
``tornado.httpserver`` API (HTTPServer, HTTPRequest, HTTPConnection,
HTTPHeaders, IOLoop), hardened against request smuggling and slow clients.
"""

import sys

from prefork.worker import httpserver, httputil, ioloop
from prefork.worker.httpserver import HTTPConnection, HTTPRequest, HTTPServer
from prefork.worker.httputil import HTTPFile, HTTPHeaders
from prefork.worker.ioloop import IOLoop, PeriodicCallback

__version__ = "0.1.0"

# ``import prefork.httpserver`` works as well as ``from prefork import httpserver``.
for _name, _module in (("httpserver", httpserver), ("ioloop", ioloop), ("httputil", httputil)):
    sys.modules.setdefault(f"prefork.{_name}", _module)

__all__ = [
    "HTTPConnection",
    "HTTPFile",
    "HTTPHeaders",
    "HTTPRequest",
    "HTTPServer",
    "IOLoop",
    "PeriodicCallback",
    "httpserver",
    "httputil",
    "ioloop",
]
