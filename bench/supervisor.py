"""Supervisor figures: launch time, replacement after SIGKILL, PSS per worker.

All are measured with 2 workers and no CPU pinning, one server at a time:

- ``launch_ms``: from spawning the command to the first 200 response;
- ``replace_ms``: from SIGKILL of one worker to the first response from a
  pid that did not exist before (the apps answer with ``X-Pid``);
- ``worker_pss_mb``: mean PSS of the worker processes after a short warm-up
  (psutil ``memory_full_info().pss``: shared pages split among the sharers,
  so forked workers that share the master's imports cost less), without and
  with the server's preload mode (``"-"`` where it has none).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import psutil

from bench import procs
from bench.servers import Launch, Server

WORKERS = 2
REPLACE_TIMEOUT = 10.0
MIB = 1024 * 1024


def measure(server: Server, workdir: Path) -> dict[str, Any]:
    """All figures for ``server``; a failure becomes a note, never an exception."""
    figures: dict[str, Any] = {"launch_ms": None, "replace_ms": None, "notes": []}
    figures.update(_run(server, workdir, preload=False))
    if server.preload:
        preloaded = _run(server, workdir, preload=True)
        figures["worker_pss_preload_mb"] = preloaded.get("worker_pss_mb")
        figures["start_failed"] = figures.get("start_failed") or preloaded.get("start_failed")
        figures["notes"] += [f"--preload: {note}" for note in preloaded["notes"]]
    return figures


def _run(server: Server, workdir: Path, preload: bool) -> dict[str, Any]:
    """One launch: time it, wait for both workers, weigh them, kill one (if not preload)."""
    port = procs.free_port()
    command = server.command(Launch(port, WORKERS, workdir, preload=preload))
    log = workdir / f"{server.name}-supervisor{'-preload' if preload else ''}.log"
    started = time.monotonic()
    running = procs.start(server.name, command, log, cpu=None)
    result: dict[str, Any] = {"notes": []}
    try:
        problem = procs.wait_ready(running, port)
        if problem:
            result["start_failed"] = True
            result["notes"].append(f"did not start: {problem}")
            return result
        if not preload:
            result["launch_ms"] = (time.monotonic() - started) * 1000
        workers = _wait_workers(port)
        if len(workers) < WORKERS:
            result["notes"].append(f"saw {len(workers)} of {WORKERS} workers answer")
        result["worker_pss_mb"] = _worker_pss(running.pid, port)
        if not preload and workers:
            result["replace_ms"] = _replace_ms(running.pid, port, workers)
            if result["replace_ms"] is None and running.process.poll() is not None:
                result["notes"].append("the whole server exited when one worker was killed")
            elif result["replace_ms"] is None:
                result["notes"].append(f"no replacement within {REPLACE_TIMEOUT:.0f} s")
    finally:
        left = procs.stop(running)
        if left:
            result["notes"].append(f"left running: {left}")
    return result


def _wait_workers(port: int, timeout: float = 10.0) -> set[int]:
    """The pids that answer, once ``WORKERS`` distinct ones did (or the timeout passed)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < WORKERS and time.monotonic() < deadline:
        seen.update(procs.burst(port))
    for _ in range(25):  # a little traffic, so each worker has touched its request path
        seen.update(procs.burst(port))
    return seen


def _listeners(root: int, port: int) -> list[psutil.Process]:
    """The worker processes: descendants of the master that hold the listening socket.

    A master's helpers (uvicorn's multiprocessing tracker) are not workers;
    when sockets cannot be read (permissions), all descendants count.
    """
    members = procs.tree(root)[1:]
    workers = []
    for process in members:
        try:
            listening = process.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return members
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in listening):
            workers.append(process)
    return workers or members


def _worker_pss(root: int, port: int) -> float | None:
    """Mean PSS of the workers in MiB, or None when the kernel does not say."""
    values = []
    for process in _listeners(root, port):
        try:
            values.append(process.memory_full_info().pss)
        except (psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            continue
    return statistics.mean(values) / MIB if values else None


def _replace_ms(root: int, port: int, workers: set[int]) -> float | None:
    """SIGKILL one worker; milliseconds until a new pid answers, None on timeout."""
    tree = {process.pid for process in procs.tree(root)}
    known = workers | tree
    ours = sorted(workers & tree - {root})  # never signal a pid that is not in our tree
    if not ours:
        return None
    os.kill(ours[0], signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < REPLACE_TIMEOUT:
        if set(procs.burst(port)) - known:
            return (time.monotonic() - killed) * 1000
        if _exited(root):  # hypercorn stops altogether when a worker dies
            return None
    return None


def _exited(pid: int) -> bool:
    """Whether the server's first process has exited (a zombie until the harness reaps it)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
