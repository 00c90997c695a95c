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

import json
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


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


if __name__ == "__main__":
    from tests.apps.three_interfaces import serve

    serve(callback_app, wsgi_app, asgi_app)
