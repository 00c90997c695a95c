"""``prefork top --pidfile PATH``: a live view of a running master's workers.

Reads the scoreboard next to the pidfile (as ``prefork status`` does, nothing
is sent to the master) and redraws every ``--interval`` seconds: per worker
its requests per second since the last frame, open connections and
WebSockets, requests in flight, RSS, and the request it is serving now with
its age; on top the totals and the master's counters.  Plain ANSI (clear and
redraw), no curses.  ``q`` or Ctrl-C quits; ``--once`` prints one frame (the
rates measured over ``--interval``, at most 1 s) and exits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from prefork.process import read_pidfile
from prefork.scoreboard import Scoreboard
from prefork.status import _human, open_board, report

__all__ = ["frame", "main"]

_CLEAR = "\x1b[H\x1b[2J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def _rates(
    before: dict[int, tuple[int, float]], workers: list[dict[str, Any]], now: float
) -> dict[int, float | None]:
    """Requests per second of each worker (by pid) since ``before`` (None: new worker)."""
    rates: dict[int, float | None] = {}
    for w in workers:
        seen = before.get(w["pid"])
        if seen is None or now <= seen[1]:
            rates[w["pid"]] = None
        else:
            rates[w["pid"]] = max(0, w["requests"] - seen[0]) / (now - seen[1])
    return rates


def frame(state: dict[str, Any], rates: dict[int, float | None], width: int = 120) -> str:
    """One screen: a header and a line per worker, from ``status.report``."""
    master = state["master"]
    workers = state["workers"]
    known = [r for r in rates.values() if r is not None]
    total_rate = f"{sum(known):.1f}" if known else "-"
    ready = sum(1 for w in workers if w["state"] == "ready")
    exits = sum(master["worker_exits"].values())
    lines = [
        f"prefork top - master {master['pid']}, up {_duration(master['uptime_seconds'])}, "
        f"generation {master['generation']}, rss {_human(master['rss_bytes'])}",
        f"workers: {ready} ready / {len(workers)} running / {master['workers_desired']} wanted; "
        f"{sum(master['worker_starts'].values())} started, {exits} exited; "
        f"{master['reloads']} reload(s), {master['upgrades']} upgrade(s)",
        f"requests/s {total_rate}; connections {sum(w['connections'] for w in workers)}, "
        f"in flight {sum(w['in_flight'] for w in workers)}",
        "",
        f"{'worker':>6} {'pid':>7} {'gen':>3} {'state':<8} {'req/s':>8} {'requests':>9} "
        f"{'conns':>5} {'ws':>4} {'flight':>6} {'rss':>7} {'age':>7}  current",
    ]
    for w in workers:
        rate = rates.get(w["pid"])
        current = w["current"]
        if current:
            current = f"{current} ({w['current_seconds']:.1f}s)"
        line = (
            f"{w['worker']:>6} {w['pid']:>7} {w['generation']:>3} {w['state']:<8} "
            f"{'-' if rate is None else f'{rate:.1f}':>8} {w['requests']:>9} "
            f"{w['connections']:>5} {w['websockets']:>4} {w['in_flight']:>6} "
            f"{_human(w['rss_bytes']):>7} {_duration(w['age_seconds']):>7}  {current}"
        )
        lines.append(line[:width])
    lines.append("")
    lines.append("q or Ctrl-C: quit")
    return "\n".join(lines) + "\n"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


@contextlib.contextmanager
def _keys(stream: TextIO) -> Iterator[bool]:
    """cbreak mode on a terminal (single keys, no echo), restored after; yields
    whether keys can be read."""
    if not stream.isatty():
        yield False
        return
    import termios
    import tty

    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_quit(interval: float, keys: bool) -> bool:
    """Sleep ``interval`` seconds; True if ``q`` was pressed meanwhile."""
    if not keys:
        time.sleep(interval)
        return False
    deadline = time.monotonic() + interval
    while (remaining := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([sys.stdin], [], [], remaining)
        if ready:
            key = os.read(sys.stdin.fileno(), 32)
            if not key or b"q" in key.lower():
                return True
    return False


def _sample(master_pid: int, board: Scoreboard) -> tuple[dict[str, Any], float]:
    return report(master_pid, board), time.monotonic()


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="prefork top", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pidfile",
        default=os.environ.get("PREFORK_PIDFILE") or None,
        required=not os.environ.get("PREFORK_PIDFILE"),
        help="the master's --pidfile (default: $PREFORK_PIDFILE, as the master reads it)",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames [1.0]")
    parser.add_argument("--once", action="store_true", help="print one frame and exit")
    args = parser.parse_args(list(argv))
    if not args.interval > 0:
        parser.error("--interval must be > 0")
    opened = open_board("top", args.pidfile)
    if opened is None:
        return 1
    master_pid, board = opened
    out = sys.stdout
    try:
        state, at = _sample(master_pid, board)
        seen = {w["pid"]: (w["requests"], at) for w in state["workers"]}
        if args.once:
            time.sleep(min(args.interval, 1.0))
            state, at = _sample(master_pid, board)
            out.write(frame(state, _rates(seen, state["workers"], at)))
            return 0
        with _keys(sys.stdin) as keys:
            out.write(_HIDE_CURSOR)
            rates: dict[int, float | None] = {}
            while True:
                width = os.get_terminal_size(out.fileno()).columns if out.isatty() else 120
                out.write(_CLEAR + frame(state, rates, width))
                out.flush()
                if _wait_for_quit(args.interval, keys):
                    return 0
                if read_pidfile(args.pidfile) != master_pid:  # stopped, or upgraded (USR2)
                    reopened = open_board("top", args.pidfile)
                    if reopened is None:
                        return 0
                    board.close()
                    master_pid, board = reopened
                state, now = _sample(master_pid, board)
                rates = _rates(seen, state["workers"], now)
                seen = {w["pid"]: (w["requests"], now) for w in state["workers"]}
    except KeyboardInterrupt:
        return 0
    finally:
        if not args.once:
            out.write(_SHOW_CURSOR)
            out.flush()
        board.close()
