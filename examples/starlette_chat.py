"""A Starlette WebSocket chat: every message goes to every connection of the room.

    python -m prefork -w 1 --interface asgi examples.starlette_chat:app

Then open http://127.0.0.1:8000/ in two browser tabs, or connect to
ws://127.0.0.1:8000/ws?name=alice with any WebSocket client.

The room is this module's ``ROOM``: the connections of *one worker*. With
several workers (``-w 4``), each worker has its own room, and two clients
talk to each other only if the kernel handed both connections to the same
worker. To chat across workers (or hosts), the workers must share a broker:
publish each message to Redis, NATS, PostgreSQL LISTEN/NOTIFY, ... and have
every worker forward what it receives to its own connections.
"""

from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

ROOM: set[WebSocket] = set()

PAGE = """<!doctype html>
<title>prefork chat</title>
<form id="f"><input id="m" autocomplete="off" autofocus><button>send</button></form>
<ul id="log"></ul>
<script>
const name = "guest" + Math.floor(Math.random() * 1000);
const ws = new WebSocket(`ws://${location.host}/ws?name=${name}`);
ws.onmessage = (e) => {
  const li = document.createElement("li");
  li.textContent = e.data;
  document.getElementById("log").append(li);
};
document.getElementById("f").onsubmit = (e) => {
  e.preventDefault();
  ws.send(document.getElementById("m").value);
  document.getElementById("m").value = "";
};
</script>
"""


async def broadcast(text: str) -> None:
    for websocket in list(ROOM):
        try:
            await websocket.send_text(text)
        except Exception:  # a member leaving right now; its own handler cleans up
            ROOM.discard(websocket)


async def page(request):
    return HTMLResponse(PAGE)


async def chat(websocket: WebSocket) -> None:
    name = websocket.query_params.get("name", "anonymous")
    await websocket.accept()
    ROOM.add(websocket)
    await broadcast(f"* {name} joined ({len(ROOM)} here)")
    try:
        while True:
            text = await websocket.receive_text()
            await broadcast(f"{name}: {text}")
    except WebSocketDisconnect:
        pass
    finally:
        ROOM.discard(websocket)
        await broadcast(f"* {name} left")


app = Starlette(routes=[Route("/", page), WebSocketRoute("/ws", chat)])
