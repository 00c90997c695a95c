"""Prometheus text exposition (format 0.0.4) of the scoreboard: ``--metrics-path``
in every worker, ``--metrics-bind`` in the master, the same text.

Everything comes from shared memory, so any worker (or the master) can
answer for all of them: the request counters of every live slot plus the
retired totals of reaped workers (folded in by the master before it clears a
slot, so totals never go down), the master's counters of worker starts and
exits, reloads and upgrades, and a few figures read at scrape time from the
kernel (the listen queue of each TCP listener, every process's RSS from
``/proc/PID/statm``).  Per-worker series carry ``worker`` (the task id, 0..n-1)
and ``pid`` labels; they leave with their worker.  The README's "Metrics"
section is the table of every name.

Standard library only; no event loop.  The application's own metrics
(prometheus_client in multiprocess mode) are appended by
:mod:`prefork.appmetrics`.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import time
from collections.abc import Iterable, Sequence

from prefork.counters import (
    DURATION_BUCKETS,
    EXIT_REASONS,
    METHODS,
    REJECTED_STATUSES,
    START_REASONS,
    STATUS_CLASSES,
    MasterCounters,
    RequestCounts,
)
from prefork.scoreboard import VERSION, Scoreboard, SlotSnapshot, SlotState

__all__ = ["CONTENT_TYPE", "listen_queues", "render", "rss_bytes"]

#: The Content-Type of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# struct tcp_info (linux/tcp.h): 8 one-byte fields, then u32 rto, ato,
# snd_mss, rcv_mss, unacked, sacked.  On a LISTEN socket tcpi_unacked is the
# accept queue's current length and tcpi_sacked its maximum (the backlog).
_TCP_INFO_QUEUE = struct.Struct("=II")
_TCP_INFO_QUEUE_AT = 24
_TCP_INFO = getattr(socket, "TCP_INFO", 11 if sys.platform.startswith("linux") else None)

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes(pid: int) -> int | None:
    """Resident set size of ``pid`` from /proc (no psutil needed), None if unknown."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None


def _listener_name(sock: socket.socket) -> str | None:
    try:
        name = sock.getsockname()
    except OSError:
        return None
    if sock.family == socket.AF_INET6:
        return f"[{name[0]}]:{name[1]}"
    if sock.family == socket.AF_INET:
        return f"{name[0]}:{name[1]}"
    return None


def listen_queues(sockets: Iterable[socket.socket]) -> list[tuple[str, int, int]]:
    """(listener, queued connections, backlog) of each TCP listening socket (Linux)."""
    found: list[tuple[str, int, int]] = []
    if _TCP_INFO is None:
        return found
    for sock in sockets:
        if sock.fileno() < 0 or sock.family not in (socket.AF_INET, socket.AF_INET6):
            continue
        name = _listener_name(sock)
        if name is None:
            continue
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, 104)
        except OSError:
            continue
        if len(info) < _TCP_INFO_QUEUE_AT + _TCP_INFO_QUEUE.size:
            continue
        queued, backlog = _TCP_INFO_QUEUE.unpack_from(info, _TCP_INFO_QUEUE_AT)
        found.append((name, queued, backlog))
    return found


