"""A real Starlette application for the ASGI tests (tests/e2e/test_asgi_apps.py).

``python -m prefork --interface asgi tests.apps.starlette_app:app``.  Events
go to the file named by ``APP_EVENTS_LOG`` (see ``asgi_events.py``).

Routes (the FastAPI app, ``fastapi_app.py``, has the same ones):

* ``GET /json``                    -- a fixed JSON document
* ``POST /json``                   -- the JSON body back, with its sorted keys
* ``GET /items/{item_id:int}?q=&limit=``  -- path and query parameters
* ``POST /upload``                 -- multipart: the file's name, type, size, sha256, a form field
* ``GET /stream?n=``               -- StreamingResponse, ``n`` lines
* ``GET /gated?gate=PATH``         -- streams ``first``, then ``second`` once PATH exists
* ``GET /sse?n=``                  -- server-sent events
* ``POST /background?word=``       -- answers, then a background task writes an event
* ``GET /state``                   -- uses the resource the lifespan put in ``state``
* ``WS /chat?name=``               -- a chat room (the WebSockets of one worker)
"""

from __future__ import annotations

import contextlib
import hashlib
import os

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

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

FRAMEWORK = "starlette"
room = ChatRoom()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    resource = Resource(f"{FRAMEWORK}-pool").start()
    try:
        yield {"resource": resource}
    finally:
        resource.close()


async def get_json(request: Request) -> JSONResponse:
    return JSONResponse({"framework": FRAMEWORK, "message": "hello", "pid": os.getpid()})


async def post_json(request: Request) -> JSONResponse:
    data = await request.json()
    return JSONResponse({"received": data, "keys": sorted(data)}, status_code=201)


async def item(request: Request) -> JSONResponse:
    limit = request.query_params.get("limit")
    return JSONResponse(
        {
            "item_id": request.path_params["item_id"],
            "q": request.query_params.get("q"),
            "limit": int(limit) if limit is not None else 10,
            "tags": request.query_params.getlist("tag"),
        }
    )


async def upload(request: Request) -> JSONResponse:
    async with request.form(max_part_size=4 * 1024 * 1024) as form:
        uploaded = form["file"]
        content = await uploaded.read()
        return JSONResponse(
            {
                "filename": uploaded.filename,
                "content_type": uploaded.content_type,
                "size": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "note": form.get("note"),
            }
        )


async def stream(request: Request) -> StreamingResponse:
    n = int(request.query_params.get("n", "5"))
    return StreamingResponse(counted_lines(n), media_type="text/plain")


async def gated(request: Request) -> StreamingResponse:
    return StreamingResponse(gated_stream(request.query_params["gate"]), media_type="text/plain")


async def sse(request: Request) -> StreamingResponse:
    n = int(request.query_params.get("n", "3"))
    return StreamingResponse(
        server_sent_events(n),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache"},
    )


async def background(request: Request) -> JSONResponse:
    word = request.query_params["word"]
    return JSONResponse({"scheduled": word}, background=BackgroundTask(event, "background", word))


async def state(request: Request) -> JSONResponse:
    return JSONResponse({**request.state.resource.describe(), "pid": os.getpid()})


async def chat(websocket: WebSocket) -> None:
    name = websocket.query_params.get("name", "anonymous")
    await chat_session(room, websocket, name, WebSocketDisconnect)


app = Starlette(
    routes=[
        Route("/json", get_json, methods=["GET"]),
        Route("/json", post_json, methods=["POST"]),
        Route("/items/{item_id:int}", item),
        Route("/upload", upload, methods=["POST"]),
        Route("/stream", stream),
        Route("/gated", gated),
        Route("/sse", sse),
        Route("/background", background, methods=["POST"]),
        Route("/state", state),
        WebSocketRoute("/chat", chat),
    ],
    lifespan=lifespan,
)
app.add_middleware(FirstRequest)
