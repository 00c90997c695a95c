"""HTTPConnection: one client connection, an asyncio Protocol.

The loop hands received bytes straight to :meth:`HTTPConnection.data_received`
(the fast path: no stream object, no callback scheduling), the protocol core
turns them into requests, and the request callback answers through
:meth:`write` / :meth:`finish` (a raw response, as in the seed) or
:meth:`write_headers` / :meth:`write` / :meth:`finish` (a response the server
frames).  What goes on the wire -- heads, framing, keep-alive or close after
a response, no body after HEAD/1xx/204/304 -- is decided by the pure
:mod:`prefork.worker.response`; this module is the transport glue: reading,
batching, timeouts and back-pressure.

Requests on one connection are answered strictly in order: while a response
is in progress, pipelined bytes wait in the parser (reading pauses once more
than a header block's worth is waiting).  Responses to pipelined requests
answered in the same read are sent together, in one write (see
:meth:`HTTPConnection._send`), instead of one system call each.  A large body
goes beside its head, not copied behind it, in one ``writev``
(:meth:`HTTPConnection._send_parts`, :data:`SPLIT_BODY`); a file goes with
zero copies (:meth:`HTTPConnection.send_file`, :mod:`prefork.worker.filesend`).

Timeouts do not arm a timer per read: the connection only records a deadline
and the server sweeps all connections about once a second.  A head or body
that keeps arriving at the minimum rate earns more time (Apache
mod_reqtimeout's rule, :mod:`prefork.worker.deadlines`): reads do nothing
about it; the next deadline is worked out, from the bytes received so far,
when the current one passes.

The end of the client's input (EOF: a close, or a half-close after sending)
is final: a request received whole still gets its answer, but one that can
never complete -- a head or a body cut short -- is answered 400 at once and
the connection closed (an application reading a streamed body sees the
client gone).

The write side (raw and framed responses, batching, files) is
:mod:`prefork.worker.response_writer`'s :class:`ResponseWriter`, mixed in.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prefork.settings import DEFAULTS, Config
from prefork.worker import accesslog, sendclock
from prefork.worker.bodystream import BodyStream
from prefork.worker.deadlines import body_deadline, head_deadline
from prefork.worker.http1 import NEED_DATA, PAUSED, ProtocolError, RequestHead, RequestParser
from prefork.worker.httputil import HTTPHeaders, HTTPInputError, parse_body_arguments
from prefork.worker.proxy_protocol import ProxyInfo, ProxyProtocolError, parse_proxy_header
from prefork.worker.request import HTTPRequest
from prefork.worker.response import (
    LAST_CHUNK,
    REASONS,
    body_complete,
    encode_last_chunk,
    error_response,
)
from prefork.worker.response_writer import (
    _R_FRAMED_HELD,
    _R_FRAMED_STREAM,
    _R_NONE,
    _R_RAW_BODY,
    _R_RAW_HEAD,
    SPLIT_BODY,
    ResponseWriter,
)
from prefork.worker.sendclock import SendClock
from prefork.worker.xheaders import XHEADERS_ALL

if TYPE_CHECKING:
    from prefork.worker.httpserver import HTTPServer

__all__ = ["HTTPConnection"]

error_log = logging.getLogger("prefork.error")
# Checked before calling into the access log: off, a request costs this call.
_access_log_enabled = accesslog.access_log.isEnabledFor

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))

# What the connection is waiting for, for the timeout sweep.
_T_NONE = 0  # the application is answering: no deadline
_T_HEAD = 1  # a request head (header_timeout, header_min_rate, header_timeout_max)
_T_BODY = 2  # more request body (body_timeout, body_min_rate)
_T_IDLE = 3  # the next request on an idle keep-alive connection
_T_STREAM = 4  # draining: a response of unknown length ends at the drain's bound
_T_LINGER = 5  # answered and half-closed: the client's unread bytes are discarded

#: How long a connection closed with the client's bytes unread (a body
#: answered before it was read, a refused request, pipelined requests after
#: the last answer) goes on reading them after its answer and our FIN,
#: before the close: see ``_linger``.
LINGER = 2.0

#: How long past ``drain_grace`` a draining worker lets a long-lived answer
#: run: a WebSocket's close handshake, a stream of unknown length.
DRAIN_STREAM_EXTRA = 5.0


class HTTPConnection(ResponseWriter, asyncio.Protocol):
    """Handles one HTTP/1.x client connection (the seed's HTTPConnection).

    ``stream`` may be an asyncio transport (the connection then starts at
    once); the server creates connections with ``stream=None`` and the loop
    calls :meth:`connection_made`.
    """

    #: a PROXY header already read off the raw connection, in front of TLS
    #: (:mod:`prefork.worker.tls_accept` sets it before connection_made).
    proxy_info: ProxyInfo | None = None
    #: the TLS acceptor this connection takes over from: it leaves the
    #: server's connections as this one joins, so one client counts once.
    replaces: Any = None

    def __init__(
        self,
        stream: asyncio.BaseTransport | None = None,
        address: Any = None,
        request_callback: Callable[[HTTPRequest], Any] | None = None,
        no_keep_alive: bool = False,
        xheaders: bool | int = False,
        *,
        server: HTTPServer | None = None,
    ) -> None:
        self.request_callback = request_callback
        self.no_keep_alive = no_keep_alive
        # (the seed's xheaders=True is tornado's four headers: XHEADERS_ALL)
        self.xheaders = XHEADERS_ALL if xheaders is True else xheaders
        self.address = address
        self.server = server
        self.config: Config = server.config if server is not None else DEFAULTS
        self.parser = RequestParser(self.config)
        self.transport: Any = None
        self.is_tls = False
        #: the socket's transport under asyncio's TLS one (sendclock.socket_transport)
        self.lower_transport: Any = None
        self.remote_ip: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._draining = False
        #: draining: when a response of unknown length is cut (_bound_stream)
        self._drain_until = 0.0
        self._in_process = False
        #: responses held while pipelined requests are answered (None: send at once).
        self._batch: list[bytes] | None = None
        self._reading_paused = False
        # (instance attributes, not class defaults: read on every request,
        # and Python 3.11 reads a class default through an instance slowly)
        #: the transport holds more unsent output than its high-water mark
        #: (pause_writing, until resume_writing).
        self._writing_paused = False
        #: a response finished while writing was paused: the next request is
        #: neither read nor answered until the client has read (_block_output).
        self._output_blocked = False
        #: aborts the connection when its output stalls (send_timeout); made
        #: when it first does.
        self._send_clock: SendClock | None = None
        #: roughly what the batch of pipelined responses holds (see _finish_request)
        self._batch_bytes = 0
        self._write_callback: Callable[[], Any] | None = None
        self._close_callback: Callable[[], Any] | None = None
        self._eof_callback: Callable[[], Any] | None = None
        #: bytes of a PROXY protocol header still being received (None: none expected).
        self._proxy_buffer: bytes | None = None
        #: the callback reads request bodies as they arrive (WSGI's wsgi.input)
        #: instead of getting them whole.
        self._stream_bodies = bool(getattr(request_callback, "streams_request_body", False))
        self._body_stream: BodyStream | None = None
        # Timeout bookkeeping, read by the server's sweep.
        self.deadline = 0.0
        self._waiting = _T_HEAD
        #: loop time the head or body being waited for began: its first deadline
        #: is this plus its timeout, and on_timeout works out the later ones.  A
        #: body's is set as it begins; a head's is worked out from its first
        #: deadline when that passes (no store per request: see on_timeout).
        self._since = 0.0
        #: the last deadline on_timeout gave a head (so the next look knows it
        #: is not the head's first deadline).
        self._extended = 0.0
        #: body bytes on_timeout last saw (reads count nothing: the parser and
        #: the body know what came), and the loop time it saw them grow.
        self._seen = 0
        self._progress = 0.0
        #: the client ended its side (EOF): nothing more will arrive.
        self._eof = False
        # The request being read or answered.
        self._head: RequestHead | None = None
        self._body: bytes | bytearray | None = None
        self._request: HTTPRequest | None = None
        self._keep_alive = False
        # The response in progress.  Each request starts at _R_NONE with no
        # status and no bytes (reset in _dispatch); every other field belongs
        # to one way of answering and is set when the response takes it: the
        # raw fields by write(), the framed ones by write_headers and
        # _start_framed.  What they hold was decided by prefork.worker.response.
        self._resp_state = _R_NONE
        self._resp_status = 0
        self._resp_bytes = 0
        #: the body length the head promised (None: no promise to check).
        self._resp_expected: int | None = None
        self._raw_head: bytearray | None = None
        #: the last body bytes of a raw chunked body (None: not chunked).
        self._raw_tail: bytes | None = None
        self._chunking = False
        #: no body may follow the framed head: later body pieces are dropped.
        self._bodyless = False
        self._framed: tuple[int, str | None, list[tuple[str, str]]] | None = None
        self._held: bytes | None = None
        if stream is not None:
            self.connection_made(stream)

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        server = self.server
        if server is not None:
            self._loop = server.asyncio_loop
        else:
            self._loop = asyncio.get_event_loop()
        peer = transport.get_extra_info("peername")
        if self.address is None:
            self.address = peer
        # Unix sockets have no peer address: the seed reports 0.0.0.0.
        self.remote_ip = peer[0] if isinstance(peer, tuple) and peer else "0.0.0.0"
        self.is_tls = transport.get_extra_info("sslcontext") is not None
        if self.is_tls:
            self.lower_transport = sendclock.socket_transport(transport)
        self.deadline = self._loop.time() + self.config.header_timeout
        if server is not None:
            server._connection_opened(self)
            if self.xheaders or server.proxy_protocol:
                trusted = server.peer_trusted(self.remote_ip, not isinstance(peer, tuple))
                self.xheaders = self.xheaders if trusted else 0
                if server.proxy_protocol:
                    if not trusted:
                        error_log.info("PROXY protocol: refusing untrusted peer %s", self.remote_ip)
                        self._close()
                        return
                    if self.proxy_info is None:
                        self._proxy_buffer = b""
                    else:
                        self._use_proxy_info(self.proxy_info)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._send_clock is not None:
            self._send_clock.stop()
            self._send_clock = None  # (the clock holds this connection: no cycle)
        if self._file_sender is not None:
            self._file_sender.cancel()
        if self._body_stream is not None:
            self._body_stream.abort()
        self._write_callback = None
        # (an adapter's bound method, whose object holds this connection: a
        # cycle that kept each closed connection, with its TLS buffers, until
        # the cycle collector ran: ~300 KiB each, 600 MB between collections)
        self._eof_callback = None
        self.deadline = 0.0
        if self.server is not None:
            self.server._connection_closed(self)
        self._run_close_callback()

    def _run_close_callback(self) -> None:
        callback = self._close_callback
        if callback is not None:
            self._close_callback = None
            try:
                callback()
            except Exception:
                error_log.exception("Exception in close callback")

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        if self._proxy_buffer is not None:
            remainder = self._read_proxy_header(data)
            if not remainder:
                return
            data = remainder
        parser = self.parser
        parser.feed(data)
        waiting = self._waiting
        if waiting == _T_IDLE:
            self._waiting = _T_HEAD
            self.deadline = self._loop.time() + self.config.header_timeout  # type: ignore[union-attr]
        if self._request is not None and self._body_stream is None:
            # Answering: pipelined bytes wait, within a bound.
            if not self._reading_paused and parser.buffered > self.config.max_header_size:
                self._pause_reading()
            return
        if self._output_blocked:
            return  # (reading is paused: bytes already on their way wait in the parser)
        self._process()

    def _read_proxy_header(self, data: bytes) -> bytes | None:
        """Consume the PROXY header; return the bytes after it, if any."""
        buffered = (self._proxy_buffer or b"") + data
        try:
            parsed = parse_proxy_header(buffered)
        except ProxyProtocolError as exc:
            error_log.info("PROXY protocol from %s: %s; closing", self.remote_ip, exc)
            self._close()
            return None
        if parsed is None:
            self._proxy_buffer = buffered
            return None
        info, consumed = parsed
        self._proxy_buffer = None
        self._use_proxy_info(info)
        return buffered[consumed:]

    def _use_proxy_info(self, info: ProxyInfo) -> None:
        """The client is who the PROXY header names (LOCAL / UNKNOWN: the peer)."""
        if info.source_ip is not None:
            self.remote_ip = info.source_ip
            self.address = (info.source_ip, info.source_port)

    def eof_received(self) -> bool | None:
        """The client ended its side: it closed, or half-closed after sending.

        A request received whole still gets its answer (so do pipelined
        requests received whole before the EOF): the transport stays open
        for it.  What can never complete -- a head or a body cut short -- is
        refused at once (:meth:`_input_ended`); between requests the
        connection just closes.
        """
        if self._closed:
            return None
        self._eof = True
        if self._request is not None:
            callback = self._eof_callback
            if callback is not None:
                self._eof_callback = None
                callback()
            elif not self._stream_bodies and self._close_callback is not None:
                # A request callback watching for the client the 2.x way
                # (set_close_callback: a long poll) learns of its end as the
                # close, as under tornado; kept half-open, it never learned and
                # the socket stayed in CLOSE-WAIT.
                self._close()
                return None
            if self._body_stream is None and not self._closed:
                # Whole: answer it, then close (after what is pipelined, if any).
                if not self.parser.buffered:
                    self._keep_alive = False
                # (TLS has no half-close: the TLS layer closes the transport
                # whatever is returned, and warns for a True: the application
                # then sees the client gone, connection_lost)
                return None if self.is_tls else True
        self._input_ended()
        return None

    def _input_ended(self) -> None:
        """Nothing more will arrive, and the parser needs more: close, and
        say 400 to a request begun (RFC 9112 8: an incomplete message).

        nginx closes without a word (logging 400); a client that only
        half-closed can still read, and learns why.  No byte of a request
        yet: a plain close, as for an idle connection.
        """
        if self._closed:
            return
        if self._head is not None or self._body_stream is not None:
            self._reject(400, "the client ended its side before the request body was complete")
        elif self.parser.started:
            self._reject(400, "the client ended its side in the middle of a request head")
        else:
            self._close()

    def watch_client(self, callback: Callable[[], Any] | None) -> None:
        """``callback`` once the client closes or ends its side (both callbacks in one)."""
        self._close_callback = self._eof_callback = callback

    def set_eof_callback(self, callback: Callable[[], Any] | None) -> None:
        """Run ``callback`` once if the client ends its side while a request is
        pending (it may have closed, or only half-closed: the answer can still
        be written).  ASGI turns it into ``http.disconnect``."""
        self._eof_callback = callback

    def pause_writing(self) -> None:
        """The transport holds more than its high-water mark: the client is
        not reading as fast as we answer.  No next request is started until
        it drains (:meth:`_finish_request`), and :data:`send_timeout` starts."""
        self._writing_paused = True
        self._start_send_clock()

    def resume_writing(self) -> None:
        self._writing_paused = False
        clock = self._send_clock
        if clock is not None and clock.running:
            clock.stop()
            if self._closed and self.transport.get_write_buffer_size():
                # Closing with output still unsent: the bound goes on, to the
                # last byte (a close waits for the flush, however long).
                clock.start()
        callback = self._write_callback
        if callback is not None:
            self._write_callback = None
            self.transport.set_write_buffer_limits()
            self._loop.call_soon(callback)  # type: ignore[union-attr]
        if self._output_blocked:
            self._loop.call_soon(self._unblock_output)  # type: ignore[union-attr]

    def _start_send_clock(self) -> None:
        clock = self._send_clock
        if clock is None:
            clock = self._send_clock = SendClock(
                self._loop,  # type: ignore[arg-type]
                self.transport,
                self.config.send_timeout,
                self._send_timed_out,
            )
        clock.start()

    def _send_timed_out(self, unsent: int) -> None:
        """``send_timeout`` passed and the client read nothing: the output is
        dropped and the connection aborted; the application learns it as a
        disconnect."""
        error_log.info(
            "%s read none of %d byte(s) of output for %.0f s (send_timeout): aborting",
            self.remote_ip,
            unsent,
            self.config.send_timeout,
        )
        self._closed = True
        self._output_blocked = False
        self.deadline = 0.0
        sendclock.reset(self.transport)  # (connection_lost follows, on the loop)

    # -- reading requests ------------------------------------------------------

    def _process(self) -> None:
        """Turn buffered bytes into requests until one is left in progress."""
        parser = self.parser
        self._in_process = True
        try:
            while not self._closed:
                try:
                    event = parser.next_event()
                except ProtocolError as exc:
                    self._reject(exc.status, exc.reason)
                    return
                if event is NEED_DATA or event is PAUSED:
                    if event is NEED_DATA and self._eof:
                        self._input_ended()  # (pipelined after the EOF, incomplete)
                    return
                cls = type(event)
                if cls is RequestHead:
                    self._head = event  # type: ignore[assignment]
                    if event.has_body:  # type: ignore[union-attr]
                        length = event.content_length  # type: ignore[union-attr]
                        if self._stream_bodies and (length is None or parser.buffered < length):
                            # Stream it, unless it is all here already: then
                            # it goes over whole, with no stream to read through.
                            # A 100 Continue waits for the application to read
                            # (an answer without reading needs no body).
                            self._dispatch(b"", None, streaming=True)
                        elif event.expect_continue:  # type: ignore[union-attr]
                            self._send(_CONTINUE)
                        self._waiting = _T_BODY
                        self._start_body_clock()
                        continue
                    self._dispatch(b"", None)
                elif cls is bytes:
                    if self._body_stream is not None:
                        self._body_stream.feed(event)  # type: ignore[arg-type]
                        continue
                    body = self._body
                    if body is None:
                        self._body = event  # type: ignore[assignment]
                    else:
                        if type(body) is bytes:
                            body = self._body = bytearray(body)
                        body += event  # type: ignore[operator]
                    continue
                elif self._body_stream is not None:  # EndOfMessage of a streamed body
                    self._end_body_stream(event.trailers)  # type: ignore[union-attr]
                else:
                    body = self._body
                    self._body = None
                    self._dispatch(
                        bytes(body) if body is not None else b"",
                        event.trailers,  # type: ignore[union-attr]
                    )
                if self._request is not None and self._body_stream is None:
                    return  # answered asynchronously; resumed by finish()
                if not parser.buffered or self._output_blocked:
                    # The usual end: no pipelined request waiting (asking the
                    # parser would only say NEED_DATA or PAUSED); or the
                    # client is not reading (resumed by resume_writing).
                    return
        finally:
            self._in_process = False
            if self._batch is not None:
                self._flush_batch()

    def _dispatch(
        self, body: bytes, trailers: list[tuple[str, str]] | None, streaming: bool = False
    ) -> None:
        head = self._head
        assert head is not None
        self._head = None
        self._waiting = _T_NONE
        self.deadline = 0.0
        try:
            headers = HTTPHeaders.from_parsed(head.headers)
            # Positional: keyword arguments make this call ~0.1 µs slower.
            request = HTTPRequest(
                head.method,
                head.target,
                head.version,
                headers,
                body,
                self.remote_ip,
                None,  # protocol (from the connection)
                head.host,
                None,  # files
                self,  # connection
            )
            if trailers:
                request.trailers = trailers
            if streaming:
                stream = self._body_stream = request.body_stream = BodyStream(
                    self._pause_for_reader, self._resume_for_reader
                )
                if head.expect_continue:
                    stream.on_first_wait = functools.partial(self._continue_soon, request)
            elif body and head.method in _BODY_METHODS and not self._stream_bodies:
                # (the seed's request.arguments; WSGI and ASGI parse bodies themselves)
                content_type = headers.get("Content-Type")
                if content_type:
                    parse_body_arguments(
                        content_type, body, request.arguments, request.files, headers
                    )
        except HTTPInputError as exc:
            self._reject(400, str(exc))
            return
        self._request = request
        self._keep_alive = head.keep_alive and not self.no_keep_alive and not self._draining
        self._resp_state = _R_NONE
        self._resp_status = 0
        self._resp_bytes = 0
        server = self.server
        callback = self.request_callback
        if server is not None:
            observer = server.observer
            if observer is not None:
                observer.request_started(request)
            if server.builtin_routes:
                callback = server.builtin_routes.get(head.target, callback)
        try:
            callback(request)  # type: ignore[misc]
        except Exception:
            self._callback_failed(request)

    def _end_body_stream(self, trailers: list[tuple[str, str]]) -> None:
        stream = self._body_stream
        assert stream is not None
        self._body_stream = None
        if self._request is not None and trailers:
            self._request.trailers = trailers
        stream.finish()
        self._waiting = _T_NONE
        self.deadline = 0.0

    def _pause_for_reader(self) -> None:
        """The application has not read the body it was sent: stop reading."""
        self.deadline = 0.0  # a slow reader is not a slow client
        if not self._reading_paused:
            self._pause_reading()

    def _resume_for_reader(self) -> None:
        """Called from the reader's thread once it has caught up."""
        self._loop.call_soon_threadsafe(self._resume_reading)  # type: ignore[union-attr]

    def _resume_reading(self) -> None:
        if self._reading_paused and not self._closed:
            self._reading_paused = False
            self.transport.resume_reading()
            if self._body_stream is not None:
                self._start_body_clock()

    def _start_body_clock(self) -> None:
        """A body is awaited from now: its first deadline."""
        self._since = self._progress = now = self._loop.time()  # type: ignore[union-attr]
        self._seen = 0
        self.deadline = now + self.config.body_timeout

    def _body_received(self) -> int:
        """Bytes of the body being read: handed on (de-chunked) or still buffered."""
        stream = self._body_stream
        if stream is not None:
            got = stream.received
        else:
            got = len(self._body) if self._body is not None else 0
        return got + self.parser.buffered

    def _callback_failed(self, request: HTTPRequest) -> None:
        error_log.error(
            "Uncaught exception in request callback: %s %s from %s",
            request.method,
            request.uri,
            request.remote_ip,
            exc_info=True,
        )
        if self._request is not request:
            return  # the response was already complete
        self._keep_alive = False
        if self._resp_state in (_R_NONE, _R_FRAMED_HELD) and not self._closed:
            self._resp_state = _R_RAW_BODY
            self._resp_status = 500
            self._send(error_response(500, date=self._date()))
        elif self._close_delimited():
            sendclock.reset_on_close(self.transport)  # (cut: see abort_response)
        self._finish_request()

    def _reject(self, status: int, reason: str) -> None:
        """Refuse the request being read (malformed, cut short, too slow) and close.

        Nothing of it reached the application yet: answer ``status``.  Its
        body streams to the application (WSGI, ASGI): the reader sees the
        client gone (ClientDisconnected, ``http.disconnect``), and ``status``
        is the answer only if no byte of the application's response has
        gone out (the request's access log line then says ``status``).
        """
        if self._closed:
            return
        error_log.info(
            "%d %s from %s: %s", status, REASONS.get(status, "Error"), self.remote_ip, reason
        )
        stream = self._body_stream
        if stream is None:
            self._head = None
            self._body = None
            self._send(error_response(status, date=self._date()))
            accesslog.log_rejected(self.remote_ip, status)
            if self.server is not None and self.server.observer is not None:
                self.server.observer.request_rejected(status)
        else:
            self._body_stream = None
            self._keep_alive = False
            stream.abort(refused=f"{status} {reason}")
            if self._resp_state != _R_RAW_BODY and self._resp_state != _R_FRAMED_STREAM:
                # Nothing is out yet (a raw or framed head may be held): say why.
                self._raw_head = self._framed = self._held = None
                self._resp_state = _R_RAW_BODY
                self._resp_status = status
                self._resp_bytes = 0
                self._send(error_response(status, date=self._date()))
        self._linger()  # (the client may still be sending what was refused)

    def _continue_soon(self, request: HTTPRequest) -> None:
        """The application waits for the body of ``request``: ask the client for
        it.  Called from the reader's thread (a WSGI thread, or the loop)."""
        loop = self._loop
        if loop is not None and not self._closed:
            try:
                loop.call_soon_threadsafe(self._send_continue, request)
            except RuntimeError:  # the loop is closed (the worker is gone): no one to ask
                pass

    def _send_continue(self, request: HTTPRequest) -> None:
        # Only while nothing of the response is out: after it, a 100 would
        # land inside the response.
        if self._request is request and self._resp_state == _R_NONE and not self._closed:
            self._send(_CONTINUE)

    def finish(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """Complete the response; the connection then reads the next request.

        ``trailers``: fields sent after a chunked body (a streamed response on
        HTTP/1.1, see ``flush_headers``); dropped where the body is not chunked
        (HTTP/1.0, a Content-Length, HEAD), as RFC 9110 6.5 lets a sender do.
        An invalid or forbidden trailer raises ValueError before anything is sent.
        """
        last_chunk = LAST_CHUNK if not trailers else encode_last_chunk(trailers)
        if self._request is None:
            if self._closed:
                return
            raise RuntimeError("finish() called with no request in progress (twice?)")
        if self._closed:
            self._finish_request()
            return
        state = self._resp_state
        if state == _R_RAW_BODY:
            if not body_complete(self._resp_expected, self._resp_bytes, self._raw_tail):
                self._keep_alive = False  # the client cannot find the end otherwise
        elif state == _R_FRAMED_HELD:
            self._start_framed(self._held or b"")
        elif state == _R_FRAMED_STREAM:
            if self._chunking:
                self._send(last_chunk)
            elif not body_complete(self._resp_expected, self._resp_bytes, None):
                self._keep_alive = False
        elif state == _R_RAW_HEAD:
            raw = self._raw_head
            self._raw_head = None
            self._keep_alive = False
            if raw:
                self._send(bytes(raw))
        else:  # nothing was written at all
            error_log.warning(
                "Request callback finished without a response: %s %s",
                self._request.method,
                self._request.uri,
            )
            self._keep_alive = False
        self._finish_request()

    def _finish_request(self) -> None:
        request = self._request
        assert request is not None
        self._request = None
        server = self.server
        if server is not None:
            if _access_log_enabled(logging.INFO):
                accesslog.log_request(request, self._resp_status, self._resp_bytes)
            observer = server.observer
            if observer is not None:
                observer.request_finished(request, self._resp_status, self._resp_bytes)
        unread = False
        if self._body_stream is not None:
            # Answered before the body was all read: the rest of it would be
            # taken for the next request, so the connection ends here.
            self._body_stream.abort()
            self._body_stream = None
            self._keep_alive = False
            unread = True
        if self._closed or not self._keep_alive or self._draining:
            if unread or self.parser.buffered:
                self._linger()  # (pipelined requests left unanswered count too)
            else:
                self._close()
            return
        parser = self.parser
        parser.start_next_cycle()
        if parser.started and self._in_process:  # (bytes are buffered: pipelined)
            if self._batch is None:
                self._batch = []  # hold the next responses (_send)
                self._batch_bytes = 0
            else:
                # Bounded: past the high-water mark the batch goes now, and
                # the transport says whether the client keeps up (a body's
                # length, plus a head's worth: not worth adding up exactly).
                self._batch_bytes += self._resp_bytes + 256
                if self._batch_bytes > SPLIT_BODY:
                    self._flush_batch()
                    if self._batch is None:  # (a file being sent keeps it held)
                        self._batch = []
                    self._batch_bytes = 0
        if self._writing_paused:
            self._block_output()
            return
        self._await_next()

    def _await_next(self) -> None:
        """A response is done: read and answer the next request, if it came
        (pipelined), or wait for it."""
        parser = self.parser
        if parser.started:
            self._waiting = _T_HEAD
            self.deadline = self._loop.time() + self.config.header_timeout  # type: ignore[union-attr]
        else:
            if self._eof:  # nothing more will come
                self._close()
                return
            self._waiting = _T_IDLE
            self.deadline = self._loop.time() + self.config.keep_alive  # type: ignore[union-attr]
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        if not self._in_process and parser.started:
            self._process()

    def _block_output(self) -> None:
        """The client is not reading its responses (the transport is above
        its high-water mark as one finishes): read and answer nothing more
        until it does, or ``send_timeout`` ends it.  Without this a client
        that pipelines requests and never reads makes the worker buffer
        every response (uvicorn pauses reading the same way)."""
        self._output_blocked = True
        self._waiting = _T_NONE
        self.deadline = 0.0
        if not self._reading_paused:
            self._pause_reading()

    def _unblock_output(self) -> None:
        if self._output_blocked and not self._writing_paused and not self._closed:
            self._output_blocked = False
            self._await_next()

    # -- protocol upgrade --------------------------------------------------------

    def detach(self) -> tuple[Any, bytes]:
        """Hand the transport over to another protocol (a WebSocket upgrade).

        Call it while answering a request, before anything of the response
        was written; the caller writes its own response (``101 Switching
        Protocols``) and makes the transport talk to its protocol
        (``transport.set_protocol``).  This connection forgets the request
        (counted as served, status 101), leaves the server's set of
        connections and never touches the transport again.  Returns the
        transport and the bytes the client sent after the request head.
        """
        request = self._request
        if request is None or self._resp_state != _R_NONE or self._closed:
            raise RuntimeError("detach() needs a request in progress and no response yet")
        if self._batch is not None:
            self._flush_batch()
        self._resp_status = 101
        self._keep_alive = False
        self._request = None
        self._closed = True  # for this object: the transport lives on elsewhere
        self._close_callback = None
        self._eof_callback = None
        self._write_callback = None
        if self._send_clock is not None:  # (the new protocol has its own)
            self._send_clock.stop()
            self._send_clock = None
        self.deadline = 0.0
        server = self.server
        if server is not None:
            if _access_log_enabled(logging.INFO):
                accesslog.log_request(request, 101, 0)
            if server.observer is not None:
                server.observer.request_finished(request, 101, 0)
            server._connection_closed(self)
        if self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()
        return self.transport, self.parser.take_buffered()

    # -- request timeout (--request-timeout) --------------------------------------

    def request_timed_out(self, request: HTTPRequest, age: float) -> None:
        """Give up ``request``, in flight for ``age`` seconds (the server's sweep).

        Nothing of the response sent yet: 503; otherwise the client sees a
        close (a cut body).  The connection closes either way, so whatever
        the application still writes or finishes goes nowhere, and never
        into another request's response.  ``request.on_timeout`` runs first
        (ASGI: the application's task is cancelled), then one line at
        WARNING in ``prefork.error``.
        """
        if request is not self._request or request.timed_out:
            return
        request.timed_out = True
        note = None
        callback = request.on_timeout
        if callback is not None:
            try:
                note = callback()
            except Exception:
                error_log.exception("Error in the request timeout callback")
        error_log.warning(
            "request timed out after %.1f s: %s %s from %s%s",
            age,
            request.method,
            request.uri,
            request.remote_ip,
            f" ({note})" if isinstance(note, str) else "",
        )
        self._keep_alive = False
        state = self._resp_state
        if not self._closed and state != _R_RAW_BODY and state != _R_FRAMED_STREAM:
            # Nothing is out yet (a raw or framed head may be held): 503.
            self._raw_head = self._framed = self._held = None
            self._resp_state = _R_RAW_BODY
            self._resp_status = 503
            self._resp_bytes = 0
            self._send(
                error_response(503, "Service Unavailable: the request timed out", self._date())
            )
        self._finish_request()

    # -- connection management -------------------------------------------------

    def _pause_reading(self) -> None:
        self._reading_paused = True
        self.transport.pause_reading()

    def _linger(self) -> None:
        """Close in stages (RFC 9112 9.6), when the client's bytes may be unread.

        Closing a socket with received bytes unread makes the kernel answer
        with a reset, which can destroy the answer before the client reads
        it (the unsent and unacknowledged part of it is dropped, and a
        client still sending gets an error instead of the response). So the
        answer goes, then our FIN (``write_eof``), and what the client still
        sends is read and dropped until it closes, for at most
        :data:`LINGER` seconds (nginx's ``lingering_close``).  On TLS, or once
        the client has ended its side, a plain close.
        """
        if self._closed:
            return
        transport = self.transport
        if self._eof or self.is_tls or not transport.can_write_eof():
            self._close()
            return
        self._close(linger=True)

    def _close(self, linger: bool = False) -> None:
        if not self._closed:
            self._closed = True
            self.deadline = 0.0
            if self._file_sender is not None:
                self._file_sender.cancel()  # (what it held is dropped: the body is cut)
            if self._batch is not None:
                self._flush_batch()
            transport = self.transport
            if linger and not transport.is_closing():
                # data_received drops what arrives now; eof_received (the
                # client's close) returns None, which closes the transport.
                transport.write_eof()
                if self._reading_paused:
                    self._reading_paused = False
                    transport.resume_reading()
                self._waiting = _T_LINGER
                self.deadline = self._loop.time() + LINGER  # type: ignore[union-attr]
                # For the application the connection is closed now: a
                # streaming one waiting for the client to read must not wait
                # for the linger's end (its writes are dropped meanwhile).
                self._run_close_callback()
                return
            self._close_transport()

    def close(self) -> None:
        """Close the connection (pending output is still sent; a lingering
        one stops lingering)."""
        if self._waiting == _T_LINGER and self._closed:
            self._waiting = _T_NONE
            self.deadline = 0.0
            self._close_transport()
            return
        self._close()

    def abort_response(self) -> None:
        """Give up the response in progress: close, so the client sees it cut.

        A chunked or Content-Length body that stops short shows the client it
        was cut; a body delimited by the close alone (HTTP/1.0, no
        Content-Length) would look whole after a FIN, so it ends with a
        reset instead (SO_LINGER 0: the kernel drops what it has not sent
        yet, which is no loss in a body known to be broken).
        """
        if self._close_delimited():
            sendclock.reset_on_close(self.transport)
        self.close()

    def _close_delimited(self) -> bool:
        """A framed body is being sent that only the close will end."""
        return (
            not self._closed
            and self._resp_state == _R_FRAMED_STREAM
            and not self._chunking
            and not self._bodyless
            and self._resp_expected is None
        )

    def _close_transport(self) -> None:
        """Close; output still unsent goes first, within ``send_timeout``
        (asyncio's close waits for the flush: forever, for a client that
        never reads)."""
        transport = self.transport
        if transport.get_write_buffer_size():
            self._start_send_clock()
        transport.close()

    def closed(self) -> bool:
        return self._closed

    @property
    def stream(self) -> HTTPConnection:
        """2.x applications reached the stream for ``set_close_callback``."""
        return self

    def set_close_callback(self, callback: Callable[[], Any] | None) -> None:
        """Run ``callback`` once when the connection closes."""
        self._close_callback = callback

    def get_ssl_certificate(self, binary_form: bool = False) -> Any:
        """The peer certificate, or None on a plain connection or without one."""
        if not self.is_tls or self.transport is None:
            return None
        ssl_object = self.transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return None
        try:
            certificate = ssl_object.getpeercert(binary_form)
        except (ValueError, ssl.SSLError):
            return None
        return certificate or None

    @property
    def busy(self) -> bool:
        """True while a request is being read or answered."""
        return self._request is not None or self._head is not None or self.parser.started

    def start_drain(self) -> None:
        """Graceful stop: close after the current response, or when idle,
        after a short grace.

        Closing an idle keep-alive connection at once races with a request
        the client may be sending right now; during the grace such a request
        is still answered (with ``Connection: close``).
        """
        self._draining = True
        now = self._loop.time()  # type: ignore[union-attr]
        self._drain_until = now + self.config.drain_grace + DRAIN_STREAM_EXTRA
        if not self.busy and not self._closed:
            self._waiting = _T_IDLE
            self.deadline = now + min(self.config.drain_grace, self.config.keep_alive)
        elif self._resp_state == _R_RAW_BODY or self._resp_state == _R_FRAMED_STREAM:
            self._bound_stream()

    def _bound_stream(self) -> None:
        """Draining: a response of unknown length (chunked, or ending at the
        close: server-sent events, a long poll) ends at the drain's bound, as
        a WebSocket's closing handshake does; a response with a length runs
        to its end (a download must not be cut).  Called as such a response
        starts while draining, or as the drain starts during one."""
        # (_bodyless belongs to the framed way of answering: a raw response's
        # head said no length, and a raw no-body answer finishes at once)
        bodyless = self._bodyless and self._resp_state == _R_FRAMED_STREAM
        if self._resp_expected is None and not bodyless and not self._closed:
            self._waiting = _T_STREAM
            self.deadline = self._drain_until

    def on_timeout(self) -> None:
        """Called by the server's sweep when :attr:`deadline` has passed.

        An idle connection, or one that sent no byte of a request, closes.
        A head or body still arriving at the minimum rate gets a later
        deadline (:mod:`prefork.worker.deadlines`); one too slow, 408.
        """
        if self._closed:
            if self._waiting == _T_LINGER:
                self.close()  # (still sending after LINGER s: its reset is its own)
            return
        waiting = self._waiting
        if waiting == _T_IDLE or (waiting == _T_HEAD and not self.parser.started):
            self._close()
            return
        if waiting == _T_STREAM:
            request = self._request
            error_log.info(
                "draining: a response streaming for longer than the drain allows "
                "(drain_grace + %.0f s) is cut: %s %s to %s",
                DRAIN_STREAM_EXTRA,
                request.method if request is not None else "-",
                request.uri if request is not None else "-",
                self.remote_ip,
            )
            self._keep_alive = False
            self._close()  # (the application learns it as the client's disconnect)
            return
        config = self.config
        now = self._loop.time()  # type: ignore[union-attr]
        if waiting == _T_HEAD:
            if self.deadline != self._extended:
                # The first look at this head: its deadline is still the one set
                # as it began (start + header_timeout; a fresh loop time, never
                # equal to a deadline given before), so the request path needs
                # no other store.  (Measured: one more attribute store there
                # costs as much as the whole rule.)
                self._since = self.deadline - config.header_timeout
            # (an incomplete head is all in the parser's buffer)
            deadline = head_deadline(
                self._since,
                self.parser.buffered,
                config.header_timeout,
                config.header_min_rate,
                config.header_timeout_max,
            )
            if deadline > now:
                self.deadline = self._extended = deadline
            else:
                self._reject(408, "timed out waiting for the request head")
        elif waiting == _T_BODY:
            received = self._body_received()
            if received != self._seen:  # bytes came since the last look
                self._seen = received
                self._progress = now
            deadline = body_deadline(
                self._since, received, config.body_timeout, config.body_min_rate, self._progress
            )
            if deadline > now:
                self.deadline = deadline
            else:
                self._reject(408, "timed out waiting for the request body")
