"""The WSGI hello app as a prefork request callback, for the ``wsgi-hello`` scenario.

Used while the ``prefork`` command cannot take a WSGI application itself:
``WSGIAdapter(app)`` is the request callback the CLI will build for one.
Once the CLI has ``--interface``, the harness runs ``bench.apps.wsgi_app:app``
with ``--interface wsgi`` instead, as users will.
"""

from __future__ import annotations

from bench.apps.wsgi_app import app as wsgi_app
from prefork.worker.wsgi import WSGIAdapter

app = WSGIAdapter(wsgi_app)
