"""How long a client may leave its output unread (``send_timeout``).

A client that stops reading leaves the worker holding what it answered:
asyncio's transport buffers it without limit, and a close waits for the
flush for ever.  :class:`SendClock` runs while a transport is over its
high-water mark (``pause_writing``) or closing with output unsent, and
calls back once the output has not moved for ``timeout`` seconds; the
connection then aborts.  Progress counts what the kernel holds too
(:func:`unsent_bytes`), as nginx's ``send_timeout`` counts from the last
successful write: a slow but steady reader is never cut.

One clock per connection, made only when its output first stalls: the
request path pays nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios
from collections.abc import Callable
from typing import Any

__all__ = ["SendClock", "reset", "reset_on_close", "socket_transport", "unsent_bytes"]


def unsent_bytes(transport: Any) -> int:
    """Output not yet read by the client: what the transport holds, plus what
    the kernel holds unacknowledged (``TIOCOUTQ``).  The kernel's part is
    what moves first as a slow client reads: on a fast link its buffer is
    megabytes, and the transport's may not change for seconds."""
    unsent: int = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except (OSError, ValueError):
            return unsent
        unsent += struct.unpack("i", queued)[0]
    return unsent


def socket_transport(transport: Any) -> Any:
    """The socket's own transport under asyncio's TLS transport, else None.

    When a send fails (the client reset the connection), asyncio (not
    uvloop) marks only that lower transport closing: its TLS transport says
    it is open until ``connection_lost``, a turn of the loop later, and
    each write meanwhile goes to the dead socket and is logged from the
    fifth on ("socket.send() raised exception.", a line per write), as an
    application streaming from memory writes many before that turn.  A
    connection asks this one too (once per connection, not per write)."""
    protocol = getattr(transport, "_ssl_protocol", None)
    return getattr(protocol, "_transport", None)


def reset_on_close(transport: Any) -> None:
    """Make the socket's close a reset (``SO_LINGER`` 0): the kernel drops
    what it has not sent and the peer sees RST, not FIN."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except (OSError, ValueError):
            pass  # (already closed, or not a socket that lingers: a plain close)


def reset(transport: Any) -> None:
    """Abort ``transport`` with a reset: a plain abort
    closes the socket with its unsent bytes still queued, and the kernel
    keeps that orphan (megabytes of buffer) probing a zero window for
    minutes while the client, which reads nothing, sees the connection open.
    A reset frees both ends at once (nginx's ``reset_timedout_connection``)."""
    reset_on_close(transport)
    transport.abort()


class SendClock:
    """Calls ``on_stall(unsent)`` when ``transport``'s output has not shrunk
    for ``timeout`` seconds while the clock runs (0: never).

    The owner drops its clock once the connection is lost: the clock holds
    the transport and the owner's callback, a cycle that would keep a closed
    connection (with its TLS buffers) until the cycle collector ran."""

    __slots__ = ("_backlog", "_handle", "_loop", "_on_stall", "_timeout", "_transport")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        transport: Any,
        timeout: float,
        on_stall: Callable[[int], Any],
    ) -> None:
        self._loop = loop
        self._transport = transport
        self._timeout = timeout
        self._on_stall = on_stall
        self._handle: asyncio.TimerHandle | None = None
        self._backlog = 0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        """Start counting (nothing if it runs already)."""
        if self._handle is None and self._timeout > 0:
            self._backlog = unsent_bytes(self._transport)
            self._handle = self._loop.call_later(self._timeout, self._check)

    def stop(self) -> None:
        handle = self._handle
        if handle is not None:
            self._handle = None
            handle.cancel()

    def _check(self) -> None:
        self._handle = None
        transport = self._transport
        if not transport.get_write_buffer_size():
            return  # (drained; the kernel has the rest)
        unsent = unsent_bytes(transport)
        if unsent < self._backlog:  # the client read some: another period
            self.start()
            return
        self._on_stall(unsent)
