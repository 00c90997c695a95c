"""The scoreboard: one fixed-size slot of shared memory per worker.

The master creates the scoreboard (an anonymous shared ``mmap``, or a file the
``prefork status`` command can read) before it forks anything, so every worker
shares the same pages. A worker writes only its own slot; the master only
reads slots (and resets a slot before it hands it to a new worker). There is
no lock: each field has one writer, fields are naturally aligned so the kernel
and CPU write them whole, and a torn read of the request summary costs at most
a garbled log line.

Why shared memory rather than a pipe or a file: the heartbeat must be written
on every event-loop tick and read by the master on every check, without a
system call, without touching a file system (gunicorn#1863: heartbeats on a
slow ``/tmp`` caused false kills), and it must survive the worker being
stuck: the master reads what the worker last wrote.

Times are ``time.monotonic()`` values: CLOCK_MONOTONIC is system-wide on
Linux, so the master can compare a worker's heartbeat with its own clock.

With metrics on, a worker also counts its requests in its slot (by method
and status class, durations, body bytes, in flight: ``Slot.request_begun``
and ``request_done``); the master keeps its own counters between the header
and the slots, and folds a reaped worker's counts into retired totals there
(``prefork.counters``).  The header carries the layout VERSION.
"""

from __future__ import annotations

import contextlib
import enum
import mmap
import os
import socket
import struct
import tempfile
import time
from bisect import bisect_left
from dataclasses import dataclass, field

from prefork.counters import (
    AREA_AT,
    DURATION_BUCKETS,
    MASTER_AREA_SIZE,
    METHOD_INDEX,
    N_BUCKETS,
    N_CELLS,
    REJECTED_INDEX,
    REJECTED_STATUSES,
    TABLES,
    MasterArea,
    RequestCounts,
    put_shared,
)
from prefork.settings import DEFAULTS, Config

__all__ = [
    "SLOT_SIZE",
    "VERSION",
    "Scoreboard",
    "ScoreboardVersionError",
    "Slot",
    "SlotSnapshot",
    "SlotState",
    "WorkerContext",
    "task_id",
]

#: Bytes of the request summary kept per slot ("GET /path ...").
SUMMARY_SIZE = 100


class SlotState(enum.IntEnum):
    """Where a worker is in its life, as the worker itself reports it."""

    EMPTY = 0  # no worker in this slot
    BOOTING = 1  # forked, not yet accepting
    READY = 2  # accepting connections
    DRAINING = 3  # stopped accepting, finishing what it has


#: Layout version, in the header.  1: the first layout (160-byte slots).  2:
#: request metrics per slot and a master area (retired totals, worker starts
#: and exits, reloads, upgrades) between the header and the slots.  A reader
#: of another version refuses the file (``ScoreboardVersionError``); a master
#: started by USR2 carries the old master's totals over only from its own version.
VERSION = 2

# Slot layout (native byte order, fixed offsets, every field naturally aligned):
#   0 pid i | 4 generation I | 8 index i | 12 connections I
#  16 state B | 17 flags B | 18 restart B | 19 padding | 20 websockets I
#  24 boot_time d | 32 heartbeat d
#  40 body_in Q | 48 body_out Q | 56 duration_sum d | 64 requests Q
#  72 in_flight I | 76 padding | 80 request_started d | 88 summary_len H
#  90 summary 100s | 190..191 padding
# 192 the tables, u64 each: requests by method x status class (48), duration
#     buckets (12, not cumulative), rejected by status (8); 736 = SLOT_SIZE.
# Worker-written fields have one writer (the worker); the master resets and
# clears a slot only while no worker uses it.
_WHOLE = struct.Struct(f"=iIiIBBBxIddQQdQI4xdH{SUMMARY_SIZE}s2x")
_OFF_TABLES = _WHOLE.size
SLOT_SIZE = _OFF_TABLES + TABLES.size
assert (_OFF_TABLES, SLOT_SIZE) == (192, 736)
_ZERO_SLOT = bytes(SLOT_SIZE)
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")
_U8 = struct.Struct("=B")
_F64 = struct.Struct("=d")
_U64 = struct.Struct("=Q")
_CURRENT = struct.Struct(f"=dH{SUMMARY_SIZE}s")
# requests, in_flight, then request_started and summary_len: a finished request
# is counted and cleared in one write.
_DONE = struct.Struct("=QI4xdH")
# With metrics on: in_flight and the current request in one write as a request
# starts; the totals, in_flight and the cleared current request as it ends.
_BEGUN = struct.Struct(f"=I4xdH{SUMMARY_SIZE}s")
_METERED = struct.Struct("=QQdQI4xdH")  # starts with TOTALS
# (their sizes, for the per-request writes that inline put_shared)
_BEGUN_SIZE, _METERED_SIZE = _BEGUN.size, _METERED.size

