"""The hello app on tornado 6's HTTPServer, with its own pre-fork supervisor.

``python -m bench.apps.tornado_app PORT WORKERS``: binds with
``bind_sockets``, forks ``WORKERS`` children with ``fork_processes`` (the
parent then restarts crashed children) when WORKERS > 1, and serves with a
bare ``HTTPServer`` callback, the layer prefork's API mirrors (no
``tornado.web``, whose routing would make the comparison unfair to tornado).
"""

from __future__ import annotations

import sys

from tornado import httputil, netutil, process
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from bench.apps import BIG, CONTENT_TYPE, HELLO, pid

_OK = httputil.ResponseStartLine("HTTP/1.1", 200, "OK")


def app(request: httputil.HTTPServerRequest) -> None:
    """``/big`` gets 1 MiB; the body of an upload is already read; all else hello."""
    body = BIG if request.path == "/big" else HELLO
    headers = httputil.HTTPHeaders(
        {"Content-Type": CONTENT_TYPE, "X-Pid": pid(), "Content-Length": str(len(body))}
    )
    connection = request.connection
    assert connection is not None
    connection.write_headers(_OK, headers, body)
    connection.finish()


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    sockets = netutil.bind_sockets(port, "127.0.0.1")
    if workers > 1:
        process.fork_processes(workers)  # returns in each child; the parent supervises
    server = HTTPServer(app)
    server.add_sockets(sockets)
    IOLoop.current().start()


if __name__ == "__main__":
    main()
