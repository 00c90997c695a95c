"""A WSGI app that configures logging with ``logging.config.dictConfig`` as
Django's ``django.setup()`` does: its own logger and handler, the root logger
left alone, and every existing handler closed (what ``dictConfig`` always
does).  The environment chooses how far it goes:

* ``DICTCONFIG_APP_DISABLE``: ``1`` (dictConfig's default) disables every
  logger it does not name, ``0`` (Django's own default) leaves them on;
* ``DICTCONFIG_APP_WHEN``: ``import`` (default) or ``request`` (on the first
  request to ``/configure-logging``).

``/boom`` raises (prefork logs it on ``prefork.error``); anything else
answers ``ok``.  The application's own lines go to stderr with an ``APP``
prefix.
"""

from __future__ import annotations

import logging
import logging.config
import os

CONFIG = {
    "version": 1,
    "disable_existing_loggers": os.environ.get("DICTCONFIG_APP_DISABLE", "1") == "1",
    "formatters": {"app": {"format": "APP %(name)s %(message)s"}},
    "handlers": {
        "app": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "app"}
    },
    "loggers": {"dictconfig_app": {"handlers": ["app"], "level": "INFO", "propagate": False}},
}
log = logging.getLogger("dictconfig_app")


def configure() -> None:
    logging.config.dictConfig(CONFIG)
    log.info("logging configured in %d", os.getpid())


if os.environ.get("DICTCONFIG_APP_WHEN", "import") == "import":
    configure()


def app(environ, start_response):  # type: ignore[no-untyped-def]
    path = environ["PATH_INFO"]
    if path == "/boom":
        raise RuntimeError("dictconfig_app boom")
    if path == "/configure-logging":
        configure()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
