"""A real Litestar application for the ASGI tests (tests/e2e/test_asgi_apps.py).

``python -m prefork --interface asgi tests.apps.litestar_app:app``.  The same
routes as ``starlette_app.py`` (see its docstring), written the Litestar way
(typed path and query parameters validated by Litestar, a multipart body
decoded by Litestar's own parser, ``Stream`` responses, a ``BackgroundTask``, the resource on ``app.state`` from a
lifespan context manager, a WebSocket route handler).  Litestar answers HEAD
only on routes that declare it, and a path or query parameter of the wrong
type with 400 (its ValidationException).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Litestar, WebSocket, get, post, websocket
from litestar.background_tasks import BackgroundTask
from litestar.datastructures import State, UploadFile
from litestar.enums import RequestEncodingType
from litestar.exceptions import WebSocketDisconnect
from litestar.params import Body
from litestar.response import Response, Stream

from tests.apps.asgi_events import (
    ChatRoom,
    FirstRequest,
    Resource,
    chat_session,
    counted_lines,
    event,
    gated_stream,
    server_sent_events,
)

FRAMEWORK = "litestar"
room = ChatRoom()


class FirstRequestAfterLifespan(FirstRequest):
    """Litestar keeps what its lifespan opens on ``app.state``, not in the ASGI state."""

    def has_state(self, scope: Any) -> bool:
        return hasattr(app.state, "resource")


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    resource = app.state.resource = Resource(f"{FRAMEWORK}-pool").start()
    try:
        yield
    finally:
        resource.close()


@get("/json")
async def get_json() -> dict[str, Any]:
    return {"framework": FRAMEWORK, "message": "hello", "pid": os.getpid()}


@post("/json")
async def post_json(data: dict[str, Any]) -> dict[str, Any]:
    return {"received": data, "keys": sorted(data)}


@get("/items/{item_id:int}")
async def item(
    item_id: int, q: str | None = None, limit: int = 10, tag: list[str] | None = None
) -> dict[str, Any]:
    return {"item_id": item_id, "q": q, "limit": limit, "tags": tag or []}


@post("/upload", status_code=200)
async def upload(
    data: Annotated[dict[str, Any], Body(media_type=RequestEncodingType.MULTI_PART)],
) -> dict[str, Any]:
    uploaded: UploadFile = data["file"]
    content = await uploaded.read()
    return {
        "filename": uploaded.filename,
        "content_type": uploaded.content_type,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "note": data.get("note"),
    }


@get("/stream")
async def stream(n: int = 5) -> Stream:
    return Stream(counted_lines(n), media_type="text/plain")


@get("/gated")
async def gated(gate: str) -> Stream:
    return Stream(gated_stream(gate), media_type="text/plain")


@get("/sse")
async def sse(n: int = 3) -> Stream:
    # (the shared generator yields the events formatted, as for the other apps)
    return Stream(
        server_sent_events(n),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


@post("/background", status_code=200)
async def background(word: str) -> Response[dict[str, str]]:
    return Response({"scheduled": word}, background=BackgroundTask(event, "background", word))


@get("/state")
async def state(state: State) -> dict[str, Any]:
    return {**state.resource.describe(), "pid": os.getpid()}


@websocket("/chat")
async def chat(socket: WebSocket, name: str = "anonymous") -> None:
    await chat_session(room, socket, name, WebSocketDisconnect)


app = Litestar(
    route_handlers=[get_json, post_json, item, upload, stream, gated, sse, background, state, chat],
    lifespan=[lifespan],
    middleware=[FirstRequestAfterLifespan],
    request_max_body_size=16 * 1024 * 1024,
)