_OFF_PID = 0
_OFF_CONNECTIONS = 12
_OFF_STATE = 16
_OFF_FLAGS = 17
_OFF_RESTART = 18
_OFF_WEBSOCKETS = 20
_OFF_HEARTBEAT = 32
_OFF_TOTALS = 40
_OFF_REQUESTS = 64
_OFF_IN_FLIGHT = 72
_OFF_CURRENT = 80
assert _OFF_CURRENT == _OFF_IN_FLIGHT + 8 and _OFF_IN_FLIGHT == _OFF_REQUESTS + 8
_OFF_BUCKETS = _OFF_TABLES + 8 * N_CELLS
_OFF_REJECTED = _OFF_BUCKETS + 8 * N_BUCKETS

#: flags bit: the worker reached max_requests and asks the master to recycle it.
FLAG_RECYCLE = 0x01
#: flags bit: the worker has reported ready at least once (it may be draining now).
FLAG_BOOTED = 0x02

# Header: magic, version, capacity, master pid, then one-byte flags.
_HEADER = struct.Struct("=8sIIi")
HEADER_SIZE = 64
_MAGIC = b"PREFORK1"
_OFF_EVER_READY = 24  # set by the master once any worker has been ready
_OFF_BOOT_ERROR_SHOWN = 25  # set by the first worker that reports a boot error
# Bytes 32..63 of the header and the master area after it (MASTER_AREA_SIZE):
# the master's counters, see prefork.counters.MasterArea.  Slots follow.
assert HEADER_SIZE == AREA_AT
_OFF_SLOTS = HEADER_SIZE + MASTER_AREA_SIZE


class ScoreboardVersionError(ValueError):
    """The scoreboard file has another layout version than this prefork reads."""


_monotonic = time.monotonic


@dataclass(frozen=True)
class SlotSnapshot:
    """A copy of one slot, as read by the master (or ``prefork status``)."""

    number: int
    pid: int
    generation: int
    index: int
    state: SlotState
    recycle_requested: bool
    boot_time: float
    heartbeat: float
    requests: int
    connections: int
    #: open WebSocket connections (counted in ``connections`` too)
    websockets: int
    request_started: float
    current: str
    #: requests being answered now (counted only with metrics on)
    in_flight: int = 0
    #: request and response body bytes, request durations and requests by
    #: method and status class (metrics on; ``requests`` is always counted)
    counts: RequestCounts | None = None

    def describe(self, now: float | None = None) -> str:
        """One line for logs: what this worker is doing, for a hang or a status report."""
        now = _monotonic() if now is None else now
        if self.current:
            doing = f"serving {self.current!r} for {now - self.request_started:.1f} s"
        else:
            doing = "no request in progress"
        return (
            f"{doing}, {self.connections} open connection(s), "
            f"{self.requests} request(s) served, state {self.state.name.lower()}"
        )


