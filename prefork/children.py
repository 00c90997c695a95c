"""The master's bookkeeping for its children: one record per worker, back-off per position.

The records hold what the master knows of each child and decide deadlines
and back-off; the only system calls are the signals of a deadline
(``Worker.check_deadlines``: SIGABRT, then SIGKILL, through
``prefork.process``) and the RSS reads of ``MemoryWatch`` (psutil).
"""

from __future__ import annotations

import logging
import signal
from collections import deque
from collections.abc import Sequence
from typing import Any

from prefork.process import kill_quietly, process_is_stopped
from prefork.scoreboard import Slot

__all__ = ["Backoff", "MemoryWatch", "Worker"]

log = logging.getLogger("prefork.master")

#: A worker that stayed ready this long resets the back-off of its position.
STABLE_AFTER = 10.0
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 30.0
#: This many exits of one position within FLAP_WINDOW seconds is "flapping".
FLAP_EXITS = 5
FLAP_WINDOW = 60.0
#: Seconds between SIGABRT (traceback dump) and SIGKILL of a hung worker.
ABORT_GRACE = 1.0


#: Worker.retiring -> the exit reason counted in the metrics.
_RETIRE_REASONS = {
    "recycle": "recycle",
    "reload": "reload",
    "scale down": "scale_down",
    "stop": "stop",
    "self": "drained",
}


class Worker:
    """One forked worker as the master sees it."""

    __slots__ = (
        "pid",
        "index",
        "slot",
        "generation",
        "forked_at",
        "purpose",
        "replaces",
        "ready_at",
        "retiring",
        "kill_at",
        "aborted_at",
        "killed",
        "usr1_pending",
    )

    def __init__(
        self,
        pid: int,
        index: int,
        slot: Slot,
        generation: int,
        forked_at: float,
        purpose: str,
        replaces: Worker | None = None,
    ) -> None:
        self.pid = pid
        self.index = index
        self.slot = slot
        self.generation = generation
        self.forked_at = forked_at
        #: why it was forked: "start", "restart", "reload", "recycle"
        self.purpose = purpose
        #: the old worker this one takes over from once it is ready (reload, recycle)
        self.replaces = replaces
        self.ready_at: float | None = None
        #: why the master asked it to stop ("stop", "reload", "recycle", "scale down",
        #: "self" when it started draining on its own); "" while it is wanted
        self.retiring = ""
        #: SIGKILL deadline of a retiring worker
        self.kill_at: float | None = None
        #: when SIGABRT was sent to it as hung
        self.aborted_at: float | None = None
        self.killed = False
        #: USR1 arrived while it was booting: forward it once it is ready
        self.usr1_pending = False

    def __str__(self) -> str:
        return f"worker {self.index} (pid {self.pid}, gen {self.generation})"

    def exit_reason(self) -> str:
        """Why it exited, for the metrics (one of ``scoreboard.EXIT_REASONS``)."""
        if self.retiring:
            return _RETIRE_REASONS.get(self.retiring, "stop")
        if self.aborted_at is not None or self.killed:
            return "timeout"  # killed as hung (no heartbeat, or not ready in time)
        return "boot_failure" if self.ready_at is None else "crash"

    def check_deadlines(self, now: float, timeout: float, boot_timeout: float) -> None:
        """Kill this worker if it is hung, or past its graceful deadline.

        Hung = not ready ``boot_timeout`` after fork, or no heartbeat for
        ``timeout`` once ready (``timeout`` 0: never, as gunicorn's 0). The master logs what the scoreboard says it
        was doing, sends SIGABRT (the worker's faulthandler dumps every
        thread's traceback to stderr), then SIGKILL ABORT_GRACE later. A
        stopped process (SIGSTOP, a debugger) cannot handle SIGABRT: it gets
        SIGKILL at once.
        """
        if self.killed:
            return
        if self.aborted_at is not None:
            if now - self.aborted_at >= ABORT_GRACE:
                log.warning("%s still alive after SIGABRT: SIGKILL", self)
                self._kill()
            return
        if self.retiring and self.kill_at is not None and now >= self.kill_at:
            log.warning("%s did not finish within graceful_timeout: SIGKILL", self)
            self._kill()
            return
        if self.ready_at is None:
            if now - self.forked_at <= boot_timeout:
                return
            why = f"not ready {now - self.forked_at:.1f} s after fork (boot_timeout {boot_timeout:g} s)"
        else:
            age = now - self.slot.last_heartbeat
            if timeout == 0 or age <= timeout:
                return
            why = f"no heartbeat for {age:.1f} s (timeout {timeout:g} s)"
        stopped = process_is_stopped(self.pid)
        log.error(
            "%s (slot %d) is hung: %s; %s; %s",
            self,
            self.slot.number,
            why,
            self.slot.snapshot().describe(now),
            "process is stopped: SIGKILL"
            if stopped
            else "SIGABRT (traceback on its stderr), then SIGKILL",
        )
        if stopped:
            self._kill()
        else:
            self.aborted_at = now
            kill_quietly(self.pid, signal.SIGABRT)

    def _kill(self) -> None:
        self.killed = True
        kill_quietly(self.pid, signal.SIGKILL)


