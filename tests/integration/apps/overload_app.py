"""One application in three interfaces for the overload tests, served by the CLI::

    python -m prefork --interface callback tests.integration.apps.overload_app:callback
    python -m prefork --interface asgi tests.integration.apps.overload_app:asgi
    python -m prefork --interface wsgi tests.integration.apps.overload_app:wsgi

Every answer's body is the worker's pid and a newline.  Paths:

* ``/``            answers at once;
* ``/hold?s=N&mark=PATH`` appends ``started PID`` to the file PATH, answers
  after N seconds (callback: a timer; ASGI: ``asyncio.sleep``; WSGI:
  ``time.sleep`` in its thread) and then appends ``returned PID``; an ASGI
  task that is cancelled appends ``cancelled PID`` instead (and re-raises);
* ``/stream?s=N&mark=PATH`` (ASGI) sends its head and a first chunk, then
  holds N seconds before the rest;
* ``/busy?s=N`` (callback) answers after N seconds, counting the requests
  in flight in this worker; ``/peak`` answers ``PID PEAK``, the most seen
  at once;
* a WebSocket to ``/ws?s=N`` (ASGI) is accepted, and N seconds later gets
  the text ``still here``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any
from urllib.parse import parse_qs

from prefork import HTTPRequest, IOLoop

PID = b"%d\n" % os.getpid()
_busy = 0
_peak = 0


def _mark(path: str, what: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(f"{what} {os.getpid()}\n")


def _query(query: str) -> tuple[float, str]:
    args = parse_qs(query)
    return float(args.get("s", ["0"])[0]), args.get("mark", [""])[0]


# -- callback ------------------------------------------------------------------------


def _respond(request: HTTPRequest, body: bytes = b"") -> None:
    body = body or b"%d\n" % os.getpid()
    request.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    request.finish()


def callback(request: HTTPRequest) -> None:
    global _busy, _peak
    seconds, mark = _query(request.query)
    if request.path == "/hold":
        _mark(mark, "started")

        def late() -> None:
            _respond(request)  # (after a timeout: goes nowhere)
            _mark(mark, "returned")

        IOLoop.current().call_later(seconds, late)
    elif request.path == "/busy":
        _busy += 1
        _peak = max(_peak, _busy)

        def done() -> None:
            global _busy
            _busy -= 1
            _respond(request)

        IOLoop.current().call_later(seconds, done)
    elif request.path == "/peak":
        _respond(request, b"%d %d\n" % (os.getpid(), _peak))
    else:
        _respond(request)


# -- ASGI ----------------------------------------------------------------------------


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        return  # (unsupported: served without it)
    seconds, mark = _query(scope["query_string"].decode())
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        await asyncio.sleep(seconds)
        await send({"type": "websocket.send", "text": "still here"})
        while (await receive())["type"] != "websocket.disconnect":
            pass
        return
    headers = [(b"content-type", b"text/plain")]
    path = scope["path"]
    if path in ("/hold", "/stream"):
        _mark(mark, "started")
        if path == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            _mark(mark, "cancelled")
            raise
        _mark(mark, "returned")
        if path == "/stream":
            await send({"type": "http.response.body", "body": PID})
            return
    headers.append((b"content-length", b"%d" % len(PID)))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PID})


# -- WSGI ----------------------------------------------------------------------------


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    seconds, mark = _query(environ.get("QUERY_STRING", ""))
    if environ["PATH_INFO"] == "/hold":
        _mark(mark, "started")
        time.sleep(seconds)
        _mark(mark, "returned")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(PID)))])
    return [PID]