class Slot:
    """One worker's slot. The worker-side methods are cheap: one write each
    (``put_shared``, not ``pack_into``, which zero-fills first, wherever a
    reader would take a zero for a fact: counters, the heartbeat)."""

    __slots__ = (
        "_mm",
        "_off",
        "number",
        "_requests",
        "_off_current",
        "_off_requests",
        "_off_in_flight",
        "_off_totals",
        "_off_cells",
        "_off_buckets",
        "_off_rejected",
        "_in_flight",
        "_body_in",
        "_body_out",
        "_duration",
        "_cells",
        "_buckets",
        "_rejected",
    )

    def __init__(self, mm: mmap.mmap, number: int, base: int = _OFF_SLOTS) -> None:
        self._mm = mm
        self.number = number
        self._off = base + number * SLOT_SIZE
        # The offsets written on every request, computed once.
        self._off_current = self._off + _OFF_CURRENT
        self._off_requests = self._off + _OFF_REQUESTS
        self._off_in_flight = self._off + _OFF_IN_FLIGHT
        self._off_totals = self._off + _OFF_TOTALS
        self._off_cells = self._off + _OFF_TABLES
        self._off_buckets = self._off + _OFF_BUCKETS
        self._off_rejected = self._off + _OFF_REJECTED
        self._zero_counts()

    def _zero_counts(self) -> None:
        # The worker's own copies of what it writes (one writer: no read back).
        self._requests = self._in_flight = self._body_in = self._body_out = 0
        self._duration = 0.0
        self._cells = [0] * N_CELLS
        self._buckets = [0] * N_BUCKETS
        self._rejected = [0] * len(REJECTED_STATUSES)

    # -- worker side ------------------------------------------------------
    def heartbeat(self) -> None:
        """Record that the worker's event loop is alive (call it from the loop)."""
        put_shared(_F64, self._mm, self._off + _OFF_HEARTBEAT, _monotonic())

    def set_ready(self) -> None:
        """The worker accepts connections: the master may now count on it."""
        self.heartbeat()
        flags = self._mm[self._off + _OFF_FLAGS]
        put_shared(_U8, self._mm, self._off + _OFF_FLAGS, flags | FLAG_BOOTED)
        put_shared(_U8, self._mm, self._off + _OFF_STATE, SlotState.READY)

    def set_draining(self) -> None:
        """The worker stopped accepting and is finishing its connections."""
        put_shared(_U8, self._mm, self._off + _OFF_STATE, SlotState.DRAINING)

    def request_recycle(self) -> None:
        """Ask the master to replace this worker (max_requests reached)."""
        flags = self._mm[self._off + _OFF_FLAGS]
        put_shared(_U8, self._mm, self._off + _OFF_FLAGS, flags | FLAG_RECYCLE)

    def request_started(self, summary: str) -> None:
        """Record the request now being served (e.g. ``"GET /path"``), for hang reports.

        Written before the application runs: a worker whose loop then blocks
        cannot write anything else, and this is what the master reports.
        """
        data = summary.encode("utf-8", "replace")[:SUMMARY_SIZE]
        # (pack_into, which zero-fills first: a reader may see no current
        # request for a moment, which only `prefork status` shows; the
        # counters that metrics read use whole copies, see request_done)
        _CURRENT.pack_into(self._mm, self._off_current, _monotonic(), len(data), data)

    def request_finished(self) -> None:
        """Count one served request and clear the current one (one write)."""
        self._requests += 1
        # (pack_into, as above: without metrics the count is read by
        # `prefork status` alone; a whole copy costs ~0.2 µs a request more)
        _DONE.pack_into(self._mm, self._off_requests, self._requests, 0, 0.0, 0)

    # With metrics on, these two replace request_started/request_finished:
    # a few writes per request, no read of shared memory.
    def request_begun(self, summary: str) -> None:
        """``request_started``, and one more request in flight (one write)."""
        data = summary.encode("utf-8", "replace")[:SUMMARY_SIZE]
        self._in_flight += 1
        at = self._off_in_flight
        self._mm[at : at + _BEGUN_SIZE] = _BEGUN.pack(
            self._in_flight, _monotonic(), len(data), data
        )

    def request_done(
        self, method: str, status: int, received: int, sent: int, seconds: float
    ) -> None:
        """Count a finished request: by method and status class, its body bytes
        in and out and its duration (three writes)."""
        requests = self._requests = self._requests + 1
        in_flight = self._in_flight - 1
        if in_flight < 0:
            in_flight = 0
        self._in_flight = in_flight
        body_in = self._body_in = self._body_in + received
        body_out = self._body_out = self._body_out + sent
        if seconds < 0.0:
            seconds = 0.0  # (the wall clock stepped back)
        duration = self._duration = self._duration + seconds
        mm = self._mm
        at = self._off_totals
        mm[at : at + _METERED_SIZE] = _METERED.pack(
            body_in, body_out, duration, requests, in_flight, 0.0, 0
        )
        cell = METHOD_INDEX.get(method, 7) * 6 + (status // 100 if status < 600 else 0)
        cells = self._cells
        value = cells[cell] = cells[cell] + 1
        at = self._off_cells + 8 * cell
        mm[at : at + 8] = _U64.pack(value)
        # (most requests take under 5 ms: no search for those)
        bucket = 0 if seconds <= 0.005 else bisect_left(DURATION_BUCKETS, seconds)
        buckets = self._buckets
        value = buckets[bucket] = buckets[bucket] + 1
        at = self._off_buckets + 8 * bucket
        mm[at : at + 8] = _U64.pack(value)

    def request_rejected(self, status: int) -> None:
        """Count a request refused before the application saw it (400, 408, 413, ...)."""
        i = REJECTED_INDEX.get(status, len(REJECTED_STATUSES) - 1)
        rejected = self._rejected
        rejected[i] += 1
        put_shared(_U64, self._mm, self._off_rejected + 8 * i, rejected[i])

    def set_websockets(self, n: int) -> None:
        """Record the number of open WebSocket connections (part of ``connections``)."""
        put_shared(_U32, self._mm, self._off + _OFF_WEBSOCKETS, max(0, n))

    def set_connections(self, n: int) -> None:
        """Record the number of open connections."""
        put_shared(_U32, self._mm, self._off + _OFF_CONNECTIONS, max(0, n))

    @property
    def restarting(self) -> bool:
        """The master stops this worker to replace it (HUP roll, recycle), not for good.

        A worker tells long-lived clients so: WebSocket close code 1012
        (Service Restart) rather than 1001 (Going Away).
        """
        return bool(self._mm[self._off + _OFF_RESTART])

    # -- master side ------------------------------------------------------
    def set_restarting(self, value: bool) -> None:
        """Say why a TERM is coming (see ``restarting``); a byte of its own,
        so it never races the worker's writes of ``flags``."""
        put_shared(_U8, self._mm, self._off + _OFF_RESTART, 1 if value else 0)

    def reset(self, pid: int, generation: int, index: int) -> None:
        """Prepare the slot for a new worker (the master calls this around fork)."""
        now = _monotonic()
        self._mm[self._off : self._off + SLOT_SIZE] = _ZERO_SLOT
        put_shared(
            _WHOLE,
            self._mm,
            self._off,
            pid,
            generation,
            index,
            0,
            SlotState.BOOTING,
            0,
            0,
            0,
            now,
            now,
            0,
            0,
            0.0,
            0,
            0,
            0.0,
            0,
            b"",
        )
        self._zero_counts()

    def set_pid(self, pid: int) -> None:
        put_shared(_I32, self._mm, self._off + _OFF_PID, pid)

    def clear(self) -> None:
        """Mark the slot empty (its worker was reaped); see ``Scoreboard.retire``."""
        self._mm[self._off : self._off + SLOT_SIZE] = _ZERO_SLOT

    def counts(self) -> RequestCounts:
        """The request counters as they are now in shared memory."""
        return RequestCounts.read(self._mm, self._off_totals, self._off_cells)

    def snapshot(self, with_counts: bool = False) -> SlotSnapshot:
        """Read the whole slot at once (and its request counters, if asked)."""
        (
            pid,
            gen,
            index,
            conns,
            state,
            flags,
            _restart,
            sockets,
            boot,
            hb,
            _body_in,
            _body_out,
            _duration,
            reqs,
            in_flight,
            started,
            n,
            summary,
        ) = _WHOLE.unpack_from(self._mm, self._off)
        try:
            st = SlotState(state)
        except ValueError:
            st = SlotState.EMPTY
        return SlotSnapshot(
            number=self.number,
            pid=pid,
            generation=gen,
            index=index,
            state=st,
            recycle_requested=bool(flags & FLAG_RECYCLE),
            boot_time=boot,
            heartbeat=hb,
            requests=reqs,
            connections=conns,
            websockets=sockets,
            request_started=started,
            current=summary[: min(n, SUMMARY_SIZE)].decode("utf-8", "replace"),
            in_flight=in_flight,
            counts=self.counts() if with_counts else None,
        )

    @property
    def state(self) -> SlotState:
        try:
            return SlotState(self._mm[self._off + _OFF_STATE])
        except ValueError:
            return SlotState.EMPTY

    @property
    def last_heartbeat(self) -> float:
        return float(_F64.unpack_from(self._mm, self._off + _OFF_HEARTBEAT)[0])

    @property
    def requests(self) -> int:
        return int(_U64.unpack_from(self._mm, self._off + _OFF_REQUESTS)[0])

    @property
    def booted(self) -> bool:
        """True once the worker has reported ready (even if it is draining now)."""
        return bool(self._mm[self._off + _OFF_FLAGS] & FLAG_BOOTED)

    @property
    def recycle_requested(self) -> bool:
        return bool(self._mm[self._off + _OFF_FLAGS] & FLAG_RECYCLE)

    def __repr__(self) -> str:
        return f"<Slot {self.number} {self.state.name}>"


class Scoreboard:
    """``capacity`` slots in one shared mapping, created before the first fork.

    With ``path`` the mapping is backed by that file (created anew, removed by
    ``close(unlink=True)`` if it is still ours), so another process such as ``prefork
    status`` can read it with ``Scoreboard.attach(path)``; otherwise it is
    anonymous and visible only to this process and its forks.  With
    ``published=False`` the file keeps a temporary name until :meth:`publish`
    (a master exec'd by USR2 takes the name only once it has taken over:
    until then the name is the old master's, which may go on serving).
    """

    def __init__(self, capacity: int, path: str | None = None, published: bool = True) -> None:
        if capacity < 1:
            raise ValueError("scoreboard capacity must be >= 1")
        self.capacity = capacity
        self.path = path
        size = _OFF_SLOTS + capacity * SLOT_SIZE
        self._inode: int | None = None
        #: the file's temporary name, until publish()
        self._unpublished: str | None = None
        if path is None:
            self._mm = mmap.mmap(-1, size, flags=mmap.MAP_SHARED)
        else:
            # A new file renamed into place: a master exec'd by USR2 must not
            # truncate the file the old master's workers are still writing.
            directory = os.path.dirname(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=".scoreboard.", dir=directory)
            try:
                os.fchmod(fd, 0o644)
                os.ftruncate(fd, size)
                self._mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED)
                self._inode = os.fstat(fd).st_ino
                if published:
                    os.rename(tmp, path)
                else:
                    self._unpublished = tmp
            except BaseException:
                os.unlink(tmp)
                raise
            finally:
                os.close(fd)
        put_shared(_HEADER, self._mm, 0, _MAGIC, VERSION, capacity, os.getpid())
        self.version = VERSION
        #: the master's counters (worker starts and exits, reloads, retired totals)
        self.master = MasterArea(self._mm)
        self.master.started_now()
        self.slots = [Slot(self._mm, i) for i in range(capacity)]
        # One byte in a pipe the workers inherit: the first to read it reports
        # a boot failure (a pipe read is atomic; a flag in shared memory is not).
        self._token_r, token_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(token_w, b"!")
        os.close(token_w)

    @classmethod
    def attach(cls, path: str) -> Scoreboard:
        """Open an existing file-backed scoreboard read-only (for status tools).

        Raises ValueError for a file that is not a scoreboard, and its subclass
        ScoreboardVersionError for one of another layout version (a master of
        an older or newer prefork is running: its slots cannot be read here).
        """
        self = cls.__new__(cls)
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            if len(self._mm) < HEADER_SIZE:
                raise ValueError(f"{path} is not a prefork scoreboard")
            magic, version, capacity, _pid = _HEADER.unpack_from(self._mm, 0)
            if magic != _MAGIC:
                raise ValueError(f"{path} is not a prefork scoreboard")
            if version != VERSION:
                raise ScoreboardVersionError(
                    f"{path} has scoreboard layout version {version}, this prefork reads "
                    f"version {VERSION}: the master runs {'an older' if version < VERSION else 'a newer'} "
                    "prefork (upgrade it with USR2, or use its own prefork command)"
                )
            if len(self._mm) < _OFF_SLOTS + capacity * SLOT_SIZE:
                raise ValueError(f"{path} is truncated")
        except BaseException:
            self._mm.close()
            raise
        self.version = version
        self.master = MasterArea(self._mm)
        self.capacity = capacity
        self.path = path
        self._inode = None
        self._unpublished = None
        self._token_r = -1
        self.slots = [Slot(self._mm, i) for i in range(capacity)]
        return self

    @property
    def master_pid(self) -> int:
        return int(_HEADER.unpack_from(self._mm, 0)[3])

    @property
    def ever_ready(self) -> bool:
        """True once any worker has been ready (set by the master)."""
        return bool(self._mm[_OFF_EVER_READY])

    def set_ever_ready(self) -> None:
        self._mm[_OFF_EVER_READY] = 1

    def claim_boot_error_report(self) -> bool:
        """True for the first worker that fails to boot before any worker was ready.

        So that N workers failing the same way at import (or in a lifespan
        startup) show the cause once, not N times, even when they fail in the
        same instant: the claim is the one byte of a pipe they all inherited.
        """
        if self.ever_ready:
            return True
        if self._mm[_OFF_BOOT_ERROR_SHOWN] or self._token_r < 0:
            return False
        try:
            claimed = os.read(self._token_r, 1) == b"!"
        except (BlockingIOError, OSError):
            return False
        if claimed:
            self._mm[_OFF_BOOT_ERROR_SHOWN] = 1
        return claimed

    def snapshot(self, with_counts: bool = False) -> list[SlotSnapshot]:
        """Every non-empty slot (with its request counters, if asked)."""
        return [
            s
            for s in (slot.snapshot(with_counts) for slot in self.slots if slot.state)
            if s.state != SlotState.EMPTY
        ]

    # -- metrics: the master writes, anyone reads ------------------------------
    def retire(self, slot: Slot) -> None:
        """The master reaped the slot's worker: add its counters to the retired
        totals, then clear the slot, so that totals never go down."""
        self.master.fold(slot.counts(), slot.clear)

    def read_consistent(self) -> tuple[list[SlotSnapshot], RequestCounts]:
        """Every non-empty slot with its counters, and the retired totals, read
        while the master was folding no dead worker into them."""
        return self.master.consistent(lambda: self.snapshot(with_counts=True))

    def inherit(self, old: Scoreboard) -> None:
        """Carry an old master's counters over (a USR2 upgrade): its worker
        starts, exits, reloads and upgrades, and its retired totals plus what
        its live workers have counted so far, as this board's retired totals."""
        slots, total = old.read_consistent()
        for snap in slots:
            if snap.counts is not None:
                total.add(snap.counts)
        self.master.set_retired(total)
        self.master.copy_counters_from(old.master)

    def publish(self) -> None:
        """Give the file its name (for ``prefork status``), replacing whatever
        had it; nothing if it has it already."""
        tmp, self._unpublished = self._unpublished, None
        if tmp is not None and self.path is not None:
            os.rename(tmp, self.path)

    def close(self, unlink: bool = False) -> None:
        if self._token_r >= 0:
            os.close(self._token_r)
            self._token_r = -1
        self._mm.close()
        if self._unpublished is not None:
            # Never published: the name belongs to someone else.
            if unlink:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._unpublished)
            return
        if unlink and self.path is not None and self._inode is not None:
            try:
                if os.stat(self.path).st_ino == self._inode:  # still ours, not a new master's
                    os.unlink(self.path)
            except FileNotFoundError:
                pass


