"""What the scoreboard counts for the metrics, and the master's part of it.

The vocabulary of the per-slot request counters (method classes, status
classes, duration buckets, rejected statuses) and of the master's counters
(why workers start and exit); :class:`RequestCounts`, the request counters of
a slot or the retired totals, as read from shared memory; and
:class:`MasterArea`, the master's counters in the scoreboard: bytes 32..63 of
its header and MASTER_AREA_SIZE bytes after it, before the slots.  The master
is their one writer; workers and ``prefork status`` read them.

Master area: worker starts and exits by reason, reloads, upgrades (u64 each),
then the retired totals (TOTALS and TABLES, summed over every reaped worker).
Header bytes 32..63: a fold sequence number (odd while the master folds a
dead worker's counts into the retired totals: readers retry, so totals never
seem to drop or jump), the master's start time (time.time()), the workers it
wants, its generation.  Standard library only.
"""

from __future__ import annotations

import mmap
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

__all__ = [
    "DURATION_BUCKETS",
    "EXIT_REASONS",
    "METHODS",
    "REJECTED_STATUSES",
    "START_REASONS",
    "STATUS_CLASSES",
    "MasterArea",
    "MasterCounters",
    "RequestCounts",
    "put_shared",
]


def put_shared(packer: struct.Struct, mm: mmap.mmap, offset: int, *values: object) -> None:
    """Write ``values`` into shared memory as one copy of finished bytes.

    ``struct.pack_into`` zero-fills its target before it packs into it, so
    a process reading at that moment saw 0: a counter that went to 0 and
    back (Prometheus takes it for a reset), a heartbeat of 0 (a worker that
    looks hung).  A slice assignment copies the packed bytes at once: a
    reader sees each value old or new, never zero.
    """
    mm[offset : offset + packer.size] = packer.pack(*values)


#: Request method classes and status classes of the per-slot request counters.
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other")
METHOD_INDEX = {name: i for i, name in enumerate(METHODS[:-1])}
#: index = status // 100; "other": no response status (0) or none of 1xx-5xx.
STATUS_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
#: Upper bounds (seconds) of the request duration histogram; one more cell counts the rest.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Statuses of requests refused before the application saw them (0: any other).
REJECTED_STATUSES = (400, 408, 413, 414, 431, 501, 505, 0)
REJECTED_INDEX = {status: i for i, status in enumerate(REJECTED_STATUSES[:-1])}
#: Why the master forked a worker, and why a worker exited (master area counters).
START_REASONS = ("start", "restart", "reload", "recycle")
EXIT_REASONS = (
    "crash",
    "timeout",
    "boot_failure",
    "recycle",
    "reload",
    "scale_down",
    "stop",
    "drained",
)

N_CELLS = len(METHODS) * len(STATUS_CLASSES)
assert (len(METHODS), len(STATUS_CLASSES)) == (8, 6)  # written as literals in Slot.request_done
N_BUCKETS = len(DURATION_BUCKETS) + 1
N_TABLES = N_CELLS + N_BUCKETS + len(REJECTED_STATUSES)

#: body_in, body_out, duration_sum, requests (u64, u64, f64, u64)
TOTALS = struct.Struct("=QQdQ")
#: requests by method x status class, duration cells, rejected (u64 each)
TABLES = struct.Struct(f"={N_TABLES}Q")

_U64 = struct.Struct("=Q")
_F64 = struct.Struct("=d")
_OFF_FOLD_SEQ = 32
_INFO = struct.Struct("=dII")  # started, workers desired, generation
_OFF_INFO = 40
#: where the master area starts (the scoreboard's header size)
AREA_AT = 64
MASTER_AREA_SIZE = 704
_OFF_STARTS = AREA_AT
_OFF_EXITS = _OFF_STARTS + 8 * len(START_REASONS)
_OFF_RELOADS = _OFF_EXITS + 8 * len(EXIT_REASONS)
_OFF_UPGRADES = _OFF_RELOADS + 8
_OFF_RETIRED = _OFF_UPGRADES + 8
_OFF_RETIRED_TABLES = _OFF_RETIRED + TOTALS.size
_MASTER_COUNTERS = struct.Struct(f"={len(START_REASONS) + len(EXIT_REASONS) + 2}Q")
assert _OFF_RETIRED_TABLES + TABLES.size <= AREA_AT + MASTER_AREA_SIZE


