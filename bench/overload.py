"""Memory under overload, with and without ``--max-connections``.

    python bench/overload.py                 # 2 workers, 50 connections each, 1x 2x 4x
    python bench/overload.py --duration 8 --loads 1,2,4,8

Each request of ``bench/apps/hold_app.py`` holds 256 KiB for 100 ms, so a
worker's memory grows with the requests it has taken on at once.  ``wrk``
(``Connection: close``: every request a new connection, which is how a
waiting client reaches the listen queue) loads the server at 1x, 2x, 4x
its capacity (workers x ``--max-connections`` connections at once), first
without the limit, then with it.  The RSS of every worker is sampled every
20 ms while the load runs; the table shows the largest worker's peak, the
requests/s, the p99 latency and wrk's errors.  With the limit, the RSS is
flat whatever the load (the other connections wait in the kernel's listen
queue, which costs latency, not memory); without it, it grows with the
load.  Nothing is refused either way (no socket errors, no non-2xx).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import procs  # noqa: E402
from bench.load import parse_wrk, wrk_path  # noqa: E402

APP = "bench.apps.hold_app:app"


def peak_worker_rss(master_pid: int, stop: threading.Event, peaks: dict[int, int]) -> None:
    """Sample each worker's RSS every 20 ms until ``stop``; keep the peak per pid."""
    while not stop.is_set():
        for process in procs.tree(master_pid)[1:]:
            try:
                rss = process.memory_info().rss
            except Exception:  # (a worker gone meanwhile)
                continue
            peaks[process.pid] = max(peaks.get(process.pid, 0), rss)
        stop.wait(0.02)


def measure(args: argparse.Namespace, connections: int, limit: int, log: Path) -> dict:
    port = procs.free_port()
    command = [sys.executable, "-m", "prefork", "-b", f"127.0.0.1:{port}", "-w", str(args.workers)]
    command += ["--access-log", "off", "--backlog", "4096"]
    if limit:
        command += ["--max-connections", str(limit)]
    server = procs.start("prefork", [*command, APP], log, None)
    try:
        why = procs.wait_ready(server, port)
        if why is not None:
            raise SystemExit(f"prefork did not start: {why}")
        time.sleep(0.3)  # (every worker ready, not only the one that answered)
        idle = max(p.memory_info().rss for p in procs.tree(server.pid)[1:])
        url = f"http://127.0.0.1:{port}/hold?kb={args.kb}&ms={args.ms}"
        wrk = [wrk_path() or "wrk", "-t2", f"-c{connections}", f"-d{args.duration}s"]
        wrk += ["--latency", "--timeout", "20s", "-H", "Connection: close", url]
        peaks: dict[int, int] = {}
        stop = threading.Event()
        sampler = threading.Thread(target=peak_worker_rss, args=(server.pid, stop, peaks))
        sampler.start()
        try:
            output = subprocess.run(
                wrk, capture_output=True, text=True, timeout=args.duration + 60
            ).stdout
        finally:
            stop.set()
            sampler.join()
        result = parse_wrk(output)
        if result.error:
            raise SystemExit(f"wrk failed: {result.error}")
        return {
            "idle": idle,
            "peak": max(peaks.values()),
            "rps": result.req_per_s,
            "p99": result.p99_ms,
            "errors": result.socket_errors,
            "non_2xx": result.non_2xx,
        }
    finally:
        left = procs.stop(server)
        if left:
            raise SystemExit(f"processes left behind: {left}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=50, help="--max-connections per worker")
    parser.add_argument("--loads", default="1,2,4", help="multiples of workers x limit")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per run")
    parser.add_argument("--kb", type=int, default=256, help="KiB each request holds")
    parser.add_argument("--ms", type=int, default=100, help="milliseconds it holds them")
    args = parser.parse_args()
    if wrk_path() is None:
        raise SystemExit("wrk is needed: sudo apt-get install wrk")
    log = Path(tempfile.mkdtemp(prefix="prefork-overload-")) / "server.log"
    capacity = args.workers * args.limit
    print(
        f"{args.workers} workers, each request holds {args.kb} KiB for {args.ms} ms, "
        f"wrk -t2 -H 'Connection: close' for {args.duration} s; capacity {capacity} connections"
    )
    print()
    print(
        "| load (connections) | limit | worker RSS idle | worker RSS peak | req/s | p99 | errors |"
    )
    print("|---|---|--:|--:|--:|--:|--:|")
    mib = 1024 * 1024
    for factor in (float(x) for x in args.loads.split(",")):
        connections = int(capacity * factor)
        for limit in (0, args.limit):
            r = measure(args, connections, limit, log)
            p99 = f"{r['p99']:.0f} ms" if r["p99"] is not None else "-"
            print(
                f"| {factor:g}x ({connections}) | {f'--max-connections {limit}' if limit else 'none'}"
                f" | {r['idle'] / mib:.1f} MiB | {r['peak'] / mib:.1f} MiB | {r['rps']:,.0f}"
                f" | {p99} | {r['errors'] + r['non_2xx']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
