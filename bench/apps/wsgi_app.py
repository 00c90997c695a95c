"""The hello app as WSGI, for gunicorn (sync, gthread) and uvicorn's WSGI mode."""

from __future__ import annotations

from bench.apps import BIG, CONTENT_TYPE, HELLO, pid


def _drain(environ) -> None:
    """Read the whole request body, as a real upload handler would."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        length -= len(chunk)


def app(environ, start_response):
    """``/big`` gets 1 MiB, ``POST`` bodies are read, everything answers 200."""
    body = BIG if environ.get("PATH_INFO") == "/big" else HELLO
    if environ.get("REQUEST_METHOD") == "POST":
        _drain(environ)
    start_response(
        "200 OK",
        [("Content-Type", CONTENT_TYPE), ("X-Pid", pid()), ("Content-Length", str(len(body)))],
    )
    return [body]
