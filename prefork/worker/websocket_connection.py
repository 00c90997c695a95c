"""The open WebSocket on its transport: frames in and out, closing, keepalive, drain.

:class:`WebSocketConnection` is the asyncio protocol of an accepted
WebSocket (:class:`prefork.worker.websocket.WebSocketSession` adds the ASGI
application's side: the handshake, ``receive`` and ``send``).  What it
receives goes to a queue the application reads (:meth:`_deliver`), with
back-pressure both ways: past :data:`MAX_QUEUED` unread messages (or
``ws_max_size`` bytes) the socket is no longer read, and sending waits while
the transport's buffer is above :data:`HIGH_WATER`.

Why the close handshake is careful: a client must see the code the server
sent, never 1006.  So the server writes its close frame and then waits for
the client's (or its EOF) before closing the socket -- closing with unread
input makes the kernel send RST, which can destroy the close frame in
flight.  A protocol error is acted on when the application next asks for a
message, having answered everything that came before the error (or after
:data:`FAIL_GRACE` seconds): the strict outcome of the Autobahn testsuite.

It is one of the server's connections (:class:`ServedConnection`): a drain
sends ``server.drain_close_code`` (1001 stop, 1012 restart), hands the
application that disconnect, and waits a bounded time for the client's
close frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from prefork.settings import Config
from prefork.worker.websocket_frames import (
    FAST_PATH,
    BytesMessage,
    CloseConnection,
    Connection,
    ConnectionState,
    Ping,
    Pong,
    TextMessage,
    new_connection,
    take_simple_frames,
    wsproto_idle,
)
from prefork.worker.websocket_protocol import DeflateParams, Deflater, Inflater, frame_head

if TYPE_CHECKING:
    from prefork.worker.httpserver import HTTPServer

__all__ = ["ClientDisconnected", "WebSocketConnection"]

error_log = logging.getLogger("prefork.error")

Message = MutableMapping[str, Any]

#: Seconds to wait for the client's close frame after ours.
CLOSE_TIMEOUT = 10.0
#: Seconds a protocol error waits for the application to come back to
#: ``receive()`` (having answered the messages before the error).
FAIL_GRACE = 1.0
#: Received messages the application may leave unread before the socket is
#: no longer read (also bounded by ``ws_max_size`` bytes).
MAX_QUEUED = 16
#: Unsent bytes above which ``send()`` waits for the client to read.
HIGH_WATER = 64 * 1024
#: Larger messages go out as fragments of this size, with the loop free in
#: between (compressing 16 MiB at once would hold it ~90 ms).
FRAME_SIZE = 256 * 1024
#: Smaller messages are sent uncompressed: deflate would only grow them.
MIN_COMPRESS = 64

# Session states.
HANDSHAKE = 0  # an HTTP request: the application may accept or deny
DENYING = 1  # a denial response is being sent
OPEN = 2  # accepted: frames flow
CLOSING = 3  # our close frame is out; waiting for the client's
CLOSED = 4  # over (the socket is closed, or the HTTP answer was sent)

_DRAIN_REASONS = {1001: "server shutting down", 1012: "server restarting"}
_FAILURE_REASONS = {1007: "invalid frame payload data", 1009: "message too big"}


class ClientDisconnected(OSError):
    """``send()`` on a WebSocket that is closed (ASGI spec 2.4: an OSError)."""


class ProtocolFailure:
    """In the receive queue: the client broke the protocol after the messages before it."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class WebSocketConnection(asyncio.Protocol):
    """An accepted WebSocket on its transport (see the module docstring).

    Satisfies :class:`prefork.worker.httpserver.ServedConnection` once
    open (``deadline``, :meth:`start_drain`, :meth:`on_timeout`, :meth:`close`).
    """

    #: counted apart by the server (``prefork status`` shows open WebSockets)
    is_websocket = True

    def __init__(self, config: Config) -> None:
        self.config = config
        #: what the log calls this connection
        self.name = "WebSocket"
        #: loop time when :meth:`on_timeout` is due (0: none); set by a drain
        self.deadline = 0.0
        self._loop = asyncio.get_running_loop()
        self._state = HANDSHAKE
        self._server: HTTPServer | None = None
        self._transport: Any = None
        self._conn: Connection | None = None
        self._app_closed = False  # the application sent websocket.close (or denied)
        self._gone = False  # the client can no longer be written to
        self._discarding = False  # input is read and dropped (after a failure)
        # what the application reads
        self._inbox: deque[Message | ProtocolFailure] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[Message | None] | None = None
        self._final: Message | None = None  # the websocket.disconnect event, once known
        self._parts: list[Any] = []  # pieces of the message being received
        self._reading_paused = False
        # what the application sends
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._send_lock = asyncio.Lock()
        self._deflater: Deflater | None = None
        self._inflater: Inflater | None = None
        self._out_compressed = False  # the message being sent is compressed
        # timers
        self._timer: asyncio.TimerHandle | None = None  # keepalive, close or failure grace
        self._last_seen = 0.0
        self._ping_payload: bytes | None = None
        self._done: asyncio.Future[None] = self._loop.create_future()

    def _open(
        self,
        transport: Any,
        leftover: bytes,
        server: HTTPServer | None,
        head: bytes,
        params: DeflateParams | None,
    ) -> None:
        """Take the transport over: the 101 response ``head``, then frames."""
        self._server = server
        self._transport = transport
        if params is not None:
            self._deflater = Deflater(params)
            self._inflater = Inflater(params)
        self._conn = new_connection(self.config.ws_max_size, self._inflater)
        self._state = OPEN
        transport.set_write_buffer_limits(HIGH_WATER)
        transport.write(head)
        transport.set_protocol(self)
        self._last_seen = self._loop.time()
        self._arm_keepalive(self.config.ws_ping_interval)
        if self._server is not None:
            self._server._connection_opened(self)  # (drains at once if the server is stopping)
        if leftover:  # (sent right after the head, maybe even a close frame)
            self.data_received(leftover)

    # -- what the application reads ------------------------------------------------

    def _deliver(self, item: Message | ProtocolFailure, size: int) -> None:
        """Hand ``item`` to a waiting ``receive()``, or queue it."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if type(item) is ProtocolFailure:
                final = self._fail_now(item.code, item.reason)  # (resolves the waiter itself)
                if not waiter.done():
                    waiter.set_result(final)
            else:
                waiter.set_result(item)  # type: ignore[arg-type]
            return
        self._inbox.append(item)
        self._queued_bytes += size
        if not self._reading_paused and (
            len(self._inbox) > MAX_QUEUED or self._queued_bytes > self.config.ws_max_size
        ):
            # The application is not keeping up: stop reading the socket
            # (the client then feels TCP back-pressure) until it catches up.
            self._reading_paused = True
            if self._transport is not None:
                self._transport.pause_reading()

    def _taken(self, item: Message) -> None:
        self._queued_bytes -= len(item.get("text") or item.get("bytes") or b"")
        if (
            self._reading_paused
            and len(self._inbox) <= MAX_QUEUED // 2
            and self._queued_bytes <= self.config.ws_max_size // 2
        ):
            self._reading_paused = False
            if self._transport is not None and not self._gone:
                self._transport.resume_reading()
                self._last_seen = self._loop.time()  # (the silence was ours)

    def _set_final(self, code: int, reason: str = "") -> None:
        """The disconnect event the application gets once the queue is read."""
        if self._final is not None:
            return
        self._final = {"type": "websocket.disconnect", "code": int(code), "reason": reason}
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(dict(self._final))

    # -- what the application sends ------------------------------------------------

    def _write_data(self, opcode: int, data: bytes, first: bool, fin: bool) -> None:
        """Write one data frame (compressed when deflate was negotiated and it pays)."""
        if self._state != OPEN:
            raise ClientDisconnected("the WebSocket is closed")
        head = (0x80 if fin else 0) | (opcode if first else 0)  # (continuations: opcode 0)
        if first:
            self._out_compressed = self._deflater is not None and (
                not fin or len(data) >= MIN_COMPRESS
            )
            if self._out_compressed:
                head |= 0x40
        if self._out_compressed:
            assert self._deflater is not None
            data = self._deflater.compress(data, fin)
        if len(data) < 16384:
            self._transport.write(frame_head(head, len(data)) + data)
        else:
            self._transport.writelines((frame_head(head, len(data)), data))

    async def _send_slowly(self, data: bytes, opcode: int) -> None:
        """Send a large message as fragments (or any message under back-pressure),
        waiting while the client is not reading and leaving the loop free
        between fragments."""
        size = len(data)
        start = 0
        while True:
            await self._wait_writable()
            end = start + FRAME_SIZE
            fin = end >= size
            self._write_data(opcode, data[start:end], start == 0, fin)
            if fin:
                break
            start = end
            if not self._write_paused:
                await asyncio.sleep(0)  # let other connections run between fragments
        await self._wait_writable()

    async def _wait_writable(self) -> None:
        while self._write_paused and not self._gone:
            waiter = self._writable = self._loop.create_future()
            try:
                await waiter
            finally:
                self._writable = None
        if self._gone:
            raise ClientDisconnected("the WebSocket is closed")

    # -- asyncio.Protocol ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding or self._state == CLOSED:
            return
        conn = self._conn
        assert conn is not None
        self._last_seen = self._loop.time()
        if FAST_PATH and wsproto_idle(conn):
            messages, data, failure = take_simple_frames(
                data, self._inflater, self.config.ws_max_size
            )
            if self._state == OPEN:  # (our close is out: what still comes is dropped)
                for message in messages:
                    if type(message) is str:
                        self._deliver({"type": "websocket.receive", "text": message}, len(message))
                    else:
                        self._deliver({"type": "websocket.receive", "bytes": message}, len(message))
            if failure is not None:
                self._protocol_failure(*failure)
                return
            if not data:
                return
        conn.receive_data(data)
        event: Any
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self._on_message(event)
            elif kind is Ping:
                if conn.state is ConnectionState.OPEN:
                    self._transport.write(conn.send(event.response()))
            elif kind is Pong:
                if event.payload == self._ping_payload:
                    self._ping_payload = None
                    self._arm_keepalive(self.config.ws_ping_interval)
            elif kind is CloseConnection:
                self._on_close_frame(event)
                return

    def _on_message(self, event: Any) -> None:
        data = event.data
        if not event.message_finished:
            self._parts.append(data)
            return
        parts = self._parts
        if parts:
            parts.append(data)
            data = ("" if type(data) is str else b"").join(parts)
            self._parts = []
        if self._state != OPEN:
            return  # (our close is out: what still comes is dropped)
        if type(data) is str:
            self._deliver({"type": "websocket.receive", "text": data}, len(data))
        else:
            self._deliver({"type": "websocket.receive", "bytes": bytes(data)}, len(data))

    def _on_close_frame(self, event: CloseConnection) -> None:
        conn = self._conn
        assert conn is not None
        state = conn.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The client starts the closing handshake: answer with its code
            # (none when it sent none), then close the socket (the server
            # closes first, RFC 6455 section 7.1.1).
            self._transport.write(conn.send(CloseConnection(code=event.code)))
            self._state = CLOSING
            self._set_final(event.code, event.reason or "")
            self._end(abort=False)
        elif state is ConnectionState.CLOSED:
            self._end(abort=False)  # the answer to our close: the handshake is complete
        elif state is ConnectionState.OPEN:
            # The frame parser failed (wsproto reports it as a close event
            # with our code while the connection is still open).
            self._protocol_failure(int(event.code), event.reason or "")
        else:  # a broken frame while we wait for the answer to our close
            self._end(abort=False)

    def _protocol_failure(self, code: int, reason: str) -> None:
        """The client broke the protocol: no more input is processed, and the
        connection fails once the application has read what came before."""
        self._discarding = True
        # (one wording per code, whichever path found it; 1002 keeps wsproto's detail)
        reason = _FAILURE_REASONS.get(code, reason)
        self._deliver(ProtocolFailure(code, reason), 0)
        if self._state == OPEN:  # (not failed at once: the application is busy)
            self._arm(FAIL_GRACE, self._fail_late)

    def _fail_late(self) -> None:
        for item in self._inbox:
            if type(item) is ProtocolFailure:
                self._fail_now(item.code, item.reason)
                return

    def _fail_now(self, code: int, reason: str) -> Message:
        """Fail the connection (RFC 6455 section 7.1.7): our close frame, then
        no more input processed; the socket closes when the client answers
        (or after :data:`CLOSE_TIMEOUT`)."""
        if self._state == OPEN:
            self._discarding = True
            self._send_close_frame(code, reason)
            transport = self._transport
            if transport.can_write_eof():
                transport.write_eof()  # (the client sees the end after our close frame)
            if self._reading_paused:
                self._reading_paused = False
                transport.resume_reading()  # (to see the client's EOF)
        self._set_final(code, reason)
        assert self._final is not None
        return dict(self._final)

    def _start_close(self, code: int, reason: str) -> None:
        """Start the closing handshake from our side."""
        if self._state != OPEN:
            return
        self._send_close_frame(code, reason)
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()  # (the client's close frame must be read)

    def _send_close_frame(self, code: int, reason: str) -> None:
        conn = self._conn
        assert conn is not None
        self._state = CLOSING
        if conn.state is ConnectionState.OPEN:
            self._transport.write(conn.send(CloseConnection(code=code, reason=reason)))
        self._arm(CLOSE_TIMEOUT, self._close_timed_out)

    def _close_timed_out(self) -> None:
        self._timer = None
        self._end(abort=True)

    def eof_received(self) -> bool | None:
        self._set_final(1006)
        self._end(abort=False)
        return None

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = CLOSED
        self._gone = True
        self.deadline = 0.0
        self._cancel_timer()
        self._set_final(1006)
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._server is not None:
            self._server._connection_closed(self)
            self._server = None
        if not self._done.done():
            self._done.set_result(None)

    def _end(self, abort: bool) -> None:
        """Close the socket (``abort``: without sending what is still buffered).

        A plain close waits for the buffer to drain, which a client that does
        not read would make last forever: it is bounded by an abort too.
        """
        self._state = CLOSED
        self._cancel_timer()
        if self._gone:
            return
        transport = self._transport
        if abort:
            transport.abort()
        else:
            transport.close()
            self._timer = self._loop.call_later(CLOSE_TIMEOUT, transport.abort)

    # -- keepalive and timers -------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(delay, callback)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm_keepalive(self, delay: float) -> None:
        if self.config.ws_ping_interval > 0 and self._state == OPEN:
            self._arm(delay, self._keepalive)

    def _keepalive(self) -> None:
        """Every ``ws_ping_interval`` seconds of silence: a ping."""
        self._timer = None
        if self._state != OPEN or self._conn is None:
            return
        interval = self.config.ws_ping_interval
        silent = self._loop.time() - self._last_seen
        if self._reading_paused or silent < interval:
            self._arm_keepalive(interval - silent if not self._reading_paused else interval)
            return
        self._ping_payload = os.urandom(4)
        self._transport.write(self._conn.send(Ping(payload=self._ping_payload)))
        self._arm(self.config.ws_ping_timeout, self._pong_missed)

    def _pong_missed(self) -> None:
        self._timer = None
        if self._state != OPEN:
            return
        if self._reading_paused:  # (the pong may be behind unread messages)
            self._arm(self.config.ws_ping_timeout, self._pong_missed)
            return
        error_log.info("%s: no pong within %s s; closing", self.name, self.config.ws_ping_timeout)
        self._send_close_frame(1011, "keepalive ping timeout")
        self._set_final(1006, "keepalive ping timeout")
        self._end(abort=False)

    # -- ServedConnection: the server's drain ---------------------------------------------

    def start_drain(self) -> None:
        """The worker is stopping: close with 1001 (stop) or 1012 (restart)."""
        server = self._server
        code = server.drain_close_code if server is not None else 1001
        reason = _DRAIN_REASONS.get(code, "")
        if self._state == OPEN:
            self._send_close_frame(code, reason)
            self._set_final(code, reason)
            if self._reading_paused:
                self._reading_paused = False
                self._transport.resume_reading()
        self.deadline = self._loop.time() + self.config.drain_grace + 5.0

    def on_timeout(self) -> None:
        """The drain's bound passed without the client's close frame."""
        self.deadline = 0.0
        self._end(abort=True)

    def close(self) -> None:
        """Close the socket now (a fast stop)."""
        self._end(abort=True)
