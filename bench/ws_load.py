"""WebSocket echo load: N connections, each sending a small message and awaiting its echo.

    python bench/ws_load.py --port 8000                 # 50 connections, 5 s, 16-byte text
    python bench/ws_load.py --port 8000 -c 50 -d 5 --warmup 1 --json
    python bench/ws_load.py --calibrate                 # against a bare echo server: the ceiling

wrk cannot speak WebSocket, so this is the ``ws-echo`` scenario's load
generator.  Like wrk it is a closed loop: each connection has exactly one
message in flight, sends the next one the moment the echo is back, and the
figure is echoes per second over the measured window (after ``--warmup``).
The harness runs it in its own process pinned to the other core, as it does
wrk.

It must never be the bottleneck, so it is written for speed rather than
generality: raw sockets on uvloop (``asyncio.Protocol``), the handshake by
hand, one pre-built masked frame per connection (the payload never changes,
so it is masked once), and the echo recognised by comparing the bytes read
with the one frame expected (a general frame parser handles everything else:
split reads, pings, close).  It reports its own CPU use during the window
(``client_cpu``, a fraction of one core, and ``client_us_per_msg``): a figure
well below 1.0 means the server, not the client, set the rate.
``--calibrate`` runs it against a bare echo server (this file's ``--serve``,
no framework and no ASGI) on the other core, to show the client's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MASK = b"\x5a\x3c\x96\xe1"
CONNECTIONS = 50
SIZE = 16


def accept_key(key: bytes) -> bytes:
    """Sec-WebSocket-Accept for a Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


def _mask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (one big-integer XOR, no Python loop)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def _length(n: int) -> bytes:
    """The length part of a frame header (without the mask bit)."""
    if n < 126:
        return bytes([n])
    if n < 65536:
        return bytes([126]) + n.to_bytes(2, "big")
    return bytes([127]) + n.to_bytes(8, "big")


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame from a client: masked, as RFC 6455 requires."""
    length = _length(len(payload))
    return bytes([0x80 | opcode, 0x80 | length[0]]) + length[1:] + MASK + _mask(payload, MASK)


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final frame from a server: not masked."""
    return bytes([0x80 | opcode]) + _length(len(payload)) + payload


def parse_frames(buffer: bytearray) -> list[tuple[int, bool, bytes]]:
    """Take the complete frames off the front of ``buffer``: (opcode, fin, unmasked payload)."""
    frames = []
    while len(buffer) >= 2:
        first, second = buffer[0], buffer[1]
        n, pos = second & 0x7F, 2
        if n == 126:
            if len(buffer) < 4:
                break
            n, pos = int.from_bytes(buffer[2:4], "big"), 4
        elif n == 127:
            if len(buffer) < 10:
                break
            n, pos = int.from_bytes(buffer[2:10], "big"), 10
        mask = b""
        if second & 0x80:
            if len(buffer) < pos + 4:
                break
            mask, pos = bytes(buffer[pos : pos + 4]), pos + 4
        if len(buffer) < pos + n:
            break
        payload = bytes(buffer[pos : pos + n])
        del buffer[: pos + n]
        frames.append((first & 0x0F, bool(first & 0x80), _mask(payload, mask) if mask else payload))
    return frames


class Stats:
    """What all connections share: round-trip times (seconds) and errors."""

    def __init__(self) -> None:
        self.rtts = array("d")
        self.errors: list[str] = []


