"""A test application for the worker HTTP stack, in one process.

Binds port 0 on ``--address`` (or listens on ``--unix PATH``), prints the bound
port(s) (or the socket path) as the first line of stdout, then runs the IOLoop.

Routes:

* ``/echo``              -- the request's attributes as JSON (raw response).
* ``/framed``            -- write_headers/write/finish: ``status``, ``pieces``
  (0 = no body, 1 = one piece, n = streamed), ``close=1`` (Connection: close).
* ``/raw/unframed``      -- a raw HTTP/1.1 response with no Content-Length.
* ``/raise``             -- raises; ``after=head`` writes a raw head first,
  ``after=framed`` calls write_headers first, ``after=framed-body`` and a
  piece of the body.
* ``/delay``             -- answers ``i`` after ``ms`` milliseconds.
* ``/slow-stream``       -- ``chunks`` writes of ``size`` bytes every
  ``interval_ms`` (``mode=raw`` or ``framed``); exceptions raised by
  write/finish are counted, never propagated, and so is a close of the
  connection before the last write (through the seed's close callback).
* ``/stats``             -- those counters as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import ssl
import sys

from prefork import IOLoop, httpserver
from prefork.sockets import bind_sockets, bind_unix_socket

STATS = {
    "stream_errors": 0,
    "streams_started": 0,
    "streams_done": 0,
    "closed_mid_stream": 0,
    "last_error": "",
    "parked_closed": 0,
    "late_write": "",
}


def park(request) -> None:
    """A long poll, the 2.x way: parked until the client goes (close callback)."""

    def gone() -> None:
        STATS["parked_closed"] += 1

    request.connection.set_close_callback(gone)


def framed_with_callbacks(request) -> None:
    """Each piece written from the previous one's write callback."""
    request.write_headers(200, {"Content-Type": "text/plain"})
    request.write(b"part1;", lambda: request.write(b"part2;", lambda: request.finish()))


def late_write(request) -> None:
    """A bug: a timer writes after finish(), while the connection may answer
    the next request."""
    request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    request.finish()

    def late() -> None:
        try:
            request.write(b"SECRET-OF-A")
        except RuntimeError as exc:
            STATS["late_write"] = f"RuntimeError: {exc}"

    IOLoop.current().call_later(0.2, late)


def _text(value: bytes) -> str:
    return value.decode("latin-1")


def _json_safe(value):
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return _text(value)
    return value


def send_json(request, payload, status: str = "200 OK") -> None:
    body = json.dumps(payload).encode()
    request.write(
        b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
        % (status.encode(), len(body), body)
    )
    request.finish()


def echo(request) -> None:
    cert = request.get_ssl_certificate()
    cert_binary = request.get_ssl_certificate(binary_form=True)
    files = {
        name: [
            {"filename": f["filename"], "content_type": f["content_type"], "body": _text(f["body"])}
            for f in entries
        ]
        for name, entries in request.files.items()
    }
    files_attr = {
        name: [
            {"filename": f.filename, "content_type": f.content_type, "body": _text(f.body)}
            for f in entries
        ]
        for name, entries in request.files.items()
    }
    payload = {
        "method": request.method,
        "uri": request.uri,
        "path": request.path,
        "query": request.query,
        "version": request.version,
        "headers": [list(pair) for pair in request.headers.get_all()],
        "body": _text(request.body),
        "remote_ip": request.remote_ip,
        "protocol": request.protocol,
        "host": request.host,
        "arguments": {k: [_text(v) for v in vs] for k, vs in request.arguments.items()},
        "files": files,
        "files_attr": files_attr,
        "full_url": request.full_url(),
        "request_time": request.request_time(),
        "supports_http_1_1": request.supports_http_1_1(),
        "ssl_certificate": _json_safe(cert),
        "ssl_certificate_binary_len": len(cert_binary) if cert_binary else None,
        "trailers": [list(pair) for pair in getattr(request, "trailers", [])],
    }
    send_json(request, payload)


def framed(request) -> None:
    args = {k: _text(v[0]) for k, v in request.arguments.items()}
    status = int(args.get("status", "200"))
    pieces = int(args.get("pieces", "1"))
    headers = {"Content-Type": "text/plain"}
    if args.get("close") == "1":
        headers["Connection"] = "close"
    if "length" in args:  # a Content-Length of the application's (maybe wrong)
        headers["Content-Length"] = args["length"]
    request.write_headers(status, headers)
    for i in range(pieces):
        request.write(b"piece%d;" % i)
    request.finish()


def raise_error(request) -> None:
    after = request.arguments.get("after", [b""])[0]
    if after == b"head":
        request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    elif after == b"framed":
        request.write_headers(200, {"Content-Type": "text/plain"})
    elif after == b"framed-body":  # (a piece of the body on its way: streamed)
        request.write_headers(200, {"Content-Type": "text/plain"})
        request.write(b"partial", callback=lambda: None)
    raise RuntimeError("the application failed on purpose")


def delay(request) -> None:
    ms = int(request.arguments.get("ms", [b"0"])[0])
    IOLoop.current().call_later(
        ms / 1000.0, lambda: send_json(request, {"i": _text(request.arguments["i"][0])})
    )


