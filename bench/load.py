"""The load generator: scenarios, the ``wrk`` command line and its output.

Every scenario is ``wrk -t1 -c50 --latency`` against one URL, shaped by a
header or a Lua script; one thread, because with one pinned worker wrk has
exactly one core of its own, and one thread saturates a Python server.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

LUA = Path(__file__).resolve().parent / "lua"
CONNECTIONS = 50
THREADS = 1


@dataclass(frozen=True)
class Scenario:
    """One way of loading a server.

    ``wsgi`` picks the WSGI variant of each app; ``latency`` is False where
    wrk's latency histogram is not valid (with a pipelining script wrk
    records one sample per batch but corrects for as many samples as
    requests, and prints 0 for every percentile).  ``asgi_app`` (an ASGI
    scenario) is the ``module:app`` every ASGI server serves, ``modules`` what
    that app imports; ``websocket``: the load is ``bench/ws_load.py``, not wrk.
    """

    name: str
    description: str
    path: str = "/"
    headers: tuple[str, ...] = ()
    script: str | None = None
    wsgi: bool = False
    latency: bool = True
    asgi_app: str | None = None
    modules: tuple[str, ...] = ()
    websocket: bool = False


ASGI_APP = "bench.apps.asgi_app:app"
FASTAPI_APP = "bench.apps.fastapi_app:app"

SCENARIOS: tuple[Scenario, ...] = (
    Scenario("hello", "GET / on keep-alive connections (13-byte body)"),
    Scenario(
        "close",
        "a new connection per request (Connection: close)",
        headers=("Connection: close",),
    ),
    Scenario(
        "pipeline16",
        "16 requests per write on keep-alive connections (HTTP/1.1 pipelining; no latency: wrk cannot measure it here)",
        script="pipeline.lua",
        latency=False,
    ),
    Scenario("big", "GET /big: a 1 MiB response", path="/big"),
    Scenario("upload", "POST /upload with a 1 MiB body", script="upload.lua"),
    Scenario("wsgi-hello", "GET / through each server's WSGI interface", wsgi=True),
    Scenario(
        "wsgi-big",
        "GET /big: a 1 MiB response through each server's WSGI interface",
        path="/big",
        wsgi=True,
    ),
    Scenario(
        "wsgi-file",
        "GET /file: a 1 MiB file through wsgi.file_wrapper (sendfile where the server has it)",
        path="/file",
        wsgi=True,
    ),
    Scenario(
        "asgi-hello",
        "GET / through each server's ASGI interface (13-byte body, bench/apps/asgi_app.py)",
        asgi_app=ASGI_APP,
    ),
    Scenario(
        "fastapi-json",
        "GET /items/42?q=bench: a FastAPI endpoint answering a pydantic model as JSON",
        path="/items/42?q=bench",
        asgi_app=FASTAPI_APP,
        modules=("fastapi",),
    ),
    Scenario(
        "asgi-big",
        "GET /big: a 1 MiB response through each server's ASGI interface",
        path="/big",
        asgi_app=ASGI_APP,
    ),
    Scenario(
        "asgi-file",
        "GET /file: a 1 MiB file, by http.response.pathsend where the server offers it "
        "(else read in 64 KiB pieces)",
        path="/file",
        asgi_app=ASGI_APP,
    ),
    Scenario(
        "asgi-echo-10k",
        "POST /echo with a 10 KiB body, sent back by the ASGI app",
        script="echo10k.lua",
        asgi_app=ASGI_APP,
    ),
    Scenario(
        "ws-echo",
        "WebSocket echo at /ws: 50 connections, each with one 16-byte text message in flight "
        "(bench/ws_load.py); req/s is messages/s, latency the round trip",
        path="/ws",
        asgi_app=ASGI_APP,
        websocket=True,
    ),
)
BY_NAME = {scenario.name: scenario for scenario in SCENARIOS}


@dataclass
class WrkResult:
    """What one wrk run measured; ``error`` is set when wrk itself failed."""

    req_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    requests: int = 0
    socket_errors: int = 0
    non_2xx: int = 0
    error: str | None = None
    raw: str = field(default="", repr=False)
    load_cpu: float | None = None  # the load generator's CPU, a fraction of one core


def wrk_path() -> str | None:
    """The wrk binary, or None (the harness then stops with an apt hint)."""
    return shutil.which("wrk")


def wrk_command(scenario: Scenario, port: int, duration: int) -> list[str]:
    """The wrk command line for ``scenario`` against 127.0.0.1:``port``."""
    command = [wrk_path() or "wrk", f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{duration}s"]
    command += ["--latency", "--timeout", "5s"]
    for header in scenario.headers:
        command += ["-H", header]
    if scenario.script:
        command += ["-s", str(LUA / scenario.script)]
    return [*command, f"http://127.0.0.1:{port}{scenario.path}"]


def run_load_process(
    command: list[str],
    cpu: int | None,
    during: Callable[[subprocess.Popen[str]], object] | None,
    timeout: float,
) -> tuple[str, int, bool]:
    """Run a load generator pinned to ``cpu``: (output, exit status, timed out).

    ``during`` gets the Popen while it runs (the RSS sampling); a generator
    still running after ``timeout`` is killed.
    """
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,
    )
    if during is not None:
        during(process)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        return output, process.returncode, True
    return output, process.returncode, False


def run_wrk(
    scenario: Scenario,
    port: int,
    duration: int,
    cpu: int | None,
    during: Callable[[subprocess.Popen[str]], None] | None = None,
) -> WrkResult:
    """Run wrk (pinned to ``cpu`` if given); ``during(wrk)`` runs while it loads the server.

    ``during`` is how the server's RSS is sampled under load rather than at
    rest; it gets wrk's Popen and returns once wrk has exited.  It runs in
    this thread, after the fork, so no thread exists when ``preexec_fn`` runs.
    """
    command = wrk_command(scenario, port, duration)
    output, returncode, timed_out = run_load_process(command, cpu, during, duration + 30)
    if timed_out:
        return WrkResult(error="wrk did not finish", raw=output)
    result = parse_wrk(output)
    if returncode != 0 and result.error is None:
        result.error = f"wrk exited with {returncode}: {output.strip()[-200:]}"
    return result


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}
_LATENCY = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_RPS = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_COUNT = re.compile(r"^\s*(\d+) requests in", re.MULTILINE)
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk(output: str) -> WrkResult:
    """Pull requests/s, p50, p99, socket errors and non-2xx out of wrk's report."""
    result = WrkResult(raw=output)
    rps = _RPS.search(output)
    if rps is None:
        result.error = "no Requests/sec in wrk output: " + output.strip()[-200:]
        return result
    result.req_per_s = float(rps.group(1))
    for percent, value, unit in _LATENCY.findall(output):
        millis = float(value) * _UNITS_MS[unit]
        if percent == "50":
            result.p50_ms = millis
        else:
            result.p99_ms = millis
    count = _COUNT.search(output)
    result.requests = int(count.group(1)) if count else 0
    socket = _SOCKET.search(output)
    result.socket_errors = sum(int(n) for n in socket.groups()) if socket else 0
    non_2xx = _NON_2XX.search(output)
    result.non_2xx = int(non_2xx.group(1)) if non_2xx else 0
    if result.requests == 0:
        # e.g. every response was malformed: wrk counts parse failures as read errors
        result.error = f"no complete response ({result.socket_errors} socket errors)"
    return result
