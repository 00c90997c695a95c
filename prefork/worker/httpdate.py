"""The ``Date`` header of responses (RFC 9110 6.6.1), formatted once a second.

An origin server with a clock must send ``Date`` in its 2xx, 3xx and 4xx
responses; caches and clients use it to age what they store.  Formatting it
costs a few microseconds, so the text is kept and rebuilt only when the
second changes.  ``http_date()`` reads the clock; ``date_line()``, on the
ASGI fast path, does not: the server's sweep (at least once a second, see
``HTTPServer._sweep``) calls :func:`refresh`, as uvicorn updates its date
once a second.
"""

from __future__ import annotations

import time
from email.utils import formatdate

__all__ = ["date_line", "http_date", "refresh"]

_second = -1
_date = ""
_line = b""


def _refresh(second: int) -> None:
    global _second, _date, _line
    _date = formatdate(second, usegmt=True)
    _line = b"date: " + _date.encode("ascii") + b"\r\n"
    _second = second


def http_date() -> str:
    """Now as an IMF-fixdate (``Thu, 03 Dec 2026 15:06:00 GMT``)."""
    second = int(time.time())
    if second != _second:
        _refresh(second)
    return _date


def refresh() -> None:
    """Bring the kept date up to now (the server's sweep calls it)."""
    second = int(time.time())
    if second != _second:
        _refresh(second)


def date_line() -> bytes:
    """``date: <now>\\r\\n`` as of the last :func:`refresh` (at most about a
    second old), a header line ready to join to a head."""
    return _line


refresh()
