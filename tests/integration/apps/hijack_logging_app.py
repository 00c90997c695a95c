"""A WSGI app that takes the logging configuration over when it is imported,
as Litestar does by default and many applications do with ``dictConfig``: the
root logger's handlers replaced, every logger it does not name disabled.
Its own log lines go to stdout with an ``APP`` prefix."""

from __future__ import annotations

import logging
import logging.config

logging.config.dictConfig(
    {
        "version": 1,
        "disable_existing_loggers": True,
        "formatters": {"app": {"format": "APP %(name)s %(message)s"}},
        "handlers": {
            "out": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "app",
            }
        },
        "root": {"level": "WARNING", "handlers": ["out"]},
    }
)
log = logging.getLogger("hijack_app")


def app(environ, start_response):  # type: ignore[no-untyped-def]
    log.warning("the application logs its own way")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
