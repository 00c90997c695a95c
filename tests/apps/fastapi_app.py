"""A real FastAPI application for the ASGI tests (tests/e2e/test_asgi_apps.py).

``python -m prefork --interface asgi tests.apps.fastapi_app:app``.  The same
routes as ``starlette_app.py`` (see its docstring), written the FastAPI way
(typed path and query parameters, ``UploadFile`` and ``Form``,
``BackgroundTasks``, a dependency on the lifespan's state), plus:

* ``POST /items``  -- a pydantic model: 201 with the item, 422 when invalid
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import Annotated, Any

from fastapi import (
    BackgroundTasks,
    Body,
    Depends,
    FastAPI,
    Form,
    Query,
    Request,
    UploadFile,
    WebSocket,
    WebSocketDisconnect,
)
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

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

FRAMEWORK = "fastapi"
room = ChatRoom()


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    resource = Resource(f"{FRAMEWORK}-pool").start()
    try:
        yield {"resource": resource}
    finally:
        resource.close()


app = FastAPI(lifespan=lifespan)
app.add_middleware(FirstRequest)


def get_resource(request: Request) -> Resource:
    return request.state.resource


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


@app.get("/json")
async def get_json() -> dict[str, Any]:
    return {"framework": FRAMEWORK, "message": "hello", "pid": os.getpid()}


@app.post("/json", status_code=201)
async def post_json(data: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    return {"received": data, "keys": sorted(data)}


@app.get("/items/{item_id}")
async def item(
    item_id: int,
    q: str | None = None,
    limit: int = 10,
    tag: Annotated[list[str], Query()] = [],  # noqa: B006 - FastAPI copies defaults
) -> dict[str, Any]:
    return {"item_id": item_id, "q": q, "limit": limit, "tags": tag}


@app.post("/items", status_code=201)
async def create_item(new: Item) -> dict[str, Any]:
    return {"created": new.model_dump()}


@app.post("/upload")
async def upload(file: UploadFile, note: Annotated[str | None, Form()] = None) -> dict[str, Any]:
    content = await file.read()
    return {
        "filename": file.filename,
        "content_type": file.content_type,
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "note": note,
    }


@app.get("/stream")
async def stream(n: int = 5) -> StreamingResponse:
    return StreamingResponse(counted_lines(n), media_type="text/plain")


@app.get("/gated")
async def gated(gate: str) -> StreamingResponse:
    return StreamingResponse(gated_stream(gate), media_type="text/plain")


@app.get("/sse")
async def sse(n: int = 3) -> StreamingResponse:
    return StreamingResponse(
        server_sent_events(n),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


@app.post("/background")
async def background(word: str, tasks: BackgroundTasks) -> dict[str, str]:
    tasks.add_task(event, "background", word)
    return {"scheduled": word}


@app.get("/state")
async def state(resource: Annotated[Resource, Depends(get_resource)]) -> dict[str, Any]:
    return {**resource.describe(), "pid": os.getpid()}


@app.websocket("/chat")
async def chat(websocket: WebSocket, name: str = "anonymous") -> None:
    await chat_session(room, websocket, name, WebSocketDisconnect)
