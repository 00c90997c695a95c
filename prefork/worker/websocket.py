"""ASGI WebSocket sessions (RFC 6455, RFC 7692 permessage-deflate) on wsproto.

:func:`serve_websocket` runs an ASGI application for one upgrade request:
``receive()`` gives ``websocket.connect``, then the client's messages, then
``websocket.disconnect``; ``send()`` takes ``websocket.accept`` /
``websocket.send`` / ``websocket.close`` and, before the accept, the
denial-response extension's ``websocket.http.response.*``.  Until the accept
the request is an ordinary HTTP request (a denial, a 403, a 500 go through
the connection's normal response path); the accept writes ``101 Switching
Protocols``, takes the transport over (:meth:`HTTPConnection.detach`) and
the session becomes the transport's protocol.

Frames are parsed by wsproto (chosen over the ``websockets`` library's
sans-I/O layer for strict conformance: wsproto hands over partial frames,
so invalid UTF-8 fails the connection at the first bad byte even inside one
frame, and a protocol error leaves the connection open long enough for the
application to answer what arrived before it; see pyproject.toml).  The
size limit and permessage-deflate are a wsproto extension of ours
(:class:`_MessageFilter`), so decompression is bounded as it happens.

Why the close handshake is careful: a client must see the code the server
sent, never 1006.  So the server always writes its close frame and then
waits for the client's (or its EOF) before closing the socket -- closing
with unread input makes the kernel send RST, which can destroy the close
frame in flight.  A protocol error is acted on when the application next
asks for a message (it has then answered everything before the error), or
after :data:`FAIL_GRACE` seconds.

A session is one of the server's connections once accepted
(``server._connection_opened``): a drain sends ``server.drain_close_code``
(1001 stop, 1012 restart), hands the application that disconnect, and
waits a bounded time for the client's close frame.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from prefork.settings import Config
from prefork.worker.response import build_response_head
from prefork.worker.websocket_protocol import (
    Deflater,
    HandshakeError,
    Inflater,
    MessageTooBig,
    accept_token,
    check_upgrade,
    close_code_problem,
    frame_head,
    negotiate_deflate,
    unmask,
)

try:
    from wsproto.connection import Connection, ConnectionState, ConnectionType
    from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
    from wsproto.extensions import Extension
    from wsproto.frame_protocol import CloseReason, Opcode, RsvBits
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "WebSocket support (--interface asgi) needs the wsproto package: "
        "pip install 'prefork[asgi]'"
    ) from exc

if TYPE_CHECKING:
    from prefork.worker.httpserver import HTTPServer
    from prefork.worker.request import HTTPRequest

__all__ = ["ClientDisconnected", "WebSocketSession", "serve_websocket"]

error_log = logging.getLogger("prefork.error")

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[Any]]

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
_HANDSHAKE = 0  # an HTTP request: the application may accept or deny
_DENYING = 1  # a denial response is being sent
_OPEN = 2  # accepted: frames flow
_CLOSING = 3  # our close frame is out; waiting for the client's
_CLOSED = 4  # over (the socket is closed, or the HTTP answer was sent)

_DRAIN_REASONS = {1001: "server shutting down", 1012: "server restarting"}
_FAILURE_REASONS = {1007: "invalid frame payload data", 1009: "message too big"}


class ClientDisconnected(OSError):
    """``send()`` on a WebSocket that is closed (ASGI spec 2.4: an OSError)."""


class _Failure:
    """In the receive queue: the client broke the protocol after the messages before it."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class _MessageFilter(Extension):
    """The message size limit, and permessage-deflate when it was negotiated.

    A wsproto extension sees every frame header and every piece of payload
    as it arrives: the limit fails a message at the first byte past it
    (before a compressed one is inflated further), and a fragmented
    compressed message may have control frames in between (wsproto's own
    extension loses track of the message there).  Outgoing frames are the
    session's own (:meth:`WebSocketSession._write_data`).
    """

    name = "permessage-deflate"

    def __init__(self, max_size: int, inflater: Inflater | None) -> None:
        self.max_size = max_size
        self.deflate = inflater is not None
        self._inflater = inflater
        self._control = False  # the frame being read is a control frame
        self._compressed = False  # the message being read is compressed
        self._size = 0  # bytes of the message being read, after inflating

    def enabled(self) -> bool:
        return True

    def offer(self) -> bool | str:
        return False  # (client side only)

    def frame_inbound_header(
        self, proto: Any, opcode: Opcode, rsv: RsvBits, payload_length: int
    ) -> CloseReason | RsvBits:
        # (May run twice for one header while its bytes trickle in: idempotent.)
        if opcode.iscontrol():
            self._control = True
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
            return RsvBits(self.deflate, False, False)
        self._control = False
        if opcode is Opcode.CONTINUATION:
            if rsv.rsv1:
                return CloseReason.PROTOCOL_ERROR
        else:  # the first frame of a message
            self._compressed = rsv.rsv1 and self.deflate
            self._size = 0
        if not self._compressed and self._size + payload_length > self.max_size:
            return CloseReason.MESSAGE_TOO_BIG
        return RsvBits(self.deflate, False, False)

    def frame_inbound_payload_data(self, proto: Any, data: bytes) -> bytes | CloseReason:
        if self._control:
            return data
        if self._compressed:
            assert self._inflater is not None
            try:
                data = self._inflater.decompress(data, self.max_size - self._size)
            except MessageTooBig:
                return CloseReason.MESSAGE_TOO_BIG
            except zlib.error:
                return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        self._size += len(data)
        return data

    def frame_inbound_complete(self, proto: Any, fin: bool) -> bytes | CloseReason | None:
        if self._control or not fin or not self._compressed:
            return None
        self._compressed = False
        assert self._inflater is not None
        try:
            return self._inflater.finish(self.max_size - self._size)
        except MessageTooBig:
            return CloseReason.MESSAGE_TOO_BIG
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA


