"""A seed application for the master's process-model tests, served by the real CLI::

    python -m prefork -b 127.0.0.1:0 tests.integration.apps.master_app:app

(from the repository root, so that the module imports). The CLI imports it in
each worker (not in the master: no ``--preload``), so every worker, including
the replacements of a HUP, reads the environment variables below afresh.

Paths (the body of every answer is the worker's pid and a newline, with a
Content-Length, so that keep-alive connections stay open):

* ``/``           answers at once;
* ``/sleep?s=N``  answers after N seconds without blocking the loop;
  with ``&mark=PATH`` it first appends a line (``started PID``) to the file
  PATH, so a test knows the request is in flight before it sends a signal;
* ``/block?s=N``  blocks the loop N seconds (``time.sleep`` in :func:`block`);
* ``/leak?s=N``   holds N MiB more for the rest of the worker's life;
* ``/crash``      ends the worker at once (``os._exit(1)``), answering nothing;
* ``/orphan?s=N`` leaves a grandchild that outlives its parent by N seconds
  (0.3 by default), for the PID 1 test.

Boot failures, decided at import time:

* ``MASTER_APP_FAIL_BOOT=1``: the import raises;
* ``MASTER_APP_FAIL_BOOT_IF=PATH``: the import raises while the file PATH
  exists (a test creates it before a HUP: the replacements fail to boot).

A slow boot: ``MASTER_APP_HOLD_BOOT_IF=PATH``: while the file PATH exists the
import waits (at most 30 s), so a worker forked meanwhile stays booting until
the test removes the file.
"""

from __future__ import annotations

import os
import time

from prefork import HTTPRequest, IOLoop

FAIL_MESSAGE = "boot failure requested by the test"

if os.environ.get("MASTER_APP_FAIL_BOOT") == "1":
    raise RuntimeError(FAIL_MESSAGE)
_marker = os.environ.get("MASTER_APP_FAIL_BOOT_IF")
if _marker and os.path.exists(_marker):
    raise RuntimeError(f"{FAIL_MESSAGE} ({_marker} exists)")
_hold = os.environ.get("MASTER_APP_HOLD_BOOT_IF")
_hold_until = time.monotonic() + 30
while _hold and os.path.exists(_hold) and time.monotonic() < _hold_until:
    time.sleep(0.02)  # the worker stays booting (not ready) meanwhile

LEAK: list[bytes] = []


def respond(request: HTTPRequest) -> None:
    """200 with this worker's pid; the server adds ``Connection: close`` when it closes."""
    body = b"%d\n" % os.getpid()
    request.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    request.finish()


def block(seconds: float) -> None:
    """Block the event loop (a hung worker's traceback names this frame)."""
    time.sleep(seconds)


def orphan(seconds: float) -> None:
    """Fork a child that forks a grandchild and exits at once: the grandchild is orphaned."""
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() == 0:
                time.sleep(seconds or 0.3)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def _seconds(request: HTTPRequest) -> float:
    return float(request.arguments.get("s", [b"0"])[0])


def mark_started(request: HTTPRequest) -> None:
    """Append ``started PID`` to the file named by ``mark=PATH``, if any (one write)."""
    path = request.arguments.get("mark", [b""])[0].decode()
    if path:
        with open(path, "a") as f:
            f.write(f"started {os.getpid()}\n")


def app(request: HTTPRequest) -> None:
    """The request callback (``MODULE:CALLABLE`` for the CLI)."""
    path = request.path
    if path == "/sleep":
        mark_started(request)
        IOLoop.current().call_later(_seconds(request), respond, request)
        return
    if path == "/block":
        block(_seconds(request))
    elif path == "/leak":
        LEAK.append(b"\x01" * (int(_seconds(request)) << 20))
    elif path == "/crash":
        os._exit(1)
    elif path == "/orphan":
        orphan(_seconds(request))
    respond(request)
