"""An ASGI WebSocket test application, served by HTTPServer(ASGIAdapter(app)).

Run as a script it binds port 0 on 127.0.0.1, prints the port as the first
line of stdout and serves until terminated; ``--max-size``,
``--ping-interval``, ``--ping-timeout`` and ``--no-deflate`` are the ``ws_*``
settings; ``--certfile``/``--keyfile`` serve wss.  Imported (``tests.apps.ws_app:app``) it is an ordinary ASGI
application for the command line.

Routes (by path; the query string carries arguments):

* ``/echo``          -- accept, send every message back as it came (text as
  text, bytes as bytes); ``subprotocol=first`` accepts the client's first.
* ``/deny``          -- websocket.close before the accept (HTTP 403).
* ``/deny-custom``   -- a denial response: 401 with a header and a body in two parts.
* ``/deny-interim``  -- a "denial" with status 101: the application's error (500).
* ``/raise-before``, ``/raise-after`` (after one message), ``/return``
  (accept, then return), ``/return-before`` (return without an answer).
* ``/close``         -- accept, then close with ``code`` and ``reason``.
* ``/headers``       -- accept with an extra header.
* ``/handshake-headers`` -- accept naming the subprotocol as a header (the
  client's first, or ``protocol``), with fields that are the server's own, then echo.
* ``/send``          -- accept, send ``n`` bytes (``text=1``: as text), then
  close 1000.
* ``/slow``          -- accept, wait for a marker file (``go=PATH``) before
  reading anything, then report how many messages it read.
* ``/record``        -- accept, echo, and append every event after the accept
  (and what a send after the disconnect raised) to the file ``log=PATH``:
  the test's view of what the application saw.
* ``/flood``         -- accept, send ``n`` binary messages of ``size`` bytes,
  writing the number sent so far to the file ``log=PATH`` every 10 messages.
* ``/bad-subprotocol`` -- accept a subprotocol the client did not offer.
* ``/bad-send``      -- accept, then send a message with both bytes and text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from urllib.parse import parse_qs

if __package__ in (None, ""):  # run as a script: make ``prefork`` and ``tests`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))


def _args(scope) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}


def _log(path: str | None, event) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(event) + "\n")


async def echo(receive, send, log: str | None = None) -> None:
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            _log(log, message)
            try:
                await send({"type": "websocket.send", "text": "after the disconnect"})
            except OSError as exc:
                _log(log, {"send_after_disconnect": type(exc).__name__})
            except RuntimeError as exc:
                _log(log, {"send_after_disconnect": "RuntimeError", "message": str(exc)})
            return
        _log(
            log,
            {
                "type": message["type"],
                "size": len(message.get("text") or message.get("bytes") or ""),
            },
        )
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})


async def websocket_app(scope, receive, send) -> None:
    path = scope["path"]
    args = _args(scope)
    connect = await receive()
    assert connect["type"] == "websocket.connect", connect
    if path == "/deny":
        await send({"type": "websocket.close"})
        return
    if path == "/deny-custom":
        await send(
            {
                "type": "websocket.http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"text/plain"), (b"x-denied", b"yes")],
            }
        )
        await send({"type": "websocket.http.response.body", "body": b"not ", "more_body": True})
        await send({"type": "websocket.http.response.body", "body": b"you"})
        return
    if path == "/deny-interim":  # a 1xx is no denial (a 101 would claim the upgrade)
        await send({"type": "websocket.http.response.start", "status": 101, "headers": []})
        await send({"type": "websocket.http.response.body", "body": b""})
        return
    if path == "/raise-before":
        raise RuntimeError("failed before the accept, on purpose")
    if path == "/return-before":
        return
    accept: dict = {"type": "websocket.accept"}
    if args.get("subprotocol") == "first" and scope["subprotocols"]:
        accept["subprotocol"] = scope["subprotocols"][0]
    if path == "/headers":
        accept["headers"] = [(b"x-extra", b"1"), (b"set-cookie", b"a=b")]
    if path == "/handshake-headers":
        # The older way to pick a subprotocol (a header; the spec now says the
        # ``subprotocol`` key), and fields that are the server's to write.
        chosen = args.get("protocol", scope["subprotocols"][0] if scope["subprotocols"] else "")
        accept["headers"] = [
            (b"sec-websocket-protocol", chosen.encode()),
            (b"content-length", b"5"),
            (b"sec-websocket-accept", b"bogus"),
            (b"x-extra", b"1"),
        ]
        try:
            await send(accept)
        except RuntimeError:
            await send({"type": "websocket.close"})  # (still before the accept: a 403)
            return
        await echo(receive, send)
        return
    if path == "/bad-subprotocol":
        accept["subprotocol"] = "never-offered"
        try:
            await send(accept)
        except RuntimeError:
            await send({"type": "websocket.close"})  # (still before the accept: a 403)
        return
    await send(accept)
    if path == "/echo":
        await echo(receive, send)
    elif path == "/record":
        _log(args.get("log"), {"scope_subprotocols": scope["subprotocols"]})
        await echo(receive, send, args.get("log"))
    elif path == "/raise-after":
        await receive()
        raise RuntimeError("failed after the accept, on purpose")
    elif path == "/return":
        return
    elif path == "/bad-reason":  # a reason no close frame can carry, left to raise
        await send({"type": "websocket.close", "code": 4000, "reason": b"bytes, not text"})
    elif path == "/close":
        await send(
            {
                "type": "websocket.close",
                "code": int(args.get("code", "1000")),
                "reason": args.get("reason", ""),
            }
        )
        try:
            await send({"type": "websocket.send", "text": "after the close"})
        except RuntimeError as exc:
            _log(args.get("log"), {"send_after_close": "RuntimeError", "message": str(exc)})
        except OSError as exc:
            _log(args.get("log"), {"send_after_close": type(exc).__name__})
        _log(args.get("log"), await receive())
    elif path == "/send":
        n = int(args.get("n", "10"))
        data = (b"0123456789abcdef" * (n // 16 + 1))[:n]
        if args.get("text") == "1":
            await send({"type": "websocket.send", "text": data.decode()})
        else:
            await send({"type": "websocket.send", "bytes": data})
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/slow":
        go = args["go"]
        while not os.path.exists(go):
            await asyncio.sleep(0.02)
        count = 0
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            count += 1
            if message.get("text") == "done":
                await send({"type": "websocket.send", "text": str(count)})
    elif path == "/flood":
        n, size, log = int(args["n"]), int(args["size"]), args["log"]
        for i in range(n):
            await send({"type": "websocket.send", "bytes": i.to_bytes(4, "big") * (size // 4)})
            if (i + 1) % 10 == 0 or i + 1 == n:
                Path(log).write_text(str(i + 1))
        await send({"type": "websocket.close", "code": 1000})
    elif path == "/send-forever":
        # Sends from memory, awaiting nothing but send(); logs how it ended.
        try:
            while True:
                await send({"type": "websocket.send", "bytes": b"z" * 16384})
        except Exception as exc:
            Path(args["log"]).write_text(type(exc).__name__)
            raise
    elif path == "/bad-send":
        try:
            await send({"type": "websocket.send", "text": "a", "bytes": b"b"})
        except RuntimeError as exc:
            await send({"type": "websocket.send", "text": f"RuntimeError: {exc}"})
        await echo(receive, send)
    else:
        await send({"type": "websocket.close", "code": 1008})


async def app(scope, receive, send) -> None:
    if scope["type"] == "websocket":
        await websocket_app(scope, receive, send)
    elif scope["type"] == "http":
        body = b"plain http\n"
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    from prefork import IOLoop, httpserver
    from prefork.settings import make_config
    from prefork.sockets import bind_sockets
    from prefork.worker.asgi import ASGIAdapter

    parser = argparse.ArgumentParser()
    parser.add_argument("--max-size", type=int, default=16 * 1024 * 1024)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--no-deflate", action="store_true")
    parser.add_argument("--send-timeout", type=float, default=60.0)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    config = make_config(
        None,
        ws_max_size=args.max_size,
        ws_ping_interval=args.ping_interval,
        ws_ping_timeout=args.ping_timeout,
        ws_per_message_deflate=not args.no_deflate,
        send_timeout=args.send_timeout,
        access_log="off",
    )
    ssl_options = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else None
    server = httpserver.HTTPServer(ASGIAdapter(app, config), config=config, ssl_options=ssl_options)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    IOLoop.instance().start()


if __name__ == "__main__":
    main()