def _wsproto_idle(conn: Connection) -> bool:
    """wsproto holds no byte of a frame and no part of a message.

    The fast path (:meth:`WebSocketSession._take_simple_frames`) may only
    run then.  It reads three private attributes of wsproto 1.x (checked
    once at import: without them every frame goes through wsproto, which
    is slower, not wrong; a unit test says so).
    """
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        decoder.header is None
        and not decoder.buffer.buffer
        and proto._message_decoder.opcode is None
    )


try:
    _FAST_PATH = _wsproto_idle(Connection(ConnectionType.SERVER))
except AttributeError:  # pragma: no cover - a wsproto whose insides changed
    _FAST_PATH = False


class WebSocketSession(asyncio.Protocol):
    """One WebSocket: the ASGI ``receive``/``send`` pair, then the transport's protocol.

    Satisfies :class:`prefork.worker.httpserver.ServedConnection` once
    accepted (``deadline``, :meth:`start_drain`, :meth:`on_timeout`,
    :meth:`close`).
    """

    #: counted apart by the server (``prefork status`` shows open WebSockets)
    is_websocket = True

    def __init__(self, scope: Message, request: HTTPRequest, config: Config, key: str) -> None:
        self.scope = scope
        self.request = request
        self.config = config
        self.key = key
        #: loop time when :meth:`on_timeout` is due (0: none); set by a drain
        self.deadline = 0.0
        self._loop = asyncio.get_running_loop()
        self._state = _HANDSHAKE
        self._server: HTTPServer | None = None
        self._transport: Any = None
        self._conn: Connection | None = None
        self._app_closed = False  # the application sent websocket.close (or denied)
        self._gone = False  # the client can no longer be written to
        self._discarding = False  # input is read and dropped (after a failure)
        # receive() side
        self._connect_sent = False
        self._inbox: deque[Message | _Failure] = deque()
        self._queued_bytes = 0
        self._waiter: asyncio.Future[Message | None] | None = None
        self._final: Message | None = None  # the websocket.disconnect event, once known
        self._parts: list[Any] = []  # pieces of the message being received
        self._reading_paused = False
        # send() side
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
        connection = request.connection
        if connection is not None:
            connection.set_close_callback(self._http_closed)

    # -- running the application --------------------------------------------------

    async def run(self, app: ASGIApp) -> None:
        """Call the application and see the connection to its end."""
        try:
            result = await app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            if not self._gone:  # (raised by something else: the app's own error)
                self._app_failed()
        except BaseException as exc:
            error_log.error(
                "Exception in ASGI application (WebSocket %s from %s)",
                self.request.uri,
                self.request.remote_ip,
                exc_info=not isinstance(exc, asyncio.CancelledError),
            )
            self._app_failed()
            if not isinstance(exc, Exception):
                raise
        else:
            if result is not None:
                error_log.error("ASGI application returned a value (%r) instead of None", result)
            self._app_returned()
        if self._transport is not None:
            await self._done  # bounded: every closing path arms a timeout

    def _app_failed(self) -> None:
        state = self._state
        if state == _HANDSHAKE:
            self._http_answer(500, b"500 Internal Server Error\n")
        elif state == _DENYING:
            self._http_abort()
        elif state == _OPEN:
            self._start_close(1011, "")

    def _app_returned(self) -> None:
        state = self._state
        if state == _HANDSHAKE:
            if not self._gone:
                error_log.error(
                    "ASGI application returned without accepting or closing WebSocket %s",
                    self.request.uri,
                )
            self._http_answer(500, b"500 Internal Server Error\n")
        elif state == _DENYING:
            error_log.error("ASGI application returned before its denial response was complete")
            self._http_abort()
        elif state == _OPEN:
            self._start_close(1000, "")

    # -- receive -------------------------------------------------------------------

    async def receive(self) -> Message:
        """The next event for the application (ASGI ``receive``)."""
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            inbox = self._inbox
            if inbox:
                item = inbox.popleft()
                if type(item) is _Failure:
                    return self._fail_now(item.code, item.reason)
                self._taken(item)  # type: ignore[arg-type]
                return item  # type: ignore[return-value]
            if self._final is not None:
                return dict(self._final)
            waiter = self._waiter = self._loop.create_future()
            try:
                item = await waiter
            finally:
                self._waiter = None
            if item is not None:
                return item

    def _deliver(self, item: Message | _Failure, size: int) -> None:
        """Hand ``item`` to a waiting ``receive()``, or queue it."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if type(item) is _Failure:
                waiter.set_result(self._fail_now(item.code, item.reason))
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

    # -- send ----------------------------------------------------------------------

    async def send(self, message: Message) -> None:
        """Act on an event from the application (ASGI ``send``)."""
        kind = message["type"]
        state = self._state
        if state == _OPEN:
            if kind == "websocket.send":
                await self._send_message(message)
            elif kind == "websocket.close":
                code = message.get("code", 1000)
                problem = close_code_problem(code)
                if problem is not None:
                    raise RuntimeError(problem)
                reason = message.get("reason") or ""
                self._app_closed = True
                self._set_final(code, reason)
                self._start_close(code, reason)
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}"
                )
        elif state == _HANDSHAKE:
            if self._gone:
                raise ClientDisconnected("the client closed the connection")
            if kind == "websocket.accept":
                self._accept(message)
            elif kind == "websocket.close":
                # ASGI: closing before the accept refuses the handshake with 403.
                self._app_closed = True
                self._http_answer(403, b"")
            elif kind == "websocket.http.response.start":
                self._start_denial(message)
            else:
                raise RuntimeError(
                    "Expected ASGI message 'websocket.accept', 'websocket.close' or "
                    f"'websocket.http.response.start', but got {kind!r}"
                )
        elif state == _DENYING:
            if kind != "websocket.http.response.body":
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.http.response.body', but got {kind!r}"
                )
            self._denial_body(message)
        elif self._gone or not self._app_closed:
            raise ClientDisconnected("the WebSocket is closed")
        else:
            raise RuntimeError(f"Unexpected ASGI message {kind!r} after 'websocket.close'")

    async def _send_message(self, message: Message) -> None:
        text = message.get("text")
        data = message.get("bytes")
        if text is not None and data is None:
            if type(text) is not str:
                raise TypeError(f"websocket.send 'text' must be str, not {type(text).__name__}")
            data = text.encode()
            opcode = 1
        elif data is not None and text is None:
            if type(data) is not bytes:
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise TypeError(f"websocket.send 'bytes' must be bytes, not {type(data)}")
                data = bytes(data)  # (the application may reuse its buffer once send returns)
            opcode = 2
        else:
            raise RuntimeError("websocket.send needs exactly one of 'bytes' and 'text'")
        if self._write_paused or self._send_lock.locked() or len(data) > FRAME_SIZE:
            async with self._send_lock:
                await self._send_slowly(data, opcode)
            return
        self._write_data(opcode, data, True, True)

    def _write_data(self, opcode: int, data: bytes, first: bool, fin: bool) -> None:
        """Write one data frame (compressed when deflate was negotiated and it pays)."""
        if self._state != _OPEN:
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

    # -- the handshake (an HTTP request still) -----------------------------------------

    def _accept(self, message: Message) -> None:
        request = self.request
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in (self.scope.get("subprotocols") or ()):
            raise RuntimeError(f"subprotocol {subprotocol!r} was not offered by the client")
        headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_token(self.key)),
        ]
        if subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        params = negotiate_deflate(request.headers) if self.config.ws_per_message_deflate else None
        if params is not None:
            headers.append(("Sec-WebSocket-Extensions", params.response_value()))
        managed = {name.lower() for name, _ in headers} | {"sec-websocket-extensions"}
        for name, value in message.get("headers") or ():
            name_s = name.decode("latin-1") if isinstance(name, bytes) else str(name)
            value_s = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            if name_s.lower() not in managed:  # (the handshake's own headers are ours)
                headers.append((name_s, value_s))
        head = build_response_head(101, None, headers)  # ValueError: a header would split it
        connection = request.connection
        if connection is None or connection.closed():
            self._client_gone()
            raise ClientDisconnected("the client closed the connection")
        transport, leftover = connection.detach()
        self._server = connection.server
        self._transport = transport
        if params is not None:
            self._deflater = Deflater(params)
            self._inflater = Inflater(params)
        self._conn = Connection(
            ConnectionType.SERVER, [_MessageFilter(self.config.ws_max_size, self._inflater)]
        )
        self._state = _OPEN
        transport.set_write_buffer_limits(HIGH_WATER)
        transport.write(head)
        transport.set_protocol(self)
        self._last_seen = self._loop.time()
        self._arm_keepalive(self.config.ws_ping_interval)
        if self._server is not None:
            self._server._connection_opened(self)  # (drains at once if the server is stopping)
        if leftover:  # (sent right after the head, maybe even a close frame)
            self.data_received(leftover)

    def _http_answer(self, status: int, body: bytes) -> None:
        """Refuse the upgrade with a plain HTTP response (403, 500)."""
        self._state = _CLOSED
        self._set_final(1006)
        if self._gone:
            return
        request = self.request
        request.write_headers(
            status, [("Content-Type", "text/plain; charset=utf-8"), ("Connection", "close")]
        )
        if body:
            request.write(body)
        request.finish()

    def _start_denial(self, message: Message) -> None:
        status = message["status"]
        if not isinstance(status, int) or not 100 <= status <= 599:
            raise RuntimeError(f"invalid HTTP status {status!r} in websocket.http.response.start")
        headers = [
            (
                name.decode("latin-1") if isinstance(name, bytes) else str(name),
                value.decode("latin-1") if isinstance(value, bytes) else str(value),
            )
            for name, value in message.get("headers") or ()
        ]
        headers.append(("Connection", "close"))
        self.request.write_headers(status, headers)  # (ValueError on a bad header)
        self._app_closed = True
        self._state = _DENYING

    def _denial_body(self, message: Message) -> None:
        body = message.get("body", b"")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"websocket.http.response.body 'body' must be bytes, not {type(body)}")
        if self._gone:
            raise ClientDisconnected("the client closed the connection")
        if body:
            self.request.write(bytes(body))
        if not message.get("more_body", False):
            self._state = _CLOSED
            self._set_final(1006)
            self.request.finish()

    def _http_abort(self) -> None:
        """A denial response that cannot be completed: close the connection."""
        self._state = _CLOSED
        self._set_final(1006)
        connection = self.request.connection
        if connection is not None:
            connection.close()
        self.request.finish()

    def _http_closed(self) -> None:
        """The HTTP connection closed before the accept."""
        if self._state in (_HANDSHAKE, _DENYING):
            self._client_gone()

    def _client_gone(self) -> None:
        self._gone = True
        self._set_final(1006)

    # -- asyncio.Protocol (after the accept) -----------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._discarding or self._state == _CLOSED:
            return
        conn = self._conn
        assert conn is not None
        self._last_seen = self._loop.time()
        if _FAST_PATH and _wsproto_idle(conn):
            data = self._take_simple_frames(data)
            if not data or self._discarding:
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
        if self._state != _OPEN:
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
            self._state = _CLOSING
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

    def _take_simple_frames(self, data: bytes) -> bytes:
        """The common case without wsproto: whole, unfragmented data frames
        of up to 64 KiB at the start of ``data``; returns the rest.

        wsproto costs ~14 µs a frame, this ~2.  Only called while wsproto
        holds nothing, and it takes only frames it checks exactly as wsproto
        would (FIN, opcode text or binary, RSV1 only with deflate, masked,
        shortest length encoding, complete); anything else -- control
        frames, fragments, a partial frame, a broken one -- and everything
        after it goes to wsproto.  The differential test in
        ``tests/unit/test_websocket_frames.py`` holds the two paths equal.
        """
        inflater = self._inflater
        max_size = self.config.ws_max_size
        pos, end = 0, len(data)
        while end - pos >= 6:
            first = data[pos]
            if first == 0x81 or first == 0x82:
                compressed = False
            elif inflater is not None and (first == 0xC1 or first == 0xC2):
                compressed = True
            else:
                break
            length = data[pos + 1] - 0x80  # (negative: not masked)
            if 0 <= length < 126:
                start = pos + 6
            elif length == 126 and end - pos >= 8:
                length = data[pos + 2] << 8 | data[pos + 3]
                if length < 126:
                    break
                start = pos + 8
            else:
                break
            stop = start + length
            if stop > end or (not compressed and length > max_size):
                break
            payload = unmask(data[start:stop], data[start - 4 : start])
            pos = stop
            if compressed:
                assert inflater is not None
                try:
                    payload = inflater.decompress(payload, max_size)
                    payload += inflater.finish(max_size - len(payload))
                except MessageTooBig:
                    self._protocol_failure(1009, "message too big")
                    return b""
                except zlib.error:
                    self._protocol_failure(1007, "invalid compressed data")
                    return b""
            if first & 0x0F == 1:
                try:
                    text = payload.decode()
                except UnicodeDecodeError as exc:
                    self._protocol_failure(1007, str(exc))
                    return b""
                message: Message = {"type": "websocket.receive", "text": text}
            else:
                message = {"type": "websocket.receive", "bytes": payload}
            if self._state == _OPEN:
                self._deliver(message, len(payload))
        return data[pos:] if pos else data

    def _protocol_failure(self, code: int, reason: str) -> None:
        """The client broke the protocol: no more input is processed, and the
        connection fails once the application has read what came before."""
        self._discarding = True
        # (one wording per code, whichever path found it; 1002 keeps wsproto's detail)
        reason = _FAILURE_REASONS.get(code, reason)
        self._deliver(_Failure(code, reason), 0)
        if self._state == _OPEN:  # (not failed at once: the application is busy)
            self._arm(FAIL_GRACE, self._fail_late)

    def _fail_late(self) -> None:
        for item in self._inbox:
            if type(item) is _Failure:
                self._fail_now(item.code, item.reason)
                return

    def _fail_now(self, code: int, reason: str) -> Message:
        """Fail the connection (RFC 6455 section 7.1.7): our close frame, then
        no more input processed; the socket closes when the client answers
        (or after :data:`CLOSE_TIMEOUT`)."""
        if self._state == _OPEN:
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
        if self._state != _OPEN:
            return
        self._send_close_frame(code, reason)
        if self._reading_paused:
            self._reading_paused = False
            self._transport.resume_reading()  # (the client's close frame must be read)

    def _send_close_frame(self, code: int, reason: str) -> None:
        conn = self._conn
        assert conn is not None
        self._state = _CLOSING
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
        self._state = _CLOSED
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
        self._state = _CLOSED
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
        if self.config.ws_ping_interval > 0 and self._state == _OPEN:
            self._arm(delay, self._keepalive)

    def _keepalive(self) -> None:
        """Every ``ws_ping_interval`` seconds of silence: a ping."""
        self._timer = None
        if self._state != _OPEN or self._conn is None:
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
        if self._state != _OPEN:
            return
        if self._reading_paused:  # (the pong may be behind unread messages)
            self._arm(self.config.ws_ping_timeout, self._pong_missed)
            return
        error_log.info(
            "WebSocket %s: no pong within %s s; closing",
            self.request.uri,
            self.config.ws_ping_timeout,
        )
        self._send_close_frame(1011, "keepalive ping timeout")
        self._set_final(1006, "keepalive ping timeout")
        self._end(abort=False)

    # -- ServedConnection: the server's drain ---------------------------------------------

    def start_drain(self) -> None:
        """The worker is stopping: close with 1001 (stop) or 1012 (restart)."""
        server = self._server
        code = server.drain_close_code if server is not None else 1001
        reason = _DRAIN_REASONS.get(code, "")
        if self._state == _OPEN:
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


async def serve_websocket(
    app: ASGIApp, scope: Message, request: HTTPRequest, config: Config
) -> None:
    """Run ASGI ``app(scope, receive, send)`` for this WebSocket upgrade request, to its end.

    A request that is not a valid opening handshake is answered with 400
    (426 for a ``Sec-WebSocket-Version`` other than 13) without calling the
    application.
    """
    try:
        key = check_upgrade(request.method, request.version, request.headers)
    except HandshakeError as exc:
        request.write_headers(
            exc.status,
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Connection", "close"),
                *exc.headers,
            ],
        )
        request.write(f"{exc.status} {exc}\n".encode())
        request.finish()
        return
    await WebSocketSession(scope, request, config, key).run(app)
