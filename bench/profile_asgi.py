"""cProfile of prefork serving an ASGI scenario under real load: where a worker's time goes.

    python bench/profile_asgi.py                       # asgi-hello, 5 s
    python bench/profile_asgi.py --scenario ws-echo    # or fastapi-json, asgi-echo-10k
    python bench/profile_asgi.py --sort cumulative --limit 60

One process serves the scenario's app the way a worker does
(``HTTPServer(ASGIAdapter(app))`` on the worker's event loop: uvloop when
installed), pinned to the first CPU, while the scenario's load generator
(wrk, or ``bench/ws_load.py`` for ws-echo) runs pinned to the second, as in
``bench/run.py``.  The profile covers the loaded window only.  cProfile adds
a cost per Python call, so the shares are more telling than the times; the
figure without the profiler is the harness's (``bench/run.py --scenarios``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import os
import pstats
import socket
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import load, ws_load  # noqa: E402


def _app(spec: str):  # type: ignore[no-untyped-def]
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    asgi = [s.name for s in load.SCENARIOS if s.asgi_app]
    parser.add_argument("--scenario", default="asgi-hello", choices=asgi)
    parser.add_argument("-d", "--duration", type=int, default=5)
    parser.add_argument("--sort", default="tottime", help="pstats sort key (default tottime)")
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args()
    scenario = load.BY_NAME[args.scenario]

    from prefork.worker.asgi import ASGIAdapter
    from prefork.worker.httpserver import HTTPServer
    from prefork.worker.ioloop import IOLoop, new_event_loop

    cpus = sorted(os.sched_getaffinity(0))
    server_cpu, load_cpu = (cpus[0], cpus[1]) if len(cpus) >= 2 else (None, None)
    if server_cpu is not None:
        os.sched_setaffinity(0, {server_cpu})
    loop = new_event_loop()
    IOLoop(loop).install()  # as a worker does: the server's connections run on it
    asyncio.set_event_loop(loop)
    adapter = ASGIAdapter(_app(scenario.asgi_app or ""))
    loop.run_until_complete(adapter.startup())
    sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = sock.getsockname()[1]
    server = HTTPServer(adapter)
    server.add_sockets([sock])

    drive = ws_load.run if scenario.websocket else load.run_wrk
    profiler = cProfile.Profile()
    result: list[load.WrkResult] = []

    async def run_load() -> None:
        await asyncio.sleep(0.2)  # the server is listening
        await loop.run_in_executor(None, drive, scenario, port, 1, load_cpu)  # warm-up
        profiler.enable()
        result.append(
            await loop.run_in_executor(None, drive, scenario, port, args.duration, load_cpu)
        )
        profiler.disable()

    try:
        loop.run_until_complete(run_load())
    finally:
        sock.close()
    figures = result[0]
    what = "messages/s" if scenario.websocket else "req/s"
    print(
        f"{scenario.name}: {figures.req_per_s:,.0f} {what} under the profiler "
        f"(error: {figures.error}); server CPU {server_cpu}, load CPU {load_cpu}"
    )
    stats = pstats.Stats(profiler)
    stats.sort_stats(args.sort).print_stats(args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
