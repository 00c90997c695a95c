"""One body-reading application for every interface, for the slow-client tests.

``--interface callback|wsgi|asgi`` picks how it is served (the tornado-style
callback gets the body whole; WSGI and ASGI read it as it streams in);
``--limit NAME=VALUE`` passes a setting to ``HTTPServer``.  Binds port 0 on
127.0.0.1 and prints the port as the first line of stdout.

Routes:

* ``/body``     -- reads the whole body, answers ``200`` ``size=N``;
  ``delay_ms`` waits that long first (so a half-close arrives while the
  request is being answered).  With ``tag=T``, a streamed body's reader
  notes ``T:reading`` as it starts and ``T:disconnect`` if it learns the
  client is gone (WSGI ``ClientDisconnected``, ASGI ``http.disconnect``).
* ``/early``    -- (WSGI, ASGI) starts a streamed response, then reads the
  body: a body cut short now can only end in a close.
* ``/events``   -- those notes, as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prefork.worker.bodystream import ClientDisconnected  # noqa: E402
from prefork.worker.ioloop import IOLoop  # noqa: E402

EVENTS: list[str] = []
_lock = threading.Lock()


def note(event: str) -> None:
    with _lock:
        EVENTS.append(event)


def _query(text: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in text.split("&") if "=" in pair)


# ---------------------------------------------------------------- callback


def callback_app(request) -> None:  # type: ignore[no-untyped-def]
    if request.path == "/events":
        _raw_answer(request, json.dumps(EVENTS).encode())
        return
    delay = int(_query(request.query).get("delay_ms", "0")) / 1000
    body = b"size=%d" % len(request.body)
    if delay:
        IOLoop.current().call_later(delay, _raw_answer, request, body)
    else:
        _raw_answer(request, body)


def _raw_answer(request, body: bytes) -> None:  # type: ignore[no-untyped-def]
    request.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    request.finish()


# ---------------------------------------------------------------- WSGI


def wsgi_app(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    if path == "/events":
        body = json.dumps(EVENTS).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    write = None
    if path == "/early":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"started;")
    query = _query(environ.get("QUERY_STRING", ""))
    tag = query.get("tag", "")
    note(f"{tag}:reading")
    size = 0
    try:
        while piece := environ["wsgi.input"].read(4096):
            size += len(piece)
    except ClientDisconnected:
        note(f"{tag}:disconnect")
        raise
    delay = int(query.get("delay_ms", "0")) / 1000
    if delay:
        time.sleep(delay)
    body = b"size=%d" % size
    if write is not None:
        return [body]
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


# ---------------------------------------------------------------- ASGI


async def asgi_app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/events":
        await _asgi_answer(send, json.dumps(EVENTS).encode())
        return
    query = _query(scope["query_string"].decode())
    tag = query.get("tag", "")
    early = path == "/early"
    if early:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"started;", "more_body": True})
    note(f"{tag}:reading")
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            note(f"{tag}:disconnect")
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    delay = int(query.get("delay_ms", "0")) / 1000
    if delay:
        await asyncio.sleep(delay)
    body = b"size=%d" % size
    if early:
        await send({"type": "http.response.body", "body": body})
    else:
        await _asgi_answer(send, body)


async def _asgi_answer(send, body: bytes) -> None:  # type: ignore[no-untyped-def]
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- main


if __name__ == "__main__":
    from tests.apps.three_interfaces import serve

    serve(callback_app, wsgi_app, asgi_app)
