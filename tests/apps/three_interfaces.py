"""The command line of the test apps that serve one application three ways.

``--interface callback|wsgi|asgi`` picks how it is served (the tornado-style
callback, WSGI with 4 threads, ASGI without lifespan); ``--limit NAME=VALUE``
passes a setting to ``HTTPServer``.  Binds port 0 on 127.0.0.1, prints the
port as the first line of stdout and logs to stderr at INFO.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any

from prefork.worker.httpserver import HTTPServer
from prefork.worker.ioloop import IOLoop


def _limit(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


def serve(callback_app: Callable[..., Any], wsgi_app: Any, asgi_app: Any) -> None:
    """Parse the command line, then serve the chosen interface until killed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", choices=("callback", "wsgi", "asgi"), default="callback")
    parser.add_argument("--limit", action="append", type=_limit, default=[], help="NAME=VALUE")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)

    from prefork.settings import make_config

    config = make_config(**dict(args.limit))
    callback: Any
    if args.interface == "wsgi":
        from prefork.worker.wsgi import WSGIAdapter

        callback = WSGIAdapter(wsgi_app, threads=4)
    elif args.interface == "asgi":
        from prefork.worker.asgi import ASGIAdapter

        callback = ASGIAdapter(asgi_app, make_config(config, lifespan="off"))
    else:
        callback = callback_app
    server = HTTPServer(callback, config=config)
    from prefork.sockets import bind_sockets

    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    IOLoop.instance().start()
