"""The hello app as ASGI 3, for uvicorn (httptools + uvloop, h11 + asyncio)."""

from __future__ import annotations

from bench.apps import BIG, CONTENT_TYPE, HELLO, pid


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


async def app(scope, receive, send) -> None:
    """``/big`` gets 1 MiB, ``POST`` bodies are read, everything answers 200."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["method"] == "POST":
        await _drain(receive)
    body = BIG if scope["path"] == "/big" else HELLO
    headers = [
        (b"content-type", CONTENT_TYPE.encode()),
        (b"x-pid", pid().encode()),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})
