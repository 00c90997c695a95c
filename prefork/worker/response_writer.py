"""Writing a connection's responses: the write side of :class:`HTTPConnection`.

:class:`ResponseWriter` is the half of the connection that turns what the
application writes into bytes on the transport: a raw response (its head
read once, with framing and keep-alive decided by the pure
:mod:`prefork.worker.response`), a framed one (``write_headers``: the head
held until the body shows whether it gets a Content-Length or streams
chunked), batching of pipelined answers into one write, a large body beside
its head in one ``writev`` (:data:`SPLIT_BODY`), and files with zero copies
(:mod:`prefork.worker.filesend`).  The reading half, timeouts and the
connection's life are :mod:`prefork.worker.connection`'s; the two share one
object (a mixin: no indirection on the request path).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from prefork.settings import Config
from prefork.worker import filesend
from prefork.worker.httpdate import http_date
from prefork.worker.httputil import HTTPHeaders
from prefork.worker.response import (
    bodyless,
    build_response_head,
    encode_chunk,
    frame_raw,
    frame_response,
)

if TYPE_CHECKING:
    from prefork.worker.bodystream import BodyStream
    from prefork.worker.request import HTTPRequest

__all__ = ["SPLIT_BODY", "ResponseWriter"]

error_log = logging.getLogger("prefork.error")

#: A body at least this large goes to the transport as a buffer of its own,
#: next to the head (never copied into one ``head + body``); a smaller one
#: is joined to its head: one write, one system call (see _send_parts).
#: Measured (uvloop, loopback): below ~32 KiB the join costs no more than
#: writev; from 64 KiB up it costs more and more (+10 us at 128 KiB, tens
#: of us at 1 MiB: a fresh buffer, its page faults and the copy).
SPLIT_BODY = 64 * 1024
# Transport type -> its writelines() joins the pieces into one copy first
# (asyncio's base WriteTransport.writelines; uvloop's writes them with one
# writev, and asyncio's own does from Python 3.12).
_JOINS: dict[type, bool] = {}


def _writelines_joins(transport: Any) -> bool:
    cls = type(transport)
    joins = _JOINS.get(cls)
    if joins is None:
        joins = _JOINS[cls] = getattr(cls, "writelines", None) is asyncio.WriteTransport.writelines
    return joins


# Response states.
_R_NONE = 0  # nothing written yet
_R_RAW_HEAD = 1  # raw bytes written, their head not complete yet
_R_RAW_BODY = 2  # raw head sent, body passing through
_R_FRAMED_HELD = 3  # write_headers() called; head (and one chunk) held back
_R_FRAMED_STREAM = 4  # framed head sent, body streaming


class ResponseWriter:
    """The write side of an HTTP connection (mixed into :class:`HTTPConnection`,
    which sets every attribute below in its ``__init__``)."""

    #: the file being sent with zero copies (send_file), if any: meanwhile
    #: nothing is written to the transport (writes are held in _batch).
    _file_sender: filesend.FileSender | None = None
    #: _batch holds only a raw head written alone (write), until the next write
    _head_held = False

    if TYPE_CHECKING:  # (the connection's, declared for the type checker only)
        config: Config
        transport: Any
        is_tls: bool
        lower_transport: Any
        _loop: asyncio.AbstractEventLoop | None
        _closed: bool
        _draining: bool
        _batch: list[bytes] | None
        _write_callback: Callable[[], Any] | None
        _body_stream: BodyStream | None
        _request: HTTPRequest | None
        _keep_alive: bool
        _resp_state: int
        _resp_status: int
        _resp_bytes: int
        _resp_expected: int | None
        _raw_head: bytearray | None
        _raw_tail: bytes | None
        _chunking: bool
        _bodyless: bool
        _framed: tuple[int, str | None, list[tuple[str, str]]] | None
        _held: bytes | None

        def _close(self, linger: bool = False) -> None: ...

        def _bound_stream(self) -> None: ...

    # -- writing responses -----------------------------------------------------

    def write(self, chunk: bytes, callback: Callable[[], Any] | None = None) -> None:
        """Write response bytes; ``callback`` runs once they have been sent."""
        request = self._request
        if request is None:
            if self._closed:
                return
            raise RuntimeError("write() called with no request in progress (after finish()?)")
        if self._closed:
            return
        lower = self.lower_transport
        if lower is not None and lower.is_closing():
            return  # the client is gone; connection_lost is a loop turn away
        state = self._resp_state
        if state == _R_RAW_BODY:
            expected = self._resp_expected
            if expected is not None and self._resp_bytes + len(chunk) > expected:
                chunk = self._cut_to_length(chunk)
            self._send(chunk)
            if self._head_held:  # (the head held above: it goes now, with this)
                self._head_held = False
                self._flush_batch()
            self._resp_bytes += len(chunk)
            tail = self._raw_tail
            if tail is not None:
                self._raw_tail = (tail + bytes(chunk[-5:]))[-5:]
        elif state <= _R_RAW_HEAD:  # (_R_NONE or _R_RAW_HEAD) a raw head, not sent yet
            data: bytes | bytearray
            if state == _R_NONE:
                data = chunk if type(chunk) is bytes else bytes(chunk)
            else:
                raw = self._raw_head
                assert raw is not None
                raw += chunk
                data = raw
            size = len(data)
            framed = frame_raw(
                data,
                request.method,
                request.version,
                # (answered before the request body was all read: the connection ends)
                self._keep_alive and not self._draining and self._body_stream is None,
            )
            if framed is None:  # the head is not complete yet
                if state == _R_NONE:
                    self._resp_state = _R_RAW_HEAD
                    self._raw_head = bytearray(data)
            else:
                # Every raw response passes here once: the head goes out,
                # with framing and keep-alive as frame_raw decided.
                self._raw_head = None
                data, head, self._keep_alive, self._resp_expected, chunked = framed
                self._resp_status = head.status
                body_bytes = size - head.length
                expected = self._resp_expected
                if expected is not None and body_bytes > expected:
                    self._resp_bytes = 0
                    data = data[: len(data) - body_bytes] + self._cut_to_length(
                        data[len(data) - body_bytes :]
                    )
                    body_bytes = expected
                self._resp_bytes = body_bytes
                # A chunked body must end with the last chunk (see finish): keep its tail.
                self._raw_tail = data[len(data) - min(body_bytes, 5) :] if chunked else None
                self._resp_state = _R_RAW_BODY
                if self._draining:
                    self._bound_stream()
                batch = self._batch  # (self._send, inlined: this is every raw response)
                if batch is None:
                    alone = not body_bytes and self._resp_expected != 0
                    if not alone or head.no_body[request.method == "HEAD"]:
                        self.transport.write(data)
                    else:
                        # The head alone, a body to follow (a large one is written
                        # apart, not copied behind it): held until the next write or
                        # the end of this turn of the loop, so that both leave in one
                        # writev, not the head in a small segment of its own.
                        self._batch = [data]
                        self._head_held = True
                        self._loop.call_soon(self._flush_held)  # type: ignore[union-attr]
                else:
                    batch.append(data)
        elif state == _R_FRAMED_HELD:
            if self._held is None and callback is None:
                # (held: if finish() comes next, the body is whole and gets a
                # Content-Length; a callback asks for it to go now: it streams)
                self._held = bytes(chunk)
                return
            self._start_framed(None)
            self._write_framed_body(chunk)
        else:
            self._write_framed_body(chunk)
        if callback is not None:
            self._on_sent(callback)

    def write_headers(
        self,
        status: int,
        headers: HTTPHeaders | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        """Start a response the server frames: Content-Length when the body
        comes in one piece, chunked when it streams (HTTP/1.1), or
        close-delimited (HTTP/1.0); never a body for HEAD, 1xx, 204, 304."""
        if self._request is None:
            if self._closed:
                return
            raise RuntimeError("write_headers() called with no request in progress")
        if self._closed:
            return  # (as write(): the client is gone, or was refused, see _reject)
        if self._resp_state != _R_NONE:
            raise RuntimeError("write_headers() called after the response started")
        if not isinstance(status, int) or not 200 <= status <= 599:
            # (a 1xx here would be taken for the answer: the client would wait
            # for the final one; an interim 100 is the server's to send)
            raise ValueError(f"write_headers() needs a final status (200-599), got {status!r}")
        if headers is None:
            pairs: list[tuple[str, str]] = []
        elif isinstance(headers, HTTPHeaders):
            pairs = list(headers.get_all())
        elif isinstance(headers, Mapping):
            pairs = [(str(k), str(v)) for k, v in headers.items()]
        else:
            pairs = [(str(k), str(v)) for k, v in headers]
        # Fail now, in the application's frame, on a header that would split
        # the response (nothing has been sent yet).
        build_response_head(status, reason, pairs)
        self._request.response_headers = pairs  # (the post_request hook's resp.headers)
        self._framed = (status, reason, pairs)
        self._resp_status = status
        self._resp_state = _R_FRAMED_HELD
        self._held = None

    def flush_headers(self) -> None:
        """Send a framed head now, with the body piece held back so far.

        ``write_headers`` followed by one ``write`` holds that piece, in case
        ``finish`` follows and the body turns out to be whole (then it gets a
        Content-Length).  A streaming application (server-sent events, ASGI
        ``more_body``) says here that more is coming: chunked, and sent now.
        """
        if self._resp_state == _R_FRAMED_HELD and not self._closed:
            self._start_framed(None)

    def _start_framed(self, whole_body: bytes | None) -> None:
        """Send the framed head, as :func:`frame_response` builds it;
        ``whole_body`` is the body when it is complete (None: it streams)."""
        request = self._request
        framed = self._framed
        assert request is not None and framed is not None
        status, reason, pairs = framed
        response = frame_response(
            status,
            reason,
            pairs,
            request.method,
            request.version,
            # (answered before the request body was all read: the connection ends)
            self._keep_alive and not self._draining and self._body_stream is None,
            whole_body,
            self._date(),
        )
        self._keep_alive = response.keep_alive
        self._chunking = response.chunked
        self._resp_expected = response.expected
        self._bodyless = response.bodyless
        self._resp_state = _R_FRAMED_STREAM
        self._framed = None
        if whole_body is None and self._draining:
            self._bound_stream()
        held, self._held = self._held, None
        if whole_body is not None:
            body = response.body
            if response.expected is not None and len(body) > response.expected:
                body = self._cut_to_length(body)
            self._resp_bytes = len(body)
            if len(body) < SPLIT_BODY:
                self._send(response.head + body)
            else:
                self._send_parts([response.head, body])
        elif held and len(held) >= SPLIT_BODY and not self._bodyless:
            if self._resp_expected is not None and len(held) > self._resp_expected:
                held = self._cut_to_length(held)
            self._resp_bytes += len(held)
            self._send_parts([response.head, *self._body_parts(held)])
        else:
            self._send(response.head)
            if held:
                self._write_framed_body(held)

    def _write_framed_body(self, chunk: bytes) -> None:
        if not chunk or self._bodyless:
            return  # (an empty chunk would end a chunked body)
        expected = self._resp_expected
        if expected is not None and self._resp_bytes + len(chunk) > expected:
            chunk = self._cut_to_length(chunk)
            if not chunk:
                return
        self._resp_bytes += len(chunk)
        if len(chunk) >= SPLIT_BODY:
            self._send_parts(self._body_parts(chunk))
        else:
            self._send(encode_chunk(bytes(chunk)) if self._chunking else chunk)

    def _date(self) -> str | None:
        """The Date of a response the server frames (None: ``--no-date-header``)."""
        return http_date() if self.config.date_header else None

    def _cut_to_length(self, chunk: bytes) -> bytes:
        """The part of ``chunk`` that fits the response's Content-Length.

        Bytes past it would be read by the client, or by a proxy that keeps
        the connection, as the start of the next response: they are dropped,
        the error logged (tornado raises ``HTTPOutputError`` here), and the
        connection closes after the response.
        """
        expected = self._resp_expected
        assert expected is not None
        request = self._request
        if expected == 0 and (
            (request is not None and request.method == "HEAD") or self._resp_status in (204, 304)
        ):
            # No body may follow this head (RFC 9110 9.3.2, 15.3.5, 15.4.5):
            # what the application wrote as one is dropped, quietly (an
            # application written for GET answers HEAD with its body), and
            # the connection goes on.
            return b""
        room = max(0, expected - self._resp_bytes)
        error_log.error(
            "Response body longer than its Content-Length (%d): %d byte(s) dropped: %s %s",
            expected,
            len(chunk) - room,
            request.method if request is not None else "-",
            request.uri if request is not None else "-",
        )
        self._keep_alive = False
        return bytes(chunk[:room])

    def _body_parts(self, chunk: bytes) -> list[bytes]:
        """A large body piece as it goes out, framed around, not copied into a chunk."""
        if type(chunk) is not bytes:
            chunk = bytes(chunk)  # (the application may reuse a bytearray once write() returns)
        if self._chunking:
            return [b"%x\r\n" % len(chunk), chunk, b"\r\n"]
        return [chunk]

    def _send_parts(self, parts: list[bytes]) -> None:
        """Write pieces of which one is large, copying none of them.

        ``writelines`` hands them to the transport as they are (uvloop: one
        ``writev``); where it would join them first (asyncio's
        ``writelines`` before Python 3.12) each piece is written on its own.
        Below :data:`SPLIT_BODY` a join costs less than the extra work per
        piece: callers join small bodies to their head and use :meth:`_send`.
        """
        batch = self._batch
        if batch is not None:
            batch.extend(parts)
        elif _writelines_joins(self.transport):
            for part in parts:
                self.transport.write(part)
        else:
            self.transport.writelines(parts)

    def _send(self, data: bytes) -> None:
        """Write ``data`` to the transport, or hold it for the batch.

        While requests that arrived pipelined in one read are answered in a
        row, their responses are collected and written together when the
        read has been processed (:meth:`_flush_batch`): one system call for
        the batch rather than one per response.  A connection answering one
        request at a time never batches (the batch starts only when a
        response completes with the next request already buffered).
        """
        batch = self._batch
        if batch is None:
            self.transport.write(data)
        else:  # (a copy of a bytearray the application may reuse once write() returns)
            batch.append(data if type(data) is bytes else bytes(data))

    def _flush_batch(self) -> None:
        if self._file_sender is not None:
            return  # (what is held goes after the file: _file_done)
        batch = self._batch
        self._batch = None
        if batch:
            if len(batch) > 1 and _writelines_joins(self.transport):
                if any(len(part) >= SPLIT_BODY for part in batch):
                    for part in batch:  # (a large piece in the batch: no join)
                        self.transport.write(part)
                    return
            self.transport.writelines(batch)

    def output_lost(self) -> bool:
        """The transport is closing, or the socket under asyncio's TLS
        transport already failed (see ``sendclock.socket_transport``): what
        is written now goes nowhere."""
        lower = self.lower_transport
        return bool(self.transport.is_closing()) or (lower is not None and lower.is_closing())

    def _flush_held(self) -> None:
        """The end of the loop turn in which write() held a head: it goes now."""
        if self._head_held:
            self._head_held = False
            if self._batch is not None and not self.transport.is_closing():
                self._flush_batch()

    def _on_sent(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` once the transport's buffer has drained."""
        if self._batch is not None:
            self._flush_batch()
        transport = self.transport
        if transport.get_write_buffer_size() == 0:
            self._loop.call_soon(callback)  # type: ignore[union-attr]
            return
        # A newer callback replaces an older pending one, as in the seed.
        self._write_callback = callback
        # A zero high-water mark makes the transport report the moment its
        # buffer is empty again (resume_writing).
        transport.set_write_buffer_limits(0)

    # -- file bodies, zero copy (prefork.worker.filesend) --------------------------

    def can_send_file(self) -> bool:
        """True when :meth:`send_file` can send here: a plain socket (not TLS)
        and ``os.sendfile``.  Otherwise send a file by reading it."""
        return (
            filesend.SENDFILE
            and not self.is_tls
            and not self._closed
            and filesend.transport_socket(self.transport) is not None
        )

    def send_file(
        self,
        fd: int,
        offset: int,
        count: int,
        callback: Callable[[int, BaseException | None], Any],
        progress: Callable[[int], Any] | None = None,
    ) -> None:
        """Send ``count`` bytes of the regular file ``fd`` from ``offset`` as
        response body, with zero copies (``os.sendfile``).

        The head comes first: ``write_headers`` with a Content-Length (it
        then leaves with the file's first bytes) or raw bytes.  The
        connection owns ``fd`` from now on and closes it.  Once done,
        ``callback(sent, error)`` runs on the loop: ``error`` None (``sent <
        count`` when the file ended early: the connection closes after the
        response), :class:`~prefork.worker.filesend.SendfileUnavailable`
        (no byte of the file sent: send it by reading it; so too on TLS or a
        chunked response), else the socket failed and the connection is
        closed.  ``progress(sent)`` runs as bytes go.  Writes made before
        ``callback`` are held and follow the file.  No body for HEAD, 1xx,
        204, 304.
        """
        loop = self._loop
        request = self._request
        assert loop is not None
        state = self._resp_state
        if request is None or self._closed:
            os.close(fd)
            loop.call_soon(callback, 0, ConnectionError("the connection is closed"))
            return
        if state != _R_FRAMED_HELD and state != _R_FRAMED_STREAM and state != _R_RAW_BODY:
            os.close(fd)
            raise RuntimeError("send_file() needs the response head first")
        if self._head_held:
            self._head_held = False  # (a raw head just written: it goes with the file)
        elif self._batch is not None:
            self._flush_batch()  # (responses to pipelined requests before it)
        if self._batch is None:
            self._batch = []  # held from here: the head goes with the file's first bytes
        if state == _R_FRAMED_HELD:
            self._start_framed(None)
            no_body = self._bodyless
        elif state == _R_FRAMED_STREAM:
            no_body = self._bodyless
        else:
            no_body = bodyless(request.method, self._resp_status)
        sock = filesend.transport_socket(self.transport) if self.can_send_file() else None
        if no_body or count <= 0 or sock is None or self._chunking:
            os.close(fd)
            self._flush_batch()
            error = None
            if not no_body and count > 0:
                error = filesend.SendfileUnavailable(0, "no sendfile on this connection")
            loop.call_soon(callback, 0, error)
            return
        self._file_sender = filesend.FileSender(
            loop, sock, fd, offset, count, progress, functools.partial(self._file_done, callback)
        )
        if self.transport.get_write_buffer_size():
            self._on_sent(self._file_start)  # (what it flushes stays held: _flush_batch)
        else:
            self._file_start()

    def _file_start(self) -> None:
        sender = self._file_sender
        if sender is not None and not sender.finished:
            held = self._batch
            self._batch = []
            sender.start(b"".join(held) if held else b"")

    def _file_done(
        self, callback: Callable[[int, BaseException | None], Any], sent: int, error: Any
    ) -> None:
        self._file_sender = None
        self._resp_bytes += sent
        if self._raw_tail is not None:
            self._raw_tail = b""  # (a raw chunked body: the file's bytes are not its end)
        held, self._batch = self._batch, None
        if error is not None and not isinstance(error, filesend.SendfileUnavailable):
            self._close()
        elif held and not self._closed:
            self._send_parts(held)
        callback(sent, error)