def _label_value(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Text:
    """The lines of one exposition, a family (HELP, TYPE, samples) at a time."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, value: float, **labels: object) -> None:
        if labels:
            inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
            name = f"{name}{{{inner}}}"
        if isinstance(value, float):
            text = repr(value) if value == value and abs(value) != float("inf") else "NaN"
        else:
            text = str(value)
        self.lines.append(f"{name} {text}")


def _bound(value: float) -> str:
    return repr(float(value))


def render(board: Scoreboard, sockets: Sequence[socket.socket] = ()) -> bytes:
    """The exposition of everything ``board`` holds, and the listen queues of ``sockets``."""
    slots, total = board.read_consistent()
    master = board.master.counters()
    live = [s for s in slots if s.pid > 0]
    for snap in live:
        if snap.counts is not None:
            total.add(snap.counts)
    out = _Text()
    _requests(out, total)
    _workers(out, live, master)
    _processes(out, board, master, live, sockets)
    out.lines.append("")
    return "\n".join(out.lines).encode()


def _requests(out: _Text, total: RequestCounts) -> None:
    out.family(
        "prefork_http_requests_total",
        "counter",
        "Requests answered, by method and status class (every worker, reaped ones included).",
    )
    n_status = len(STATUS_CLASSES)
    for m, method in enumerate(METHODS):
        for s, status in enumerate(STATUS_CLASSES):
            value = total.cells[m * n_status + s]
            if value or s:  # (status "other": only once it happened)
                out.sample("prefork_http_requests_total", value, method=method, status=status)
    out.family(
        "prefork_http_request_duration_seconds",
        "histogram",
        "Seconds from a complete request head to the end of its response.",
    )
    cumulative = 0
    for bound, count in zip(DURATION_BUCKETS, total.buckets[:-1], strict=True):
        cumulative += count
        out.sample("prefork_http_request_duration_seconds_bucket", cumulative, le=_bound(bound))
    cumulative += total.buckets[-1]
    out.sample("prefork_http_request_duration_seconds_bucket", cumulative, le="+Inf")
    out.sample("prefork_http_request_duration_seconds_sum", float(total.duration_sum))
    out.sample("prefork_http_request_duration_seconds_count", cumulative)
    out.family("prefork_http_request_body_bytes_total", "counter", "Request body bytes received.")
    out.sample("prefork_http_request_body_bytes_total", total.body_in)
    out.family(
        "prefork_http_response_body_bytes_total",
        "counter",
        "Response body bytes sent (without heads and chunk framing).",
    )
    out.sample("prefork_http_response_body_bytes_total", total.body_out)
    out.family(
        "prefork_http_rejected_requests_total",
        "counter",
        "Requests refused before the application saw them (malformed, too large, too slow).",
    )
    for code, value in zip(REJECTED_STATUSES, total.rejected, strict=True):
        out.sample(
            "prefork_http_rejected_requests_total", value, status=str(code) if code else "other"
        )


def _workers(out: _Text, live: list[SlotSnapshot], master: MasterCounters) -> None:
    out.family("prefork_workers", "gauge", "Worker processes by state.")
    for state in (SlotState.BOOTING, SlotState.READY, SlotState.DRAINING):
        count = sum(1 for s in live if s.state == state)
        out.sample("prefork_workers", count, state=state.name.lower())
    out.family(
        "prefork_workers_desired", "gauge", "Workers the master keeps (--workers, TTIN/TTOU)."
    )
    out.sample("prefork_workers_desired", master.workers_desired)
    out.family("prefork_generation", "gauge", "Generation of new workers (one more per reload).")
    out.sample("prefork_generation", master.generation)
    out.family("prefork_worker_starts_total", "counter", "Workers forked, by reason.")
    for reason in START_REASONS:
        out.sample("prefork_worker_starts_total", master.starts[reason], reason=reason)
    out.family("prefork_worker_exits_total", "counter", "Workers reaped, by reason.")
    for reason in EXIT_REASONS:
        out.sample("prefork_worker_exits_total", master.exits[reason], reason=reason)
    out.family("prefork_reloads_total", "counter", "Reloads (HUP) of the master.")
    out.sample("prefork_reloads_total", master.reloads)
    out.family("prefork_upgrades_total", "counter", "Completed in-place upgrades (USR2).")
    out.sample("prefork_upgrades_total", master.upgrades)

    now = time.monotonic()
    per_worker = (
        ("prefork_worker_requests_total", "counter", "Requests answered by this worker."),
        ("prefork_worker_connections", "gauge", "Open connections (WebSockets included)."),
        ("prefork_worker_websockets", "gauge", "Open WebSocket connections."),
        ("prefork_worker_requests_in_flight", "gauge", "Requests being answered now."),
        ("prefork_worker_heartbeat_age_seconds", "gauge", "Seconds since the last heartbeat."),
        ("prefork_worker_uptime_seconds", "gauge", "Seconds since the worker was forked."),
    )
    for name, kind, help in per_worker:
        out.family(name, kind, help)
        for s in live:
            value: float
            if name == "prefork_worker_requests_total":
                value = s.requests
            elif name == "prefork_worker_connections":
                value = s.connections
            elif name == "prefork_worker_websockets":
                value = s.websockets
            elif name == "prefork_worker_requests_in_flight":
                value = s.in_flight
            elif name == "prefork_worker_heartbeat_age_seconds":
                value = round(max(0.0, now - s.heartbeat), 3)
            else:
                value = round(max(0.0, now - s.boot_time), 3)
            out.sample(name, value, worker=s.index, pid=s.pid)


def _processes(
    out: _Text,
    board: Scoreboard,
    master: MasterCounters,
    live: list[SlotSnapshot],
    sockets: Sequence[socket.socket],
) -> None:
    out.family("prefork_worker_resident_memory_bytes", "gauge", "Resident set size of each worker.")
    for s in live:
        rss = rss_bytes(s.pid)
        if rss is not None:
            out.sample("prefork_worker_resident_memory_bytes", rss, worker=s.index, pid=s.pid)
    out.family("prefork_master_resident_memory_bytes", "gauge", "Resident set size of the master.")
    master_rss = rss_bytes(board.master_pid)
    if master_rss is not None:
        out.sample("prefork_master_resident_memory_bytes", master_rss)
    out.family("prefork_master_start_time_seconds", "gauge", "When the master started (Unix time).")
    out.sample("prefork_master_start_time_seconds", round(master.started, 3))
    queues = listen_queues(sockets)
    out.family(
        "prefork_listen_queue",
        "gauge",
        "Connections waiting in the kernel's accept queue of each TCP listener.",
    )
    for name, queued, _backlog in queues:
        out.sample("prefork_listen_queue", queued, listener=name)
    out.family("prefork_listen_queue_max", "gauge", "Accept queue size (listen backlog).")
    for name, _queued, backlog in queues:
        out.sample("prefork_listen_queue_max", backlog, listener=name)
    out.family("prefork_scoreboard_version", "gauge", "Layout version of the scoreboard.")
    out.sample("prefork_scoreboard_version", VERSION)
