"""The access log: one line per request, cheap enough to leave on.

The combined format by default (what nginx and Apache write, so log tools
read it); JSON with ``--access-log-format json``.  Two ways for the lines to
leave the worker:

* **batched** (the command line's ``--access-log -`` or ``FILE``): the line is
  formatted with ``%`` and appended to a list, no ``logging.LogRecord``; the
  list is written when BATCH_LINES lines wait (at the end of that event-loop
  iteration) and at the latest FLUSH_INTERVAL seconds after its first line,
  nginx's ``buffer=32k flush=1s`` model: under load a write system call per
  few hundred requests, not one per loop iteration (which, with a fast
  server, is one per request or two).  Writes are ``os.write`` calls of whole
  lines of at most ``PIPE_BUF`` bytes, so the lines of several workers
  sharing one pipe or one ``O_APPEND`` file never interleave.  The sink is a ``logging`` handler on
  the ``prefork.access`` logger, so the USR1 reopen takes its pending lines
  too; every worker exit writes them with :func:`close` (called explicitly:
  ``logging.shutdown()`` misses a handler that an application's
  ``dictConfig`` already closed and dropped from logging's list).  None is
  lost on a graceful stop, a roll, a recycle or a reopen.  A file closed
  under the sink (``dictConfig`` closes every existing handler) is reopened
  at the next write, with one warning on ``prefork.error``, or the lines are
  dropped if it cannot be: the queue never outgrows one batch waiting for a
  stream that will not come back.
* **through logging** (the Python API's default, and ``--access-log logging``
  on the command line): a LogRecord on ``prefork.access`` per request, for a
  user whose own logging configuration routes the lines.  Slower: the record
  costs more than a hello request.

Nothing is formatted when the ``prefork.access`` logger is not enabled for
INFO: a server without an access log pays one cached level check per request.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import time
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from prefork.worker.request import HTTPRequest

__all__ = [
    "AccessLogFileHandler",
    "AccessLogHandler",
    "access_log",
    "close",
    "configure",
    "intact",
    "log_rejected",
    "log_request",
    "set_format",
]

access_log = logging.getLogger("prefork.access")

#: Bytes written by one ``os.write``: a pipe's atomic write size, so lines of
#: workers sharing a pipe (or an O_APPEND file) never interleave.
WRITE_SIZE = 4096
#: Lines queued before they are written at the end of the loop iteration...
BATCH_LINES = 256
#: ... and the longest a line waits when fewer come (nginx: ``buffer=32k flush=1s``).
FLUSH_INTERVAL = 0.5

_json = False
_stamp_second = -1
_stamp = ""
#: the batched sink, or None: lines go through ``access_log.info``
_sink: AccessLogHandler | AccessLogFileHandler | None = None


def set_format(name: str) -> None:
    """``combined`` (default) or ``json``."""
    global _json
    if name not in ("combined", "json"):
        raise ValueError(f"access log format must be 'combined' or 'json', not {name!r}")
    _json = name == "json"


def _timestamp(now: float) -> str:
    """``25/Nov/2026:08:25:57 +0000``, formatted once per second."""
    global _stamp_second, _stamp
    second = int(now)
    if second != _stamp_second:
        _stamp_second = second
        _stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(second))
    return _stamp


#: what a quoted field of the combined format writes escaped: the quote and the
#: backslash, and as nginx does, \xHH for a byte that is not printable ASCII
#: (a TAB, obs-text: the parser refused every other control)
_UNSAFE = re.compile(r'["\\\x00-\x1f\x7f-\xff]')


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return "\\" + char if char in '"\\' else "\\x%02X" % ord(char)


def _quote(value: str) -> str:
    """Escape what would end or confuse a quoted field; called only when the
    value holds a quote, a backslash, a TAB or a byte past ASCII (header
    values are latin-1: one character per byte sent)."""
    return _UNSAFE.sub(_escape, value)


_dict_get = dict.get
_json_string = json.encoder.encode_basestring  # type: ignore[attr-defined]  # C, with quotes


def log_request(request: HTTPRequest, status: int, size: int) -> None:
    """Log one answered request (the caller has checked that the log is on).

    The hot path of a server with its access log on: no LogRecord, the
    timestamp formatted once per second, header values read straight from
    the parsed dict, the quoting scan only where a quote or backslash is.
    """
    now = time.time()
    headers = request.headers
    if headers._dirty:
        headers._flush()
    get = _dict_get  # the parsed headers' keys are normalized: no name lookup needed
    if _json:
        line = (
            '{"time": "%s", "remote_ip": %s, "method": "%s", "uri": %s, "version": "%s", '
            '"status": %d, "bytes": %d, "referer": %s, "user_agent": %s, "duration_ms": %.3f}'
            % (
                _timestamp(now),
                _json_string(request.remote_ip or ""),
                request.method,  # a token: nothing to escape
                _json_string(request.uri),
                request.version,
                status,
                size,
                _json_string(get(headers, "Referer", "")),
                _json_string(get(headers, "User-Agent", "")),
                (now - request._start_time) * 1000,
            )
        )
    else:
        uri = request.uri
        referer = get(headers, "Referer", "-")
        agent = get(headers, "User-Agent", "-")
        if '"' in uri or "\\" in uri:  # (the parser refused non-ASCII in a target)
            uri = _quote(uri)
        if not referer.isascii() or '"' in referer or "\\" in referer or "\t" in referer:
            referer = _quote(referer)
        if not agent.isascii() or '"' in agent or "\\" in agent or "\t" in agent:
            agent = _quote(agent)
        stamp = _stamp if int(now) == _stamp_second else _timestamp(now)
        # (an f-string: measured 0.25 us against 0.39 us for the same % format)
        line = (
            f'{request.remote_ip} - - [{stamp}] "{request.method} {uri} {request.version}" '
            f'{status} {size if size else "-"} "{referer}" "{agent}"'
        )
    sink = _sink
    if sink is not None:
        lines = sink._lines
        lines.append(line)
        if len(lines) == 1 or len(lines) == BATCH_LINES:
            sink.schedule()
    else:
        access_log.info(line)


def log_rejected(remote_ip: str | None, status: int) -> None:
    """Log a request refused before it could be parsed."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    now = time.time()
    if _json:
        line = '{"time": "%s", "remote_ip": %s, "status": %d}' % (
            _timestamp(now),
            _json_string(remote_ip) if remote_ip is not None else "null",
            status,
        )
    else:
        line = '%s - - [%s] "-" %d - "-" "-"' % (remote_ip, _timestamp(now), status)
    if _sink is not None:
        _sink.add(line)
    else:
        access_log.info(line)


