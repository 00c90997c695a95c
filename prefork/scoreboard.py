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
"""

from __future__ import annotations

import enum
import mmap
import os
import socket
import struct
import tempfile
import time
from dataclasses import dataclass, field

from prefork.settings import DEFAULTS, Config

__all__ = [
    "SLOT_SIZE",
    "Scoreboard",
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


# Slot layout (native byte order, fixed offsets, every field naturally aligned):
#   0 pid i | 4 generation I | 8 index i | 12 connections I
#  16 state B | 17 flags B | 18..23 padding
#  24 boot_time d | 32 heartbeat d | 40 requests Q
#  48 request_started d | 56 summary_len H | 58 summary 100s | 158..159 padding
SLOT_SIZE = 160
_WHOLE = struct.Struct(f"=iIiIBBBxIddQdH{SUMMARY_SIZE}s2x")
assert _WHOLE.size == SLOT_SIZE
_I32 = struct.Struct("=i")
_U32 = struct.Struct("=I")
_U8 = struct.Struct("=B")
_F64 = struct.Struct("=d")
_U64 = struct.Struct("=Q")
_CURRENT = struct.Struct(f"=dH{SUMMARY_SIZE}s")
# requests, then request_started and summary_len (adjacent fields): a finished
# request is counted and cleared in one write.
_DONE = struct.Struct("=QdH")

_OFF_PID = 0
_OFF_CONNECTIONS = 12
_OFF_STATE = 16
_OFF_FLAGS = 17
_OFF_RESTART = 18
_OFF_WEBSOCKETS = 20
_OFF_HEARTBEAT = 32
_OFF_REQUESTS = 40
_OFF_CURRENT = 48
assert _OFF_CURRENT == _OFF_REQUESTS + _U64.size  # _DONE writes both

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
    """One worker's slot. The worker-side methods are cheap: one ``pack_into`` each."""

    __slots__ = ("_mm", "_off", "number", "_requests", "_off_current", "_off_requests")

    def __init__(self, mm: mmap.mmap, number: int) -> None:
        self._mm = mm
        self.number = number
        self._off = HEADER_SIZE + number * SLOT_SIZE
        # The offsets written on every request, computed once.
        self._off_current = self._off + _OFF_CURRENT
        self._off_requests = self._off + _OFF_REQUESTS
        self._requests = 0

    # -- worker side ------------------------------------------------------
    def heartbeat(self) -> None:
        """Record that the worker's event loop is alive (call it from the loop)."""
        _F64.pack_into(self._mm, self._off + _OFF_HEARTBEAT, _monotonic())

    def set_ready(self) -> None:
        """The worker accepts connections: the master may now count on it."""
        self.heartbeat()
        flags = self._mm[self._off + _OFF_FLAGS]
        _U8.pack_into(self._mm, self._off + _OFF_FLAGS, flags | FLAG_BOOTED)
        _U8.pack_into(self._mm, self._off + _OFF_STATE, SlotState.READY)

    def set_draining(self) -> None:
        """The worker stopped accepting and is finishing its connections."""
        _U8.pack_into(self._mm, self._off + _OFF_STATE, SlotState.DRAINING)

    def request_recycle(self) -> None:
        """Ask the master to replace this worker (max_requests reached)."""
        flags = self._mm[self._off + _OFF_FLAGS]
        _U8.pack_into(self._mm, self._off + _OFF_FLAGS, flags | FLAG_RECYCLE)

    def request_started(self, summary: str) -> None:
        """Record the request now being served (e.g. ``"GET /path"``), for hang reports.

        Written before the application runs: a worker whose loop then blocks
        cannot write anything else, and this is what the master reports.
        """
        data = summary.encode("utf-8", "replace")[:SUMMARY_SIZE]
        _CURRENT.pack_into(self._mm, self._off_current, _monotonic(), len(data), data)

    def request_finished(self) -> None:
        """Count one served request and clear the current one (one write)."""
        self._requests += 1
        _DONE.pack_into(self._mm, self._off_requests, self._requests, 0.0, 0)

    def set_websockets(self, n: int) -> None:
        """Record the number of open WebSocket connections (part of ``connections``)."""
        _U32.pack_into(self._mm, self._off + _OFF_WEBSOCKETS, max(0, n))

    def set_connections(self, n: int) -> None:
        """Record the number of open connections."""
        _U32.pack_into(self._mm, self._off + _OFF_CONNECTIONS, max(0, n))

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
        _U8.pack_into(self._mm, self._off + _OFF_RESTART, 1 if value else 0)

    def reset(self, pid: int, generation: int, index: int) -> None:
        """Prepare the slot for a new worker (the master calls this around fork)."""
        now = _monotonic()
        _WHOLE.pack_into(
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
            0.0,
            0,
            b"",
        )
        self._requests = 0

    def set_pid(self, pid: int) -> None:
        _I32.pack_into(self._mm, self._off + _OFF_PID, pid)

    def clear(self) -> None:
        """Mark the slot empty (its worker was reaped)."""
        self._mm[self._off : self._off + SLOT_SIZE] = bytes(SLOT_SIZE)

    def snapshot(self) -> SlotSnapshot:
        """Read the whole slot at once."""
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
            reqs,
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
    anonymous and visible only to this process and its forks.
    """

    def __init__(self, capacity: int, path: str | None = None) -> None:
        if capacity < 1:
            raise ValueError("scoreboard capacity must be >= 1")
        self.capacity = capacity
        self.path = path
        size = HEADER_SIZE + capacity * SLOT_SIZE
        self._inode: int | None = None
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
                os.rename(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
            finally:
                os.close(fd)
        _HEADER.pack_into(self._mm, 0, _MAGIC, 1, capacity, os.getpid())
        self.slots = [Slot(self._mm, i) for i in range(capacity)]
        # One byte in a pipe the workers inherit: the first to read it reports
        # a boot failure (a pipe read is atomic; a flag in shared memory is not).
        self._token_r, token_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(token_w, b"!")
        os.close(token_w)

    @classmethod
    def attach(cls, path: str) -> Scoreboard:
        """Open an existing file-backed scoreboard read-only (for status tools)."""
        self = cls.__new__(cls)
        with open(path, "rb") as f:
            self._mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        magic, _version, capacity, _pid = _HEADER.unpack_from(self._mm, 0)
        if magic != _MAGIC:
            raise ValueError(f"{path} is not a prefork scoreboard")
        self.capacity = capacity
        self.path = path
        self._inode = None
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

    def snapshot(self) -> list[SlotSnapshot]:
        """Every non-empty slot."""
        return [s for s in (slot.snapshot() for slot in self.slots) if s.state != SlotState.EMPTY]

    def close(self, unlink: bool = False) -> None:
        if self._token_r >= 0:
            os.close(self._token_r)
            self._token_r = -1
        self._mm.close()
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


_task_id: int | None = None


def task_id() -> int | None:
    """The worker's index in a forked worker, None in the master or an unforked process."""
    return _task_id


def _set_task_id(value: int | None) -> None:
    global _task_id
    _task_id = value
