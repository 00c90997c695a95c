"""A closed connection is freed at once, not left to the cycle collector.

Each TLS connection holds ~300 KiB (the SSL object, its buffers, the
protocol): kept alive by a reference cycle until the collector ran, a burst
of handshakes grew a worker's heap by hundreds of MB.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Iterator

from prefork.worker.asgi import ASGIAdapter
from prefork.worker.connection import HTTPConnection
from prefork.worker.httpserver import HTTPServer
from prefork.worker.ioloop import IOLoop
from prefork.worker.wsgi import WSGIAdapter


async def _hello(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hi"})


@contextlib.contextmanager
def _loop_keeping_garbage() -> Iterator[asyncio.AbstractEventLoop]:
    """An installed IOLoop's asyncio loop, with the cycle collector off and
    what it would free kept in gc.garbage (DEBUG_SAVEALL); all undone after."""
    ioloop = IOLoop()
    ioloop.install()  # (the loop the server listens on)
    loop = ioloop.asyncio_loop
    asyncio.set_event_loop(loop)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield loop
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        loop.close()
        asyncio.set_event_loop(None)
        IOLoop.clear_instance()


def _connections_in_cycles() -> list[HTTPConnection]:
    gc.collect()
    return [obj for obj in gc.garbage if isinstance(obj, HTTPConnection)]


def test_a_closed_asgi_connection_leaves_no_cycle() -> None:
    with _loop_keeping_garbage() as loop:
        server = HTTPServer(ASGIAdapter(_hello))

        async def one_request() -> bytes:
            server.listen(0, "127.0.0.1")
            port = server._sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)  # (to the server's close)
            writer.close()
            for _ in range(20):  # a few turns: the server's side runs connection_lost
                await asyncio.sleep(0)
            return answer

        answer = loop.run_until_complete(one_request())
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hi")
        server.stop()
        assert _connections_in_cycles() == [], "the closed connection was in a reference cycle"


def _big(request) -> None:  # type: ignore[no-untyped-def]
    body = b"x" * (8 << 20)
    request.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    request.finish()


def test_a_connection_closed_with_its_output_stalled_leaves_no_cycle() -> None:
    """The send_timeout clock a stalled connection makes holds the connection
    (its callback) and the transport: kept after the close, each closed TLS
    connection with unread output (~1 MB) waited for the cycle collector
    (a probe: RSS +55 MB per 50 such connections)."""
    import socket

    with _loop_keeping_garbage() as loop:
        server = HTTPServer(_big)

        async def stalled_then_closed() -> None:
            server.listen(0, "127.0.0.1")
            port = server._sockets[0].getsockname()[1]
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            await loop.sock_connect(client, ("127.0.0.1", port))
            await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(2000):  # until the server's output stalls (bounded)
                if any(c._send_clock is not None for c in list(server._connections)):
                    break
                await asyncio.sleep(0.005)
            else:
                raise AssertionError("the server's output never stalled")
            client.close()  # (its bytes unread: a reset)
            for _ in range(200):  # the server's side runs connection_lost
                if not server._connections:
                    break
                await asyncio.sleep(0.005)
            assert not server._connections

        loop.run_until_complete(stalled_then_closed())
        server.stop()
        assert _connections_in_cycles() == [], "the closed connection was in a reference cycle"


async def _read_body(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"%d" % size})


def test_an_asgi_request_with_a_streamed_body_leaves_no_cycle() -> None:
    """A body still arriving when the application starts is a BodyStream whose
    ``on_event`` is the ASGI cycle's wake-up, and that cycle holds the
    request, which holds the stream: every streamed upload (whole, or cut by
    the client) kept its connection, with its TLS buffers, for the cycle
    collector (a soak probe: 5 HTTPConnection in gc.garbage per 5 cut uploads)."""
    with _loop_keeping_garbage() as loop:
        server = HTTPServer(ASGIAdapter(_read_body))

        async def uploads() -> bytes:
            server.listen(0, "127.0.0.1")
            port = server._sockets[0].getsockname()[1]
            head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n"
            # A whole body, in two parts (the application starts on the first)...
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + b"x" * 1000)
            await asyncio.sleep(0.05)
            writer.write(b"x" * 9000)
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            answer += await asyncio.wait_for(reader.readexactly(5), 10)
            writer.close()
            # ... and a body cut by the client.
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head + b"x" * 1000)
            await asyncio.sleep(0.05)
            writer.close()
            for _ in range(200):  # the server's side runs connection_lost (bounded)
                if not server._connections:
                    break
                await asyncio.sleep(0.005)
            assert not server._connections
            for _ in range(20):  # (the application's task ends)
                await asyncio.sleep(0)
            return answer

        answer = loop.run_until_complete(uploads())
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"10000")
        server.stop()
        assert _connections_in_cycles() == [], "a closed connection was in a reference cycle"


def _wsgi_hello(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Length", "2")])
    return [b"hi"]


def test_a_wsgi_request_under_request_timeout_leaves_no_cycle() -> None:
    """With --request-timeout the WSGI adapter gives the request an
    ``on_timeout`` that holds its response, and the response holds the
    request: every WSGI request left its connection in a reference cycle
    (a soak probe: one HTTPConnection in gc.garbage per request)."""
    with _loop_keeping_garbage() as loop:
        adapter = WSGIAdapter(_wsgi_hello, threads=1)
        server = HTTPServer(adapter, request_timeout=30)

        async def one_request() -> bytes:
            server.listen(0, "127.0.0.1")
            port = server._sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 10)  # (to the server's close)
            writer.close()
            for _ in range(200):  # the server's side runs connection_lost (bounded)
                if not server._connections:
                    break
                await asyncio.sleep(0.005)
            return answer

        try:
            answer = loop.run_until_complete(one_request())
        finally:
            server.stop()
            adapter.shutdown()
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hi")
        assert _connections_in_cycles() == [], "the closed connection was in a reference cycle"
