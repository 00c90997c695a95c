"""The ``Date`` header of responses (RFC 9110 6.6.1), formatted once a second.

An origin server with a clock must send ``Date`` in its 2xx, 3xx and 4xx
responses; caches and clients use it to age what they store.  Formatting it
costs a few microseconds, so the text is kept: the server's sweep (at least
once a second, see ``HTTPServer._sweep``) calls :func:`refresh`, as uvicorn
updates its date once a second, and a response reads the kept text without
reading the clock.
"""

from __future__ import annotations

import time
from email.utils import formatdate

__all__ = ["date_line", "http_date", "refresh"]

_second = -1
_date = ""
_line = b""


def refresh() -> None:
    """Bring the kept date up to now (the server's sweep calls it)."""
    global _second, _date, _line
    second = int(time.time())
    if second != _second:
        _date = formatdate(second, usegmt=True)
        _line = b"date: " + _date.encode("ascii") + b"\r\n"
        _second = second


def http_date() -> str:
    """The kept date as an IMF-fixdate (``Thu, 03 Dec 2026 15:06:00 GMT``),
    as of the last :func:`refresh` (at most about a second old)."""
    return _date


def date_line() -> bytes:
    """``date: <http_date()>\\r\\n``, a header line ready to join to a head."""
    return _line


refresh()
