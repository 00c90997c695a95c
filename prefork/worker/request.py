"""HTTPRequest: one request, as the seed's callbacks see it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from prefork.worker.httputil import HTTPFile, HTTPHeaders, parse_qs_bytes
from prefork.worker.xheaders import XHEADERS_ALL, forwarded_ip, forwarded_protocol

#: the headers xheaders reads, as HTTPHeaders keeps their names: a request
#: with none of them (any not from a proxy) is told apart in one C-level set
#: operation (~0.1 µs), not four header lookups (~0.6 µs: --proxy-headers is
#: on by default for loopback peers, so this is most requests in benchmarks).
_FORWARDED = frozenset(("X-Real-Ip", "X-Forwarded-For", "X-Scheme", "X-Forwarded-Proto"))

if TYPE_CHECKING:
    from prefork.worker.bodystream import BodyStream
    from prefork.worker.connection import HTTPConnection

__all__ = ["HTTPRequest", "under_root"]


class HTTPRequest:
    """A single HTTP request (the tornado 2.4 ``HTTPRequest``).

    ``arguments`` maps names to lists of byte strings, from the query string
    and, for POST/PUT/PATCH, from urlencoded and multipart bodies; blank
    values are dropped, as in 2.x.  ``files`` maps names to lists of
    :class:`HTTPFile`.  ``write``/``finish`` send a raw response through the
    connection; ``write_headers`` starts a response that the server frames.
    """

    # Class-level defaults: most requests never change them, and each
    # attribute an instance does not store is a little less work per request.
    _finish_time: float | None = None
    #: the PEP 3333 environ, when a WSGI application serves the request
    #: (what the ``post_request`` server hook receives as ``environ``).
    wsgi_environ: dict[str, Any] | None = None
    #: for callbacks that stream request bodies (``streams_request_body``):
    #: a file to read the body from as it arrives; ``body`` is then empty.
    body_stream: BodyStream | None = None
    #: ``--request-timeout``: called on the loop when the server gives up on
    #: this request (ASGI cancels the application's task, WSGI abandons its
    #: thread); what it returns, if a str, is added to the log line.
    on_timeout: Callable[[], Any] | None = None
    #: True once ``--request-timeout`` gave up on this request (answered 503
    #: or closed): what the application still writes goes nowhere.
    timed_out = False
    #: the headers the application gave ``write_headers`` (WSGI, ASGI): what
    #: the ``post_request`` hook's ``resp.headers`` shows (None: raw head).
    response_headers: list[tuple[str, str]] | None = None
    #: the ``req`` of the request hooks, shared by ``pre_request`` and
    #: ``post_request`` (set only when one of them is defined).
    hook_request: Any = None

    def __init__(
        self,
        method: str,
        uri: str,
        version: str = "HTTP/1.0",
        headers: HTTPHeaders | None = None,
        body: bytes | None = None,
        remote_ip: str | None = None,
        protocol: str | None = None,
        host: str | None = None,
        files: dict[str, list[HTTPFile]] | None = None,
        connection: HTTPConnection | None = None,
    ) -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers if headers is not None else HTTPHeaders()
        self.body = body or b""
        self.connection = connection
        if (
            connection is not None
            and connection.xheaders
            and not _FORWARDED.isdisjoint(dict.keys(self.headers))  # type: ignore[arg-type]
        ):
            tornado = connection.xheaders == XHEADERS_ALL
            self.remote_ip = forwarded_ip(self.headers, remote_ip, tornado)
            self.protocol = forwarded_protocol(
                self.headers, protocol or ("https" if connection.is_tls else "http"), tornado
            )
        else:
            self.remote_ip = remote_ip
            if protocol:
                self.protocol = protocol
            elif connection is not None and connection.is_tls:
                self.protocol = "https"
            else:
                self.protocol = "http"
        self.host = host or self.headers.get("Host") or "127.0.0.1"
        self.files = files or {}
        self._start_time = time.time()
        # A fragment is not part of a request target (RFC 9112 3.2): a client
        # that sends one anyway does not get it in the path or the query.
        path, _, query = (uri.partition("#")[0] if "#" in uri else uri).partition("?")
        self.path = path
        self.query = query
        #: trailer fields of a chunked request body, (name, value) pairs.
        self.trailers: list[tuple[str, str]] = []

    @property
    def origin_path(self) -> str:
        """The path as origin-form has it: ``path`` itself, or the part of an
        absolute-form target after its authority (``/`` when it has none)."""
        path = self.path
        if path[:1] == "/" or "://" not in path:
            return path  # (origin-form, or "*")
        rest = path.split("://", 1)[1]
        slash = rest.find("/")
        return rest[slash:] if slash >= 0 else "/"

    @cached_property
    def cookies(self) -> Any:
        """The ``Cookie`` header as an ``http.cookies.SimpleCookie`` (tornado
        2.x's ``request.cookies``), parsed on first use; empty when there is
        none, or when it does not parse (as tornado did)."""
        from http.cookies import CookieError, SimpleCookie

        cookies: SimpleCookie = SimpleCookie()
        header = self.headers.get("Cookie") if self.headers is not None else None
        if header:
            try:
                cookies.load(header)
            except CookieError:
                return SimpleCookie()
        return cookies

    @cached_property
    def arguments(self) -> dict[str, list[bytes]]:
        """The query string's arguments (and a form body's, added by the
        connection), parsed on first use: WSGI and ASGI never ask."""
        return parse_qs_bytes(self.query) if self.query else {}

    def supports_http_1_1(self) -> bool:
        """True for an HTTP/1.1 request (exactly, as in the seed)."""
        return self.version == "HTTP/1.1"

    def write(self, chunk: bytes, callback: Callable[[], Any] | None = None) -> None:
        """Write bytes of the response; ``callback`` runs once they are sent."""
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError(f"write() takes bytes, not {type(chunk).__name__}")
        connection = self.connection
        if connection is None:
            raise RuntimeError("this request has no connection to write to")
        current = getattr(connection, "_request", None)
        if current is not None and current is not self:
            _over(self)  # (raises)
        connection.write(chunk, callback)

    def write_headers(
        self,
        status: int,
        headers: HTTPHeaders | Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        """Start a response that the server frames (Content-Length or chunked)."""
        connection = self.connection
        if connection is None:
            raise RuntimeError("this request has no connection to write to")
        current = getattr(connection, "_request", None)
        if current is not None and current is not self:
            _over(self)  # (raises)
        connection.write_headers(status, headers, reason)

    def finish(self, trailers: list[tuple[str, str]] | None = None) -> None:
        """Complete the response (``trailers``: fields after a chunked body)."""
        connection = self.connection
        if connection is not None:
            current = getattr(connection, "_request", None)
            if current is not None and current is not self:
                _over(self)  # (raises)
            if trailers:
                connection.finish(trailers)
            else:
                connection.finish()
        self._finish_time = time.time()

    def full_url(self) -> str:
        """The reconstructed URL: protocol + "://" + host + the origin-form
        target (an absolute-form target's own scheme and authority are not
        repeated: ``http://h/a`` was ``http://hhttp://h/a``)."""
        target = self.uri
        if target[:1] != "/" and "://" in target:
            target = self.origin_path + ("?" + self.query if self.query else "")
        return self.protocol + "://" + self.host + target

    def request_time(self) -> float:
        """Seconds this request took (so far, if it is not finished)."""
        if self._finish_time is None:
            return time.time() - self._start_time
        return self._finish_time - self._start_time

    def get_ssl_certificate(self, binary_form: bool = False) -> Any:
        """The client's certificate, or None (plain connection, or none sent)."""
        if self.connection is None:
            return None
        return self.connection.get_ssl_certificate(binary_form)

    def __repr__(self) -> str:
        attrs = ("protocol", "host", "method", "uri", "version", "remote_ip")
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in attrs)
        return (
            f"{self.__class__.__name__}({args}, body={self.body!r}, headers={dict(self.headers)!r})"
        )


def under_root(root_path: str, raw_path: str) -> bool:
    """The target already starts with ``root_path`` at a segment boundary (a
    proxy that kept the prefix): compared as the bytes were sent, so neither
    ``/%61pi`` nor ``/api%2Fx`` passes for ``/api`` (``root_path`` as a
    path would be sent: ASCII, or percent-encoded)."""
    return raw_path == root_path or raw_path.startswith(root_path + "/")


def _over(request: HTTPRequest) -> None:
    """A write or finish for a request that is over, while the connection
    answers the next one: it would go into that response (another client's,
    behind a proxy that reuses connections), so it is refused."""
    raise RuntimeError(
        f"write()/finish() for a request that is over ({request.method} {request.uri}): "
        "its connection is answering the next request"
    )
