"""The application behind the proxy, TLS and privilege e2e tests (``proxy_echo:app``).

Run by the real CLI: ``prefork [OPTIONS] proxy_echo:app`` with this folder
on ``PYTHONPATH``.  Every response is JSON and says who the application
thinks the client is, so a test can tell a trusted proxy from an untrusted
one:

* any path          -- ``remote_ip``, ``protocol``, the worker's ``pid``,
  ``uid``/``gid``/``euid``, the server-side address of the connection
  (``server``: which "host" answered), the request ``path`` and the
  forwarding headers the application received.
* ``/slow?ms=N``    -- the same, answered N milliseconds later (in flight
  during a drain or a reload); with ``&mark=PATH`` the application first
  appends a line to the file PATH, so a test knows the request is in flight.
* ``/cert``         -- the client certificate's subject (TLS), or null.

It never answers a health path itself: a body of ``"app"`` for such a path
shows the request reached the application instead of the built-in route.
"""

from __future__ import annotations

import json
import os

from prefork import IOLoop

_FORWARDING = ("X-Forwarded-For", "X-Real-Ip", "X-Forwarded-Proto", "Host", "Connection")


def _payload(request) -> dict:
    transport = getattr(request.connection, "transport", None)
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple):
        server = f"{sockname[0]}:{sockname[1]}"
    else:
        server = str(sockname) if sockname else None
    return {
        "by": "app",
        "remote_ip": request.remote_ip,
        "protocol": request.protocol,
        "path": request.path,
        "pid": os.getpid(),
        "uid": os.getuid(),
        "euid": os.geteuid(),
        "gid": os.getgid(),
        "server": server,
        "headers": {name: request.headers.get(name) for name in _FORWARDING},
    }


def _send(request, payload: dict) -> None:
    body = json.dumps(payload).encode()
    request.write_headers(200, {"Content-Type": "application/json"})
    request.write(body)
    request.finish()


def app(request) -> None:
    payload = _payload(request)
    if request.path == "/slow":
        ms = int(request.arguments.get("ms", [b"200"])[0])
        mark = request.arguments.get("mark", [b""])[0].decode()
        if mark:
            with open(mark, "a") as f:
                f.write(f"started {os.getpid()}\n")
        IOLoop.current().call_later(ms / 1000.0, _send, request, payload)
        return
    if request.path == "/cert":
        payload["cert"] = request.get_ssl_certificate()
    _send(request, payload)
