"""What the Starlette and FastAPI test applications share: events, a resource, a chat room.

The applications run in prefork's workers; the test watches them through
one file, named by the environment variable ``APP_EVENTS_LOG``, where each
worker appends one line per event (``EVENT PID WORDS...``; each line is one
``write`` on an ``O_APPEND`` file, so the lines of several workers never
mix).  The events:

* ``opened PID`` / ``closed PID``: the lifespan opened / closed the
  :class:`Resource` (startup / shutdown).
* ``first-request PID PATH STATE``: the first HTTP request this process saw,
  and whether the lifespan ``state`` was in its scope then (``state=yes``).
* ``background PID WORD``: a background task ran, after its response.
* ``sse-end PID SENT``: a server-sent-events stream ended after SENT events.
* ``gated-end PID OUTCOME``: a gated stream ended (``second``, ``timeout``, or
  ``cancelled``: stopped before either).
* ``ws-accepted PID NAME`` / ``ws-disconnect PID NAME CODE``: a chat
  WebSocket was accepted / the application saw its disconnect (and its code).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

EVENTS_ENV = "APP_EVENTS_LOG"
#: Seconds a gated stream waits for its gate file before it gives up.
GATE_TIMEOUT = 15.0


def event(*words: object) -> None:
    """Append one line ``WORD PID WORDS...`` to the events file (if the test named one)."""
    path = os.environ.get(EVENTS_ENV)
    if not path:
        return
    first, *rest = words
    line = " ".join(str(w) for w in (first, os.getpid(), *rest)) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


class Resource:
    """Something the lifespan opens at startup and closes at shutdown (a pool, a client)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pid = os.getpid()
        self.open = False
        self.uses = 0

    def start(self) -> Resource:
        self.open = True
        event("opened")
        return self

    def close(self) -> None:
        self.open = False
        event("closed")

    def describe(self) -> dict[str, Any]:
        """Used by a request: fails (500) if the lifespan did not open it."""
        if not self.open:
            raise RuntimeError("the resource is not open")
        self.uses += 1
        return {"resource": self.name, "opened_in": self.pid, "uses": self.uses}


class FirstRequest:
    """ASGI middleware: write ``first-request`` for this process's first HTTP request."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.seen:
            self.seen = True
            state = "state=yes" if self.has_state(scope) else "state=no"
            event("first-request", scope["path"], state)
        await self.app(scope, receive, send)

    def has_state(self, scope: Any) -> bool:
        """The lifespan's resource reached this request (the ASGI lifespan state)."""
        return "resource" in scope.get("state", {})


class ChatRoom:
    """The chat WebSockets of one worker; a message goes to every one of them."""

    def __init__(self) -> None:
        self.members: dict[str, Any] = {}

    def join(self, name: str, websocket: Any) -> None:
        self.members[name] = websocket

    def leave(self, name: str) -> None:
        self.members.pop(name, None)

    async def broadcast(self, message: dict[str, Any]) -> None:
        for websocket in list(self.members.values()):
            try:
                await websocket.send_json(message)
            except Exception:  # a member that is leaving right now
                pass


async def chat_session(room: ChatRoom, websocket: Any, name: str, disconnect: type) -> None:
    """One chat connection: welcome, then broadcast every text it sends to the room."""
    await websocket.accept()
    room.join(name, websocket)
    event("ws-accepted", name)
    await websocket.send_json(
        {"type": "welcome", "name": name, "pid": os.getpid(), "members": sorted(room.members)}
    )
    try:
        while True:
            text = await websocket.receive_text()
            await room.broadcast({"type": "message", "from": name, "text": text})
    except disconnect as exc:
        event("ws-disconnect", name, exc.code)
    finally:
        room.leave(name)


async def counted_lines(n: int) -> AsyncIterator[bytes]:
    for i in range(n):
        yield b"line %d\n" % i
        await asyncio.sleep(0)  # the loop runs between chunks


async def gated_stream(gate: str) -> AsyncIterator[bytes]:
    """``first``, then (once the file ``gate`` exists) ``second``; ``timeout`` if it never does.

    The client creates the gate only after it has read ``first``: so the
    response can only complete if the server sent ``first`` on its own,
    before the body was over.
    """
    outcome = "cancelled"
    try:
        yield b"first\n"
        deadline = asyncio.get_running_loop().time() + GATE_TIMEOUT
        while not Path(gate).exists():
            if asyncio.get_running_loop().time() > deadline:
                outcome = "timeout"
                yield b"timeout\n"
                return
            await asyncio.sleep(0.01)
        outcome = "second"
        yield b"second\n"
    finally:
        event("gated-end", outcome)


async def server_sent_events(n: int) -> AsyncIterator[str]:
    """``n`` events; ``sse-end PID SENT`` once the stream ends (done, or the client left)."""
    sent = 0
    try:
        for i in range(n):
            yield f'id: {i}\nevent: tick\ndata: {{"n": {i}}}\n\n'
            sent += 1
            await asyncio.sleep(0.001 if n > 100 else 0)  # a long stream is a slow one
    finally:
        event("sse-end", sent)
