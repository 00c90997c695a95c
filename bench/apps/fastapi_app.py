"""A FastAPI JSON endpoint, served as is by every ASGI server (the ``fastapi-json`` scenario).

``GET /items/{item_id}?q=...`` validates the path and query parameters, builds
a pydantic model and answers with its JSON (about 100 bytes), the shape of a
typical API call; ``GET /`` answers ``Hello, world!`` in plain text, so the
harness can tell the server is up the same way for every app.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel

from bench.apps import HELLO


class Item(BaseModel):
    """The document the endpoint returns."""

    id: int
    name: str
    price: float
    tags: list[str]
    q: str | None = None


app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/", response_class=PlainTextResponse)
async def hello() -> str:
    return HELLO.decode()


@app.get("/items/{item_id}", response_model=Item)
async def read_item(item_id: int, q: str | None = None) -> Item:
    return Item(id=item_id, name="widget", price=9.5, tags=["bench", "json"], q=q)