@dataclass
class WorkerContext:
    """Everything a forked worker is handed by the master.

    A worker entry (or the code after ``Master.run()`` returns in a child)
    serves ``sockets`` until told to stop, and reports through ``slot``; see
    ``prefork.lifecycle.install`` for the part that is the same for every
    kind of worker.
    """

    #: Task id: 0..n-1, stable across restarts of the same worker position.
    index: int
    #: Incremented by every reload (HUP); the first workers are generation 1.
    generation: int
    sockets: list[socket.socket]
    slot: Slot
    master_pid: int
    #: Seconds between heartbeats written by the worker's event loop.
    heartbeat_interval: float
    #: Requests after which the worker asks to be recycled (jitter applied; 0 = never).
    max_requests: int
    #: Seconds a draining worker has before the master kills it.
    graceful_timeout: float
    #: Write end of the master's notify pipe: one byte wakes the master at once.
    notify_fd: int
    #: every setting, as the master had it when it forked this worker
    #: (a HUP gives workers forked after it the reloaded Config).
    config: Config = DEFAULTS
    extra: dict[str, object] = field(default_factory=dict)
    #: the whole scoreboard (every worker's slot, the master's counters): what
    #: a worker reads to answer ``--metrics-path``
    scoreboard: Scoreboard | None = None


_task_id: int | None = None


def task_id() -> int | None:
    """The worker's index in a forked worker, None in the master or an unforked process."""
    return _task_id


def _set_task_id(value: int | None) -> None:
    global _task_id
    _task_id = value
