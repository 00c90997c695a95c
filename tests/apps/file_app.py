"""File bodies and HEAD framing: one process serving WSGI (or ASGI) on a port.

``python tests/apps/file_app.py [--interface wsgi|asgi|django|callback]
[--certfile F --keyfile K] [--asyncio]`` binds port 0 on 127.0.0.1, prints the
port as the first line of stdout, then runs the IOLoop (uvloop, or with
``--asyncio`` asyncio's own loop).

``os.sendfile`` is wrapped in this process to count its calls and bytes, so a
test can tell the zero-copy path from reading (``/stats``).

WSGI routes (``--interface wsgi``):

* ``/wrapper?path=P[&block=N][&seek=K][&cl=X][&chunk_read=1]`` -- the file P
  through ``environ["wsgi.file_wrapper"]`` (its position moved to K first, a
  Content-Length X given); its close() is counted;
* ``/bytesio?size=N[&cl=1]`` -- N bytes from a BytesIO through the file wrapper;
* ``/write-list``, ``/write-only``, ``/generator``, ``/list-several``,
  ``/list-one``, ``/declared``, ``/empty`` -- the ways a body can be given;
* ``/big?size=N[&pieces=K]`` -- N bytes as a list of one (or a generator of K pieces);
* ``/stats`` -- ``{"sendfile_calls", "sendfile_bytes", "closed", "file_reads", "pid"}``.

ASGI (``--interface asgi``): ``/pathsend?path=P``, ``/big?size=N[&more=1]``,
``/stats``.  Django (``--interface django``): ``/file?path=P`` is a Django
``FileResponse``, ``/stats``.  Callback (``--interface callback``):
``/big?size=N`` through ``write_headers`` + ``write`` + ``finish``;
``/raw-big?size=N`` a raw head, then the body in a second ``write``;
``/raw-later`` a raw chunked head alone, its body 0.3 s later (server-sent
events style: the head must not wait for it).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import logging
import os
import sys
import threading
from urllib.parse import parse_qs

from prefork import IOLoop, httpserver
from prefork.sockets import bind_sockets

_lock = threading.Lock()
STATS = {
    "sendfile_calls": 0,
    "sendfile_bytes": 0,
    "closed": 0,
    "file_reads": 0,  # reads from an application's file (read in pieces: no sendfile)
    "pid": os.getpid(),
}
_real_sendfile = os.sendfile


def _counting_sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
    sent = _real_sendfile(out_fd, in_fd, offset, count)
    with _lock:
        STATS["sendfile_calls"] += 1
        STATS["sendfile_bytes"] += sent
    return sent


os.sendfile = _counting_sendfile  # type: ignore[assignment]


@functools.lru_cache(maxsize=8)
def pattern(size: int) -> bytes:
    """``size`` bytes of a known pattern (built once per size)."""
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


def _stats_body() -> bytes:
    with _lock:
        return json.dumps(STATS).encode()


def _args(query: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(query).items()}


class _CountedFile(io.FileIO):
    """A file whose close() is counted (the server must call it, PEP 3333), and its reads."""

    def readinto(self, buffer) -> int | None:  # type: ignore[no-untyped-def, override]
        with _lock:
            STATS["file_reads"] += 1
        return super().readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            with _lock:
                STATS["closed"] += 1
        super().close()


def _open(path: str, seek: int) -> io.BufferedReader:
    raw = _CountedFile(path, "rb")
    file = io.BufferedReader(raw)
    if seek:
        file.read(seek)  # (a buffered read: tell() is K, the descriptor's offset beyond)
    return file


# -- WSGI ---------------------------------------------------------------------------------


def wsgi_app(environ, start_response):
    path = environ["PATH_INFO"]
    args = _args(environ["QUERY_STRING"])
    text = [("Content-Type", "text/plain")]
    if path == "/stats":
        body = _stats_body()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    if path == "/wrapper":
        file = _open(args["path"], int(args.get("seek", "0")))
        headers = [("Content-Type", "application/octet-stream")]
        if "cl" in args:
            headers.append(("Content-Length", args["cl"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](file, int(args.get("block", "8192")))
    if path == "/bytesio":
        size = int(args.get("size", "100000"))
        data = pattern(size)
        headers = [("Content-Length", str(size))] if args.get("cl") else []
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](io.BytesIO(data), 4096)
    if path == "/write-list":
        write = start_response("200 OK", text)
        write(b"one,")
        write(b"two,")
        return [b"three"]
    if path == "/write-only":
        write = start_response("200 OK", text)
        write(b"one,")
        write(b"two")
        return []
    if path == "/generator":
        start_response("200 OK", text)
        return (piece for piece in (b"", b"gen-", b"erated"))
    if path == "/list-several":
        start_response("200 OK", text)
        return [b"a", b"bc", b"def"]
    if path == "/list-one":
        start_response("200 OK", text)
        return [b"only piece"]
    if path == "/declared":
        write = start_response("200 OK", [*text, ("Content-Length", "13")])
        write(b"one,two,")
        return [b"three"]
    if path == "/empty":
        start_response("200 OK", text)
        return []
    if path == "/big":
        size = int(args.get("size", str(1 << 20)))
        pieces = int(args.get("pieces", "1"))
        body = pattern(size)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        if pieces == 1:
            return [body]
        step = -(-size // pieces)
        return (body[i : i + step] for i in range(0, size, step))
    start_response("404 Not Found", [("Content-Length", "0")])
    return []


# -- ASGI ---------------------------------------------------------------------------------


async def asgi_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    args = _args(scope["query_string"].decode())
    if path == "/pathsend":
        headers = [(b"content-type", b"application/octet-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.pathsend", "path": os.path.abspath(args["path"])})
        return
    if path == "/big":
        size = int(args.get("size", str(1 << 20)))
        body = pattern(size)
        headers = [(b"content-type", b"application/octet-stream")]
        if args.get("cl"):
            headers.append((b"content-length", b"%d" % size))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if args.get("more"):
            await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        else:
            await send({"type": "http.response.body", "body": body})
        return
    body = _stats_body() if path == "/stats" else b"not found"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


# -- Django (WSGI) ------------------------------------------------------------------------


def django_app():
    import django
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application
    from django.http import FileResponse, HttpResponse
    from django.urls import path

    def file_view(request):
        return FileResponse(_open(request.GET["path"], 0))

    def stats_view(request):
        return HttpResponse(_stats_body(), content_type="application/json")

    module = sys.modules[__name__]
    module.urlpatterns = [path("file", file_view), path("stats", stats_view)]  # type: ignore[attr-defined]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="test-only-not-a-secret",
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        DATABASES={},
    )
    django.setup()
    return get_wsgi_application()


# -- callback -----------------------------------------------------------------------------


def callback_app(request) -> None:
    args = _args(request.query)
    if request.path == "/raw-big":
        size = int(args.get("size", str(1 << 20)))
        request.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        request.write(pattern(size))
        request.finish()
        return
    if request.path == "/raw-later":
        request.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")

        def later() -> None:
            request.write(b"5\r\nlater\r\n0\r\n\r\n")
            request.finish()

        IOLoop.instance().asyncio_loop.call_later(0.3, later)
        return
    if request.path == "/stats":
        request.write_headers(200, [("Content-Type", "application/json")])
        request.write(_stats_body())
    else:
        size = int(args.get("size", str(1 << 20)))
        request.write_headers(200, [("Content-Type", "application/octet-stream")])
        request.write(pattern(size))
    request.finish()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--interface", default="wsgi")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--asyncio", action="store_true", help="asyncio's loop, not uvloop")
    args = parser.parse_args()
    if args.asyncio:
        os.environ["PREFORK_UVLOOP"] = "0"
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    if args.interface == "asgi":
        from prefork.worker.asgi import ASGIAdapter

        callback = ASGIAdapter(asgi_app)
    elif args.interface == "callback":
        callback = callback_app
    else:
        from prefork.worker.wsgi import WSGIAdapter

        callback = WSGIAdapter(django_app() if args.interface == "django" else wsgi_app)
    ssl_options = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else None
    server = httpserver.HTTPServer(callback, ssl_options=ssl_options)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    IOLoop.instance().start()


if __name__ == "__main__":
    main()
