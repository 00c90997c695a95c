"""The seed's example (only its import line changed): a tornado-style callback, ``listen``.

    python examples/hello.py              # one process on port 8888 (listen)
    python examples/hello.py --workers 0  # bind + start(0): one worker per CPU

Then: curl http://127.0.0.1:8888/hello

In one process, TERM (or Ctrl-C) stops the loop and the script exits with
status 0; with ``--workers`` the master handles the signals.
examples/hello_prefork.py is the pre-fork variant on its own.
"""

import argparse
import signal

from prefork import httpserver, ioloop


def handle_request(request):
    message = "You requested %s\n" % request.uri
    request.write(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(message), message.encode())
    )
    request.finish()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--address", default="")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="fork this many workers (0 = one per CPU); default: serve in this process",
    )
    args = parser.parse_args()
    http_server = httpserver.HTTPServer(handle_request)
    if args.workers is None:
        http_server.listen(args.port, args.address)
        io_loop = ioloop.IOLoop.instance()

        def stop(*_args):
            http_server.stop()
            io_loop.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            io_loop.asyncio_loop.add_signal_handler(signum, stop)
        io_loop.start()
    else:
        http_server.bind(args.port, args.address or None)
        http_server.start(args.workers)
        ioloop.IOLoop.instance().start()


if __name__ == "__main__":
    main()
