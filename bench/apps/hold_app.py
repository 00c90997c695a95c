"""A request that holds memory for a while, for ``bench/overload.py``.

``GET /hold?kb=K&ms=M`` fills K KiB (every page written, so it counts in
the RSS), keeps it M milliseconds without blocking the loop, then answers
200 with ``X-Pid``.  The memory of a worker then grows with the requests it
has taken on at once: what ``--max-connections`` bounds.
"""

from __future__ import annotations

import os

from prefork import IOLoop


def _number(request, name: str, default: int) -> int:  # type: ignore[no-untyped-def]
    return int(request.arguments.get(name, [b"%d" % default])[0])


def app(request) -> None:  # type: ignore[no-untyped-def]
    held = b"x" * (_number(request, "kb", 256) * 1024)

    def answer() -> None:
        body = b"%d\n" % (len(held) >> 10)
        request.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Pid: %d\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (os.getpid(), len(body), body)
        )
        request.finish()

    IOLoop.current().call_later(_number(request, "ms", 100) / 1000, answer)
