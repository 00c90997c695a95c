"""The hello app as WSGI, for gunicorn (sync, gthread) and uvicorn's WSGI mode."""

from __future__ import annotations

from bench.apps import BIG, CONTENT_TYPE, HELLO, big_file, pid

FILE = big_file()


def _drain(environ) -> None:
    """Read the whole request body, as a real upload handler would."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(length, 65536))
        if not chunk:
            break
        length -= len(chunk)


def _file(environ, start_response):
    """``/file``: the 1 MiB file through ``wsgi.file_wrapper`` (read in pieces without one)."""
    file = open(FILE, "rb")  # noqa: SIM115 - closed by the server (PEP 3333 close())
    start_response(
        "200 OK",
        [("Content-Type", CONTENT_TYPE), ("X-Pid", pid()), ("Content-Length", str(len(BIG)))],
    )
    wrapper = environ.get("wsgi.file_wrapper")
    if wrapper is not None:
        return wrapper(file, 65536)
    return _read_pieces(file)


def _read_pieces(file):
    with file:
        while chunk := file.read(65536):
            yield chunk


def app(environ, start_response):
    """``/big`` gets 1 MiB, ``/file`` 1 MiB from a file, ``POST`` bodies are read,
    everything answers 200."""
    if environ.get("PATH_INFO") == "/file":
        return _file(environ, start_response)
    body = BIG if environ.get("PATH_INFO") == "/big" else HELLO
    if environ.get("REQUEST_METHOD") == "POST":
        _drain(environ)
    start_response(
        "200 OK",
        [("Content-Type", CONTENT_TYPE), ("X-Pid", pid()), ("Content-Length", str(len(body)))],
    )
    return [body]
