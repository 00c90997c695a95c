"""``prefork status --pidfile PATH``: the workers of a running master.

The master keeps its scoreboard in a file next to the pidfile
(``PATH.scoreboard``); this command maps it read-only and prints one line per
worker: pid, age, state, requests served, open connections, RSS, and what it
is serving now.  ``--json`` prints the same, and the master's counters, as
one JSON object (see ``report``).  Nothing is sent to the master.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from prefork.process import pid_is_alive, read_pidfile
from prefork.scoreboard import Scoreboard, SlotState

__all__ = ["main", "open_board", "report"]


def _rss_bytes(pid: int) -> int | None:
    """Resident set size from /proc (no psutil needed)."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _human(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.1f}{unit}" if unit != "B" else f"{int(value)}B"
        value /= 1024
    return f"{value:.1f}G"


def open_board(command: str, pidfile: str) -> tuple[int, Scoreboard] | None:
    """The running master's pid and its scoreboard, or None (the reason printed)."""
    master_pid = read_pidfile(pidfile)
    if master_pid is None or not pid_is_alive(master_pid):
        print(f"prefork {command}: no running master (pidfile {pidfile!r})")
        return None
    try:
        return master_pid, Scoreboard.attach(pidfile + ".scoreboard")
    except (OSError, ValueError) as exc:
        print(f"prefork {command}: cannot read the scoreboard: {exc}")
        return None


def report(master_pid: int, board: Scoreboard) -> dict[str, Any]:
    """What ``prefork status --json`` prints: the master and one object per worker.

    Ages in seconds; ``rss_bytes`` null where /proc cannot tell; ``current``
    is the request a worker is serving now ("" if none), ``current_seconds``
    how long it has been at it (null if none).
    """
    now = time.monotonic()
    master = board.master.counters()
    workers = []
    for slot in board.snapshot():
        if slot.state == SlotState.EMPTY or not slot.pid:
            continue
        workers.append(
            {
                "worker": slot.index,
                "pid": slot.pid,
                "slot": slot.number,
                "generation": slot.generation,
                "state": slot.state.name.lower(),
                "age_seconds": round(now - slot.boot_time, 3),
                "heartbeat_age_seconds": round(max(0.0, now - slot.heartbeat), 3),
                "requests": slot.requests,
                "connections": slot.connections,
                "websockets": slot.websockets,
                "in_flight": slot.in_flight,
                "rss_bytes": _rss_bytes(slot.pid),
                "current": slot.current,
                "current_seconds": round(now - slot.request_started, 3) if slot.current else None,
                "recycle_requested": slot.recycle_requested,
            }
        )
    return {
        "master": {
            "pid": master_pid,
            "rss_bytes": _rss_bytes(master_pid),
            "uptime_seconds": round(time.time() - master.started, 3),
            "workers_desired": master.workers_desired,
            "generation": master.generation,
            "worker_starts": master.starts,
            "worker_exits": master.exits,
            "reloads": master.reloads,
            "upgrades": master.upgrades,
            "scoreboard_version": board.version,
        },
        "workers": sorted(workers, key=lambda w: (w["worker"], w["age_seconds"])),
    }


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="prefork status", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pidfile",
        default=os.environ.get("PREFORK_PIDFILE") or None,
        required=not os.environ.get("PREFORK_PIDFILE"),
        help="the master's --pidfile (default: $PREFORK_PIDFILE, as the master reads it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(list(argv))
    opened = open_board("status", args.pidfile)
    if opened is None:
        return 1
    master_pid, board = opened
    if args.json:
        try:
            print(json.dumps(report(master_pid, board), indent=2))
        finally:
            board.close()
        return 0
    now = time.monotonic()
    print(f"master pid {master_pid}")
    print(
        f"{'slot':>4} {'pid':>7} {'gen':>3} {'age':>8} {'state':<9} {'requests':>9} {'conns':>5} {'ws':>5} {'rss':>7}  current"
    )
    for slot in board.snapshot():
        if slot.state == SlotState.EMPTY or not slot.pid:
            continue
        current = slot.current
        if current:
            current = f"{current} ({now - slot.request_started:.1f}s)"
        print(
            f"{slot.index:>4} {slot.pid:>7} {slot.generation:>3} {now - slot.boot_time:>7.0f}s "
            f"{slot.state.name.lower():<9} {slot.requests:>9} {slot.connections:>5} {slot.websockets:>5} "
            f"{_human(_rss_bytes(slot.pid)):>7}  {current}"
        )
    return 0
