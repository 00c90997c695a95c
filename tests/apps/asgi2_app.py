"""An ASGI 2 ("double callable") application, as Channels 2 era code wrote
them: the class is called with the scope, the instance awaited with
``(receive, send)``.  ``prefork --interface auto`` (or ``asgi``) serves it."""

from __future__ import annotations


class App:
    def __init__(self, scope: dict) -> None:
        self.scope = scope

    async def __call__(self, receive, send) -> None:  # type: ignore[no-untyped-def]
        if self.scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if self.scope["type"] != "http":
            return
        body = b"asgi2 " + self.scope["path"].encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
