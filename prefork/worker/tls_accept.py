"""TLS listeners: the first bytes of a connection are looked at in the clear,
then the TLS handshake runs on that same connection.

Two things can come before the ClientHello that the loop's own TLS server
cannot deal with: a PROXY protocol header (a TCP load balancer passing TLS
through: HAProxy ``mode tcp`` with ``send-proxy-v2``, cloud network load
balancers write it in the clear), and a plain HTTP request sent to the
HTTPS port by mistake, which a TLS server can only close, where nginx
answers ``400 The plain HTTP request was sent to HTTPS port``.  So a TLS
listener runs without TLS, and every accepted connection starts with a
:class:`TLSAcceptor`:

1. The acceptor takes the connection's socket (a duplicate of its
   descriptor; the loop's transport, which has read nothing, is closed)
   and reads from it directly: it peeks (``MSG_PEEK``), and with
   ``--proxy-protocol`` takes exactly the header's bytes off the socket, so
   whatever follows -- the ClientHello, even when it came in the same
   segment -- stays in the kernel for the TLS layer.  Nothing has to be
   handed over and nothing can be lost.  The header is bounded (v1: 107
   bytes, v2: 16 + its length, at most 4096); it and the first byte after
   it must arrive within ``header_timeout``.
2. The first byte (after the header, if any) says what comes: 0x16 is a TLS
   handshake record; an ASCII letter is a plain HTTP request sent to the
   HTTPS port, answered ``400`` (as nginx does) and closed; anything else
   is closed.  A malformed or missing header, or an untrusted peer, is
   closed with no answer, as on a plain listener.
3. ``loop.connect_accepted_socket(..., ssl=context)`` (asyncio's and
   uvloop's) runs the handshake on the socket exactly as the loop's TLS
   server would, bounded by ``header_timeout``; the HTTP connection starts
   once it is done (with the address the header named, if any).
   (``loop.start_tls`` on the first transport would do too, but uvloop
   starts reading a transport right after ``connection_made`` even when it
   was paused there, and the protocol passed to ``start_tls`` may get data
   before the caller gets the TLS transport.)

This costs a peek and a hand-over per connection, nothing per request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from prefork.worker import accesslog
from prefork.worker.httpdate import http_date
from prefork.worker.proxy_protocol import (
    MAX_HEADER_LENGTH,
    ProxyInfo,
    ProxyProtocolError,
    parse_proxy_header,
)
from prefork.worker.response import error_response

if TYPE_CHECKING:
    from prefork.worker.connection import HTTPConnection
    from prefork.worker.httpserver import HTTPServer

__all__ = ["TLSAcceptor", "PLAIN_HTTP_ANSWER", "plain_http_answer"]

error_log = logging.getLogger("prefork.error")

_PLAIN_HTTP_REASON = "The plain HTTP request was sent to HTTPS port"
#: What a plain HTTP request sent to the TLS port gets (nginx's words), less
#: the Date line :func:`plain_http_answer` adds.
PLAIN_HTTP_ANSWER = error_response(400, _PLAIN_HTTP_REASON)


def plain_http_answer(date_header: bool) -> bytes:
    """The 400 for a plain HTTP request on the TLS port, dated now unless
    ``--no-date-header``: a 4xx of an origin server with a clock carries a
    Date (RFC 9110 6.6.1), as the connection's own refusals do."""
    return error_response(400, _PLAIN_HTTP_REASON, date=http_date() if date_header else None)


_TLS_HANDSHAKE_RECORD = 0x16
#: the most a peek may need: the longest header
_PEEK = MAX_HEADER_LENGTH
#: seconds a refused plain HTTP client has to read the answer before the close
_LINGER = 2.0

# States.
_HEADER = 0  # reading the PROXY header
_FIRST_BYTE = 1  # header read: waiting for the first byte after it
_LINGER_CLOSE = 2  # 400 sent to a plain HTTP client: discarding its bytes until it closes
_HANDSHAKE = 3  # the socket handed to the loop's TLS layer: handshake in progress
_DONE = 4  # handed over to the HTTP connection, or closed

