"""The ASGI scope of an HTTP request or a WebSocket upgrade (spec 2.5).

Built once per request from what the connection parsed (``HTTPRequest``):
``path`` decoded and ``raw_path`` as sent (both under ``root_path``),
``query_string``, the headers as lower-cased byte pairs in arrival order,
``client`` (the peer, or the client a trusted proxy named) and ``server``
(read once per connection), ``scheme`` (``ws``/``wss`` for WebSocket), the
extensions the server offers, and a copy of the lifespan ``state``.  Pure:
no I/O; the adapter (:mod:`prefork.worker.asgi`) calls :func:`build_scope`.
"""

from __future__ import annotations

from typing import Any

from prefork.worker.request import HTTPRequest, under_root

__all__ = ["build_scope", "is_websocket_upgrade"]

#: HTTP & WebSocket spec 2.5: the ``reason`` of ``websocket.disconnect`` (2.5),
#: ``send()`` on a closed connection raising OSError (2.4), ``reason`` in
#: ``websocket.close`` (2.3), ``server`` with a None port on unix sockets (2.2).
_ASGI = {"version": "3.0", "spec_version": "2.5"}
#: what every HTTP scope offers (shared: a server constant, not per request)
_HTTP_EXTENSIONS: dict[str, Any] = {"http.response.pathsend": {}}
#: ... and for an HTTP/1.1 request that said ``TE: trailers`` (RFC 9110 10.1.4)
_HTTP_EXTENSIONS_TRAILERS: dict[str, Any] = {**_HTTP_EXTENSIONS, "http.response.trailers": {}}

_LOWER_NAMES: dict[str, bytes] = {}


def _lower_name(name: str) -> bytes:
    raw = _LOWER_NAMES.get(name)
    if raw is None:
        raw = name.lower().encode("latin-1")
        if len(_LOWER_NAMES) < 512:
            _LOWER_NAMES[name] = raw
    return raw


def _decode_path(raw_path: bytes) -> str:
    if b"%" not in raw_path:
        return raw_path.decode("latin-1")
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(raw_path).decode("utf-8", "replace")


_UNKNOWN = object()


def _server_address(conn: Any) -> Any:
    """The server's (host, port) or (unix path, None), read once per connection."""
    transport = getattr(conn, "transport", None)
    server = None
    if transport is not None:
        sockname = transport.get_extra_info("sockname")
        if isinstance(sockname, tuple) and len(sockname) >= 2:
            server = (sockname[0], sockname[1])
        elif isinstance(sockname, str) and sockname:
            server = (sockname, None)
        conn.asgi_server = server
    return server


def _accepts_trailers(request: HTTPRequest) -> bool:
    """The client said ``TE: trailers`` on HTTP/1.1: a chunked response can end with them."""
    if request.version != "HTTP/1.1":
        return False
    return any(
        part.split(";", 1)[0].strip().lower() == "trailers"
        for value in request.headers.get_list("TE")
        for part in value.split(",")
    )


def _has_field(fields: Any, normalized: str) -> bool:
    """``normalized in fields`` without the name normalization of
    ``HTTPHeaders.__contains__``: parsed headers are stored normalized."""
    if fields._dirty:
        return normalized in fields
    return _dict_contains(fields, normalized)


_dict_contains = dict.__contains__
_dict_get = dict.get


def is_websocket_upgrade(request: HTTPRequest) -> bool:
    """A GET asking to become a WebSocket (``Upgrade: websocket``)."""
    fields = request.headers
    upgrade = fields.get("Upgrade") if fields._dirty else _dict_get(fields, "Upgrade")
    if upgrade is None or request.method != "GET":
        return False
    return upgrade.strip().lower() == "websocket"


def build_scope(
    request: HTTPRequest, kind: str, root_path: str, state: dict[str, Any] | None
) -> dict[str, Any]:
    """The ASGI scope of ``request`` (``kind``: "http" or "websocket")."""
    path = request.path  # (split from the query and any fragment already)
    if path[:1] != "/":
        path = request.origin_path  # absolute-form: the path after the authority
    if root_path and path != "*" and not under_root(root_path, path):
        # ASGI: ``path`` includes ``root_path``; ``raw_path`` gets it too, so
        # a framework can take one off the other.
        path = root_path + path
    raw_path = path.encode("latin-1")
    query = request.query.encode("latin-1") if request.query else b""
    if "%" in path:
        path = _decode_path(raw_path)
    conn = request.connection
    server = getattr(conn, "asgi_server", _UNKNOWN)
    if server is _UNKNOWN:
        server = _server_address(conn)
    # The peer, or the client a PROXY header named; a trusted X-Forwarded-For
    # or X-Real-Ip names the IP alone: its port is unknown (0, as uvicorn),
    # never the proxy's own.
    address = getattr(conn, "address", None)
    client = None
    if type(address) is tuple and len(address) >= 2:
        ip = request.remote_ip
        client = (address[0], address[1]) if not ip or ip == address[0] else (ip, 0)
    elif request.remote_ip and request.remote_ip != "0.0.0.0":
        # A unix-socket peer (no address: None, as uvicorn) that a trusted
        # proxy's header names: that client, port unknown (it was None).
        client = (request.remote_ip, 0)
    fields = request.headers
    # One value per name (the usual case): the dict's own items, no generator.
    pairs = dict.items(fields) if fields._as_list is None else fields.get_all()
    lower = _LOWER_NAMES
    headers = [
        (lower.get(name) or _lower_name(name), value.encode("latin-1")) for name, value in pairs
    ]
    scheme = request.protocol or "http"
    if kind == "websocket":
        scheme = "wss" if scheme == "https" else "ws"
    scope: dict[str, Any] = {
        "type": kind,
        "asgi": _ASGI,
        "http_version": "1.0" if request.version == "HTTP/1.0" else "1.1",
        "method": request.method,
        "scheme": scheme,
        "path": path,
        "raw_path": raw_path,
        "query_string": query,
        "root_path": root_path,
        "headers": headers,
        "client": client,
        "server": server,
        "extensions": _HTTP_EXTENSIONS
        if not _has_field(fields, "Te") or not _accepts_trailers(request)
        else _HTTP_EXTENSIONS_TRAILERS,
    }
    if state is not None:
        scope["state"] = state.copy()
    return scope
