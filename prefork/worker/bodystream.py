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
        #: read position in ``_chunks[0]``: a short read or line moves it
        #: instead of copying the rest of the chunk (up to a socket read),
        #: which made reading short lines cost a chunk copy each.
        self._head = 0
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
        self._last_event()

    def abort(self, refused: str | None = None) -> None:
        """No more body: the client left, or (``refused``: the reason, logged
        by the caller) the server refused the rest of it."""
        with self._cond:
            self._aborted = True
            if refused is not None and self._refused is None:
                self._refused = refused
            self._cond.notify_all()
        self._last_event()

    def _last_event(self) -> None:
        """Tell the reader once more, then drop both callbacks: no event comes
        after finish() or abort().  They hold what holds this stream (ASGI's
        ``on_event`` is the cycle's wake-up, the cycle holds the request, the
        request this stream; ``on_first_wait`` holds the request): kept, every
        streamed body left its connection, TLS buffers and all, in a
        reference cycle until the collector ran."""
        callback = self.on_event
        self.on_event = None
        self.on_first_wait = None
        if callback is not None:
            callback()

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
        chunks = self._chunks
        head = self._head
        if size < 0 or size >= self._buffered:
            if head:
                chunks[0] = chunks[0][head:]
            data = b"".join(chunks)
            chunks.clear()
            head = 0
        else:
            parts = []
            need = size
            while need:
                chunk = chunks[0]
                available = len(chunk) - head
                if available <= need:
                    parts.append(chunk[head:] if head else chunk)
                    chunks.popleft()
                    head = 0
                    need -= available
                else:
                    parts.append(chunk[head : head + need])
                    head += need
                    need = 0
            data = b"".join(parts)
        self._head = head
        self._buffered -= len(data)
        if self._paused and self._buffered <= self._window // 2:
            self._paused = False
            self._resume()
        return data

    def _wait_for_more(self) -> bool:
        """Block until bytes are buffered (True) or the body is over (False).

        Raises ClientDisconnected after an abort.  The caller takes what is
        buffered before it waits again: a reader never waits for the buffer
        itself to hold more than it has, since past ``window`` unread bytes
        the socket is paused and only a take resumes it (a read(n) that waited
        for ``n`` > window buffered bytes would wait for ever).
        """
        while not self._buffered:
            if self._aborted:
                raise self._disconnected()
            if self._finished:
                return False
            if self.on_first_wait is not None:
                self._first_wait()
            self._cond.wait()
        return True

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
        """Read up to ``size`` bytes (all, when -1 or None), blocking for them.

        Fewer only at the end of the body.  What ``size`` asks for may exceed
        the window (``read()``, ``read(CONTENT_LENGTH)``): the bytes gathered
        so far are held by the reader, not the stream, which keeps reading.
        """
        if size is None:
            size = -1
        parts = []
        with self._cond:
            while size and self._wait_for_more():
                piece = self._take(size)
                parts.append(piece)
                if size > 0:
                    size -= len(piece)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _line_length(self, limit: int) -> int | None:
        """Bytes up to and with the first newline among the first ``limit``
        buffered bytes (-1: all of them), None if there is none; lock held."""
        seen = 0
        start = self._head
        for chunk in self._chunks:
            stop = len(chunk) if limit < 0 else min(len(chunk), start + limit - seen)
            newline = chunk.find(b"\n", start, stop)
            if newline >= 0:
                return seen + newline - start + 1
            seen += stop - start
            if seen == limit:
                return None
            start = 0
        return None

    def readline(self, size: int | None = -1) -> bytes:
        """One line (with its newline), at most ``size`` bytes.

        A line longer than the window is gathered by the reader while the
        stream keeps reading, as in :meth:`read`.
        """
        if size is None:
            size = -1
        parts = []
        with self._cond:
            while size and self._wait_for_more():
                end = self._line_length(size)
                if end is not None:
                    parts.append(self._take(end))
                    break
                piece = self._take(size)
                parts.append(piece)
                if size > 0:
                    size -= len(piece)
        return b"".join(parts)

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
