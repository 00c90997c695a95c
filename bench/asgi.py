"""Which server can run which ASGI scenario here, and why not.

prefork's ASGI interface (``prefork --interface asgi``) and its WebSocket
support are being built; until they work, the prefork rows of the ASGI
scenarios say "not available" instead of failing round after round.  Whether
they work is decided once per run: first from the source tree (the modules
exist), then by starting ``prefork --interface asgi`` on the ASGI app and
asking it for ``GET /`` (and, for WebSocket, one echo on ``/ws``).
"""

from __future__ import annotations

import base64
import os
import socket
import time
from pathlib import Path

from bench import procs
from bench.load import ASGI_APP, Scenario
from bench.servers import Launch, Server, importable
from bench.ws_load import accept_key, client_frame, parse_frames

PROBE_TIMEOUT = 15.0
_probed: dict[bool, str | None] = {}


def why_not(server: Server, scenario: Scenario, workdir: Path, log: Path) -> str | None:
    """Why ``server`` has no numbers in the ASGI ``scenario`` (None: it runs)."""
    absent = [m for m in scenario.modules if not importable(m)]
    if absent:
        return f"not installed: pip install {' '.join(absent)} (the scenario's app)"
    if scenario.websocket:
        absent = [m for m in server.ws_modules if not importable(m)]
        if absent:
            return f"not installed: pip install {' '.join(absent)} (its WebSocket stack)"
    if server.name == "prefork":
        return prefork_missing(scenario.websocket, workdir, log)
    return None


def prefork_missing(websocket: bool, workdir: Path, log: Path) -> str | None:
    """Why prefork cannot serve ASGI (or ASGI WebSocket) yet, or None once it can."""
    if not importable("prefork.worker.asgi"):
        return "not available: prefork --interface asgi is not built yet (prefork/worker/asgi.py)"
    if websocket and not importable("prefork.worker.websocket"):
        return "not available: prefork has no WebSocket support yet (prefork/worker/websocket.py)"
    if websocket not in _probed:
        _probed[websocket] = _probe(websocket, workdir, log)
    return _probed[websocket]


def _probe(websocket: bool, workdir: Path, log: Path) -> str | None:
    """Start ``prefork --interface asgi`` once; None when it answers (and echoes)."""
    from bench.servers import BY_NAME

    port = procs.free_port()
    command = BY_NAME["prefork"].command(Launch(port, 1, workdir, asgi=ASGI_APP))
    with open(log, "a") as out:
        out.write(f"\n=== probe: --interface asgi{' + WebSocket' if websocket else ''} ===\n")
    running = procs.start("prefork", command, log, cpu=None)
    try:
        problem = procs.wait_ready(running, port, timeout=PROBE_TIMEOUT)
        if problem:
            return f"not available: prefork --interface asgi did not answer: {problem}"
        if websocket:
            problem = ws_echo_once(port)
            if problem:
                return f"not available: prefork WebSocket echo failed: {problem}"
        return None
    finally:
        procs.stop(running)


def ws_echo_once(port: int, path: str = "/ws", timeout: float = 5.0) -> str | None:
    """One WebSocket handshake and one echo on a blocking socket; None when it worked."""
    key = base64.b64encode(os.urandom(16))
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Key: {key.decode()}\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(request)
            data = bytearray()
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in data and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed during the handshake"
                data += chunk
            head, _, rest = bytes(data).partition(b"\r\n\r\n")
            status = head.split(b"\r\n", 1)[0]
            if b" 101 " not in status + b" ":
                return f"handshake answered {status.decode('latin-1')!r}"
            if accept_key(key) not in head:
                return "wrong Sec-WebSocket-Accept"
            sock.sendall(client_frame(0x1, b"probe"))
            buffer = bytearray(rest)
            while time.monotonic() < deadline:
                for opcode, _fin, payload in parse_frames(buffer):
                    if opcode == 0x1 and payload == b"probe":
                        sock.sendall(client_frame(0x8, (1000).to_bytes(2, "big")))
                        return None
                    if opcode == 0x8:
                        return f"closed by the server: {payload[:2].hex()}"
                chunk = sock.recv(65536)
                if not chunk:
                    return "closed before the echo"
                buffer += chunk
            return "no echo"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
