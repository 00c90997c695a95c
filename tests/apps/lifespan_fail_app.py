"""ASGI applications whose lifespan startup raises (tests/e2e/test_asgi_apps.py).

* ``app``: Starlette, whose lifespan raises; Starlette answers
  ``lifespan.startup.failed`` with the traceback as the message.
* ``raw_app``: a bare ASGI application that raises on ``lifespan.startup``
  without answering (fatal only with ``--lifespan on``; with ``auto`` it
  reads as "lifespan unsupported" and the application is served).

Each worker that runs the startup writes ``startup-attempt PID`` to the file
named by ``APP_EVENTS_LOG``.
"""

from __future__ import annotations

import contextlib

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.apps.asgi_events import event

MESSAGE = "lifespan-fail-app: the database at db.invalid:5432 is unreachable"


@contextlib.asynccontextmanager
async def lifespan(app: Starlette):
    event("startup-attempt")
    raise RuntimeError(MESSAGE)
    yield  # pragma: no cover - never reached


async def hello(request) -> PlainTextResponse:
    return PlainTextResponse("never served")


app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)


async def raw_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        message = await receive()
        assert message["type"] == "lifespan.startup"
        event("startup-attempt")
        raise RuntimeError(MESSAGE)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served without lifespan"})
