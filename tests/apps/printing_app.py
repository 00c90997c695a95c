"""An ASGI application that prints: on import, and on every request to
stdout and stderr (``--capture-output``'s test)."""

from __future__ import annotations

import sys
from typing import Any

print("printing_app imported (stdout)", flush=True)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    tag = scope["path"].strip("/")
    print(f"request {tag} (stdout)", flush=True)
    print(f"request {tag} (stderr)", file=sys.stderr, flush=True)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})
