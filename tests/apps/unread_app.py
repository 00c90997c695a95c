"""Large answers for every interface, for the tests of clients that do not read.

``--interface callback|wsgi|asgi`` picks how it is served; ``--limit
NAME=VALUE`` passes a setting to ``HTTPServer``.  Binds port 0 on 127.0.0.1
and prints the port as the first line of stdout; logs go to stderr.

Routes:

* ``/big?size=N`` -- N bytes in one piece (with a Content-Length); each one
  started is counted.
* ``/stream``     -- 64 KiB pieces without end, each written once the last
  has gone (WSGI: the server's acknowledgement; ASGI: back-pressure), until
  the client is gone: then ``stream:gone`` is noted.
* ``/state``      -- ``{"big": <answers started>, "events": [...]}`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prefork.worker.httpserver import HTTPServer  # noqa: E402
from prefork.worker.ioloop import IOLoop  # noqa: E402

PIECE = b"x" * 65536
STATE: dict[str, object] = {"big": 0, "events": []}
_lock = threading.Lock()


def _started_big() -> None:
    with _lock:
        STATE["big"] = int(STATE["big"]) + 1  # type: ignore[call-overload]


def _note(event: str) -> None:
    with _lock:
        STATE["events"].append(event)  # type: ignore[attr-defined]


def _size(query: str) -> int:
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "size":
            return int(value)
    return 0


def _state() -> bytes:
    with _lock:
        return json.dumps(STATE).encode()


# ---------------------------------------------------------------- callback


def callback_app(request) -> None:  # type: ignore[no-untyped-def]
    if request.path == "/state":
        body = _state()
    elif request.path == "/big":
        _started_big()
        body = b"x" * _size(request.query)
    else:
        request.connection.set_close_callback(lambda: _note("stream:gone"))
        request.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        _callback_piece(request)
        return
    request.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    request.finish()


def _callback_piece(request) -> None:  # type: ignore[no-untyped-def]
    if not request.connection.closed():
        request.write(PIECE, lambda: _callback_piece(request))


# ---------------------------------------------------------------- WSGI


def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _wsgi_stream()
    if path == "/big":
        _started_big()
        body = b"x" * _size(environ.get("QUERY_STRING", ""))
    else:
        body = _state()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


class _wsgi_stream:
    """Pieces without end; the server closes it once the client is gone."""

    def __iter__(self):  # type: ignore[no-untyped-def]
        return self

    def __next__(self) -> bytes:
        return PIECE

    def close(self) -> None:
        _note("stream:gone")


# ---------------------------------------------------------------- ASGI


async def asgi_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                await send({"type": "http.response.body", "body": PIECE, "more_body": True})
        except OSError:
            _note("stream:gone")
        return
    if path == "/big":
        _started_big()
        body = b"x" * _size(scope["query_string"].decode())
    else:
        body = _state()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- main


def _limit(text: str) -> tuple[str, str]:
    name, _, value = text.partition("=")
    return name, value


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", choices=("callback", "wsgi", "asgi"), default="callback")
    parser.add_argument("--limit", action="append", type=_limit, default=[], help="NAME=VALUE")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)

    from prefork.settings import make_config

    config = make_config(**dict(args.limit))
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


if __name__ == "__main__":
    main()
