"""The measurements behind prefork's WebSocket frame library (wsproto vs ``websockets``).

    python bench/ws_libs.py                # both parts (the peers come from the bench extra)
    python bench/ws_libs.py --micro        # part 1 only: no servers
    python bench/ws_libs.py --rounds 5

1. In process, per frame: a masked 16-byte text frame parsed and a reply
   serialized, one frame per read (as on a real connection), for wsproto's
   ``Connection``, the ``websockets`` sans-I/O ``Protocol``, and prefork's
   session (wsproto plus its fast path for whole small frames); then one
   1 MiB text frame arriving in 64 KiB reads.
2. End to end, the server pinned to the first core and the client to the
   second: 50 connections echoing 16-byte messages (``bench/ws_load.py``,
   closed loop) and the round trip of a 1 MiB text message (the
   ``websockets`` client, compressed and not), against prefork, uvicorn
   ``--ws wsproto`` and uvicorn ``--ws websockets-sansio``, in interleaved
   rounds; the medians and the ratios prefork / peer.

Conformance is the other half of the choice: ``tests/integration/test_websocket.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

APP = "tests.apps.ws_app:app"


def masked(payload: bytes, opcode: int = 1) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, 0x80 | n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 0x80 | 127]) + struct.pack("!Q", n)
    keys = (key * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")
    return head + key + body


def best_us(run, count: int) -> float:
    """The best of 7 runs of ``run(count)``, in µs per item (the least disturbed)."""
    best = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        run(count)
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


# ---------------------------------------------------------------- part 1


def micro() -> None:
    from websockets.protocol import SERVER, Protocol
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import TextMessage

    small = masked(b"Hello, world 16b")
    big = masked(os.urandom(1 << 19).hex().encode())
    big_reads = [big[i : i + 65536] for i in range(0, len(big), 65536)]

    def with_wsproto(reads):
        conn = Connection(ConnectionType.SERVER)

        def run(count):
            for _ in range(count):
                for data in reads:
                    conn.receive_data(data)
                    for event in conn.events():
                        if event.message_finished:
                            conn.send(TextMessage(data=event.data))

        return run

    def with_websockets(reads):
        proto = Protocol(SERVER, max_size=None)

        def run(count):
            for _ in range(count):
                for data in reads:
                    proto.receive_data(data)
                    for frame in proto.events_received():
                        proto.send_text(frame.data.decode().encode())  # (text: validated)
                    proto.data_to_send()

        return run

    def with_prefork(reads):
        session, transport = _accepted_session()

        def run(count):
            for _ in range(count):
                for data in reads:
                    session.data_received(data)
                while session._inbox:
                    item = session._inbox.popleft()
                    session._taken(item)
                    session._write_data(1, item["text"].encode(), True, True)
                transport.clear()

        return run

    print("1. per frame, in process (µs, best of 7)")
    print(f"{'':34s}{'16 B text':>12s}{'1 MiB text':>12s}")
    for name, make in [
        ("wsproto Connection", with_wsproto),
        ("websockets sans-I/O Protocol", with_websockets),
        ("prefork session (wsproto + fast)", with_prefork),
    ]:
        small_us = best_us(make([small]), 20000)
        big_us = best_us(make(big_reads), 20)
        print(f"{name:34s}{small_us:12.1f}{big_us:12.0f}")


class _Transport(bytearray):
    """What the session writes, kept and thrown away."""

    def write(self, data):
        self.extend(data)

    def writelines(self, chunks):
        for chunk in chunks:
            self.extend(chunk)

    def set_write_buffer_limits(self, *args, **kwargs):
        pass

    def set_protocol(self, protocol):
        pass

    def pause_reading(self):
        pass

    def resume_reading(self):
        pass


def _accepted_session():
    from prefork.settings import make_config
    from prefork.worker.httputil import HTTPHeaders
    from prefork.worker.websocket import WebSocketSession

    transport = _Transport()

    class Connection:
        server = None

        def closed(self):
            return False

        def set_close_callback(self, callback):
            pass

        def detach(self):
            return transport, b""

    class Request:
        method, version, uri, remote_ip = "GET", "HTTP/1.1", "/", "127.0.0.1"
        headers = HTTPHeaders()
        connection = Connection()

    async def accept():
        config = make_config(None, ws_ping_interval=0, ws_max_size=64 << 20)
        session = WebSocketSession({"subprotocols": []}, Request(), config, "a" * 24)
        await session.receive()
        await session.send({"type": "websocket.accept"})
        return session

    loop = asyncio.new_event_loop()
    session = loop.run_until_complete(accept())
    transport.clear()
    return session, transport


# ---------------------------------------------------------------- part 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(name: str, port: int) -> list[str]:
    py = sys.executable
    if name == "prefork":
        return [py, "-m", "prefork", "-b", f"127.0.0.1:{port}", "-w", "1", "--interface", "asgi",
                "--access-log", "off", APP]  # fmt: skip
    ws = {"uvicorn-wsproto": "wsproto", "uvicorn-websockets-sansio": "websockets-sansio"}[name]
    return [py, "-m", "uvicorn", APP, "--port", str(port), "--ws", ws, "--log-level", "warning",
            "--no-access-log", "--lifespan", "off"]  # fmt: skip


class Server:
    def __init__(self, name: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["taskset", "-c", "0", *server_command(name, self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def echo_rate(port: int, seconds: float) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", sys.executable, "bench/ws_load.py", "--port", str(port),
         "--path", "/echo", "-c", "50", "-d", str(seconds), "--warmup", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=seconds + 60,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["messages_per_s"])


def round_trip_ms(port: int, compress: bool, count: int = 20) -> float:
    from websockets.sync.client import connect

    message = (json.dumps(list(range(200_000))) * 2)[: 1 << 20]
    times = []
    with connect(
        f"ws://127.0.0.1:{port}/echo",
        max_size=None,
        compression="deflate" if compress else None,
        open_timeout=10,
    ) as ws:
        for _ in range(count):
            started = time.perf_counter()
            ws.send(message)
            assert ws.recv(timeout=30) == message
            times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def end_to_end(rounds: int, seconds: float) -> None:
    names = ["prefork", "uvicorn-wsproto", "uvicorn-websockets-sansio"]
    results: dict[str, dict[str, list[float]]] = {
        n: {"rate": [], "rt": [], "rtz": []} for n in names
    }
    os.sched_setaffinity(0, {1})  # the round-trip client shares the load generator's core
    for round_no in range(rounds):
        for name in names:
            server = Server(name)
            try:
                results[name]["rate"].append(echo_rate(server.port, seconds))
                results[name]["rt"].append(round_trip_ms(server.port, False))
                results[name]["rtz"].append(round_trip_ms(server.port, True))
            finally:
                server.stop()
        print(f"   round {round_no + 1}/{rounds} done", file=sys.stderr)
    med = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in results.items()}
    print("2. end to end, one core each, medians of", rounds, "interleaved rounds")
    print(f"{'':28s}{'16 B echo msg/s':>16s}{'1 MiB rt ms':>13s}{'1 MiB rt deflate':>18s}")
    for name in names:
        m = med[name]
        print(f"{name:28s}{m['rate']:16.0f}{m['rt']:13.1f}{m['rtz']:18.1f}")
    for name in names[1:]:
        ratio = med["prefork"]["rate"] / med[name]["rate"]
        print(f"   prefork / {name}: {ratio:.2f}x msg/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--micro", action="store_true", help="only the in-process part")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    micro()
    if not args.micro:
        end_to_end(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
