"""A bounded HTTP(S) load that counts every outcome exactly.

Used in-process (``run_load``) and as a program, e.g. inside a network
namespace: ``python proxy_load.py URL --duration 8 --concurrency 8`` prints
one JSON object.  Each thread sends GET requests until the deadline, on a
keep-alive connection (``--keep-alive``, the default) or one connection per
request; a request is a failure when it gets no complete answer (an error)
or an answer that is not 2xx.  Nothing is retried: a request lost by the
server counts.

The answer's JSON ``server`` field (tests/apps/proxy_echo.py) says which
listening address answered, so a test can see the load move between hosts.
"""

from __future__ import annotations

import argparse
import http.client
import json
import ssl
import threading
import time
from collections import Counter
from urllib.parse import urlsplit


def run_load(
    url: str,
    *,
    duration: float,
    concurrency: int = 4,
    keep_alive: bool | None = True,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
    stop: threading.Event | None = None,
    live: dict | None = None,
) -> dict:
    """Load ``url`` for ``duration`` seconds (or until ``stop`` is set).

    ``live``: a dict the counts are kept in while the load runs (and which
    is returned), so a test can wait for progress (``live["ok"]``) instead
    of sleeping.

    ``keep_alive=None`` mixes: even threads keep connections, odd ones do not.
    Returns counts: ``requests``, ``ok``, ``non_2xx`` {status: n}, ``errors``
    {kind: n}, ``servers`` {address: n}, and ``timeline``: for each answer,
    (seconds since start, status, server) -- errors carry status 0.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    started = time.monotonic()
    deadline = started + duration
    stop = stop or threading.Event()
    lock = threading.Lock()
    result: dict = live if live is not None else {}
    result.update(
        {
            "requests": 0,
            "ok": 0,
            "non_2xx": Counter(),
            "errors": Counter(),
            "servers": Counter(),
            "timeline": [],
            "error_samples": [],
        }
    )

    def connect() -> http.client.HTTPConnection:
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_context)
        return http.client.HTTPConnection(host, port, timeout=timeout)

    def worker(index: int) -> None:
        keep = keep_alive if keep_alive is not None else index % 2 == 0
        conn: http.client.HTTPConnection | None = None
        while not stop.is_set() and time.monotonic() < deadline:
            if conn is None:
                conn = connect()
            status = 0
            server = None
            try:
                headers = {"Connection": "keep-alive" if keep else "close"}
                conn.request("GET", target, headers=headers)
                response = conn.getresponse()
                body = response.read()
                status = response.status
                try:
                    server = json.loads(body).get("server")
                except (ValueError, AttributeError):
                    server = None
                if response.will_close or not keep:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                kind = type(exc).__name__
                with lock:
                    result["errors"][kind] += 1
                    if len(result["error_samples"]) < 10:
                        result["error_samples"].append(
                            f"{time.monotonic() - started:.3f}s {kind}: {exc}"
                        )
                conn.close()
                conn = None
            with lock:
                result["requests"] += 1
                if 200 <= status < 300:
                    result["ok"] += 1
                elif status:
                    result["non_2xx"][str(status)] += 1
                if server:
                    result["servers"][server] += 1
                result["timeline"].append((round(time.monotonic() - started, 3), status, server))
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(duration + timeout + 5)
    result["alive_threads"] = sum(thread.is_alive() for thread in threads)
    result["non_2xx"] = dict(result["non_2xx"])
    result["errors"] = dict(result["errors"])
    result["servers"] = dict(result["servers"])
    return result


def failures(result: dict) -> int:
    """Requests that did not get a complete 2xx answer."""
    return result["requests"] - result["ok"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("url")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--no-keep-alive", action="store_true")
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    result = run_load(
        args.url,
        duration=args.duration,
        concurrency=args.concurrency,
        keep_alive=not args.no_keep_alive,
        timeout=args.timeout,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
