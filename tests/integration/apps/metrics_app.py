"""A seed application with prometheus_client metrics of its own, for the metrics tests::

    python -m prefork -b 127.0.0.1:0 --metrics-path /metrics tests.integration.apps.metrics_app:app

Imported in each worker (no ``--preload``), after the master pointed
``PROMETHEUS_MULTIPROC_DIR`` at its directory: ``app_hits_total`` is a
multiprocess counter, summed over the workers by the metrics endpoint.

Paths (every answer has a Content-Length; the body is the worker's pid):

* ``/``                 200;
* ``/count``            increments ``app_hits_total``, then 200;
* ``/status?code=N``    answers with status N;
* ``/env``              the ``PROMETHEUS_MULTIPROC_DIR`` the worker sees;
* any POST              200 (its body is read and counted by the server).
"""

from __future__ import annotations

import os

from prometheus_client import Counter

from prefork import HTTPRequest

HITS = Counter("app_hits", "Requests to /count, in every worker")


def respond(request: HTTPRequest, status: int = 200, body: bytes | None = None) -> None:
    if body is None:
        body = b"%d\n" % os.getpid()
    request.write(
        b"HTTP/1.1 %d X\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
        % (status, len(body), body)
    )
    request.finish()


def app(request: HTTPRequest) -> None:
    path = request.path
    if path == "/count":
        HITS.inc()
    elif path == "/status":
        respond(request, int(request.arguments["code"][0]))
        return
    elif path == "/env":
        respond(request, body=os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").encode())
        return
    respond(request)
