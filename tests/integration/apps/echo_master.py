"""A tiny HTTP/1.1 responder run under prefork's Master, for tests of the Master API itself.

The process-model tests run the real ``prefork`` command on
``master_app.py``; this stand-in remains for what the command cannot show,
``Master.run()`` returning the WorkerContext in each child (``--no-entry``,
the way ``HTTPServer.start(n)`` uses the Master).

It stands in for the real HTTP stack: it reads a request head, answers
``200 OK`` with the worker's pid as the body, keeps connections alive, and
follows the worker contract through ``prefork.lifecycle``:

* graceful stop: stop accepting after accepting what is already queued in
  the listen backlog, finish in-flight requests with ``Connection: close``,
  close idle keep-alive connections after a short grace, exit;
* fast stop: close everything and exit.

Paths: ``/sleep?s=N`` sleeps N seconds (without blocking the loop),
``/block?s=N`` blocks the loop, ``/leak?s=N`` holds N MiB, ``/crash`` exits at once, ``/orphan`` leaves a grandchild that outlives
its parent (for the PID 1 test). Run ``python echo_master.py --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import socket
import sys
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", ".."))

from prefork import lifecycle, process  # noqa: E402
from prefork.master import Master  # noqa: E402
from prefork.scoreboard import WorkerContext  # noqa: E402

log = logging.getLogger("echo")

IDLE_GRACE = 0.5  # seconds an idle keep-alive connection may still send a request while draining
KEEPALIVE = 30.0
LEAK: list[bytes] = []


class EchoConnection(asyncio.Protocol):
    """One client connection. Callbacks rather than a reading coroutine: cancelling a
    pending ``sock_recv`` (to time out an idle read) can drop bytes it already read."""

    def __init__(self, worker: EchoWorker) -> None:
        self.worker = worker
        self.buf = bytearray()
        self.busy = False
        self.transport: asyncio.Transport | None = None
        self.idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.worker.pending -= 1
        self.worker.conns.add(self)
        self.worker.ctx.slot.set_connections(len(self.worker.conns))
        self.arm_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.worker.conns.discard(self)
        self.worker.ctx.slot.set_connections(len(self.worker.conns))
        self.worker.maybe_done()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.process()

    def arm_idle(self) -> None:
        """Close a connection that sends nothing: KEEPALIVE, or IDLE_GRACE once draining."""
        if self.idle is not None:
            self.idle.cancel()
        delay = IDLE_GRACE if self.worker.draining else KEEPALIVE
        self.idle = self.worker.loop.call_later(delay, self.idle_timeout)

    def idle_timeout(self) -> None:
        if not self.busy and not self.buf and self.transport is not None:
            self.transport.close()

    def process(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0") or 0)
        if len(self.buf) < end + 4 + length:
            return
        del self.buf[: end + 4 + length]
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        self.busy = True
        if self.idle is not None:
            self.idle.cancel()
        self.worker.loop.create_task(self.respond(method, target, keep))

    async def respond(self, method: str, target: str, keep: bool) -> None:
        worker = self.worker
        worker.ctx.slot.request_started(f"{method} {target}")
        await worker.handle(target)
        keep = keep and not worker.draining
        body = f"{worker.pid}\n".encode()
        assert self.transport is not None
        self.transport.write(
            (
                f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n"
                f"X-Worker-Pid: {worker.pid}\r\n"
                f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
            ).encode()
            + body
        )
        worker.ctx.slot.request_finished()
        if worker.lc is not None:
            worker.lc.request_done()
        self.busy = False
        if not keep:
            self.transport.close()
            return
        self.arm_idle()
        if self.buf:
            self.process()


class EchoWorker:
    def __init__(self, loop: asyncio.AbstractEventLoop, ctx: WorkerContext) -> None:
        self.loop = loop
        self.ctx = ctx
        self.pid = os.getpid()
        self.conns: set[EchoConnection] = set()
        self.pending = 0  # accepted, connection_made not yet called
        self.draining = False
        self.done: asyncio.Future[None] = loop.create_future()
        self.lc: lifecycle.WorkerLifecycle | None = None

    def start(self) -> None:
        for sock in self.ctx.sockets:
            self.loop.add_reader(sock.fileno(), self.accept, sock, 16)

    def accept(self, sock: socket.socket, limit: int) -> None:
        for _ in range(limit):
            try:
                conn, _addr = sock.accept()
            except OSError:  # BlockingIOError: the queue is empty
                return
            conn.setblocking(False)
            self.pending += 1
            task = self.loop.create_task(
                self.loop.connect_accepted_socket(lambda: EchoConnection(self), conn)
            )
            task.add_done_callback(self.accepted)

    def accepted(self, task: asyncio.Task[object]) -> None:
        if task.cancelled() or task.exception() is not None:  # reset before it was wrapped
            self.pending -= 1
            self.maybe_done()

    def maybe_done(self) -> None:
        if self.draining and not self.conns and not self.pending and not self.done.done():
            self.done.set_result(None)

    async def handle(self, target: str) -> None:
        url = urlsplit(target)
        seconds = float(parse_qs(url.query).get("s", ["0"])[0])
        if url.path == "/sleep":
            await asyncio.sleep(seconds)
        elif url.path == "/block":
            time.sleep(seconds)
        elif url.path == "/crash":
            os._exit(1)
        elif url.path == "/leak":
            LEAK.append(b"\x01" * (int(seconds) << 20))  # ?s=N: hold N MiB
        elif url.path == "/orphan":
            pid = os.fork()
            if pid == 0:
                if os.fork() == 0:
                    time.sleep(seconds or 0.3)
                os._exit(0)
            os.waitpid(pid, 0)

    def graceful_stop(self) -> None:
        self.draining = True
        for sock in self.ctx.sockets:
            self.loop.remove_reader(sock.fileno())
            # Serve what is already queued in the backlog before letting go.
            self.accept(sock, 100000)
        for conn in self.conns:
            if not conn.busy:
                conn.arm_idle()  # idle keep-alive connections get a short grace
        log.info("worker %d draining: %d connection(s)", self.pid, len(self.conns) + self.pending)
        self.maybe_done()

    def fast_stop(self) -> None:
        self.draining = True
        for sock in self.ctx.sockets:
            self.loop.remove_reader(sock.fileno())
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        if not self.done.done():
            self.done.set_result(None)

    def reopen_logs(self) -> None:
        process.reopen_log_files()
        log.info("worker %d reopened its log files", self.pid)


def make_entry(args: argparse.Namespace):
    def serve(ctx: WorkerContext) -> None:
        if args.fail_boot or (
            args.fail_boot_from_generation and ctx.generation >= args.fail_boot_from_generation
        ):
            raise RuntimeError("boot failure requested by the test")
        # A hung worker gets SIGABRT (traceback dump) before SIGKILL: no core file from tests.
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        worker = EchoWorker(loop, ctx)
        worker.lc = lifecycle.install(
            loop,
            ctx,
            graceful_stop=worker.graceful_stop,
            fast_stop=worker.fast_stop,
            reopen_logs=worker.reopen_logs,
        )
        worker.start()
        worker.lc.mark_ready()
        try:
            loop.run_until_complete(worker.done)
        finally:
            worker.lc.close()
            loop.close()

    return serve


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bind", action="append", default=[])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=30)
    p.add_argument("--boot-timeout", type=float, default=10)
    p.add_argument("--graceful-timeout", type=float, default=10)
    p.add_argument("--max-requests", type=int, default=0)
    p.add_argument("--max-requests-jitter", type=int, default=0)
    p.add_argument("--max-memory", type=int, default=0)
    p.add_argument("--pidfile")
    p.add_argument("--log-file")
    p.add_argument("--scoreboard")
    p.add_argument("--fail-boot", action="store_true")
    p.add_argument("--fail-boot-from-generation", type=int, default=0)
    p.add_argument(
        "--no-entry",
        action="store_true",
        help="use Master.run() returning the WorkerContext in each child (start(n) style)",
    )
    args = p.parse_args()

    handler: logging.Handler
    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s [%(process)d] %(name)s %(levelname)s %(message)s")
    )
    logging.basicConfig(level=logging.INFO, handlers=[handler])

    entry = make_entry(args)
    master = Master(
        bind=args.bind or ["127.0.0.1:0"],
        workers=args.workers,
        worker_entry=None if args.no_entry else entry,
        timeout=args.timeout,
        boot_timeout=args.boot_timeout,
        graceful_timeout=args.graceful_timeout,
        max_requests=args.max_requests,
        max_requests_jitter=args.max_requests_jitter,
        max_memory=args.max_memory,
        pidfile=args.pidfile,
        scoreboard_path=args.scoreboard,
        reload_hook=lambda: log.info("reload hook ran"),
    )
    ctx = master.run()  # returns only in a child, and only with --no-entry
    entry(ctx)
    sys.exit(0)


if __name__ == "__main__":
    main()
