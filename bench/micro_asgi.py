"""Micro-benchmark of the ASGI path, in process, prefork against uvicorn, without sockets.

    python bench/micro_asgi.py              # µs of CPU per request, per case
    python bench/micro_asgi.py --profile    # and a cProfile breakdown of each prefork case
    python bench/micro_asgi.py -n 5000 -r 3 # a quick look

The approach of ``bench/micro.py``, for ASGI: each request is handed to the
server's protocol object as the event loop would (``data_received`` with the
whole request in one read) on one keep-alive connection whose transport only
counts bytes, and a driver coroutine awaits the moment the whole response has
been written before sending the next request.  So it is the server's Python
plus the event loop's task machinery (uvloop when installed), without system
calls: what the server costs per request on top of the kernel's share.

Cases, each on ``bench/apps/asgi_app.py`` (GET /, 13 bytes), ``POST /echo``
with 10 KiB and ``bench/apps/fastapi_app.py`` (GET /items/42?q=bench):

* ``prefork asgi``: ``HTTPServer(ASGIAdapter(app))``, as ``--interface asgi``;
* ``uvicorn httptools``: uvicorn's ``HttpToolsProtocol`` (what
  ``--http httptools`` runs), with its keep-alive timer and all;
* ``prefork callback``: the seed-style callback app of ``bench/micro.py`` (the
  floor: prefork without ASGI), for the hello case only;
* ``prefork core + bare adapter``: the ASGI hello app in its own task on
  prefork's connection core, through an adapter that checks and looks up
  nothing (:class:`BareAdapter`): the floor under any ASGI adapter on this core;
* ``driver``: a protocol that answers at once; the driver's own cost;
* ``the app in its own task``: the same, each call in a task of its own, as a
  server runs it (anyio-based frameworks need one per request): the floor
  under every server that does so;
* ``the app alone``: the application awaited directly with a ready scope and
  no-op ``receive``/``send``: the floor under every server for that app.

Figures: the best of ``-r`` runs of ``-n`` requests of ``time.process_time()``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import micro  # noqa: E402
from bench.micro import measure, profile  # noqa: E402  (one way to time and profile a case)
from prefork.worker.httpserver import HTTPServer  # noqa: E402
from prefork.worker.ioloop import new_event_loop  # noqa: E402

HELLO_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
ECHO_BODY = b"x" * 10240
ECHO_REQUEST = (
    b"POST /echo HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/octet-stream\r\n"
    b"Content-Length: %d\r\n\r\n" % len(ECHO_BODY)
) + ECHO_BODY
FASTAPI_REQUEST = (
    b"GET /items/42?q=bench HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\n\r\n"
)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!"


class FakeTransport(micro.FakeTransport):
    """bench/micro.py's fake transport, which also wakes the driver and takes a protocol."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.loop = loop
        self.target = 0  # wake the driver once this many bytes were written
        self.waiter: asyncio.Future[None] | None = None
        self.protocol: Any = None

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.waiter is not None and self.written >= self.target:
            waiter, self.waiter = self.waiter, None
            waiter.set_result(None)

    def writelines(self, chunks: list[bytes]) -> None:
        self.write(b"".join(chunks))

    def get_extra_info(self, name: str, default: object = None) -> object:
        info = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}
        return info.get(name, default)

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def is_reading(self) -> bool:
        return True


def _callback(request) -> None:  # type: ignore[no-untyped-def]
    request.write(RESPONSE)
    request.finish()


class _Instant(asyncio.Protocol):
    """The driver's floor: answers every request at once."""

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(RESPONSE)


def prefork_protocol(app: Any, asgi: bool, loop: asyncio.AbstractEventLoop) -> Any:
    # Keep-alive timers long enough never to fire between runs (cases are built up front).
    server = HTTPServer(_asgi_adapter(app) if asgi else app, keep_alive=3600)
    server._loop = loop
    return server._make_connection()


def _asgi_adapter(app: Any) -> Any:
    from prefork.worker.asgi import ASGIAdapter

    return ASGIAdapter(app)


def uvicorn_protocol(app: Any, loop: asyncio.AbstractEventLoop) -> Any:
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(
        app, http="httptools", ws="none", lifespan="off", access_log=False, timeout_keep_alive=3600
    )
    config.load()
    return HttpToolsProtocol(config, ServerState(), app_state={}, _loop=loop)


