"""A request body that streams in while the application reads it.

The connection feeds body bytes from the event loop; the application reads
them, possibly from another thread (a WSGI worker thread), blocking until
bytes arrive.  Memory stays bounded: past ``window`` unread bytes the
connection stops reading from the socket, and it resumes once the reader
has caught up, so a 1 GiB upload never sits in memory.
"""

from __future__ import annotations

import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["BodyStream", "ClientDisconnected"]

DEFAULT_WINDOW = 1 << 20


class ClientDisconnected(ConnectionError):
    """The client went away before sending the whole body, or the server
    refused the rest of it (``refused``: the connection answered 400, 408 or
    413 and already logged why, so an adapter need not say it again)."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class BodyStream(io.RawIOBase):
    """A readable, blocking file of the request body (``wsgi.input``)."""

    def __init__(
        self,
        pause: Callable[[], Any],
        resume: Callable[[], Any],
        window: int = DEFAULT_WINDOW,
    ) -> None:
        super().__init__()
        self._pause = pause  # called on the loop thread
        self._resume = resume  # called from any thread: must be thread-safe
        self._window = window
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._finished = False
        self._aborted = False
        self._refused: str | None = None  # why the server cut the body (abort(refused=...))
        self._cond = threading.Condition()
        #: bytes received so far.
        self.received = 0
        #: called on the loop thread after each feed/finish/abort: how a
        #: reader on the event loop (ASGI ``receive()``) waits without a thread.
        self.on_event: Callable[[], Any] | None = None
        #: called once (from the reader's thread) when the application first
        #: waits for body bytes: the connection's ``100 Continue`` for a
        #: client that said ``Expect: 100-continue`` (RFC 9110 10.1.1), sent
        #: only if the application asks for the body.
        self.on_first_wait: Callable[[], Any] | None = None

    # -- the loop's side ----------------------------------------------------------

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self._buffered += len(data)
            self.received += len(data)
            if self._buffered > self._window and not self._paused:
                self._paused = True
                self._pause()
            self._cond.notify_all()
        if self.on_event is not None:
            self.on_event()

    def finish(self) -> None:
        with self._cond:
            self._finished = True
            self._cond.notify_all()
        if self.on_event is not None:
            self.on_event()

    def abort(self, refused: str | None = None) -> None:
        """No more body: the client left, or (``refused``: the reason, logged
        by the caller) the server refused the rest of it."""
        with self._cond:
            self._aborted = True
            if refused is not None and self._refused is None:
                self._refused = refused
            self._cond.notify_all()
        if self.on_event is not None:
            self.on_event()

    @property
    def aborted(self) -> bool:
        return self._aborted

    def read_nowait(self) -> bytes | None:
        """What is buffered now, without blocking (for a reader on the loop).

        ``b""`` once the body is complete and read, None while nothing is
        buffered and more is to come; raises ClientDisconnected after an abort.
        """
        with self._cond:
            if self._buffered:
                return self._take(-1)
            if self._aborted:
                raise self._disconnected()
            if self._finished:
                return b""
            if self.on_first_wait is not None:
                self._first_wait()
            return None

    @property
    def finished(self) -> bool:
        return self._finished

    # -- the reader's side --------------------------------------------------------

    def readable(self) -> bool:
        return True

    def _take(self, size: int) -> bytes:
        """Up to ``size`` bytes (-1: all that is buffered); caller holds the lock."""
        if size < 0 or size >= self._buffered:
            data = b"".join(self._chunks)
            self._chunks.clear()
        else:
            parts = []
            need = size
            while need:
                chunk = self._chunks[0]
                if len(chunk) <= need:
                    parts.append(self._chunks.popleft())
                    need -= len(chunk)
                else:
                    parts.append(chunk[:need])
                    self._chunks[0] = chunk[need:]
                    need = 0
            data = b"".join(parts)
        self._buffered -= len(data)
        if self._paused and self._buffered <= self._window // 2:
            self._paused = False
            self._resume()
        return data

    def _wait(self, enough: Callable[[], bool]) -> None:
        while not enough():
            if self._aborted:
                raise self._disconnected()
            if self._finished:
                return
            if self.on_first_wait is not None:
                self._first_wait()
            self._cond.wait()

    def _disconnected(self) -> ClientDisconnected:
        if self._refused is not None:
            return ClientDisconnected(f"the body was refused: {self._refused}", refused=True)
        return ClientDisconnected("the client disconnected before the body was complete")

    def _first_wait(self) -> None:
        callback = self.on_first_wait
        self.on_first_wait = None
        if callback is not None:
            callback()

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all, when -1 or None), blocking for them."""
        if size is None:
            size = -1
        with self._cond:
            if size < 0:
                self._wait(lambda: False)
                return self._take(-1)
            self._wait(lambda: self._buffered >= size)
            return self._take(size)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, size: int | None = -1) -> bytes:
        """One line (with its newline), at most ``size`` bytes."""
        if size is None:
            size = -1
        with self._cond:

            def has_line() -> bool:
                if 0 <= size <= self._buffered:
                    return True
                return any(b"\n" in chunk for chunk in self._chunks)

            self._wait(has_line)
            joined = b"".join(self._chunks)
            end = joined.find(b"\n") + 1 or len(joined)
            if 0 <= size < end:
                end = size
            self._chunks.clear()
            if end < len(joined):
                self._chunks.append(joined[end:])
            self._buffered = len(joined)
            return self._take_prefix(joined, end)

    def _take_prefix(self, joined: bytes, end: int) -> bytes:
        self._buffered -= end
        if self._paused and self._buffered <= self._window // 2:
            self._paused = False
            self._resume()
        return joined[:end]

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = []
        total = 0
        for line in self:
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while True:
            line = self.readline()
            if not line:
                return
            yield line
