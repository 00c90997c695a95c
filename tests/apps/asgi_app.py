"""A plain ASGI 3 test application, served by ``HTTPServer(ASGIAdapter(app))``.

Run as a script it prints its port, then serves (after the lifespan startup)
until stopped.  Paths:

* ``/scope``          the scope as JSON (bytes shown as latin-1 text); so does any
                      path with the header ``X-Show-Scope: 1``;
* ``/echo``           the request body back (read as it streams), with its chunk count;
* ``/stream?n=N``     N chunks of a streamed body (chunked: no content-length);
* ``/big?mb=N``       N MiB with a content-length, sent in 64 KiB pieces (back-pressure);
* ``/slow-read``      reads nothing for a while (``mark`` file written), then the body;
* ``/hang``           never answers (marks ``hang-started``; when cancelled,
                      ``hang-cleanup-done`` after a 0.6 s cleanup);
* ``/wait-disconnect`` answers only once ``receive()`` says ``http.disconnect``
  (and writes ``disconnected`` to the mark file);
* ``/file``           ``http.response.pathsend`` of this file;
* ``/misuse/...``     the ways an application can get ASGI wrong;
* ``/bytearray-headers`` headers and body as bytearray (bytes-like: accepted);
* ``/framing/...``    the application's own Transfer-Encoding / Content-Length;
* ``/state``          the lifespan state as the request sees it;
* ``/status/N``       an empty response with status N;
* ``/dated``          a response with the application's own ``date`` header;
* ``/task?wait=1``    what the application sees of its task and its context: the
  task it runs in (the same before and after an await), and the request
  context variable as it found it (a value set by an earlier request must not
  show), then set.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from prefork.sockets import bind_sockets  # noqa: E402
from prefork.worker.asgi import ASGIAdapter  # noqa: E402
from prefork.worker.httpserver import HTTPServer  # noqa: E402
from prefork.worker.ioloop import IOLoop  # noqa: E402

MARK = os.environ.get("ASGI_TEST_MARK")
#: set by every /task request: a later request must find it unset
REQUEST_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


def mark(text: str) -> None:
    if MARK:
        with open(MARK, "a") as f:
            f.write(text + "\n")


def _text(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, list | tuple):
        return [_text(v) for v in value]
    if isinstance(value, dict):
        return {k: _text(v) for k, v in value.items()}
    return value


async def read_body(receive) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    body = b""
    chunks = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        body += message.get("body", b"")
        chunks += 1
        if not message.get("more_body"):
            return body, chunks


async def respond(send, status: int, body: bytes, headers=()) -> None:  # type: ignore[no-untyped-def]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def lifespan(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if os.environ.get("ASGI_TEST_STARTUP_FAIL"):
                await send({"type": "lifespan.startup.failed", "message": "no database"})
                return
            scope["state"]["opened"] = "yes"
            scope["state"]["lifespan_asgi"] = scope["asgi"]  # (its spec version is its own)
            mark("startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            mark("shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def websocket_echo(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    """Echo until the client or the server closes; the close code goes to the mark file."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    mark("ws-accepted")
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            mark(f"ws-disconnect-{message['code']}")
            return
        await send(
            {"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")}
        )


#: ``/framing/*``: an application's own framing headers, with "abcdef" as the body
#: (the 204 sends it too: it must not go out).
_FRAMING = {
    "/framing/te-stream": [(b"transfer-encoding", b"chunked")],
    "/framing/te-whole": [(b"transfer-encoding", b"chunked")],
    "/framing/te-and-length": [(b"transfer-encoding", b"chunked"), (b"content-length", b"6")],
    "/framing/204-length": [(b"content-length", b"6")],
    "/framing/length-ows": [(b"content-length", b" 6\t")],
    "/framing/length-twice": [(b"content-length", b"6"), (b"content-length", b"6")],
}

