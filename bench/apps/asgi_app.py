"""The hello app as ASGI 3, served as is by every ASGI server (uvicorn, granian, hypercorn,
gunicorn's ASGI worker, ``prefork --interface asgi``).

Besides the routes of :mod:`bench.apps`: ``POST /echo`` answers with the request
body; a WebSocket at ``/ws`` echoes every message (text as text, bytes as bytes).
"""

from __future__ import annotations

import os

from bench.apps import BIG, CONTENT_TYPE, HELLO, big_file, pid

FILE = big_file()


async def _lifespan(receive, send) -> None:
    """Answer startup and shutdown, so uvicorn logs no lifespan complaint."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _drain(receive) -> None:
    """Read the whole request body, as a real upload handler would."""
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)


async def _read_body(receive) -> bytes:
    """The whole request body, for the echo."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while message.get("more_body", False):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def _websocket(scope, receive, send) -> None:
    """``/ws``: accept, then send every message back as it came; other paths are refused."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if scope["path"] != "/ws":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect
        text = message.get("text")
        if text is not None:
            await send({"type": "websocket.send", "text": text})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes") or b""})


async def _file(scope, send) -> None:
    """``/file``: the 1 MiB file, by ``http.response.pathsend`` where the server
    offers it, else read in 64 KiB pieces (as Starlette's FileResponse does)."""
    headers = [
        (b"content-type", CONTENT_TYPE.encode()),
        (b"x-pid", pid().encode()),
        (b"content-length", b"%d" % os.path.getsize(FILE)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if "http.response.pathsend" in scope.get("extensions", {}):
        await send({"type": "http.response.pathsend", "path": FILE})
        return
    with open(FILE, "rb") as file:  # noqa: ASYNC230 - a small local file, as the peers read it
        while chunk := file.read(65536):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def app(scope, receive, send) -> None:
    """``/big`` gets 1 MiB, ``POST /echo`` its body back, other ``POST`` bodies are read,
    everything answers 200; ``/ws`` is a WebSocket echo."""
    kind = scope["type"]
    if kind == "lifespan":
        await _lifespan(receive, send)
        return
    if kind == "websocket":
        await _websocket(scope, receive, send)
        return
    if scope["path"] == "/file":
        await _file(scope, send)
        return
    if scope["method"] == "POST":
        if scope["path"] == "/echo":
            body = await _read_body(receive)
            headers = [
                (b"content-type", b"application/octet-stream"),
                (b"content-length", b"%d" % len(body)),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await _drain(receive)
    body = BIG if scope["path"] == "/big" else HELLO
    headers = [
        (b"content-type", CONTENT_TYPE.encode()),
        (b"x-pid", pid().encode()),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
