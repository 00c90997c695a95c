"""A tornado-style callback, pre-forked from Python code: ``bind`` + ``start(0)``.

    python examples/hello_prefork.py      # port 8888 (--port), one worker per CPU

Then: curl http://127.0.0.1:8888/hello

``start(0)`` forks one worker per usable CPU and returns in each worker; in
the parent it never returns: the parent becomes the master, replaces crashed
workers and stops them all on TERM or INT (exit status 0). The IOLoop is
created after the fork, in each worker. This callback answers with
``write_headers`` (the framed way: the server adds Content-Length);
examples/hello.py writes the raw response, as the seed did.
"""

import argparse
import os

from prefork import httpserver, ioloop


def handle_request(request):
    body = b"Hello from worker %d: you requested %s\n" % (os.getpid(), request.uri.encode())
    request.write_headers(200, {"Content-Type": "text/plain; charset=utf-8"})
    request.write(body)
    request.finish()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--workers", type=int, default=0, help="0: one per usable CPU")
    args = parser.parse_args()
    http_server = httpserver.HTTPServer(handle_request)
    http_server.bind(args.port, args.address)
    http_server.start(args.workers)  # forks here; returns in each worker
    ioloop.IOLoop.instance().start()


if __name__ == "__main__":
    main()