#: ``/misuse/header-*``: a response header no client could read safely
#: (a value that would split the response, a name that is not a token, a
#: control character in a value).
_BAD_HEADERS = {
    "/misuse/header-split": (b"x", b"a\r\nb: c"),
    "/misuse/header-name-space": (b"x y", b"z"),
    "/misuse/header-name-colon": (b"x:y", b"z"),
    "/misuse/header-name-empty": (b"", b"z"),
    "/misuse/header-control": (b"x", b"a\x01b"),
}


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        await lifespan(scope, receive, send)
        return
    if scope["type"] == "websocket":
        await websocket_echo(scope, receive, send)
        return
    path = scope["path"]
    query = dict(
        pair.split("=", 1) for pair in scope["query_string"].decode().split("&") if "=" in pair
    )
    if path.startswith("/scope") or (b"x-show-scope", b"1") in scope["headers"]:
        shown = {k: v for k, v in scope.items() if k not in ("state", "extensions")}
        body = json.dumps(_text(shown)).encode()
        await respond(send, 200, body, [(b"content-length", str(len(body)).encode())])
    elif path == "/echo":
        body, chunks = await read_body(receive)
        await respond(send, 200, body, [(b"x-chunks", str(chunks).encode())])
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(int(query.get("n", "3"))):
            await send({"type": "http.response.body", "body": b"chunk %d\n" % i, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif path == "/big":
        size = int(query.get("mb", "1")) << 20
        piece = b"x" * 65536
        headers = [(b"content-length", str(size).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(size // len(piece)):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        mark("big-sent")
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stream-forever":
        # An endless stream made in memory: no await but send() (a generator
        # of chunks, as many SSE/export endpoints are). Marks how it ended.
        await send({"type": "http.response.start", "status": 200, "headers": []})
        piece = b"y" * 65536
        try:
            while True:
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        except Exception as exc:
            mark(f"stream-ended:{type(exc).__name__}")
            raise
    elif path == "/slow-read":
        mark("slow-read-started")
        while not os.path.exists(query["go"]):
            await asyncio.sleep(0.01)
        body, chunks = await read_body(receive)
        await respond(send, 200, b"%d" % len(body))
    elif path == "/events-later":
        # Server-sent events: the head at once, the first event only once the
        # file named by ``go`` exists (an event source with nothing to say yet).
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        mark("events-started")
        while not os.path.exists(query["go"]):
            await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/hang":
        # Never answers: a worker's stop has to cancel it; its cleanup takes
        # a moment (marks ``hang-started``, ``hang-cleanup-done``).
        mark("hang-started")
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.6)
            mark("hang-cleanup-done")
    elif path == "/wait-disconnect":
        message = await receive()  # the (empty) body
        mark("waiting")
        message = await receive()
        mark(message["type"])
    elif path == "/file":
        headers = [(b"content-type", b"text/x-python")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": os.path.abspath(__file__)})
    elif path == "/task":
        task = asyncio.current_task()
        found = REQUEST_VAR.get()
        REQUEST_VAR.set(scope["query_string"].decode() or "set")
        if query.get("wait"):
            await asyncio.sleep(0.01)  # (a real suspension: the task goes on later)
        seen = {
            "task": type(task).__name__ if task is not None else None,
            "same_task_after_await": asyncio.current_task() is task,
            "found": found,
            "now": REQUEST_VAR.get(),
        }
        await respond(send, 200, json.dumps(seen).encode())
    elif path == "/state":
        await respond(send, 200, json.dumps(scope["state"]).encode())
    elif path.startswith("/status/"):
        await send({"type": "http.response.start", "status": int(path[8:]), "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/misuse/start-twice":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})
    elif path == "/misuse/body-first":
        await send({"type": "http.response.body", "body": b"x"})
    elif path == "/misuse/str-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": "text"})
    elif path == "/misuse/raise":
        raise RuntimeError("application bug")
    elif path == "/misuse/raise-mid-body":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("application bug in the middle")
    elif path == "/misuse/no-response":
        return
    elif path == "/misuse/raise-after-response":
        # As a framework's background task: the response is whole, the
        # client gone (Connection: close), then the application fails.
        await respond(send, 200, b"done")
        await asyncio.sleep(float(query.get("after", "0.2")))
        raise RuntimeError("application bug after the response")
    elif path == "/bytearray-headers":
        # bytearray pairs and body: bytes-like, accepted as bytes (as uvicorn does)
        headers = [(bytearray(b"x-made-of"), bytearray(b"bytearray"))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": bytearray(b"fine")})
    elif path.startswith("/framing/"):
        # Framing headers of the application's own: the server frames the body.
        given = _FRAMING[path]
        status = 204 if path == "/framing/204-length" else 200
        await send({"type": "http.response.start", "status": status, "headers": given})
        if path in ("/framing/te-stream", "/framing/204-length"):
            await send({"type": "http.response.body", "body": b"abc", "more_body": True})
            await send({"type": "http.response.body", "body": b"def"})
        else:
            await send({"type": "http.response.body", "body": b"abcdef"})
    elif path == "/misuse/late-header-split":
        # No length, and a turn of the loop before the body: the head goes alone.
        headers = [_BAD_HEADERS["/misuse/header-split"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await asyncio.sleep(0)
        await send({"type": "http.response.body", "body": b""})
    elif path in _BAD_HEADERS:
        headers = [(b"content-length", b"0"), _BAD_HEADERS[path]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/trailers":
        # Trailers if the scope offers them: a digest known only at the end.
        offered = "http.response.trailers" in scope.get("extensions", {})
        headers = [(b"content-type", b"text/plain"), (b"trailer", b"x-digest")]
        if query.get("length"):
            headers.append((b"content-length", b"10"))  # must give way to chunked
        await send(
            {"type": "http.response.start", "status": 200, "headers": headers, "trailers": offered}
        )
        await send({"type": "http.response.body", "body": b"01234", "more_body": True})
        await send({"type": "http.response.body", "body": b"56789", "more_body": False})
        if offered and query.get("mode") != "none":
            name = b"content-length" if query.get("mode") == "forbidden" else b"x-digest"
            await send(
                {
                    "type": "http.response.trailers",
                    "headers": [(name, b"abc")],
                    "more_trailers": True,
                }
            )
            await send(
                {
                    "type": "http.response.trailers",
                    "headers": [(b"x-n", b"2")],
                    "more_trailers": False,
                }
            )
        mark("trailers-offered" if offered else "trailers-not-offered")
    elif path.startswith("/misuse/length-"):
        # A body that disagrees with the application's own Content-Length.
        lengths = {
            "/misuse/length-long": [b"3"],
            "/misuse/length-short": [b"10"],
            "/misuse/length-invalid": [b"1x"],
            "/misuse/length-conflict": [b"2", b"3"],
            "/misuse/length-long-stream": [b"3"],
            "/misuse/length-short-stream": [b"10"],
        }[path]
        headers = [(b"content-length", value) for value in lengths]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if path.endswith("-stream"):
            await send({"type": "http.response.body", "body": b"ab", "more_body": True})
            tail = b"cdef\r\n\r\nHTTP/1.1 200 OK" if "long" in path else b""
            await send({"type": "http.response.body", "body": tail})
        else:
            body = b"abcdef\r\n\r\nHTTP/1.1 200 OK" if "long" in path else b"ab"
            await send({"type": "http.response.body", "body": body})
    elif path == "/dated":  # the application's own Date: the server adds none
        headers = [(b"date", b"Mon, 01 Jan 2024 00:00:00 GMT"), (b"content-length", b"2")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"ok"})
    elif path == "/misuse/informational":
        await send({"type": "http.response.start", "status": 101, "headers": []})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/misuse/unknown-message":
        await send({"type": "http.response.bogus"})
    else:
        await respond(send, 404, b"not found\n")


def make_app():  # type: ignore[no-untyped-def]
    """A factory (``tests.apps.asgi_app:make_app()``)."""
    return app


def not_a_factory() -> int:
    return 42


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lifespan", default="auto")
    parser.add_argument("--root-path", default="")
    parser.add_argument("--xheaders", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    from prefork.settings import make_config

    adapter = ASGIAdapter(app, make_config(lifespan=args.lifespan, root_path=args.root_path))
    loop = IOLoop.instance()
    loop.asyncio_loop.run_until_complete(adapter.startup())
    server = HTTPServer(adapter, xheaders=args.xheaders)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    try:
        loop.start()
    finally:
        loop.asyncio_loop.run_until_complete(adapter.shutdown())


if __name__ == "__main__":
    main()
