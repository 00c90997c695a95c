"""The same tiny application, once per server interface.

Every app answers the same three routes with the same bytes, so that a
difference in the numbers is the server's, not the app's:

- ``GET /`` (any other path too): 200, ``Hello, world!``, Content-Length;
- ``GET /big``: 200 with a 1 MiB body (:data:`BIG`);
- ``POST /upload``: reads the whole body, then answers as ``/``.

Each response carries ``X-Pid`` (the answering process), which the
supervisor figures use to tell a replacement worker from a survivor.
"""

from __future__ import annotations

import os

HELLO = b"Hello, world!"
BIG = b"x" * (1024 * 1024)
CONTENT_TYPE = "text/plain"

_pid = str(os.getpid())


def _after_fork() -> None:
    global _pid
    _pid = str(os.getpid())


os.register_at_fork(after_in_child=_after_fork)


def pid() -> str:
    """This process's pid as text, refreshed after a fork without a syscall per request."""
    return _pid
