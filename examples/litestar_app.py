"""Litestar (ASGI) served by the prefork command: a JSON endpoint with a path parameter, a lifespan.

    python -m prefork -w 2 --interface asgi examples.litestar_app:app

Then: curl http://127.0.0.1:8000/items/42

The lifespan runs in each worker: its startup before the worker accepts a
connection, its shutdown after the worker has drained on a graceful stop
(TERM, a HUP roll). Litestar keeps what it opens on ``app.state`` (one per
worker process). ``configure_root_logger=False`` leaves the root logger to
the server, so the application's lines go to prefork's error log; with
Litestar's default (its own handler on the root logger) they go to stdout,
and prefork's own lines still go to the error log.
"""

import contextlib
import logging
import os
from collections.abc import AsyncIterator

from litestar import Litestar, get
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.logging import LoggingConfig

log = logging.getLogger(__name__)

ITEMS = {42: "the answer", 7: "a lucky number"}


@contextlib.asynccontextmanager
async def lifespan(app: Litestar) -> AsyncIterator[None]:
    # Open per-worker resources here (a database pool, an HTTP client): never
    # before the fork, where every worker would share one connection.
    log.info("lifespan startup in worker %d", os.getpid())
    app.state.catalogue = dict(ITEMS)
    app.state.worker = os.getpid()
    yield
    log.info("lifespan shutdown in worker %d", os.getpid())


@get("/items/{item_id:int}")
async def read_item(item_id: int, state: State) -> dict:
    name = state.catalogue.get(item_id)
    if name is None:
        raise NotFoundException(f"no item {item_id}")
    return {"item_id": item_id, "name": name, "worker": state.worker}


app = Litestar(
    route_handlers=[read_item],
    lifespan=[lifespan],
    # Litestar's own logger only (its exceptions, always logged); the root
    # logger stays the server's.
    logging_config=LoggingConfig(configure_root_logger=False, log_exceptions="always"),
)
