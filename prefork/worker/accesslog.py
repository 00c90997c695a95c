"""The access log: one line per request through ``logging``.

The combined format by default (what nginx and Apache write, so log tools
read it); JSON on request.  The line is only formatted when the
``prefork.access`` logger is enabled for INFO, so a server without an access
log pays one cached level check per request.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefork.worker.request import HTTPRequest

__all__ = ["access_log", "log_request", "log_rejected", "set_format"]

access_log = logging.getLogger("prefork.access")

_json = False
_stamp_second = -1
_stamp = ""


def set_format(name: str) -> None:
    """``combined`` (default) or ``json``."""
    global _json
    if name not in ("combined", "json"):
        raise ValueError(f"access log format must be 'combined' or 'json', not {name!r}")
    _json = name == "json"


def _timestamp(now: float) -> str:
    """``25/Nov/2026:08:25:57 +0000``, formatted once per second."""
    global _stamp_second, _stamp
    second = int(now)
    if second != _stamp_second:
        _stamp_second = second
        _stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
    return _stamp


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def log_request(request: HTTPRequest, status: int, size: int) -> None:
    """Log one answered request."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    now = time.time()
    headers = request.headers
    if _json:
        line = json.dumps(
            {
                "time": _timestamp(now),
                "remote_ip": request.remote_ip,
                "method": request.method,
                "uri": request.uri,
                "version": request.version,
                "status": status,
                "bytes": size,
                "referer": headers.get("Referer", ""),
                "user_agent": headers.get("User-Agent", ""),
                "duration_ms": round((now - request._start_time) * 1000, 3),
            }
        )
    else:
        line = '%s - - [%s] "%s %s %s" %d %s "%s" "%s"' % (
            request.remote_ip,
            _timestamp(now),
            request.method,
            _quote(request.uri),
            request.version,
            status,
            size if size else "-",
            _quote(headers.get("Referer", "-")),
            _quote(headers.get("User-Agent", "-")),
        )
    access_log.info(line)


def log_rejected(remote_ip: str | None, status: int) -> None:
    """Log a request refused before it could be parsed."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    now = time.time()
    if _json:
        line = json.dumps({"time": _timestamp(now), "remote_ip": remote_ip, "status": status})
    else:
        line = '%s - - [%s] "-" %d - "-" "-"' % (remote_ip, _timestamp(now), status)
    access_log.info(line)
