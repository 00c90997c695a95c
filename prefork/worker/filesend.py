"""Zero-copy file bodies: ``os.sendfile`` from a regular file straight into the socket.

One mechanism for every interface: WSGI's ``wsgi.file_wrapper`` and ASGI's
``http.response.pathsend`` both end in :meth:`HTTPConnection.send_file
<prefork.worker.connection.HTTPConnection.send_file>`, which drives a
:class:`FileSender` from here.  The file's pages go from the page cache to
the socket inside the kernel: the worker never reads them, never holds them
in memory, and its event loop never blocks on them.

Sharing the socket with its transport.  The connection's asyncio (or uvloop)
transport owns the socket, and neither loop lets a file be sent on a
transport's socket: uvloop has no ``loop.sendfile`` at all and refuses
``add_writer`` on a transport's descriptor, asyncio's ``loop.sendfile`` is a
coroutine tied to its own transports.  So the sender works beside the
transport, under three rules the connection keeps:

* it starts only once the transport's write buffer is empty (bytes already
  handed to the transport go first);
* nothing is written to the transport while it runs (the connection holds
  such writes and writes them after the file);
* it works on a duplicate of the socket's descriptor: that one it may watch
  with ``add_writer`` (the socket is non-blocking: the descriptors share the
  open file), and it stays valid even if the transport closes its own in the
  meantime, until :meth:`FileSender.cancel` closes it.

Back-pressure is the socket's: each ``os.sendfile`` call sends what fits in
the socket's buffer; when it is full the sender waits for the descriptor to
become writable (one ``add_writer`` for the whole file), and the loop serves
other connections meanwhile.  At most :data:`MAX_CALL` bytes go per turn of
the loop, so one fast client cannot keep the loop to itself.

The head that precedes the file (status line and headers) is sent with
``MSG_MORE`` where the platform has it, so that it leaves in the same TCP
segment as the first bytes of the file rather than as a small one of its own.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_CALL",
    "SENDFILE",
    "FileSender",
    "SendfileUnavailable",
    "regular_file_fd",
    "transport_socket",
]

#: ``os.sendfile`` exists here (Linux, macOS, the BSDs).
SENDFILE = hasattr(os, "sendfile")
#: The most bytes one ``os.sendfile`` call is asked for: the loop turns to its
#: other connections between calls.
MAX_CALL = 4 * 1024 * 1024

_MSG_MORE = getattr(socket, "MSG_MORE", 0)
# Errors of a first os.sendfile call that mean "not with this file or socket"
# (a file system without sendfile support, say): nothing was sent, the
# caller can still send the file by reading it.
_UNAVAILABLE = frozenset(
    code
    for code in (
        errno.EINVAL,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
        errno.ENOTSOCK,
        errno.EOVERFLOW,
    )
)


class SendfileUnavailable(OSError):
    """``os.sendfile`` refused this file or socket before sending anything.

    Nothing of the file went out: the caller may send it by reading it.
    """


def regular_file_fd(file: Any) -> int | None:
    """The descriptor of ``file`` when it is a regular file (what sendfile reads), else None.

    ``file`` is a file object (anything with ``fileno()``); a BytesIO, a
    pipe, a socket or an object whose ``fileno()`` fails gives None.
    """
    fileno = getattr(file, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
        if not isinstance(fd, int) or fd < 0:
            return None
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, TypeError):  # (io.UnsupportedOperation is both)
        return None
    return fd if stat.S_ISREG(mode) else None


def transport_socket(transport: Any) -> Any:
    """The socket under a plain transport (None: none, or a TLS transport)."""
    if transport is None or transport.get_extra_info("sslcontext") is not None:
        return None
    sock = transport.get_extra_info("socket")
    if sock is None or sock.type != socket.SOCK_STREAM:
        return None
    return sock


class FileSender:
    """Sends ``count`` bytes of the file ``fd`` from ``offset`` to a socket, from the loop.

    ``sock`` is the transport's socket (see the module's docstring for how
    the two share it).  ``fd`` belongs to the sender from now on: it is
    closed when the sender is done, whatever the outcome.  ``progress(sent)``
    runs after each call that sent something; ``done(sent, error)`` runs once,
    at the end: ``error`` None when all ``count`` bytes went (or the file
    ended before: then ``sent < count``), a :class:`SendfileUnavailable`
    when sendfile refused before sending anything, another ``OSError`` when
    the socket failed, ``ConnectionError`` after :meth:`cancel`.
    """

    __slots__ = (
        "_loop",
        "_sock",
        "_fd",
        "_offset",
        "_remaining",
        "_progress",
        "_done",
        "_out",
        "_head",
        "_watching",
        "sent",
    )

    def __init__(
        self,
        loop: Any,
        sock: Any,
        fd: int,
        offset: int,
        count: int,
        progress: Callable[[int], Any] | None,
        done: Callable[[int, BaseException | None], Any],
    ) -> None:
        self._loop = loop
        self._sock = sock
        self._fd: int | None = fd
        self._offset = offset
        self._remaining = count
        self._progress = progress
        self._done: Callable[[int, BaseException | None], Any] | None = done
        #: our duplicate of the socket (None until :meth:`start`)
        self._out: socket.socket | None = None
        self._head = b""
        self._watching = False
        #: bytes of the file sent so far
        self.sent = 0

    @property
    def finished(self) -> bool:
        return self._done is None

    def start(self, head: bytes = b"") -> None:
        """Send ``head`` (bytes that go before the file), then the file.

        Call it on the loop, with the transport's buffer empty.
        """
        sock = self._sock
        try:
            # Family and type given: the socket object then asks the kernel nothing.
            self._out = socket.socket(sock.family, sock.type, 0, os.dup(sock.fileno()))
        except OSError as exc:
            self._finish(exc)
            return
        self._head = head
        self._pump()

    def _pump(self) -> None:
        out = self._out
        if out is None:  # (finished: a writable event already queued)
            return
        try:
            while self._head:
                sent = out.send(self._head, _MSG_MORE)
                self._head = self._head[sent:]
            asked = min(self._remaining, MAX_CALL)
            sent = os.sendfile(out.fileno(), self._fd, self._offset, asked)  # type: ignore[arg-type]
        except (BlockingIOError, InterruptedError):
            self._wait()
            return
        except OSError as exc:
            if self.sent == 0 and exc.errno in _UNAVAILABLE:
                exc = SendfileUnavailable(exc.errno, f"sendfile: {exc.strerror}")
            self._finish(exc)
            return
        if sent == 0:  # the file ended early (truncated meanwhile)
            self._finish(None)
            return
        self._offset += sent
        self._remaining -= sent
        self.sent += sent
        if self._progress is not None:
            self._progress(self.sent)
        if self._remaining <= 0:
            self._finish(None)
        else:
            # A short count means the socket's buffer is full; a full one, that
            # this turn's share is used: either way, wait until writable.
            self._wait()

    def _wait(self) -> None:
        if not self._watching and self._out is not None:
            self._watching = True
            self._loop.add_writer(self._out.fileno(), self._pump)

    def cancel(self) -> None:
        """Stop now (the connection is closing): ``done`` gets ConnectionError."""
        if self._done is not None:
            self._finish(ConnectionError("the connection closed while a file was being sent"))

    def _finish(self, error: BaseException | None) -> None:
        out, self._out = self._out, None
        if out is not None:
            if self._remaining > 0 and not isinstance(error, ConnectionError):
                # Short (the file ended early, or sendfile refused it): bytes
                # sent "with more to come" (the head's MSG_MORE) must not wait.
                _push(out)
            if self._watching:
                self._watching = False
                self._loop.remove_writer(out.fileno())
            out.close()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        done, self._done = self._done, None
        if done is not None:
            done(self.sent, error)


def _push(sock: socket.socket) -> None:
    """Send what ``MSG_MORE`` left waiting now (setting TCP_NODELAY pushes it)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # (not TCP: nothing waits)
        pass
