"""A small HTTP load generator that counts every failed request, for the e2e tests.

    python load.py --port 18580 --duration 5 --close 4 --keepalive 2 [--stop-file F]

Runs ``--close`` threads that open a new connection per request
(``Connection: close``) and ``--keepalive`` threads that reuse one
connection. Each request must get a complete ``200`` response (status line,
``Content-Length`` and the whole body). A keep-alive connection that the
server closed while idle is reopened once and the request repeated, as
HTTP clients do for an idempotent request that got no byte of an answer;
any other error is a failure. Stops after ``--duration`` seconds or once
``--stop-file`` exists, then prints one JSON line: ``ok``, ``failed``,
``retried``, the first errors, and the worker pids that answered (the app
answers ``{"pid": ...}``). With ``--progress FILE`` it keeps ``OK FAILED``
in that file while it runs (replaced atomically every 50 ms), so a test can
wait for the load to make progress instead of sleeping. Used in network
namespaces through ``nsenter -n``, so it depends on the standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import threading
import time
from collections import Counter


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = 0
        self.retried = 0
        self.errors: list[str] = []
        self.pids: Counter[int] = Counter()

    def success(self, body: bytes) -> None:
        try:
            pid = int(json.loads(body).get("pid", 0))
        except (ValueError, AttributeError):
            pid = 0
        with self.lock:
            self.ok += 1
            self.pids[pid] += 1

    def failure(self, message: str) -> None:
        with self.lock:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(f"{time.monotonic():.3f} {message}")


class NoAnswer(Exception):
    """The connection closed before any byte of a response arrived."""


def read_response(sock: socket.socket) -> tuple[bytes, bool]:
    """(body, server_closes) of one response; NoAnswer if nothing arrived."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            if not data:
                raise NoAnswer("closed before the response")
            raise ValueError(f"incomplete head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ", 2)
    if len(status) < 2 or status[1] != b"200":
        raise ValueError(f"status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if b"content-length" not in headers:
        raise ValueError(f"no Content-Length in {head[:200]!r}")
    length = int(headers[b"content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ValueError(f"body cut at {len(body)} of {length} bytes")
        body += chunk
    closes = headers.get(b"connection", b"").lower() == b"close"
    return body[:length], closes


def request_bytes(path: str, close: bool) -> bytes:
    connection = b"close" if close else b"keep-alive"
    return b"GET %s HTTP/1.1\r\nHost: load\r\nConnection: %s\r\n\r\n" % (path.encode(), connection)


def close_worker(args: argparse.Namespace, stats: Stats, done: threading.Event) -> None:
    while not done.is_set():
        try:
            with socket.create_connection((args.host, args.port), timeout=args.timeout) as sock:
                sock.sendall(request_bytes(args.path, True))
                body, _ = read_response(sock)
            stats.success(body)
        except Exception as exc:  # every error counts
            stats.failure(f"close: {type(exc).__name__}: {exc}")
            time.sleep(0.01)


def keepalive_worker(args: argparse.Namespace, stats: Stats, done: threading.Event) -> None:
    sock: socket.socket | None = None
    reused = False
    while not done.is_set():
        for attempt in (1, 2):
            if sock is None:
                try:
                    sock = socket.create_connection((args.host, args.port), timeout=args.timeout)
                except Exception as exc:
                    stats.failure(f"keep-alive connect: {type(exc).__name__}: {exc}")
                    time.sleep(0.01)
                    break
                reused = False
            try:
                sock.sendall(request_bytes(args.path, False))
                body, closes = read_response(sock)
            except (NoAnswer, BrokenPipeError, ConnectionResetError) as exc:
                sock.close()
                sock = None
                if reused and attempt == 1:
                    with stats.lock:
                        stats.retried += 1
                    continue  # the server closed an idle connection: retry once
                stats.failure(f"keep-alive: {type(exc).__name__}: {exc}")
                break
            except Exception as exc:
                sock.close()
                sock = None
                stats.failure(f"keep-alive: {type(exc).__name__}: {exc}")
                break
            stats.success(body)
            reused = True
            if closes:
                sock.close()
                sock = None
            break
    if sock is not None:
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--stop-file")
    parser.add_argument("--progress")
    parser.add_argument("--close", type=int, default=4)
    parser.add_argument("--keepalive", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    stats = Stats()
    done = threading.Event()
    threads = [
        threading.Thread(target=close_worker, args=(args, stats, done), daemon=True)
        for _ in range(args.close)
    ] + [
        threading.Thread(target=keepalive_worker, args=(args, stats, done), daemon=True)
        for _ in range(args.keepalive)
    ]
    for thread in threads:
        thread.start()
    print("started", flush=True)
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        if args.progress:
            with open(args.progress + ".tmp", "w") as f:
                f.write(f"{stats.ok} {stats.failed}\n")
            os.replace(args.progress + ".tmp", args.progress)
        if args.stop_file and os.path.exists(args.stop_file):
            break
        time.sleep(0.05)  # how often the stop file is looked for
    done.set()
    for thread in threads:
        thread.join(args.timeout + 5)
    print(
        json.dumps(
            {
                "ok": stats.ok,
                "failed": stats.failed,
                "retried": stats.retried,
                "errors": stats.errors,
                "pids": {str(pid): n for pid, n in stats.pids.items()},
                "stuck_threads": sum(t.is_alive() for t in threads),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
