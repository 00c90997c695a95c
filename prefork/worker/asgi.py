"""ASGI 3: serve ``async app(scope, receive, send)`` on a worker's event loop.

``HTTPServer(ASGIAdapter(app))`` serves an ASGI application; the command
line does the same with ``--interface asgi`` (or ``auto``).  The adapter is a
request callback like every interface: the connection hands it each request
as soon as the head has arrived, and the application runs as a task on the
worker's loop.

* ``receive()`` gives the body as it streams in (``http.request`` events with
  ``more_body``); the connection stops reading from the socket while the
  application leaves more than a window of body unread, so an upload never
  has to fit in memory.  Once the body is read, ``receive()`` waits for the
  client to go or end its side (``http.disconnect``; a half-closed client
  still gets the answer), or for the response to be complete.  A body the
  client cuts short (or sends too slowly) ends in ``http.disconnect`` too.
* ``send()`` takes ``http.response.start`` / ``http.response.body``
  (streamed with ``more_body``, waiting while the socket's buffer is full:
  back-pressure) and ``http.response.pathsend`` (a regular file on a plain
  socket goes with zero copies, ``os.sendfile``: see the connection's
  ``send_file``).  The framing (Content-Length or chunked, nothing for
  HEAD/1xx/204/304, keep-alive) is the server's own, the same as for every
  other interface.
* An application that misbehaves (a second start, a body before the start,
  a body that is not bytes, an exception, returning without a response) is
  answered as uvicorn answers it: 500 when nothing was sent, a closed
  connection otherwise, the traceback in ``prefork.error``.
* A WebSocket upgrade goes to :func:`prefork.worker.websocket.serve_websocket`.
* The scope is :mod:`prefork.worker.asgi_scope`'s; lifespan (``startup``
  before the worker reports ready, ``shutdown`` when it stops) is
  :mod:`prefork.worker.asgi_lifespan`'s :class:`Lifespan`, which the worker
  runner drives through the adapter.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prefork.settings import DEFAULTS, Config
from prefork.worker.asgi_lifespan import Lifespan, LifespanFailure
from prefork.worker.asgi_scope import build_scope, is_websocket_upgrade
from prefork.worker.bodystream import ClientDisconnected
from prefork.worker.filesend import SendfileUnavailable, regular_file_fd
from prefork.worker.http1 import _FORBIDDEN_CTL, _TOKEN
from prefork.worker.httpdate import date_line
from prefork.worker.request import HTTPRequest
from prefork.worker.response import REASONS, bodyless
from prefork.worker.response_writer import SPLIT_BODY

__all__ = ["ASGIAdapter", "ClientGone", "Lifespan", "LifespanFailure", "is_websocket_upgrade"]

error_log = logging.getLogger("prefork.error")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[Any],
]

#: Unsent bytes in the socket's buffer above which ``send()`` waits.
HIGH_WATER = 64 * 1024
#: A streaming application gives the loop a turn after this many body bytes
#: that did not have to wait for the client (see ``send``).
YIELD_EVERY = 1 << 20
#: Bytes of a file read at a time for ``http.response.pathsend``.
FILE_CHUNK = 256 * 1024
#: Seconds the applications still running at shutdown have to end once cancelled.
CANCEL_GRACE = 2.0


class _NoTransport:
    """Stands in for a transport when the connection has none (tests)."""

    @staticmethod
    def get_write_buffer_size() -> int:
        return 0


def _status_line(status: int) -> bytes:
    line = b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Unknown").encode())
    if len(_STATUS_LINES) < 256:
        _STATUS_LINES[status] = line
    return line


_STATUS_LINES: dict[int, bytes] = {}


#: status + headers -> the checked head without its blank line, and whether
#: the application gave its own ``date``; an application answers most
#: requests with a few recurring header lists (bounded: an application that
#: varies its headers per request just misses).
_HEADS: dict[tuple[Any, ...], tuple[bytes, bool]] = {}
#: header names already seen to be tokens (a few recur in every response)
_TOKEN_NAMES: set[bytes] = set()


def _content_length(value: bytes | bytearray, earlier: int | None) -> int:
    """An application's Content-Length value: digits, and the same if given twice.

    A response with a length the client cannot read (RFC 9112 6.3: a proxy
    must reject it) or two different ones is the application's error, a 500.
    """
    value = value.strip(b" \t")  # (whitespace around a field value is not part of it)
    if not value.isdigit() or (earlier is not None and int(value) != earlier):
        raise ValueError(
            f"ASGI: invalid or conflicting Content-Length in the response headers: {bytes(value)!r}"
        )
    return int(value)


def _raw_head(status: int, headers: Any) -> tuple[bytes, bool]:
    """The status line and header lines of an ASGI response, checked once per
    distinct (status, headers): a name that is not a token, or a CR, LF or
    other control character in a value (which could split the response), is
    a ValueError.  With it: whether a ``date`` is among them."""
    try:
        key: tuple[Any, ...] | None = (status, *headers)
        known = _HEADS.get(key)  # type: ignore[arg-type]
    except TypeError:  # a pair given as a list: unhashable, built every time
        key = known = None
    if known is not None:
        return known
    parts = [_STATUS_LINES.get(status) or _status_line(status)]
    append = parts.append
    dated = False
    for name, value in headers:
        if type(name) is not bytes or name not in _TOKEN_NAMES:  # (a bytearray: unhashable)
            if _TOKEN.fullmatch(name) is None:
                # (a space or colon in a name: the client would misread the head)
                raise ValueError(f"ASGI: invalid response header name {bytes(name)!r}")
            if len(_TOKEN_NAMES) < 1024 and type(name) is bytes:
                _TOKEN_NAMES.add(name)
        append(bytes(name))
        append(b": ")
        append(bytes(value))
        append(b"\r\n")
        if len(name) == 4 and bytes(name).lower() == b"date":
            dated = True
    lines = len(headers) + 1  # the status line and the headers
    head = b"".join(parts)
    # One scan each, in C: CR and LF only where the lines end, no other
    # control character but HTAB (as the framed path, response.py, checks).
    if head.count(b"\n") != lines or head.count(b"\r") != lines or _FORBIDDEN_CTL.search(head):
        raise ValueError("ASGI: a response header value holds CR, LF or a control character")
    if key is not None and len(_HEADS) < 256:
        _HEADS[key] = (head, dated)
    return head, dated


class ClientGone(OSError):
    """``send()`` after the client disconnected (ASGI spec 2.4: an OSError)."""


# ---------------------------------------------------------------------- HTTP


class _HTTPCycle:
    """One request and its response, between the application and the connection."""

    # Class-level defaults: a request sets only what differs from them.
    started = False
    complete = False
    disconnected = False
    #: the client ended its side (EOF, perhaps a half-close): receive() says
    #: http.disconnect once the body is read, but the answer can still be sent.
    ended = False
    status = 0
    headers: Any = ()
    body_sent = False
    bodyless = False
    _body_done = False
    _waiter: asyncio.Future[None] | None = None
    _has_length = False
    #: the Content-Length the application gave (None: none, or trailers follow)
    _length: int | None = None
    #: body bytes the application has sent, counted against ``_length``
    _sent = 0
    #: streamed body bytes sent since the task last gave the loop a turn
    _streamed = 0
    #: the server adds a ``date`` header (``--date-header``) unless the
    #: application gave one
    send_date = True
    #: the application announced trailers (``trailers: True`` in the start)
    _trailers = False
    #: the body is complete and the trailers are awaited
    _awaiting_trailers = False
    _trailer_fields: list[tuple[str, str]] | None = None
    #: the head must go through the server's framing (the application gave a
    #: Transfer-Encoding, or a Content-Length with a 204): see ``_start``
    _reframe = False
    #: the task running the application (kept in ASGIAdapter._tasks until it ends)
    task: asyncio.Task[None] | None = None

    def __init__(self, request: HTTPRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        conn = self.conn = request.connection
        self.loop = loop
        if conn is not None:
            self.transport: Any = conn.transport
            conn.set_close_callback(self._on_close)
            conn.set_eof_callback(self._on_eof)
        else:
            self.transport = _NoTransport
        stream = request.body_stream
        if stream is not None:
            stream.on_event = self._wake

    # -- events from the connection -------------------------------------------------
    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_close(self) -> None:
        self.disconnected = True
        self._wake()

    def _on_eof(self) -> None:
        self.ended = True
        self._wake()

    async def _wait(self) -> None:
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    # -- receive ---------------------------------------------------------------------
    async def receive(self) -> Message:
        if not self._body_done:
            stream = self.request.body_stream
            if stream is None:
                self._body_done = True
                return {
                    "type": "http.request",
                    "body": self.request.body or b"",
                    "more_body": False,
                }
            while True:
                try:
                    data = stream.read_nowait()
                except ClientDisconnected:
                    self._body_done = True
                    self.disconnected = True
                    return {"type": "http.disconnect"}
                if data is not None:
                    # (feed and finish happen on this thread: no race here)
                    more = bool(data) and not stream.finished
                    if not more:
                        self._body_done = True
                    return {"type": "http.request", "body": data, "more_body": more}
                if self.disconnected:
                    self._body_done = True
                    return {"type": "http.disconnect"}
                await self._wait()
        # The body is read: what comes next is the client going away (or the
        # response being complete, after which nothing more will come).
        while not self.disconnected and not self.ended and not self.complete:
            await self._wait()
        return {"type": "http.disconnect"}

    # -- send -------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("ASGI: 'http.response.body' sent before 'http.response.start'")
            if self.complete:
                raise RuntimeError(
                    "ASGI: 'http.response.body' sent after the response was complete"
                )
            body = message.get("body", b"")
            if type(body) is not bytes:
                if not isinstance(body, bytearray | memoryview):
                    raise TypeError(f"ASGI: 'body' must be bytes, got {type(body).__name__}")
                body = bytes(body)
            more = message.get("more_body", False)
            if self.disconnected:  # (fail() then finishes the request)
                raise ClientGone("the client disconnected")
            length = self._length
            if length is not None and not self.bodyless:
                sent = self._sent + len(body)
                if sent > length or (sent < length and not more):
                    self._count(len(body), more)  # (raises: says which)
                self._sent = sent
            if not self.body_sent:
                self._start(body, more)
            elif body and not self.bodyless:
                self.request.write(body)
            if more:
                transport = self.transport
                if transport.get_write_buffer_size() > HIGH_WATER:
                    await self._drain()
                elif transport.is_closing() if self.conn is None else self.conn.output_lost():
                    # Reset by the client or cut by the drain (a refused
                    # connection that lingers ran _on_close already: the
                    # disconnected check above): what is written
                    # goes nowhere and the buffer never fills, so an application
                    # streaming from memory would never give the loop a turn in
                    # which connection_lost could tell it (the worker froze).
                    self.disconnected = True
                    raise ClientGone("the client disconnected")
                else:
                    self._streamed += len(body)
                    if self._streamed >= YIELD_EVERY:
                        # A fast reader keeps the buffer empty: without a
                        # suspension now and then, one stream would hold the
                        # worker's other connections for its whole length.
                        self._streamed = 0
                        await asyncio.sleep(0)
            elif self._trailers:
                self._awaiting_trailers = True  # the end goes with the trailers
            else:
                self.complete = True
                self.request.finish()
                if self._waiter is not None:
                    self._wake()
            return
        if kind == "http.response.start":
            if self.started:
                raise RuntimeError("ASGI: 'http.response.start' sent twice")
            status = message.get("status")
            if type(status) is not int or not 200 <= status <= 599:
                # (1xx: an interim answer is the server's to send, never the
                # response: a 101 would switch the client to another protocol;
                # 600-999 are no HTTP status, RFC 9110 15: as the denial response)
                raise TypeError(f"ASGI: invalid status {status!r} in 'http.response.start'")
            headers = message.get("headers", ())
            declared: int | None = None
            for pair in headers:
                name, value = pair
                if type(name) is not bytes or type(value) is not bytes:
                    if not isinstance(name, bytes | bytearray) or not isinstance(
                        value, bytes | bytearray
                    ):
                        raise TypeError(f"ASGI: response headers must be bytes pairs, got {pair!r}")
                size = len(name)  # (the two framing names are told apart by length first)
                if size == 14 and name.lower() == b"content-length":
                    if declared is None and value.isdigit():
                        declared = int(value)
                    else:
                        if declared is not None:
                            # The same length twice goes out once (nginx refuses
                            # an upstream's duplicate): the framed path sends one.
                            self._reframe = True
                        declared = _content_length(value, declared)
                elif size == 17 and name.lower() == b"transfer-encoding":
                    # The framing is the server's: chunked (or the close on
                    # HTTP/1.0) as for any streamed body, never this header
                    # beside a Content-Length the client would have to choose from.
                    self._reframe = True
            self.started = True
            self.status = status
            self.headers = headers
            self.bodyless = bodyless(self.request.method, status)
            if status == 204 and declared is not None:
                self._reframe = True  # (the framing drops it: RFC 9110 8.6)
                declared = None
            if message.get("trailers", False):
                self._trailers = True  # (chunked then: the length gives way)
            elif declared is not None:
                self._has_length = True
                self._length = declared
            if not self._has_length and not self.bodyless:
                # No length: a body that streams, most often (server-sent
                # events). The head waits for the first piece only until this
                # turn of the loop ends (one write, and a Content-Length if the
                # body comes whole); then it goes alone, as uvicorn sends it.
                self.loop.call_soon(self._head_now)
            return
        if kind == "http.response.trailers":
            self._add_trailers(message)
            return
        if kind == "http.response.pathsend":
            if not self.started:
                raise RuntimeError("ASGI: 'http.response.pathsend' sent before the start")
            if self.complete:
                raise RuntimeError("ASGI: 'http.response.pathsend' after the response was complete")
            await self._send_file(message.get("path"))
            return
        raise RuntimeError(f"ASGI: unexpected message type {kind!r} for an HTTP request")

    def _count(self, size: int, more: bool) -> None:
        """Hold the body to the application's Content-Length, before it is written.

        More bytes than it said would be read by the client (or a proxy
        reusing the connection) as the start of the next response, so they
        are never sent; fewer, at the end, would leave the client waiting.
        Either is the application's error: a 500 if nothing went out yet,
        else the connection is cut (see ``fail``).
        """
        length = self._length
        sent = self._sent + size
        if sent > length:  # type: ignore[operator]
            raise RuntimeError(
                f"ASGI: the response body is longer than its Content-Length ({length})"
            )
        if not more and sent < length:  # type: ignore[operator]
            raise RuntimeError(
                f"ASGI: the response body is shorter than its Content-Length "
                f"({sent} of {length} bytes)"
            )
        self._sent = sent

    def _head_now(self) -> None:
        """The turn of ``http.response.start`` is over and no body came: the
        head goes now (chunked: the body streams), so that the client sees the
        answer begin before the application has anything to say."""
        if self.body_sent or self.complete or self.disconnected or self.request.timed_out:
            return
        try:
            self._start(b"", True)
        except ValueError:
            # A header that would split the response: nothing was sent, and the
            # application's next send() raises the same error, in its own frame.
            pass

    def _start(self, body: bytes, more: bool) -> None:
        """Send the head (and the first piece of the body).

        With a Content-Length (the application's, or ours for a body in one
        piece) the head is written as raw bytes: the connection reads and
        caches identical heads once, which is the fast path.  A large body
        (``SPLIT_BODY``) is written after its head, never copied behind it.
        A streamed body without a length goes through the framed path
        (chunked on HTTP/1.1), as does a head whose framing headers the
        server must replace (``_reframe``).
        """
        request = self.request
        status = self.status
        if (self._has_length or not more) and not self._trailers and not self._reframe:
            data, dated = _raw_head(status, self.headers)
            if self.send_date and not dated:
                data += date_line()
            if not self._has_length and (
                not self.bodyless
                # HEAD answered with GET's whole body: its length is GET's
                # (an empty one may be a HEAD-aware application's: none then)
                or (body and request.method == "HEAD" and not bodyless("GET", status))
            ):
                data += b"content-length: %d\r\n\r\n" % len(body)
            else:
                data += b"\r\n"
            if body and not self.bodyless:
                if len(body) < SPLIT_BODY:
                    data += body
                else:
                    request.write(data)
                    data = body
            self.body_sent = True
            request.write(data)
            return
        pairs = [(bytes(n).decode("latin-1"), bytes(v).decode("latin-1")) for n, v in self.headers]
        if self._trailers:
            # Trailers follow a chunked body only: the length, if any, goes.
            pairs = [(n, v) for n, v in pairs if n.lower() != "content-length"]
        request.write_headers(status, pairs)  # (a CR or LF raises ValueError here)
        self.body_sent = True
        if body:
            request.write(body)
        if self.conn is not None:
            self.conn.flush_headers()  # streaming: the head and this piece go now

    def _add_trailers(self, message: Message) -> None:
        """``http.response.trailers``: collect them; the last message ends the response."""
        if not self._awaiting_trailers or self.complete:
            raise RuntimeError(
                "ASGI: 'http.response.trailers' before the end of a body announced with "
                "'trailers': True"
            )
        fields = self._trailer_fields
        if fields is None:
            fields = self._trailer_fields = []
        for pair in message.get("headers", ()):
            name, value = pair
            if not isinstance(name, bytes | bytearray) or not isinstance(value, bytes | bytearray):
                raise TypeError(f"ASGI: trailers must be bytes pairs, got {pair!r}")
            fields.append((bytes(name).decode("latin-1"), bytes(value).decode("latin-1")))
        if message.get("more_trailers", False):
            return
        if self.disconnected:
            raise ClientGone("the client disconnected")
        self._awaiting_trailers = False
        # A forbidden or malformed trailer raises ValueError here, before
        # anything is sent: the application's error then cuts the response.
        self.request.finish(fields)
        self.complete = True
        if self._waiter is not None:
            self._wake()

    async def _drain(self) -> None:
        """Wait while the socket's buffer is over the high-water mark (back-pressure)."""
        conn = self.conn
        transport = self.transport
        if conn is None:
            return
        while not self.disconnected and transport.get_write_buffer_size() > HIGH_WATER:
            waiter = self._waiter = self.loop.create_future()
            conn.write(b"", self._wake)  # _wake runs once the buffer has drained
            try:
                await waiter
            finally:
                self._waiter = None
        if self.disconnected:
            raise ClientGone("the client disconnected")

    async def _send_file(self, path: Any) -> None:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise TypeError(f"ASGI: 'http.response.pathsend' needs an absolute path, got {path!r}")
        with open(path, "rb") as file:  # noqa: ASYNC230 - a local file, read in pieces
            size = os.fstat(file.fileno()).st_size
            if not self._has_length:
                self.headers = [*self.headers, (b"content-length", b"%d" % size)]
                self._has_length = True
                if not self._trailers:
                    self._length = size
            if not await self._send_file_zero_copy(file, size):
                while True:  # read it in pieces
                    chunk = file.read(FILE_CHUNK)
                    if not chunk:
                        break
                    await self.send(
                        {"type": "http.response.body", "body": chunk, "more_body": True}
                    )
        await self.send({"type": "http.response.body", "body": b""})

    async def _send_file_zero_copy(self, file: Any, size: int) -> bool:
        """Send the file with ``os.sendfile`` (the connection's send_file).

        False when it cannot (TLS, not a regular file, the head already out,
        sendfile refusing the file): then it is read in pieces.
        """
        conn = self.conn
        if conn is None or self.body_sent or not conn.can_send_file():
            return False
        if regular_file_fd(file) is None:
            return False
        counted = self._length is not None and not self.bodyless
        if counted:
            self._count(size, True)  # (the file's bytes, against the length)
        self._start(b"", True)  # the head, with its length (none after HEAD: send_file knows)
        done: asyncio.Future[BaseException | None] = self.loop.create_future()

        def sent(count: int, error: BaseException | None) -> None:
            if not done.done():
                done.set_result(error)

        conn.send_file(os.dup(file.fileno()), 0, size, sent)
        error = await done
        if isinstance(error, SendfileUnavailable):
            if counted:
                self._sent -= size  # (read in pieces instead: counted as they go)
            return False
        if error is not None:  # (the connection is closed)
            self.disconnected = True
            raise ClientGone("the client disconnected") from error
        return True

    # -- the end ----------------------------------------------------------------------
    def fail(self) -> None:
        """The application raised or returned without completing its response."""
        request = self.request
        if self.complete:
            return
        self.complete = True
        if (not self.started or not self.body_sent) and not self.disconnected and not self.ended:
            request.write_headers(
                500,
                [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")],
            )
            request.write(b"Internal Server Error\n")
        elif self.conn is not None:
            # The response cannot be completed (or the client that ended its
            # side is not waiting for one): the client sees a close (a
            # reset where only the close would end the body: HTTP/1.0).
            self.conn.abort_response()
        request.finish()
        self._wake()


def is_asgi2(app: Any) -> bool:
    """An ASGI 2 ("double callable") application: a class called with the
    scope, whose instance is awaited with ``(receive, send)`` (Channels 2
    era).  An ASGI 3 application is an instance or a function, or a class
    whose instance is itself awaitable (``__await__``), as uvicorn decides."""
    import inspect

    return (
        inspect.isclass(app)
        and not hasattr(app, "__await__")
        and inspect.iscoroutinefunction(getattr(app, "__call__", None))  # noqa: B004 - the method
    )


def asgi2_to_3(app: Any) -> ASGIApp:
    """Serve an ASGI 2 application as ASGI 3."""

    async def asgi3(scope: Scope, receive: Any, send: Any) -> None:
        instance = app(scope)
        await instance(receive, send)

    asgi3.__qualname__ = f"asgi2_to_3({getattr(app, '__qualname__', app)!s})"
    return asgi3


class ASGIAdapter:
    """A request callback that serves an ASGI 3 application (see the module
    docstring); an ASGI 2 one (:func:`is_asgi2`) is wrapped to look like one."""

    #: the connection calls us at the request head and streams the body.
    streams_request_body = True

    def __init__(
        self,
        app: ASGIApp,
        config: Config | None = None,
        state: dict[str, Any] | None = None,
    ) -> None:
        if is_asgi2(app):
            app = asgi2_to_3(app)
        self.app = app
        self.config = config or DEFAULTS
        #: the lifespan state, shallow-copied into every request's scope
        self.state: dict[str, Any] = {} if state is None else state
        self.lifespan = Lifespan(app, self.config.lifespan, self.state)
        self._tasks: set[asyncio.Task[None]] = set()
        #: shutdown() is cancelling what still runs: a cancellation is no error
        self._stopping = False
        #: --request-timeout is on: each request's task can be cancelled by it
        self._timed = bool(self.config.request_timeout)
        self._date_header = self.config.date_header
        self._loop: asyncio.AbstractEventLoop | None = None
        self._websocket: Any = None

    async def startup(self) -> None:
        """The lifespan startup (``--lifespan``); raises LifespanFailure.

        The CLI runs it before a worker accepts its first connection.  From
        Python: ``loop.run_until_complete(adapter.startup())`` before serving.
        """
        await self.lifespan.startup()

    #: seconds a graceful stop keeps for :meth:`shutdown` before the master's
    #: kill (the worker closes what is still open that much earlier): the
    #: cancelled applications' cleanup, then the lifespan shutdown
    shutdown_reserve = CANCEL_GRACE + 1.0

    async def shutdown(self, timeout: float | None = None) -> None:
        """The lifespan shutdown, once the server has stopped serving.

        Applications still running then (their connections are closed: a
        stream cut at the drain's bound, a request past the graceful
        timeout) are cancelled first and given :data:`CANCEL_GRACE` (at most
        half of ``timeout``, the time left) to end, so that their own cleanup
        (``finally``, a streaming generator's close) runs before the
        resources it needs go with the lifespan.
        """
        tasks = [task for task in self._tasks if not task.done()]
        if tasks:
            self._stopping = True
            for task in tasks:
                task.cancel()
            grace = CANCEL_GRACE if timeout is None else min(CANCEL_GRACE, timeout / 2)
            await asyncio.wait(tasks, timeout=grace)
        await self.lifespan.shutdown()

    def __call__(self, request: HTTPRequest) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_event_loop()
        if is_websocket_upgrade(request):
            coro = self._serve_websocket(request)
        else:
            scope = build_scope(request, "http", self.config.root_path, self.state)
            cycle = _HTTPCycle(request, loop)
            if not self._date_header:
                cycle.send_date = False
            # A plain task, started on the loop's next turn: an eager one
            # (3.12+) answers inside this read callback, which interleaves
            # reads and writes and measured ~15% slower under load (more
            # kernel time per write); this way a turn's answers go out together.
            task = cycle.task = loop.create_task(self._serve_http(scope, cycle))
            self._tasks.add(task)  # (_serve_http discards it when it ends)
            if self._timed:
                request.on_timeout = task.cancel  # --request-timeout (the connection answers)
            return
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._timed:
            request.on_timeout = task.cancel

    async def _serve_http(self, scope: Scope, cycle: _HTTPCycle) -> None:
        try:
            try:
                result = await self.app(scope, cycle.receive, cycle.send)
            except BaseException as exc:
                if cycle.request.timed_out or (
                    self._stopping and isinstance(exc, asyncio.CancelledError)
                ):
                    # --request-timeout cancelled it: the connection answered 503
                    # (or closed) and logged it; or the worker stopped with it still
                    # running (shutdown()). Nothing is left to do.
                    return
                if cycle.disconnected and not cycle.complete and isinstance(exc, Exception):
                    # The client left and the application stopped on it (our
                    # ClientGone, or the framework's own ClientDisconnect): no
                    # error.  Once the response is whole, what fails (a
                    # framework's background task) is the application's own.
                    cycle.fail()
                    return
                request = cycle.request
                error_log.error(
                    "Exception in ASGI application: %s %s from %s",
                    request.method,
                    request.uri,
                    request.remote_ip,
                    exc_info=not isinstance(exc, asyncio.CancelledError),
                )
                cycle.fail()
                if not isinstance(exc, Exception):
                    raise
                return
            if result is not None:
                error_log.error("ASGI application returned a value (%r) instead of None", result)
            if cycle._awaiting_trailers and not cycle.disconnected:
                error_log.error(
                    "ASGI application announced trailers but sent none: %s %s",
                    cycle.request.method,
                    cycle.request.uri,
                )
                cycle._awaiting_trailers = False
                cycle.complete = True
                cycle.request.finish()  # the body ends without them, whole
                return
            if not cycle.complete and not cycle.request.timed_out:
                if not cycle.disconnected and not cycle.ended:  # (it stopped on http.disconnect)
                    error_log.error(
                        "ASGI application returned without completing its response: %s %s",
                        cycle.request.method,
                        cycle.request.uri,
                    )
                cycle.fail()
        finally:
            # The strong reference ends with the task (asyncio keeps only weak
            # ones); discarded here rather than by a done-callback, which would
            # cost a loop trip per request.
            self._tasks.discard(cycle.task)  # type: ignore[arg-type]

    async def _serve_websocket(self, request: HTTPRequest) -> None:
        if self._websocket is None:
            # Imported on the first upgrade: its frame library is an optional extra.
            import importlib

            try:
                module = importlib.import_module("prefork.worker.websocket")
            except ImportError as exc:
                if not _missing_websocket_logged:
                    _log_missing_websocket(exc)
                request.write_headers(
                    501, [("Content-Type", "text/plain"), ("Connection", "close")]
                )
                request.write(b"WebSocket is not available on this server\n")
                request.finish()
                return
            self._websocket = module.serve_websocket
        scope = build_scope(request, "websocket", self.config.root_path, self.state)
        protocols = request.headers.get_list("Sec-Websocket-Protocol")
        scope["subprotocols"] = [
            p.strip() for value in protocols for p in value.split(",") if p.strip()
        ]
        scope["extensions"] = {"websocket.http.response": {}}
        del scope["method"]
        await self._websocket(self.app, scope, request, self.config)


_missing_websocket_logged = False


def _log_missing_websocket(exc: ImportError) -> None:
    global _missing_websocket_logged
    _missing_websocket_logged = True
    error_log.error("WebSocket upgrade refused (501): %s", exc)
