"""A plain PEP 3333 test application, served by HTTPServer(WSGIAdapter(app)).

Binds port 0 on 127.0.0.1, prints the port as the first line of stdout, then
runs the IOLoop.  ``--threads N`` sizes the pool; ``--app MODULE:CALLABLE``
serves another WSGI application (the Flask one) instead of this one;
``--certfile``/``--keyfile`` serve HTTPS.

Routes (by PATH_INFO):

* ``/environ``          -- the environ as JSON (non-str values as their repr
  and type), plus what ``wsgi.input`` reads.
* ``/read``             -- reads the body with one ``read(n)`` (``n``;
  -1 by default: all of it): its size and sha256.
* ``/lines``            -- reads the body with ``readline(size)`` (``size``,
  -1 by default) until EOF: the number of lines, the longest, size, sha256.
* ``/write-loop``       -- write()s 1000-byte pieces ``delay_ms`` apart
  (ten seconds at most) until write() raises: ``write_loop_raised`` in
  ``/stats`` counts the raises, ``write_loop_writes`` the writes.
* ``/write``            -- the body through the write() callable, then one
  chunk from the iterable.
* ``/closing``          -- an iterable with close() (counted in ``/stats``);
  ``n`` chunks.
* ``/stream``           -- a generator of ``n`` chunks of ``size`` bytes,
  ``delay_ms`` apart; produced bytes and close() are counted in ``/stats``.
* ``/sleep``            -- sleeps ``s`` seconds in the application thread;
  with ``mark=PATH`` it first appends a line to the file PATH (the test's
  proof that the request is in the application).
* ``/status``           -- answers ``code`` with a body the server must drop.
* ``/declared``         -- Content-Length ``cl`` with a ``body`` of another size.
* ``/excinfo-before``   -- start_response(200), then an error handler's
  start_response(500, exc_info) before any byte: the 500 wins.
* ``/excinfo-after``    -- a byte is sent, then start_response with exc_info
  re-raises: the connection is closed.
* ``/raise-before``, ``/raise-after``, ``/no-start``, ``/not-bytes`` -- broken apps.
* ``/errors``           -- writes a line to wsgi.errors.
* ``/pid``              -- the worker's pid.
* ``/stats``            -- the counters.
* anything else         -- PATH_INFO as JSON (the latin-1 "bytes-as-str").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import threading
import time
from urllib.parse import parse_qs

from prefork import IOLoop, httpserver
from prefork.cli import load_app
from prefork.sockets import bind_sockets
from prefork.worker.wsgi import WSGIAdapter

_lock = threading.Lock()
STATS = {
    "closed": 0,
    "stream_closed": 0,
    "stream_produced": 0,
    "stream_started": 0,
    "write_loop_raised": 0,
    "write_loop_writes": 0,
}


def count(name: str, n: int = 1) -> None:
    with _lock:
        STATS[name] += n


def json_response(start_response, payload, status="200 OK"):
    body = json.dumps(payload).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def args_of(environ) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(environ["QUERY_STRING"]).items()}


class Closing:
    """An iterable whose close() is counted (PEP 3333: always called)."""

    def __init__(self, chunks):
        self.chunks = chunks

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        count("closed")


def environ_app(environ, start_response):
    data = {}
    for key, value in environ.items():
        if isinstance(value, str):
            data[key] = value
        else:
            data[key] = {"type": type(value).__name__, "repr": repr(value)}
    data["wsgi.input.read"] = environ["wsgi.input"].read().decode("latin-1")
    return json_response(start_response, data)


def stream(environ, start_response, args):
    n = int(args.get("n", "10"))
    size = int(args.get("size", "1000"))
    delay = int(args.get("delay_ms", "0")) / 1000.0
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    count("stream_started")
    try:
        for i in range(n):
            if delay and i:
                time.sleep(delay)
            count("stream_produced", size)
            yield (b"%08d" % i + b"x" * size)[:size]
    finally:
        count("stream_closed")


def excinfo_after(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    try:
        raise RuntimeError("failed after the first chunk")
    except RuntimeError:
        start_response("500 Internal Server Error", [], sys.exc_info())
    yield b"never"


def raise_after(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"partial"
    raise RuntimeError("failed mid-stream on purpose")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    args = args_of(environ)
    if path == "/environ":
        return environ_app(environ, start_response)
    if path == "/first-bytes":
        # Answers with the first n body bytes without waiting for the rest:
        # only possible when wsgi.input streams.
        first = environ["wsgi.input"].read(int(args_of(environ).get("n", "5")))
        start_response("200 OK", [("Content-Length", str(len(first)))])
        return [first]
    if path == "/digest":
        # Reads the body in 64 KiB pieces: the size and sha256 of what came.
        digest = hashlib.sha256()
        size = 0
        while True:
            piece = environ["wsgi.input"].read(65536)
            if not piece:
                break
            size += len(piece)
            digest.update(piece)
        return json_response(start_response, {"size": size, "sha256": digest.hexdigest()})
    if path == "/read":
        # One read() for the whole body, as Django's request.body does.
        data = environ["wsgi.input"].read(int(args.get("n", "-1")))
        return json_response(
            start_response, {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        )
    if path == "/lines":
        size = int(args.get("size", "-1"))
        lines = []
        while True:
            line = environ["wsgi.input"].readline(size)
            if not line:
                break
            lines.append(line)
        data = b"".join(lines)
        return json_response(
            start_response,
            {
                "lines": len(lines),
                "longest": max(map(len, lines), default=0),
                "size": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
            },
        )
    if path == "/write-loop":
        # A stream of its own through write(), as a server-sent-events app.
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        delay = int(args.get("delay_ms", "10")) / 1000
        deadline = time.monotonic() + 10
        try:
            while time.monotonic() < deadline:
                write(b"w" * 1000)
                count("write_loop_writes")
                time.sleep(delay)
        except OSError:
            count("write_loop_raised")
            raise
        return []
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"one,")
        write(b"two,")
        return [b"three"]
    if path == "/closing":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing([b"c%d;" % i for i in range(int(args.get("n", "3")))])
    if path == "/stream":
        return stream(environ, start_response, args)
    if path == "/sleep":
        started = time.time()
        if args.get("mark"):
            with open(args["mark"], "a") as f:
                f.write(f"started {os.getpid()} {threading.current_thread().name}\n")
        time.sleep(float(args.get("s", "1")))
        return json_response(
            start_response,
            {"started": started, "ended": time.time(), "thread": threading.current_thread().name},
        )
    if path == "/status":
        code = args.get("code", "204")
        start_response(f"{code} Whatever", [("Content-Type", "text/plain")])
        return Closing([b"this body must not be sent"])
    if path == "/declared":
        body = args.get("body", "").encode()
        lengths = [("Content-Length", value) for value in args["cl"].split("+")]  # (cl=3+5: two)
        start_response("200 OK", lengths)
        if args.get("stream") == "1":
            return iter([body[:1], body[1:]])
        return [body]
    if path == "/excinfo-before":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("failed in the handler")
        except ValueError:
            start_response(
                "500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info()
            )
        return [b"error handled"]
    if path == "/excinfo-after":
        return excinfo_after(start_response)
    if path == "/raise-before":
        raise RuntimeError("failed before start_response on purpose")
    if path == "/raise-after":
        return raise_after(start_response)
    if path == "/no-start":
        return [b"no start_response"]
    if path == "/not-bytes":
        start_response("200 OK", [])
        return ["a str, not bytes"]
    if path == "/twice":
        start_response("200 OK", [])
        try:
            start_response("200 OK", [])
        except AssertionError as exc:
            return [str(exc).encode()]
        return [b"no error"]
    if path == "/errors":
        environ["wsgi.errors"].write("a line for wsgi.errors\n")
        environ["wsgi.errors"].write("partial")
        return json_response(start_response, {"ok": True})
    if path == "/pid":
        return json_response(start_response, {"pid": os.getpid()})
    if path == "/stats":
        with _lock:
            return json_response(start_response, dict(STATS))
    raw = path.encode("latin-1")
    return json_response(start_response, {"path_info": path, "bytes": raw.hex()})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--app", help="MODULE:CALLABLE to serve instead")
    parser.add_argument("--window", type=int, default=256 * 1024)
    parser.add_argument("--send-timeout", type=float, default=60.0)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    target = load_app(args.app) if args.app else app
    adapter = WSGIAdapter(
        target, threads=args.threads, window=args.window, send_timeout=args.send_timeout
    )
    ssl_options = {"certfile": args.certfile, "keyfile": args.keyfile} if args.certfile else None
    server = httpserver.HTTPServer(adapter, ssl_options=ssl_options)
    sockets = bind_sockets(0, "127.0.0.1")
    server.add_sockets(sockets)
    print(sockets[0].getsockname()[1], flush=True)
    IOLoop.instance().start()


if __name__ == "__main__":
    main()