class Case:
    """One protocol object on one fake connection on its own loop, driven request by request."""

    def __init__(self, make: Callable[[asyncio.AbstractEventLoop], Any], request: bytes) -> None:
        self.loop = new_event_loop()
        self.transport = FakeTransport(self.loop)
        self.protocol = make(self.loop)
        self.protocol.connection_made(self.transport)
        self.request = request
        self.size = self._first_response_size()

    def _first_response_size(self) -> int:
        async def settle() -> int:
            self.protocol.data_received(self.request)
            for _ in range(50):
                await asyncio.sleep(0)
            return self.transport.written

        size = self.loop.run_until_complete(settle())
        if not size:
            raise AssertionError("no response")
        return size

    def __call__(self, n: int) -> None:
        transport, protocol, request, size = self.transport, self.protocol, self.request, self.size
        loop = self.loop

        async def drive() -> None:
            for _ in range(n):
                waiter = transport.waiter = loop.create_future()
                transport.target = transport.written + size
                protocol.data_received(request)
                await waiter

        before = transport.written
        loop.run_until_complete(drive())
        if transport.written - before != n * size or transport.closed:
            raise AssertionError("the connection did not answer every request alike")


class BareAdapter:
    """The floor of any ASGI adapter on prefork's connection core: a scope with
    nothing looked up, ``receive``/``send`` that check nothing and write a
    fixed head, the application in a task of its own.  Not a server (it
    answers the hello case only, unchecked): what prefork's core and the
    task cost before any of the ASGI adapter's own work."""

    streams_request_body = True
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 13\r\n\r\n"

    def __init__(self, app: Any) -> None:
        self.app = app

    def __call__(self, request: Any) -> None:
        scope = {"type": "http", "method": request.method, "path": request.path, "headers": []}
        head = self.head

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                request.write(head + message["body"])
                request.finish()

        asyncio.get_event_loop().create_task(self.app(scope, receive, send))


class AppAlone:
    """The application by itself: ``await app(scope, receive, send)`` in a loop, no server.

    The scope is what uvicorn would build for the request (copied per call:
    apps write into it), ``receive`` hands over the body at once and
    ``send`` does nothing; so this is the app's own cost, the floor under
    every server's figure for it.
    """

    def __init__(self, app: Any, request: bytes, own_task: bool = False) -> None:
        self.app = app
        self.own_task = own_task
        self.loop = new_event_loop()
        head, _, self.body = request.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        path, _, query = target.partition("?")
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [
                (name.strip().lower().encode(), value.strip().encode())
                for name, _, value in (line.partition(":") for line in lines[1:])
            ],
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8080),
            "state": {},
        }

    def __call__(self, n: int) -> None:
        app, scope, body, loop = self.app, self.scope, self.body, self.loop

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            pass

        async def drive() -> None:
            if self.own_task:
                for _ in range(n):
                    await loop.create_task(app(dict(scope, state={}), receive, send))
                return
            for _ in range(n):
                await app(dict(scope, state={}), receive, send)

        self.loop.run_until_complete(drive())


def cases() -> list[tuple[str, Callable[[int], None]]]:
    from bench.apps.asgi_app import app as asgi_app

    found: list[tuple[str, Callable[[int], None]]] = [
        ("driver (answers at once)          hello", Case(lambda loop: _Instant(), HELLO_REQUEST)),
        (
            "prefork callback (no ASGI)        hello",
            Case(lambda loop: prefork_protocol(_callback, False, loop), HELLO_REQUEST),
        ),
        (
            "prefork core + bare adapter       hello",
            Case(lambda loop: prefork_protocol(BareAdapter(asgi_app), False, loop), HELLO_REQUEST),
        ),
    ]
    apps: list[tuple[str, Any, bytes]] = [
        ("hello", asgi_app, HELLO_REQUEST),
        ("echo 10 KiB", asgi_app, ECHO_REQUEST),
    ]
    try:
        from bench.apps.fastapi_app import app as fastapi_app
    except ImportError:
        print("(fastapi not installed: no fastapi-json case)", file=sys.stderr)
    else:
        apps.append(("fastapi-json", fastapi_app, FASTAPI_REQUEST))
    for what, app, request in apps:
        found.append((f"the app alone (no server)         {what}", AppAlone(app, request)))
        found.append(
            (f"the app in its own task           {what}", AppAlone(app, request, own_task=True))
        )
        found.append(
            (
                f"prefork asgi                      {what}",
                Case(lambda loop, app=app: prefork_protocol(app, True, loop), request),
            )
        )
        try:
            uvicorn = Case(lambda loop, app=app: uvicorn_protocol(app, loop), request)
        except ImportError:
            continue
        found.append((f"uvicorn httptools                 {what}", uvicorn))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("-r", "--runs", type=int, default=5, help="runs per case (best counts)")
    parser.add_argument("--profile", action="store_true", help="cProfile each prefork case")
    parser.add_argument("--limit", type=int, default=25, help="profile lines per case")
    args = parser.parse_args()
    found = cases()
    print(f"µs of CPU per request (best of {args.runs} runs of {args.requests}):")
    for name, run in found:
        print(f"  {name:48s} {measure(run, args.requests, args.runs):7.2f}")
    if args.profile:
        for name, run in found:
            if name.startswith("prefork asgi"):
                print(f"\n== {' '.join(name.split())}")
                print(profile(run, args.requests, args.limit))


if __name__ == "__main__":
    main()
