"""Micro-benchmark of the hello-world hot path, in process, without sockets.

    python bench/micro.py              # µs of CPU per request, per case
    python bench/micro.py --profile    # and a cProfile breakdown of each case
    python bench/micro.py -n 5000 -r 3 # fewer requests and runs (a quick look)

What it measures: one request fed into the server's code as the event loop
would (``HTTPConnection.data_received`` with the whole request in one read),
answered by a seed-style callback (one ``request.write`` of a ready 13-byte
response, then ``finish``), on a keep-alive connection, through a fake
transport that only counts bytes. So it is our Python alone: no event loop,
no system call. Cases:

* ``parser``: ``RequestParser`` only (feed, next_event, start_next_cycle);
* ``connection``: the whole connection path, an ``HTTPServer`` without
  observer (``examples/hello.py`` in one process);
* ``connection+scoreboard``: the same with the observer a real worker has
  (``runner._SlotObserver`` on a slot of a real ``Scoreboard``, with a
  ``WorkerLifecycle`` counting requests), as under ``python -m prefork``;
* ``+metrics``: ``connection+scoreboard`` with ``--metrics-path`` on
  (``runner._MetricsObserver``: requests by method and status class,
  duration histogram, body bytes, in flight; what metrics cost per request);
* ``+request-timeout``, ``+all limits``: ``connection+scoreboard`` with
  ``--request-timeout`` (the requests in flight are tracked), and with
  ``--max-concurrency`` and ``--max-connections`` too (what they cost per
  request; the accepting itself is not in this benchmark);
* ``pipelined x16``: 16 wrk requests arriving in one read (the pipelining
  scenario), per request;
* ``+access log``: ``connection+scoreboard`` with the CLI's default access log
  (combined format, batched, to a temporary file), run on the event loop
  with a loop turn every 16 requests, as under load: what the log costs.

Each case runs with a wrk-like request (3 headers) and a browser-like one
(8 headers). The figure is the best of ``-r`` runs of ``-n`` requests of
``time.process_time()`` (CPU time of this process: other processes on a busy
machine do not count, and the best run is the least disturbed one).
Compare figures from the same machine and run only.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefork.lifecycle import WorkerLifecycle  # noqa: E402
from prefork.scoreboard import Scoreboard, WorkerContext  # noqa: E402
from prefork.worker import accesslog  # noqa: E402
from prefork.worker.http1 import PAUSED, RequestParser  # noqa: E402
from prefork.worker.httpserver import HTTPServer  # noqa: E402
from prefork.worker.ioloop import new_event_loop  # noqa: E402
from prefork.worker.runner import _MetricsObserver, _SlotObserver  # noqa: E402

WRK_REQUEST = b"GET / HTTP/1.1\r\nHost: localhost:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
BROWSER_REQUEST = (
    b"GET /index.html?q=1 HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=0123456789abcdef; theme=dark\r\n"
    b"Upgrade-Insecure-Requests: 1\r\n"
    b"\r\n"
)
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nHello, world!"


class FakeTransport:
    """Just what HTTPConnection uses of an asyncio transport; counts bytes."""

    def __init__(self) -> None:
        self.written = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.written += sum(map(len, chunks))

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 40000)}.get(name, default)

    def close(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def hello(request) -> None:  # type: ignore[no-untyped-def]
    """The seed-style callback: one write of a ready response, then finish."""
    request.write(RESPONSE)
    request.finish()


def parser_case(request: bytes) -> Callable[[int], None]:
    parser = RequestParser()

    def run(n: int) -> None:
        feed = parser.feed
        next_event = parser.next_event
        start_next_cycle = parser.start_next_cycle
        for _ in range(n):
            feed(request)
            next_event()  # the head
            if next_event() is not PAUSED:
                raise AssertionError("expected a complete request")
            start_next_cycle()

    return run


def connection_case(
    request: bytes,
    observed: bool,
    depth: int = 1,
    access_log: str | None = None,
    metrics: bool = False,
    **limits: float,
) -> Callable[[int], None]:
    loop = new_event_loop()  # uvloop's when installed, as in a worker
    server = HTTPServer(hello, **limits)
    server._loop = loop
    if observed:
        board = Scoreboard(1)
        slot = board.slots[0]
        slot.reset(os.getpid(), 1, 0)
        ctx = WorkerContext(
            index=0,
            generation=1,
            sockets=[],
            slot=slot,
            master_pid=os.getppid(),
            heartbeat_interval=1.0,
            max_requests=0,
            graceful_timeout=30.0,
            notify_fd=-1,
        )
        lifecycle = WorkerLifecycle(loop, ctx, lambda: None, lambda: None, None)
        observer = _MetricsObserver if metrics else _SlotObserver
        server.set_observer(observer(slot, lifecycle))
    transport = FakeTransport()
    conn = server._make_connection()
    conn.connection_made(transport)  # type: ignore[arg-type]
    expected = len(RESPONSE)
    data = request * depth

    def run(n: int) -> None:
        data_received = conn.data_received
        before = transport.written
        for _ in range(n // depth):
            data_received(data)
        if transport.written - before != n // depth * depth * expected or transport.closed:
            raise AssertionError("the connection did not answer every request")

    if access_log is None:
        return run

    async def turns(n: int) -> None:
        for _ in range(n // 16):
            run(16)
            await asyncio.sleep(0)  # the loop turn that writes the batch

    def logged(n: int) -> None:
        accesslog.configure(access_log)
        try:
            loop.run_until_complete(turns(n))
        finally:
            accesslog.configure("off")

    return logged


def measure(run: Callable[[int], None], requests: int, runs: int) -> float:
    """Best of ``runs`` runs, in µs of CPU per request."""
    run(min(requests, 2000))  # warm caches (name cache, host cache, ...)
    best = float("inf")
    for _ in range(runs):
        gc.collect()
        start = time.process_time()
        run(requests)
        best = min(best, time.process_time() - start)
    return best / requests * 1e6


def profile(run: Callable[[int], None], requests: int, limit: int) -> str:
    run(min(requests, 2000))
    profiler = cProfile.Profile()
    profiler.enable()
    run(requests)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(limit)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--requests", type=int, default=20000, help="requests per run")
    parser.add_argument("-r", "--runs", type=int, default=7, help="runs per case (best counts)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile breakdown")
    parser.add_argument("--limit", type=int, default=25, help="profile lines per case")
    args = parser.parse_args()

    cases = []
    for label, request in (("wrk (3 headers)", WRK_REQUEST), ("browser (8)", BROWSER_REQUEST)):
        cases.append((f"parser                 {label}", parser_case(request)))
        cases.append((f"connection             {label}", connection_case(request, False)))
        cases.append((f"connection+scoreboard  {label}", connection_case(request, True)))
    cases.append(
        ("connection+scoreboard+metrics wrk (3)", connection_case(WRK_REQUEST, True, metrics=True))
    )
    cases.append(
        (
            "connection+scoreboard+request-timeout wrk (3)",
            connection_case(WRK_REQUEST, True, request_timeout=30),
        )
    )
    cases.append(
        (
            "connection+scoreboard+all limits wrk (3)",
            connection_case(
                WRK_REQUEST, True, request_timeout=30, max_concurrency=100, max_connections=100
            ),
        )
    )
    cases.append(
        ("pipelined x16 +scoreboard wrk (3 headers)", connection_case(WRK_REQUEST, True, 16))
    )
    log_path = os.path.join(tempfile.mkdtemp(prefix="prefork-micro-"), "access.log")
    cases.append(
        (
            "connection+scoreboard+access log wrk (3)",
            connection_case(WRK_REQUEST, True, access_log=log_path),
        )
    )

    print(f"µs of CPU per request (best of {args.runs} runs of {args.requests}):")
    for name, run in cases:
        print(f"  {name:45s} {measure(run, args.requests, args.runs):7.2f}")
    if args.profile:
        for name, run in cases:
            if name.startswith("parser"):
                continue
            print(f"\n== {name.strip()}")
            print(profile(run, args.requests, args.limit))


if __name__ == "__main__":
    main()
