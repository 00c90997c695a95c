"""ASGI WebSocket sessions (RFC 6455, RFC 7692 permessage-deflate).

:func:`serve_websocket` runs an ASGI application for one upgrade request:
``receive()`` gives ``websocket.connect``, then the client's messages, then
``websocket.disconnect`` (for good); ``send()`` takes ``websocket.accept`` /
``websocket.send`` / ``websocket.close`` and, before the accept, the
denial-response extension's ``websocket.http.response.*``.  Until the accept
the request is an ordinary HTTP request (a denial, a 403, a 500 go through
the connection's normal response path); the accept writes ``101 Switching
Protocols``, takes the transport over (:meth:`HTTPConnection.detach`) and
the session becomes the transport's protocol.

The parts: :mod:`prefork.worker.websocket_protocol` (the handshake and
permessage-deflate, pure), :mod:`prefork.worker.websocket_frames` (frames,
on wsproto), :mod:`prefork.worker.websocket_connection` (the open WebSocket
on its transport: closing, keepalive, back-pressure, drain) and this
module, the application's side.  Without wsproto installed, importing this
module raises ImportError naming ``pip install 'prefork[asgi]'``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from prefork.settings import Config
from prefork.worker.response import build_response_head
from prefork.worker.websocket_connection import (
    CLOSED,
    DENYING,
    FRAME_SIZE,
    HANDSHAKE,
    OPEN,
    YIELD_EVERY,
    ClientDisconnected,
    ProtocolFailure,
    WebSocketConnection,
)
from prefork.worker.websocket_protocol import (
    HandshakeError,
    accept_token,
    check_upgrade,
    close_code_problem,
    negotiate_deflate,
)

if TYPE_CHECKING:
    from prefork.worker.request import HTTPRequest

__all__ = ["ClientDisconnected", "WebSocketSession", "serve_websocket"]

error_log = logging.getLogger("prefork.error")

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[Any]]


#: fields of the 101 the server writes itself: an application's own are
#: dropped (a second Sec-WebSocket-Accept, extensions it did not negotiate;
#: a 1xx never carries a Content-Length or Transfer-Encoding, RFC 9110 8.6).
_HANDSHAKE_FIELDS = frozenset(
    {
        "upgrade",
        "connection",
        "sec-websocket-accept",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "content-length",
        "transfer-encoding",
    }
)


class WebSocketSession(WebSocketConnection):
    """One WebSocket from the application's side: the ASGI ``receive``/``send``
    pair, over the HTTP request until the accept and over the transport after it."""

    def __init__(self, scope: Message, request: HTTPRequest, config: Config, key: str) -> None:
        super().__init__(config)
        self.scope = scope
        self.request = request
        self.key = key
        self.name = f"WebSocket {request.uri} from {request.remote_ip}"
        self._connect_sent = False
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
            if isinstance(exc, asyncio.CancelledError) and self._state == CLOSED:
                raise  # (the worker's stop cancelling what outlived its WebSocket: no error)
            error_log.error(
                "Exception in ASGI application (%s)",
                self.name,
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
        if state == HANDSHAKE:
            self._http_answer(500, b"500 Internal Server Error\n")
        elif state == DENYING:
            self._http_abort()
        elif state == OPEN:
            self._start_close(1011, "")

    def _app_returned(self) -> None:
        state = self._state
        if state == HANDSHAKE:
            if not self._gone:
                error_log.error(
                    "ASGI application returned without accepting or closing WebSocket %s",
                    self.request.uri,
                )
            self._http_answer(500, b"500 Internal Server Error\n")
        elif state == DENYING:
            error_log.error("ASGI application returned before its denial response was complete")
            self._http_abort()
        elif state == OPEN:
            self._start_close(1000, "")

    # -- receive and send -------------------------------------------------------------

    async def receive(self) -> Message:
        """The next event for the application (ASGI ``receive``)."""
        if not self._connect_sent:
            self._connect_sent = True
            return {"type": "websocket.connect"}
        while True:
            inbox = self._inbox
            if inbox:
                item = inbox.popleft()
                if type(item) is ProtocolFailure:
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

    async def send(self, message: Message) -> None:
        """Act on an event from the application (ASGI ``send``)."""
        kind = message["type"]
        state = self._state
        if state == OPEN:
            if kind == "websocket.send":
                await self._send_message(message)
            elif kind == "websocket.close":
                code = message.get("code", 1000)
                problem = close_code_problem(code)
                if problem is not None:
                    raise RuntimeError(problem)
                reason = message.get("reason") or ""
                # (checked before any state changes: a reason the frame cannot
                # carry left the connection marked closing, with no close frame
                # sent and no timer, open until the client went)
                if type(reason) is not str:
                    raise TypeError(f"ASGI: 'reason' must be a str, got {type(reason).__name__}")
                try:
                    reason.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError("ASGI: 'reason' is not valid UTF-8 text") from None
                self._app_closed = True
                self._set_final(code, reason)
                self._start_close(code, reason)
            else:
                raise RuntimeError(
                    f"Expected ASGI message 'websocket.send' or 'websocket.close', but got {kind!r}"
                )
        elif state == HANDSHAKE:
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
        elif state == DENYING:
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
        else:
            self._write_data(opcode, data, True, True)
            self._unyielded += len(data)
            if self._unyielded >= YIELD_EVERY:
                # A client reading as fast as it is sent never makes send()
                # wait: a turn of the loop now and then for the others.
                self._unyielded = 0
                await asyncio.sleep(0)

    # -- the handshake (an HTTP request still) -----------------------------------------

    def _accept(self, message: Message) -> None:
        request = self.request
        extra = [
            (
                name.decode("latin-1") if isinstance(name, bytes) else str(name),
                value.decode("latin-1") if isinstance(value, bytes) else str(value),
            )
            for name, value in message.get("headers") or ()
        ]
        subprotocol = message.get("subprotocol")
        if subprotocol is None:
            # The spec says to use the ``subprotocol`` key; an application that
            # names it as a header (the older way) gets the same treatment.
            named = [value for name, value in extra if name.lower() == "sec-websocket-protocol"]
            subprotocol = (named[-1].strip() or None) if named else None
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
        for name, value in extra:
            if name.lower() not in _HANDSHAKE_FIELDS:  # (the handshake's own are ours)
                headers.append((name, value))
        head = build_response_head(101, None, headers)  # ValueError: a header would split it
        connection = request.connection
        if connection is None or connection.closed():
            self._client_gone()
            raise ClientDisconnected("the client closed the connection")
        transport, leftover = connection.detach()
        self._open(transport, leftover, connection.server, head, params)

    def _http_answer(self, status: int, body: bytes) -> None:
        """Refuse the upgrade with a plain HTTP response (403, 500)."""
        self._state = CLOSED
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
        # (a 1xx is no denial: a 101 would claim the upgrade it refuses)
        if not isinstance(status, int) or not 200 <= status <= 599:
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
        self._state = DENYING

    def _denial_body(self, message: Message) -> None:
        body = message.get("body", b"")
        if not isinstance(body, (bytes, bytearray, memoryview)):
            raise TypeError(f"websocket.http.response.body 'body' must be bytes, not {type(body)}")
        if self._gone:
            raise ClientDisconnected("the client closed the connection")
        if body:
            self.request.write(bytes(body))
        if not message.get("more_body", False):
            self._state = CLOSED
            self._set_final(1006)
            self.request.finish()

    def _http_abort(self) -> None:
        """A denial response that cannot be completed: close the connection."""
        self._state = CLOSED
        self._set_final(1006)
        connection = self.request.connection
        if connection is not None:
            connection.close()
        self.request.finish()

    def _http_closed(self) -> None:
        """The HTTP connection closed before the accept."""
        if self._state in (HANDSHAKE, DENYING):
            self._client_gone()

    def _client_gone(self) -> None:
        self._gone = True
        self._set_final(1006)


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