def slow_stream(request) -> None:
    args = {k: _text(v[0]) for k, v in request.arguments.items()}
    chunks = int(args.get("chunks", "20"))
    size = int(args.get("size", "65536"))
    interval = int(args.get("interval_ms", "20")) / 1000.0
    mode = args.get("mode", "framed")
    STATS["streams_started"] += 1
    loop = IOLoop.current()
    state = {"sent": 0, "done": False}

    def on_close() -> None:
        if not state["done"]:
            STATS["closed_mid_stream"] += 1

    # The seed's way to learn that the client went away.
    request.connection.stream.set_close_callback(on_close)

    def guarded(action) -> bool:
        try:
            action()
        except Exception as exc:  # what the test checks never happens
            STATS["stream_errors"] += 1
            STATS["last_error"] = repr(exc)
            return False
        return True

    def step() -> None:
        if state["sent"] >= chunks:
            state["done"] = True
            guarded(request.finish)
            STATS["streams_done"] += 1
            return
        state["sent"] += 1
        guarded(lambda: request.write(b"x" * size))
        loop.call_later(interval, step)

    if mode == "raw":
        ok = guarded(
            lambda: request.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (chunks * size)
            )
        )
    else:
        ok = guarded(lambda: request.write_headers(200, {"Content-Type": "text/plain"}))
    if ok:
        step()
    else:
        STATS["streams_done"] += 1


def handle_request(request) -> None:
    path = request.origin_path  # (an absolute-form target routes by its path too)
    if path == "/echo":
        echo(request)
    elif path == "/framed":
        framed(request)
    elif path == "/park":
        park(request)
    elif path == "/framed-callbacks":
        framed_with_callbacks(request)
    elif path == "/late-write":
        late_write(request)
    elif path == "/raw/long":  # a body past its own Content-Length, in one write
        request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\n\r\n")
        request.finish()
    elif path == "/raw/long-stream":  # ... in a later write
        request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab")
        request.write(b"cHTTP/1.1 200 OK\r\n\r\n")
        request.finish()
    elif path == "/raw/seed":  # the README's seed handler: its body even to HEAD
        message = "You requested %s\n" % request.uri
        request.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message.encode())
        )
        request.finish()
    elif path == "/raw/204-body":  # a body no client may read (RFC 9110 15.3.5)
        request.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        request.write(b"stray")
        request.finish()
    elif path == "/raw/unframed":
        request.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nunframed body")
        request.finish()
    elif path == "/raise":
        raise_error(request)
    elif path == "/delay":
        delay(request)
    elif path == "/slow-stream":
        slow_stream(request)
    elif path == "/stats":
        send_json(request, STATS)
    else:
        send_json(request, {"error": "no route", "path": path}, "404 Not Found")


def _ssl_options(args):
    if not args.certfile:
        return None
    cert_reqs = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[args.cert_reqs]
    if args.ssl_context:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.certfile, args.keyfile)
        if args.ca_certs:
            context.load_verify_locations(args.ca_certs)
        context.verify_mode = cert_reqs
        context.set_alpn_protocols(["http/1.1"])
        return context
    options = {"certfile": args.certfile, "keyfile": args.keyfile}
    if args.ca_certs:
        options["ca_certs"] = args.ca_certs
    if args.cert_reqs != "none":
        options["cert_reqs"] = cert_reqs
    return options


def _limit(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    number = float(value)
    return name, int(number) if number.is_integer() and "." not in value else number


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--unix", help="listen on this unix socket path instead")
    parser.add_argument("--xheaders", action="store_true")
    parser.add_argument("--no-keep-alive", action="store_true")
    parser.add_argument("--limit", action="append", type=_limit, default=[], help="NAME=VALUE")
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    parser.add_argument("--ca-certs")
    parser.add_argument("--cert-reqs", choices=("none", "optional", "required"), default="none")
    parser.add_argument("--ssl-context", action="store_true", help="pass an SSLContext")
    parser.add_argument("--access-log", help="write the access log to this file")
    parser.add_argument("--proxy-protocol", action="store_true", help="expect a PROXY header")
    args = parser.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    logging.getLogger("prefork.error").setLevel(logging.INFO)
    if args.access_log:
        handler = logging.FileHandler(args.access_log)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access = logging.getLogger("prefork.access")
        access.addHandler(handler)
        access.setLevel(logging.INFO)
        access.propagate = False

    server = httpserver.HTTPServer(
        handle_request,
        no_keep_alive=args.no_keep_alive,
        xheaders=args.xheaders,
        ssl_options=_ssl_options(args),
        proxy_protocol=args.proxy_protocol,
        **dict(args.limit),
    )
    if args.unix:
        sockets = [bind_unix_socket(args.unix)]
        announce = args.unix
    else:
        sockets = bind_sockets(0, args.address)
        announce = " ".join(sorted({str(s.getsockname()[1]) for s in sockets}))
    server.add_sockets(sockets)
    print(announce, flush=True)
    IOLoop.instance().start()


if __name__ == "__main__":
    main()