class Client(asyncio.Protocol):
    """One connection: the handshake, then one message in flight at a time."""

    def __init__(self, host: str, port: int, path: str, payload: bytes, stats: Stats) -> None:
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\n\r\n"
        ).encode()
        self.payload = payload
        self.frame = client_frame(0x1, payload)
        self.expected = server_frame(0x1, payload)
        self.stats = stats
        self.rtts_append = stats.rtts.append
        self.count = 0
        self.sent_at = 0.0
        self.open = False
        self.buffer = bytearray()
        self.fragments: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stopping = False

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.open and data == self.expected and not self.buffer:  # the hot path
            now = time.perf_counter()
            self.count += 1
            self.rtts_append(now - self.sent_at)
            if not self.stopping:
                self.sent_at = now
                self.transport.write(self.frame)  # type: ignore[union-attr]
            return
        self.buffer += data
        if not self.open:
            self._handshake()
        if self.open:
            self._frames()

    def _handshake(self) -> None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = head[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            return self._fail(f"handshake answered {head[0]!r}")
        if headers.get("sec-websocket-accept", "").encode() != accept_key(self.key):
            return self._fail("handshake: wrong Sec-WebSocket-Accept")
        self.open = True
        self.ready.set_result(None)
        self.sent_at = time.perf_counter()
        self.transport.write(self.frame)  # type: ignore[union-attr]

    def _frames(self) -> None:
        for opcode, fin, payload in parse_frames(self.buffer):
            if opcode == 0x9:  # ping
                self.transport.write(client_frame(0xA, payload))  # type: ignore[union-attr]
            elif opcode == 0x8:  # close
                if not self.stopping:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    self.stats.errors.append(f"server closed the connection (code {code})")
                self.transport.close()  # type: ignore[union-attr]
                return
            elif opcode in (0x0, 0x1, 0x2):
                self.fragments.append(payload)
                if fin:
                    message, self.fragments = b"".join(self.fragments), []
                    if message != self.payload:
                        self.stats.errors.append(f"wrong echo: {message[:40]!r}")
                    self._echoed()

    def _echoed(self) -> None:
        """An echo that did not arrive as one frame in one read (the slow path)."""
        now = time.perf_counter()
        self.count += 1
        self.rtts_append(now - self.sent_at)
        if not self.stopping:
            self.sent_at = now
            self.transport.write(self.frame)  # type: ignore[union-attr]

    def _fail(self, why: str) -> None:
        self.stats.errors.append(why)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(why))
        self.transport.close()  # type: ignore[union-attr]

    def stop(self) -> None:
        """Send a close frame; the server answers it and closes (see ``closed``)."""
        self.stopping = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame(0x8, (1000).to_bytes(2, "big")))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.stopping and self.open:
            self.stats.errors.append(f"connection lost: {exc or 'closed by the server'}")
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection lost in handshake: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def measure(
    host: str,
    port: int,
    path: str = "/ws",
    connections: int = CONNECTIONS,
    size: int = SIZE,
    warmup: float = 0.0,
    duration: float = 5.0,
) -> dict[str, Any]:
    """Open ``connections``, load for ``warmup`` + ``duration`` s; the figures of the window."""
    loop = asyncio.get_running_loop()
    stats = Stats()
    payload = (b"0123456789abcdef" * (size // 16 + 1))[:size]
    clients = [Client(host, port, path, payload, stats) for _ in range(connections)]
    try:
        await asyncio.gather(*(loop.create_connection(lambda c=c: c, host, port) for c in clients))
        await asyncio.wait_for(asyncio.gather(*(c.ready for c in clients)), 10)
    except (OSError, ConnectionError, asyncio.TimeoutError) as exc:
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
        return {"error": f"could not open {connections} WebSocket connections: {exc}"}
    await asyncio.sleep(warmup)
    del stats.rtts[:]
    errors_before = len(stats.errors)
    count0, cpu0, wall0 = sum(c.count for c in clients), time.process_time(), time.perf_counter()
    await asyncio.sleep(duration)
    count1, cpu1, wall1 = sum(c.count for c in clients), time.process_time(), time.perf_counter()
    rtts = sorted(stats.rtts)
    for client in clients:
        client.stop()
    await asyncio.wait([c.closed for c in clients], timeout=2)
    for client in clients:
        if client.transport is not None and not client.transport.is_closing():
            client.transport.close()
    messages, elapsed = count1 - count0, wall1 - wall0
    errors = stats.errors[errors_before:]
    return {
        "messages": messages,
        "seconds": elapsed,
        "messages_per_s": messages / elapsed,
        "p50_ms": _ms(_percentile(rtts, 0.50)),
        "p99_ms": _ms(_percentile(rtts, 0.99)),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "client_cpu": (cpu1 - cpu0) / elapsed,
        "client_us_per_msg": (cpu1 - cpu0) / messages * 1e6 if messages else None,
        "connections": connections,
        "size": size,
        "error": None if messages else f"no echo in {elapsed:.1f} s: {errors[:1]}",
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (as in the servers), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def load(**kwargs: Any) -> dict[str, Any]:
    """:func:`measure` on a fresh event loop."""
    loop = new_loop()
    try:
        return loop.run_until_complete(measure(**kwargs))
    finally:
        loop.close()


# -- the harness's side: run this file as a pinned process, like wrk -------------------------


def run(
    scenario: Any,
    port: int,
    duration: int,
    cpu: int | None,
    during: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Any:
    """Run the load for ``scenario`` in a process pinned to ``cpu``; a ``load.WrkResult``.

    The same contract as :func:`bench.load.run_wrk`, so the harness treats
    both alike; req/s is messages/s and ``load_cpu`` is the client's own figure.
    """
    from bench.load import CONNECTIONS as WRK_CONNECTIONS
    from bench.load import WrkResult, run_load_process

    command = [sys.executable, str(Path(__file__).resolve()), "--port", str(port)]
    command += ["--path", scenario.path, "-c", str(WRK_CONNECTIONS), "-d", str(duration)]
    command += ["--json"]
    output, _status, timed_out = run_load_process(command, cpu, during, duration + 30)
    if timed_out:
        return WrkResult(error="ws_load did not finish", raw=output)
    try:
        figures = json.loads(output.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return WrkResult(error=f"ws_load failed: {output.strip()[-200:]}", raw=output)
    if figures.get("error"):
        return WrkResult(error=figures["error"], raw=output)
    return WrkResult(
        req_per_s=figures["messages_per_s"],
        p50_ms=figures["p50_ms"],
        p99_ms=figures["p99_ms"],
        requests=figures["messages"],
        socket_errors=figures["errors"],
        error=None,
        raw=output,
        load_cpu=figures["client_cpu"],
    )


# -- a bare echo server, the ceiling for --calibrate -----------------------------------------


class EchoServer(asyncio.Protocol):
    """The least a WebSocket echo can do in Python: handshake, unmask, send back."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.open = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            key = b""
            for line in bytes(self.buffer[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-key":
                    key = value.strip()
            del self.buffer[: end + 4]
            self.open = True
            self.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
            )
        for opcode, _fin, payload in parse_frames(self.buffer):
            if opcode == 0x8:
                self.transport.write(server_frame(0x8, payload[:2]))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
            if opcode == 0x9:
                opcode = 0xA
            self.transport.write(server_frame(opcode, payload))  # type: ignore[union-attr]


def serve(port: int) -> None:
    """Run the bare echo server on 127.0.0.1:``port`` until killed."""
    loop = new_loop()
    server = loop.run_until_complete(loop.create_server(EchoServer, "127.0.0.1", port))
    print(f"bare WebSocket echo on 127.0.0.1:{port}", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


def calibrate(args: argparse.Namespace) -> dict[str, Any]:
    """The client against the bare echo server, each on its own core when there are two."""
    from bench import procs

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, client_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    port = procs.free_port()
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", str(port)]
    server = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        preexec_fn=(lambda: os.sched_setaffinity(0, {server_cpu}))
        if server_cpu is not None
        else None,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.02)
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        figures = load(
            host="127.0.0.1",
            port=port,
            path=args.path,
            connections=args.connections,
            size=args.size,
            warmup=args.warmup,
            duration=args.duration,
        )
    finally:
        server.terminate()
        server.wait(10)
    figures["server"] = "bare echo (bench/ws_load.py --serve)"
    figures["pinning"] = f"server CPU {server_cpu}, client CPU {client_cpu}"
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("-c", "--connections", type=int, default=CONNECTIONS)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds before measuring")
    parser.add_argument("--size", type=int, default=SIZE, help="message bytes (text)")
    parser.add_argument("--json", action="store_true", help="one JSON line")
    parser.add_argument("--serve", type=int, metavar="PORT", help="run the bare echo server")
    parser.add_argument("--calibrate", action="store_true", help="the client's ceiling")
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0
    if args.calibrate:
        figures = calibrate(args)
    elif args.port:
        figures = load(
            host=args.host,
            port=args.port,
            path=args.path,
            connections=args.connections,
            size=args.size,
            warmup=args.warmup,
            duration=args.duration,
        )
    else:
        parser.error("--port, --serve or --calibrate")
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key}: {value:,.3f}" if isinstance(value, float) else f"{key}: {value}")
    return 1 if figures.get("error") else 0


if __name__ == "__main__":
    sys.exit(main())