# ---------------------------------------------------------------------- the batched sink


def write_lines(fd: int, lines: list[str]) -> None:
    """Write ``lines`` (without their newlines) to ``fd`` in whole-line pieces of
    at most WRITE_SIZE bytes (a longer line alone), retrying short writes."""
    data = ("\n".join(lines) + "\n").encode("utf-8", "backslashreplace")
    size = len(data)
    start = 0
    while start < size:
        end = start + WRITE_SIZE
        if end < size:
            cut = data.rfind(b"\n", start, end)
            end = data.find(b"\n", end) + 1 if cut < 0 else cut + 1
        else:
            end = size
        view = memoryview(data)[start:end]
        while view:
            try:
                written = os.write(fd, view)
            except InterruptedError:
                continue
            except BlockingIOError:  # a non-blocking stdout: wait until it takes more
                import select

                select.select([], [fd], [], 1.0)
                continue
            view = view[written:]
        start = end


class _Batching:
    """The batching half of the two sink handlers (mixed into a ``StreamHandler``)."""

    _lines: list[str]
    _timer: asyncio.TimerHandle | None
    _soon: bool
    _warned: set[str]

    def _init_batch(self) -> None:
        self._lines = []
        self._timer = None
        self._soon = False
        self._warned = set()

    def add(self, line: str) -> None:
        """Queue one line (see :meth:`schedule`)."""
        lines = self._lines
        lines.append(line)
        if len(lines) == 1 or len(lines) == BATCH_LINES:
            self.schedule()

    def schedule(self) -> None:
        """Called at the first queued line and at the BATCH_LINES-th: the first arms
        the FLUSH_INTERVAL timer, a full batch is written at the end of this
        event-loop iteration.  Off a loop (a thread, a test) lines are written now."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if len(self._lines) >= BATCH_LINES:
            if not self._soon:
                self._soon = True
                loop.call_soon(self.flush)
        elif self._timer is None:
            self._timer = loop.call_later(FLUSH_INTERVAL, self.flush)

    def emit(self, record: logging.LogRecord) -> None:
        """A record logged on ``prefork.access`` by someone else: one more line."""
        try:
            self.add(self.format(record))  # type: ignore[attr-defined]
        except Exception:
            self.handleError(record)  # type: ignore[attr-defined]

    def flush(self) -> None:
        """Write the queued lines (also what ``logging.shutdown()`` and a reopen call)."""
        self._soon = False
        timer = self._timer
        if timer is not None:
            self._timer = None
            timer.cancel()
        lines = self._lines
        if not lines:
            return
        self._lines = []
        stream: IO[str] | None = self.stream  # type: ignore[attr-defined]
        if stream is None:
            # Closed under us (an application's dictConfig closes every
            # handler): keeping the lines for a stream that never comes back
            # would grow the queue without bound.
            stream = self._reopen_closed()
            if stream is None:
                return  # (dropped: said once)
        try:
            stream.flush()  # anything written through the stream itself goes first
            write_lines(stream.fileno(), lines)
        except (OSError, ValueError) as exc:
            print(f"prefork: access log write failed: {exc}", file=sys.stderr)

    def _reopen_closed(self) -> IO[str] | None:
        """The stream to write to after it was closed under the sink, or None
        to drop the lines (a plain stream cannot be reopened)."""
        return None

    def _warn_once(self, message: str, *args: object) -> None:
        """Each warning once per sink, on ``prefork.error``: a broken log must be
        seen, but not once per batch."""
        if message in self._warned:
            return
        self._warned.add(message)
        logging.getLogger("prefork.error").warning(message, *args)


class AccessLogHandler(_Batching, logging.StreamHandler):  # type: ignore[type-arg]
    """The batched sink writing to a stream (stdout for ``--access-log -``)."""

    def __init__(self, stream: IO[str]) -> None:
        logging.StreamHandler.__init__(self, stream)
        self._init_batch()


class AccessLogFileHandler(_Batching, logging.FileHandler):
    """The batched sink writing to a file; USR1 reopens it (after a logrotate)."""

    def __init__(self, path: str) -> None:
        logging.FileHandler.__init__(self, path, encoding="utf-8")
        self._init_batch()

    def _reopen_closed(self) -> IO[str] | None:
        """Reopen the file someone else closed (``logging.config.dictConfig``
        closes every handler it finds); if it cannot be opened the lines are
        dropped (no unbounded queue) and the next batch tries again."""
        try:
            stream = self._open()
        except OSError as exc:
            self._warn_once(
                "access log %s was closed by another part of the program and cannot be "
                "reopened (%s): access lines are dropped",
                self.baseFilename,
                exc,
            )
            return None
        self._warn_once(
            "access log %s was closed by another part of the program (an application's "
            "logging.config.dictConfig closes every existing handler): reopened",
            self.baseFilename,
        )
        self.stream = stream
        return stream


def configure(target: str | None, fmt: str = "combined") -> None:
    """Set the access log up for a server started from the command line.

    ``target``: ``-`` (stdout) or a file path (the batched sink), ``logging``
    (a LogRecord per line on ``prefork.access``, propagated to the root
    logger's handlers), ``off``/None (no access log).
    """
    global _sink
    sink: AccessLogHandler | AccessLogFileHandler | None = None
    if target is not None and target.lower() not in ("off", "none", "logging", "-"):
        # (opened first: a file that cannot be opened leaves the old log in place)
        sink = AccessLogFileHandler(target)
    set_format(fmt)
    for handler in list(access_log.handlers):
        access_log.removeHandler(handler)
        handler.flush()  # (StreamHandler.close does not: a replaced stdout sink's lines)
        handler.close()
    _sink = None
    if target is None or target.lower() in ("off", "none"):
        access_log.disabled = True
        access_log.setLevel(logging.CRITICAL)
        return
    access_log.disabled = False
    access_log.setLevel(logging.INFO)
    if target == "logging":
        access_log.propagate = True
        return
    access_log.propagate = False
    if sink is None:
        sink = AccessLogHandler(sys.stdout)
    sink.setFormatter(logging.Formatter("%(message)s"))
    access_log.addHandler(sink)
    _sink = sink


def intact() -> bool:
    """False when something other than :func:`configure` broke the batched
    sink: closed it (every handler ``dictConfig`` finds), or took it off the
    ``prefork.access`` logger (a ``dictConfig`` naming that logger or
    ``prefork``).  The command line then sets the sink up afresh."""
    sink = _sink
    if sink is None:
        return True
    return sink in access_log.handlers and not getattr(sink, "_closed", False)


def close() -> None:
    """Write the pending lines and close the batched sink, if there is one.

    Called explicitly as a worker exits (it leaves with ``os._exit``): the
    sink may no longer be on the list ``logging.shutdown()`` flushes, since
    an application's ``dictConfig`` closes every handler and empties that
    list.  Lines logged afterwards go through the ``prefork.access`` logger.
    """
    global _sink
    sink = _sink
    if sink is None:
        return
    _sink = None
    access_log.removeHandler(sink)
    sink.flush()
    sink.close()
