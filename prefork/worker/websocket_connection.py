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
from prefork.worker.sendclock import SendClock, reset, socket_transport
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
#: Frames parsed in one go (one read, or one later turn of the loop) before
#: the rest waits for the loop's next turn, the socket unread meanwhile: a
#: read of 256 KiB of empty frames is ~40,000 of them, ~0.5 s of parsing,
#: and the worker's other connections must not wait that long.
FRAMES_PER_TURN = 128
#: Unsent bytes above which ``send()`` waits for the client to read.
HIGH_WATER = 64 * 1024
#: Bytes sent without waiting after which ``send()`` gives the loop a turn.
YIELD_EVERY = 1 << 20
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
        #: the socket's transport under asyncio's TLS one (sendclock.socket_transport)
        self._lower: Any = None
        self._conn: Connection | None = None
        self._app_closed = False  # the application sent websocket.close (or denied)
        self._gone = False  # the client can no longer be written to
        self._discarding = False  # input is read and dropped (after a failure)
        # what the application reads
        self._inbox: deque[Message | ProtocolFailure] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[Message | None] | None = None
        self._final: Message | None = None  # the websocket.disconnect event, once known
        self._parts: list[Any] = []  # pieces of the message being received (joined)
        self._pieces: list[Any] = []  # its latest pieces, joined into _parts by the 256
        #: the application has too many unread messages (or bytes): no more is
        #: taken from the socket until it reads (see _deliver / _taken)
        self._app_full = False
        #: bytes received and not looked at yet (the fast path takes them later)
        self._held = b""
        #: wsproto may hold frames not turned into events yet
        self._wsproto_pending = False
        self._continue_scheduled = False
        #: the transport is not being read (for any of the reasons above)
        self._reading_paused = False
        #: the latest ping not answered while the client did not read (RFC
        #: 6455 5.5.3: only the most recent one needs its pong)
        self._pong_owed: bytes | None = None
        # what the application sends
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        #: aborts when the client leaves our output unread (send_timeout)
        self._send_clock: SendClock | None = None
        self._send_lock = asyncio.Lock()
        self._deflater: Deflater | None = None
        self._inflater: Inflater | None = None
        self._out_compressed = False  # the message being sent is compressed
        self._unyielded = 0  # bytes sent since send() last gave the loop a turn
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
        self._lower = socket_transport(transport)
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
        if not self._app_full and (
            len(self._inbox) > MAX_QUEUED or self._queued_bytes > self.config.ws_max_size
        ):
            # The application is not keeping up: take no more from the socket
            # (the client then feels TCP back-pressure) until it catches up.
            self._app_full = True
            self._sync_reading()

    def _taken(self, item: Message) -> None:
        self._queued_bytes -= len(item.get("text") or item.get("bytes") or b"")
        if (
            self._app_full
            and len(self._inbox) <= MAX_QUEUED // 2
            and self._queued_bytes <= self.config.ws_max_size // 2
        ):
            self._app_full = False
            self._last_seen = self._loop.time()  # (the silence was ours)
            self._continue_soon()
            self._sync_reading()

    def _sync_reading(self) -> None:
        """Read the socket only while nothing received waits to be looked at
        and the application keeps up."""
        paused = self._app_full or bool(self._held) or self._wsproto_pending
        if paused == self._reading_paused or self._transport is None or self._gone:
            return
        self._reading_paused = paused
        if paused:
            self._transport.pause_reading()
        else:
            self._transport.resume_reading()

    def _continue_soon(self) -> None:
        """Look at what is held on the loop's next turn (other connections first)."""
        if (self._held or self._wsproto_pending) and not self._continue_scheduled:
            self._continue_scheduled = True
            self._loop.call_soon(self._continue)

    def _continue(self) -> None:
        self._continue_scheduled = False
        if self._discarding or self._state == CLOSED:
            return
        if self._app_full:
            return  # (_taken comes back here)
        if self._wsproto_pending:
            self._parse_events()
        if self._held and not self._wsproto_pending and not self._app_full:
            data, self._held = self._held, b""
            self._consume(data)
        self._continue_soon()
        self._sync_reading()

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
        if (
            self._state != OPEN
            or self._transport.is_closing()
            or (self._lower is not None and self._lower.is_closing())
        ):
            # (closing: reset by the client, connection_lost is a turn of the
            # loop away; writes would go nowhere, and an application sending
            # from memory would never give the loop that turn)
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
        self._last_seen = self._loop.time()
        if self._held or self._wsproto_pending or self._app_full:
            # (a read the transport made before it was paused: after the rest)
            self._held += data
            self._continue_soon()
            self._sync_reading()
            return
        self._consume(data)
        if self._held or self._wsproto_pending:
            self._continue_soon()
            self._sync_reading()

    def _consume(self, data: bytes) -> None:
        """Take messages and control frames from ``data``, as many as may be
        taken now; what is left is held (``_held``, or inside
        wsproto) for a later turn of the loop."""
        conn = self._conn
        assert conn is not None
        if FAST_PATH and wsproto_idle(conn):
            # How many messages, and bytes, may be taken now: what the
            # application may leave unread (at least one: the limit is
            # checked as it is delivered), and the work of one turn.
            if self._state == OPEN:
                max_messages = MAX_QUEUED + 1 - len(self._inbox)
                if max_messages > FRAMES_PER_TURN or max_messages < 1:
                    max_messages = FRAMES_PER_TURN if max_messages > 0 else 1
                max_bytes = self.config.ws_max_size - self._queued_bytes
            else:  # (they are dropped: only the work is bounded)
                max_messages, max_bytes = FRAMES_PER_TURN, 1 << 62
            messages, data, failure = take_simple_frames(
                data, self._inflater, self.config.ws_max_size, max_messages, max_bytes
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
            if len(messages) >= max_messages or self._app_full:
                self._held = data  # (the fast path takes it up again later)
                return
        conn.receive_data(data)
        self._parse_events()

    def _parse_events(self) -> None:
        """Act on what wsproto parses, :data:`FRAMES_PER_TURN` frames at most,
        and no message more once the application has enough unread."""
        conn = self._conn
        assert conn is not None
        budget = FRAMES_PER_TURN
        self._wsproto_pending = False
        event: Any
        for event in conn.events():
            kind = type(event)
            if kind is TextMessage or kind is BytesMessage:
                self._on_message(event)
            elif kind is Ping:
                if conn.state is ConnectionState.OPEN:
                    if self._write_paused:
                        self._pong_owed = bytes(event.payload)  # (sent when it reads)
                    else:
                        self._transport.write(conn.send(event.response()))
            elif kind is Pong:
                if event.payload == self._ping_payload:
                    self._ping_payload = None
                    self._arm_keepalive(self.config.ws_ping_interval)
            elif kind is CloseConnection:
                self._on_close_frame(event)
                return
            if self._discarding or self._state == CLOSED:
                return
            budget -= 1
            if budget == 0 or self._app_full:
                # (wsproto parses frame by frame: the rest stays in its buffer)
                self._wsproto_pending = True
                return

    def _on_message(self, event: Any) -> None:
        data = event.data
        if not event.message_finished:
            pieces = self._pieces
            pieces.append(data)
            if len(pieces) >= 256:  # (one piece per 256: a message of small
                # fragments is kept at about its size, each byte copied twice)
                self._parts.append(("" if type(data) is str else b"").join(pieces))
                self._pieces = []
            return
        parts = self._parts
        if parts or self._pieces:
            parts.extend(self._pieces)
            parts.append(data)
            data = ("" if type(data) is str else b"").join(parts)
            self._parts = []
            self._pieces = []
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
            # (no more input is looked at: read on, to see the client's EOF)
            self._held = b""
            self._wsproto_pending = self._app_full = False
            self._sync_reading()
        self._set_final(code, reason)
        assert self._final is not None
        return dict(self._final)

    def _start_close(self, code: int, reason: str) -> None:
        """Start the closing handshake from our side."""
        if self._state != OPEN:
            return
        self._send_close_frame(code, reason)
        self._read_for_the_close()

    def _read_for_the_close(self) -> None:
        """Our close frame is out: the client's must be read, behind whatever
        the application left unread (dropped now)."""
        self._app_full = False
        self._continue_soon()
        self._sync_reading()

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
        # What came before the end is looked at first, all of it (it is here
        # already: at most one read, as the socket is not read while some is held).
        while (self._held or self._wsproto_pending) and not self._discarding:
            if self._state == CLOSED:
                break
            self._app_full = False
            self._continue()
        self._set_final(1006)
        self._end(abort=False)
        return None

    def pause_writing(self) -> None:
        self._write_paused = True
        clock = self._send_clock
        if clock is None:
            clock = self._send_clock = SendClock(
                self._loop, self._transport, self.config.send_timeout, self._send_timed_out
            )
        clock.start()

    def _send_timed_out(self, unsent: int) -> None:
        """The client read none of our output for ``send_timeout`` seconds
        (with pings off nothing else would notice; with them, the pong it
        cannot read in time does): abort; the application's ``send()`` and
        ``receive()`` learn the client is gone (1006)."""
        error_log.info(
            "%s: read none of %d byte(s) of output for %.0f s (send_timeout): aborting",
            self.name,
            unsent,
            self.config.send_timeout,
        )
        self._end(abort=True, reset_peer=True)

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._send_clock is not None:
            self._send_clock.stop()
        owed = self._pong_owed
        if owed is not None and self._conn is not None:
            self._pong_owed = None
            if self._conn.state is ConnectionState.OPEN:
                self._transport.write(self._conn.send(Ping(payload=owed).response()))
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state = CLOSED
        self._gone = True
        self.deadline = 0.0
        self._cancel_timer()
        if self._send_clock is not None:
            self._send_clock.stop()
            self._send_clock = None  # (the clock holds this protocol: no cycle)
        self._set_final(1006)
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._server is not None:
            self._server._connection_closed(self)
            self._server = None
        if not self._done.done():
            self._done.set_result(None)

    def _end(self, abort: bool, reset_peer: bool = False) -> None:
        """Close the socket (``abort``: without sending what is still buffered;
        ``reset_peer``: with a reset, see :func:`prefork.worker.sendclock.reset`).

        A plain close waits for the buffer to drain, which a client that does
        not read would make last forever: it is bounded by an abort too.
        """
        self._state = CLOSED
        self._cancel_timer()
        if self._gone:
            return
        transport = self._transport
        if reset_peer:
            reset(transport)
        elif abort:
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
            self._read_for_the_close()
        self.deadline = self._loop.time() + self.config.drain_grace + 5.0

    def on_timeout(self) -> None:
        """The drain's bound passed without the client's close frame."""
        self.deadline = 0.0
        self._end(abort=True)

    def close(self) -> None:
        """Close the socket now (a fast stop, or what a drain left at its end).

        An open WebSocket still gets its 1001 close frame first: the write
        reaches the kernel at once when nothing is queued before it (the
        usual idle connection), and the socket's close sends it before the
        FIN, so the client learns why instead of seeing 1006.  No handshake
        is awaited (a fast stop exits now); a client with unread output
        queued loses the frame with the rest, as before.
        """
        conn = self._conn
        if self._state == OPEN and not self._gone and conn is not None:
            if conn.state is ConnectionState.OPEN and not self._transport.is_closing():
                frame = conn.send(CloseConnection(code=1001, reason=_DRAIN_REASONS[1001]))
                self._transport.write(frame)
            self._set_final(1001, _DRAIN_REASONS[1001])
        self._end(abort=True)
