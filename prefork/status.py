"""``prefork status --pidfile PATH``: the workers of a running master.

The master keeps its scoreboard in a file next to the pidfile
(``PATH.scoreboard``); this command maps it read-only and prints one line per
worker: pid, age, state, requests served, open connections, RSS, and what it
is serving now.  Nothing is sent to the master.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

from prefork.process import pid_is_alive, read_pidfile
from prefork.scoreboard import Scoreboard, SlotState

__all__ = ["main"]


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


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="prefork status", description=__doc__.splitlines()[0])
    parser.add_argument("--pidfile", required=True, help="the master's --pidfile")
    args = parser.parse_args(list(argv))
    master_pid = read_pidfile(args.pidfile)
    if master_pid is None or not pid_is_alive(master_pid):
        print(f"prefork status: no running master (pidfile {args.pidfile!r})")
        return 1
    try:
        board = Scoreboard.attach(args.pidfile + ".scoreboard")
    except (OSError, ValueError) as exc:
        print(f"prefork status: cannot read the scoreboard: {exc}")
        return 1
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