#: handshakes in progress (the loop keeps only weak references to tasks)
_handshakes: set[asyncio.Task[None]] = set()


class TLSAcceptor(asyncio.Protocol):
    """One accepted connection on a TLS listener until TLS starts (after its
    PROXY header when ``proxy`` is set).

    It is one of the server's connections meanwhile (the sweep closes it at
    its ``deadline``; a drain closes it after a short grace if nothing has
    arrived yet).
    """

    def __init__(
        self,
        server: HTTPServer,
        make_connection: Callable[[], HTTPConnection],
        proxy: bool = True,
    ) -> None:
        self.server = server
        self._make_connection = make_connection
        self._proxy = proxy
        self.remote_ip: str | None = None
        self.deadline = 0.0
        self._state = _HEADER if proxy else _FIRST_BYTE
        self._sock: socket.socket | None = None
        #: header bytes taken off the socket while the header was incomplete
        self._header = b""
        self._info: ProxyInfo | None = None
        self._registered = False
        self._handshake_task: asyncio.Task[None] | None = None

    # -- asyncio.Protocol: only to be accepted ------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        peer = transport.get_extra_info("peername")
        self.remote_ip = peer[0] if isinstance(peer, tuple) and peer else "0.0.0.0"
        try:
            raw = transport.get_extra_info("socket")
            sock = socket.fromfd(raw.fileno(), raw.family, raw.type)
        except (OSError, AttributeError) as exc:
            error_log.warning("TLS listener: cannot read from %s: %s", self.remote_ip, exc)
            transport.close()
            return
        # The connection lives on through the duplicate descriptor.  The
        # transport has read nothing yet (it reads after connection_made, and
        # uvloop would read even if it were paused here): closing it closes
        # its descriptor only, with no FIN and no byte lost.
        transport.close()
        self._sock = sock
        sock.setblocking(False)  # (it is: the flag is shared with the other descriptor)
        self.deadline = server.asyncio_loop.time() + server.config.header_timeout
        self._registered = True
        server._connection_opened(self)
        if self._proxy and not server.peer_trusted(self.remote_ip, not isinstance(peer, tuple)):
            error_log.info("PROXY protocol: refusing untrusted peer %s", self.remote_ip)
            self.close()
            return
        server.asyncio_loop.add_reader(sock.fileno(), self._readable)

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # (the transport closed in connection_made; the connection is not over)

    # -- reading the header from the socket ------------------------------------------

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            if self._state == _LINGER_CLOSE:
                if not sock.recv(65536):
                    self.close()
                return
            data = sock.recv(_PEEK, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # reset by the peer
            self.close()
            return
        if not data:  # the peer closed
            self.close()
            return
        if self._state == _HEADER:
            taken = len(self._header)
            buffered = self._header + data
            try:
                parsed = parse_proxy_header(buffered)
            except ProxyProtocolError as exc:
                error_log.info("PROXY protocol from %s: %s; closing", self.remote_ip, exc)
                self.close()
                return
            if parsed is None:  # all of it is header: take it off the socket
                if self._take(len(data)):
                    self._header = buffered
                return
            info, consumed = parsed
            if not self._take(consumed - taken):
                return
            self._header = b""
            self._info = info
            if info.source_ip is not None:
                self.remote_ip = info.source_ip
            self._state = _FIRST_BYTE
            data = data[consumed - taken :]
            if not data:
                return  # the ClientHello is still on its way
        first = data[0]
        if first == _TLS_HANDSHAKE_RECORD:
            self._start_tls()
        elif 0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A:  # "GET ...", "POST ..."
            self._refuse_plain_http()
        else:
            error_log.info("TLS listener: no TLS handshake from %s; closing", self.remote_ip)
            self.close()

    def _take(self, count: int) -> bool:
        """Take ``count`` bytes, already peeked, off the socket (False: it failed)."""
        sock = self._sock
        assert sock is not None
        try:
            while count > 0:
                chunk = sock.recv(count)
                if not chunk:
                    break
                count -= len(chunk)
        except OSError:
            pass
        if count > 0:
            self.close()
            return False
        return True

    def _refuse_plain_http(self) -> None:
        sock = self._sock
        assert sock is not None
        error_log.info("400 Bad Request from %s: plain HTTP sent to the HTTPS port", self.remote_ip)
        accesslog.log_rejected(self.remote_ip, 400)
        observer = self.server.observer
        if observer is not None:
            observer.request_rejected(400)  # counted with the other refusals (metrics)
        try:
            # (a few dozen bytes into an empty send buffer: never a partial write)
            sock.send(plain_http_answer(self.server.config.date_header))
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        # Read what the client sent until it closes (or for a short while):
        # closing with its request unread would reset the connection, and
        # the reset could destroy the answer before the client reads it.
        self._state = _LINGER_CLOSE
        self.deadline = min(self.deadline, self.server.asyncio_loop.time() + _LINGER)

    # -- TLS --------------------------------------------------------------------------

    def _start_tls(self) -> None:
        sock = self._sock
        assert sock is not None
        loop = self.server.asyncio_loop
        loop.remove_reader(sock.fileno())
        self._state = _HANDSHAKE
        self.deadline = 0.0  # the handshake has its own timeout
        task = self._handshake_task = loop.create_task(self._handshake())
        _handshakes.add(task)
        task.add_done_callback(_handshakes.discard)

    async def _handshake(self) -> None:
        """The TLS handshake on the socket, as the loop runs it for a TLS listener."""
        server = self.server
        conn = self._make_connection()
        conn.proxy_info = self._info
        conn.replaces = self  # (counted as one connection across the hand-over)
        # From here the socket is the transport's: it closes it.
        sock, self._sock = self._sock, None
        assert sock is not None
        try:
            await server.asyncio_loop.connect_accepted_socket(
                lambda: conn,
                sock,
                ssl=server.ssl_context,
                ssl_handshake_timeout=server.config.header_timeout,
            )
        except Exception as exc:
            # As without PROXY protocol: a failed handshake closes this
            # connection only (the transport closed the socket).
            error_log.debug("TLS handshake with %s failed: %r", self.remote_ip, exc)
        finally:
            # (the HTTP connection joined the server's connections when the
            # handshake completed)
            self._state = _DONE
            self._leave()

    # -- ServedConnection ---------------------------------------------------------------

    def handed_over(self) -> None:
        """The HTTP connection joins the server's connections in this one's
        place: leave them without a word (the count does not change)."""
        if self._registered:
            self._registered = False
            self.server._connections.discard(self)

    def _leave(self) -> None:
        """Leave the server's connections (once)."""
        if self._registered:
            self._registered = False
            self.server._connection_closed(self)

    def close(self) -> None:
        state = self._state
        if state == _DONE:
            return
        task = self._handshake_task
        if task is not None:
            task.cancel()  # (once it runs, the transport closes the socket)
            if self._sock is None:
                return  # it runs: its end leaves the server's connections
        self._state = _DONE
        self.deadline = 0.0
        sock = self._sock
        if sock is not None:
            self._sock = None
            if task is None:
                self.server.asyncio_loop.remove_reader(sock.fileno())
            sock.close()
        self._leave()

    def on_timeout(self) -> None:
        if self._state == _HEADER or self._state == _FIRST_BYTE:
            # (an idle connection, such as a browser's preconnect, is not news
            # without PROXY protocol; a proxy that sends no header is)
            log = error_log.info if self._proxy else error_log.debug
            log("TLS listener: nothing from %s in time; closing", self.remote_ip)
        self.close()

    def start_drain(self) -> None:
        # Nothing arrived yet: like an idle keep-alive connection, a short grace.
        state = self._state
        if (state == _HEADER and not self._header) or (state == _FIRST_BYTE and not self._proxy):
            config = self.server.config
            grace = self.server.asyncio_loop.time() + config.drain_grace
            self.deadline = min(self.deadline, grace) if self.deadline else grace
