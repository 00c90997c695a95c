"""One response of 128 MiB in 64 KiB pieces, through each interface
(``endless_stream:asgi``, ``:wsgi``, ``:callback``): a client that reads a
little and leaves finds the application still writing."""

from __future__ import annotations

from typing import Any

PIECE = b"x" * 65536
PIECES = 2048


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
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
