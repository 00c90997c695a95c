"""FastAPI (ASGI) served by the prefork command: a JSON endpoint with a path parameter, a lifespan.

    python -m prefork -w 2 --interface asgi examples.fastapi_app:app

Then: curl http://127.0.0.1:8000/items/42

The lifespan runs in each worker: its startup before the worker accepts a
connection (a failing startup fails the worker's boot), its shutdown after
the worker has drained on a graceful stop (TERM, a HUP roll). What it yields
is the state every request sees (``request.state``).
"""

import contextlib
import logging
import os

from fastapi import FastAPI, HTTPException, Request

log = logging.getLogger(__name__)  # goes to prefork's error log (stderr)

ITEMS = {42: "the answer", 7: "a lucky number"}


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI):
    # Open per-worker resources here (a database pool, an HTTP client): never
    # before the fork, where every worker would share one connection.
    log.info("lifespan startup in worker %d", os.getpid())
    yield {"items": dict(ITEMS), "worker": os.getpid()}
    log.info("lifespan shutdown in worker %d", os.getpid())


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request) -> dict:
    name = request.state.items.get(item_id)
    if name is None:
        raise HTTPException(status_code=404, detail=f"no item {item_id}")
    return {"item_id": item_id, "name": name, "worker": request.state.worker}
