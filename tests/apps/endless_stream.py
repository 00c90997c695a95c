"""One response of 128 MiB in 64 KiB pieces, through each interface
(``endless_stream:asgi``, ``:wsgi``, ``:callback``; ASGI also as WebSocket
messages): a client that reads a little and leaves finds the application
still writing."""

from __future__ import annotations

import os
from typing import Any

PIECE = b"x" * 65536
PIECES = 2048


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "websocket":  # the same, as WebSocket messages
        await receive()
        await send({"type": "websocket.accept"})
        try:
            for _ in range(PIECES):
                await send({"type": "websocket.send", "bytes": PIECE})
        finally:  # (a line per WebSocket ended, in $ENDLESS_MARK if set)
            mark = os.environ.get("ENDLESS_MARK")
            if mark:
                with open(mark, "a") as file:
                    file.write("ended\n")
        return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    for _ in range(PIECES):
        await send({"type": "http.response.body", "body": PIECE, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    for _ in range(PIECES):
        yield PIECE


def callback(request: Any) -> None:
    request.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (len(PIECE) * PIECES))
    for _ in range(PIECES):
        request.write(PIECE)
    request.finish()