@dataclass
class RequestCounts:
    """The request counters of a slot, or the retired totals of reaped workers.

    ``cells[m * len(STATUS_CLASSES) + s]``: requests of method class ``m``
    (``METHODS``) answered with status class ``s`` (``STATUS_CLASSES``);
    ``buckets``: requests per duration cell (``DURATION_BUCKETS``, then the
    rest), not cumulative; ``rejected``: per ``REJECTED_STATUSES``.
    """

    body_in: int = 0
    body_out: int = 0
    duration_sum: float = 0.0
    requests: int = 0
    cells: list[int] = field(default_factory=lambda: [0] * N_CELLS)
    buckets: list[int] = field(default_factory=lambda: [0] * N_BUCKETS)
    rejected: list[int] = field(default_factory=lambda: [0] * len(REJECTED_STATUSES))

    @classmethod
    def read(cls, mm: mmap.mmap, totals_at: int, tables_at: int) -> RequestCounts:
        body_in, body_out, duration, requests = TOTALS.unpack_from(mm, totals_at)
        tables = TABLES.unpack_from(mm, tables_at)
        return cls(
            body_in,
            body_out,
            duration,
            requests,
            list(tables[:N_CELLS]),
            list(tables[N_CELLS : N_CELLS + N_BUCKETS]),
            list(tables[N_CELLS + N_BUCKETS :]),
        )

    def write(self, mm: mmap.mmap, totals_at: int, tables_at: int) -> None:
        put_shared(
            TOTALS, mm, totals_at, self.body_in, self.body_out, self.duration_sum, self.requests
        )
        put_shared(TABLES, mm, tables_at, *self.cells, *self.buckets, *self.rejected)

    def add(self, other: RequestCounts) -> None:
        self.body_in += other.body_in
        self.body_out += other.body_out
        self.duration_sum += other.duration_sum
        self.requests += other.requests
        for mine, theirs in (
            (self.cells, other.cells),
            (self.buckets, other.buckets),
            (self.rejected, other.rejected),
        ):
            for i, value in enumerate(theirs):
                mine[i] += value


@dataclass
class MasterCounters:
    """What the master counts in the scoreboard: worker starts and exits by
    reason (``START_REASONS``, ``EXIT_REASONS``), reloads (HUP), upgrades (USR2)."""

    starts: dict[str, int]
    exits: dict[str, int]
    reloads: int
    upgrades: int
    #: time.time() the master started, the workers it wants, its generation
    started: float
    workers_desired: int
    generation: int


_T = TypeVar("_T")


class MasterArea:
    """The master's counters in a scoreboard mapping (see the module docstring)."""

    def __init__(self, mm: mmap.mmap) -> None:
        self._mm = mm

    def started_now(self) -> None:
        put_shared(_F64, self._mm, _OFF_INFO, time.time())

    def count_start(self, reason: str) -> None:
        """A worker was forked (``START_REASONS``)."""
        self._bump(_OFF_STARTS + 8 * START_REASONS.index(reason))

    def count_exit(self, reason: str) -> None:
        """A worker was reaped (``EXIT_REASONS``)."""
        self._bump(_OFF_EXITS + 8 * EXIT_REASONS.index(reason))

    def count_reload(self) -> None:
        self._bump(_OFF_RELOADS)

    def count_upgrade(self) -> None:
        self._bump(_OFF_UPGRADES)

    def _bump(self, offset: int) -> None:
        put_shared(_U64, self._mm, offset, _U64.unpack_from(self._mm, offset)[0] + 1)

    def set_info(self, workers_desired: int, generation: int) -> None:
        started = _F64.unpack_from(self._mm, _OFF_INFO)[0]
        put_shared(_INFO, self._mm, _OFF_INFO, started, workers_desired, generation)

    def counters(self) -> MasterCounters:
        values = _MASTER_COUNTERS.unpack_from(self._mm, _OFF_STARTS)
        n = len(START_REASONS)
        started, desired, generation = _INFO.unpack_from(self._mm, _OFF_INFO)
        return MasterCounters(
            starts=dict(zip(START_REASONS, values[:n], strict=True)),
            exits=dict(zip(EXIT_REASONS, values[n : n + len(EXIT_REASONS)], strict=True)),
            reloads=values[-2],
            upgrades=values[-1],
            started=started,
            workers_desired=desired,
            generation=generation,
        )

    def retired(self) -> RequestCounts:
        """The request counters of every reaped worker, summed."""
        return RequestCounts.read(self._mm, _OFF_RETIRED, _OFF_RETIRED_TABLES)

    def set_retired(self, counts: RequestCounts) -> None:
        counts.write(self._mm, _OFF_RETIRED, _OFF_RETIRED_TABLES)

    def fold(self, counts: RequestCounts, clear: Callable[[], None]) -> None:
        """Add a reaped worker's ``counts`` to the retired totals, then ``clear``
        its slot, with the fold sequence odd meanwhile."""
        seq = _U64.unpack_from(self._mm, _OFF_FOLD_SEQ)[0]
        put_shared(_U64, self._mm, _OFF_FOLD_SEQ, seq + 1)
        try:
            total = self.retired()
            total.add(counts)
            self.set_retired(total)
            clear()
        finally:
            put_shared(_U64, self._mm, _OFF_FOLD_SEQ, seq + 2)

    def consistent(self, read: Callable[[], _T]) -> tuple[_T, RequestCounts]:
        """``read()`` and the retired totals, taken while no fold was under way
        (a few tries; the last one is taken as is)."""
        for _ in range(20):
            seq = _U64.unpack_from(self._mm, _OFF_FOLD_SEQ)[0]
            if seq & 1:
                time.sleep(0.0005)
                continue
            found, retired = read(), self.retired()
            if _U64.unpack_from(self._mm, _OFF_FOLD_SEQ)[0] == seq:
                return found, retired
        return read(), self.retired()

    def copy_counters_from(self, old: MasterArea) -> None:
        """Worker starts, exits, reloads and upgrades, as ``old`` has them."""
        self._mm[_OFF_STARTS:_OFF_RETIRED] = old._mm[_OFF_STARTS:_OFF_RETIRED]
