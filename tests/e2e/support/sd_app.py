"""A request callback for the systemd e2e tests: ``prefork tests.e2e.support.sd_app:app``.

Routes (all answers are JSON, ``Content-Length`` framed, keep-alive):

* ``/env``    -- the worker's pid, its parent's pid and the names of its environment
  variables (to check that LISTEN_* never reach a worker);
* ``/sleep?s=N`` -- answers after N seconds, without blocking the loop;
* anything else -- ``{"pid": ..., "path": ...}``.
"""

from __future__ import annotations

import json
import os
from urllib.parse import parse_qs

from prefork.worker.ioloop import IOLoop


def _send(request, payload: dict) -> None:
    body = json.dumps(payload).encode()
    request.write(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (len(body), body)
    )
    request.finish()


def app(request) -> None:
    path = request.path
    if path == "/env":
        _send(request, {"pid": os.getpid(), "ppid": os.getppid(), "env": sorted(os.environ)})
    elif path == "/sleep":
        seconds = float(parse_qs(request.query).get("s", ["0.5"])[0])
        IOLoop.current().call_later(seconds, _send, request, {"pid": os.getpid(), "slept": seconds})
    else:
        _send(request, {"pid": os.getpid(), "path": path})