class Backoff:
    """Restart pacing for one worker position (task id).

    The first unexpected exit restarts at once; each further exit of a
    worker that did not stay up STABLE_AFTER seconds doubles the delay, from
    BACKOFF_FIRST up to BACKOFF_MAX. FLAP_EXITS exits within FLAP_WINDOW are
    logged once per window as flapping.
    """

    __slots__ = ("fails", "next_at", "died_at", "exits", "flap_logged_at")

    def __init__(self) -> None:
        self.fails = 0
        self.next_at = 0.0
        #: when the last worker of this position died (to report the time to replace it)
        self.died_at: float | None = None
        self.exits: deque[float] = deque(maxlen=FLAP_EXITS)
        self.flap_logged_at = -FLAP_WINDOW

    def forgive(self) -> None:
        """Forget the delay earned so far (the code that failed was replaced by
        a reload): the next start is at once, and further failures pace it
        from the beginning. ``died_at`` and the exits stay: the position
        still has a dead worker to replace, and flapping is about the position."""
        self.fails = 0
        self.next_at = 0.0

    def failed(self, now: float, ready_at: float | None, index: int) -> float:
        """Record an unexpected exit; return the delay before the next start."""
        if ready_at is not None and now - ready_at >= STABLE_AFTER:
            self.fails = 0
        self.fails += 1
        delay = 0.0 if self.fails <= 1 else min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (self.fails - 2))
        self.next_at = now + delay
        self.exits.append(now)
        if (
            len(self.exits) == FLAP_EXITS
            and now - self.exits[0] <= FLAP_WINDOW
            and now - self.flap_logged_at >= FLAP_WINDOW
        ):
            self.flap_logged_at = now
            log.warning(
                "worker %d is flapping: %d exits in %.0f s; restarting with back-off (next in %.1f s)",
                index,
                FLAP_EXITS,
                now - self.exits[0],
                delay,
            )
        elif delay > 0:
            log.info("worker %d: restart in %.1f s (back-off)", index, delay)
        return delay


class MemoryWatch:
    """Reads workers' RSS with psutil (imported on first use), at most once per INTERVAL."""

    INTERVAL = 1.0

    def __init__(self) -> None:
        self._psutil: Any = None
        self._last = -self.INTERVAL
        self.disabled = False

    def largest_over(self, limit: int, workers: Sequence[Worker], now: float) -> Worker | None:
        """The worker with the largest RSS above ``limit`` bytes, or None."""
        if self.disabled or now - self._last < self.INTERVAL:
            return None
        self._last = now
        if self._psutil is None:
            try:
                import psutil
            except ImportError:
                log.error("max_memory needs psutil (pip install psutil): memory limit disabled")
                self.disabled = True
                return None
            self._psutil = psutil
        best: tuple[int, Worker] | None = None
        for w in workers:
            try:
                rss = int(self._psutil.Process(w.pid).memory_info().rss)
            except Exception:  # gone, or not readable: not a reason to recycle
                continue
            if rss > limit and (best is None or rss > best[0]):
                best = (rss, w)
        if best is None:
            return None
        log.info(
            "%s uses %.1f MiB > max_memory %.1f MiB: recycling",
            best[1],
            best[0] / 2**20,
            limit / 2**20,
        )
        return best[1]
