"""The same tiny application, once per server interface.

Every app answers the same three routes with the same bytes, so that a
difference in the numbers is the server's, not the app's:

- ``GET /`` (any other path too): 200, ``Hello, world!``, Content-Length;
- ``GET /big``: 200 with a 1 MiB body (:data:`BIG`);
- ``GET /file`` (WSGI and ASGI apps): the same 1 MiB from a file
  (:func:`big_file`), the way each server sends files: ``wsgi.file_wrapper``,
  ``http.response.pathsend`` where the server offers it, else read in pieces;
- ``POST /upload``: reads the whole body, then answers as ``/``.

Each response carries ``X-Pid`` (the answering process), which the
supervisor figures use to tell a replacement worker from a survivor.
"""

from __future__ import annotations

import os
import tempfile

HELLO = b"Hello, world!"
BIG = b"x" * (1024 * 1024)
CONTENT_TYPE = "text/plain"

_pid = str(os.getpid())


def _after_fork() -> None:
    global _pid
    _pid = str(os.getpid())


os.register_at_fork(after_in_child=_after_fork)


def big_file() -> str:
    """The path of a file holding :data:`BIG` (written once, then reused)."""
    path = os.path.join(tempfile.gettempdir(), f"prefork-bench-big-{os.getuid()}.bin")
    try:
        if os.path.getsize(path) == len(BIG):
            return path
    except OSError:
        pass
    part = f"{path}.{os.getpid()}"
    with open(part, "wb") as file:
        file.write(BIG)
    os.replace(part, path)  # (atomic: a server starting meanwhile sees all of it or none)
    return path


def pid() -> str:
    """This process's pid as text, refreshed after a fork without a syscall per request."""
    return _pid
