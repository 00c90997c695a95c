"""The HTTP/1.1 protocol core: bytes in, events out.

Everything that decides whether a request is well formed lives here, with no
socket, event loop or clock, so that every rejection can be tested with plain
bytes (the h11 model).  The server feeds received bytes to a
:class:`RequestParser` and pulls events from it:

* :class:`RequestHead` -- the request line and headers, with the body framing
  already decided (``content_length`` / ``chunked``) and the keep-alive and
  ``Expect: 100-continue`` decisions made;
* ``bytes`` -- a piece of the request body (de-chunked);
* :class:`EndOfMessage` -- the body is complete (with chunked trailers, if
  any);
* :data:`NEED_DATA` -- feed more bytes;
* :data:`PAUSED` -- a whole request has been read; the parser holds any
  pipelined bytes until :meth:`RequestParser.start_next_cycle` is called once
  the response is complete, so that pipelined requests are answered in order.

A request without a body goes straight from :class:`RequestHead` to
:data:`PAUSED`: no :class:`EndOfMessage` is emitted for it.

Every malformed request raises :class:`ProtocolError` carrying the status
code to answer with (400, 413, 414, 431, 501 or 505); the connection must be
closed afterwards.  Choices where RFC 9112 leaves room (documented in the
README): obs-fold (a header line starting with whitespace) is rejected with
400 (RFC 9112 5.2 permits this); bare LF and bare CR as line ends are
rejected; ``Transfer-Encoding`` is accepted only as the single coding
``chunked`` on HTTP/1.1 (other codings -> 501); ``Content-Length`` together
with ``Transfer-Encoding`` is rejected; chunk extensions are accepted and
ignored; trailers are parsed, validated and reported, never merged into the
headers.

The response side is here too: :func:`inspect_response_head` reads the head
of a raw response written by a seed-style callback, to learn whether it is
framed; :func:`build_response_head`, :func:`encode_chunk` and
:func:`error_response` serialize what the server writes itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "EndOfMessage",
    "Limits",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "ResponseHead",
    "build_response_head",
    "encode_chunk",
    "error_response",
    "inspect_response_head",
    "LAST_CHUNK",
    "REASONS",
]


class ProtocolError(Exception):
    """A request that cannot be served: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass
class Limits:
    """Per-connection limits; each is a server setting with this default.

    The byte and count limits are enforced by the parser; the timeouts are
    plain numbers that the connection layer enforces (the core has no clock).
    """

    #: request line + headers, in bytes (over it: 431).
    max_header_size: int = 65536
    #: the request line alone, in bytes (over it: 414).
    max_request_line: int = 8192
    #: number of header lines (over it: 431).
    max_headers: int = 100
    #: request body in bytes, after de-chunking (over it: 413).
    max_body_size: int = 100 * 1024 * 1024
    #: a chunk-size line with its extensions, in bytes (over it: 400).
    max_chunk_line: int = 4096
    #: seconds to receive a whole request head once a request has begun
    #: (and for the first request after connecting): the slowloris guard.
    header_timeout: float = 20.0
    #: seconds without any body byte arriving while a body is expected.
    body_timeout: float = 60.0
    #: seconds an idle keep-alive connection is kept open.  Longer than the
    #: upstream keep-alive of common proxies (nginx: 60 s) so that the proxy,
    #: not prefork, closes idle connections and never races a new request.
    keep_alive_timeout: float = 75.0
    #: seconds an idle keep-alive connection stays open once the worker
    #: starts a graceful stop (a request already on its way is answered).
    drain_grace: float = 1.0


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


NEED_DATA = _Sentinel("NEED_DATA")
PAUSED = _Sentinel("PAUSED")


class RequestHead:
    """A parsed request line and header block, with framing decided."""

    __slots__ = (
        "method",
        "target",
        "version",
        "headers",
        "content_length",
        "chunked",
        "keep_alive",
        "expect_continue",
        "has_body",
        "host",
    )

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        content_length: int | None,
        chunked: bool,
        keep_alive: bool,
        expect_continue: bool,
        host: str | None = None,
    ) -> None:
        self.method = method
        self.target = target
        self.version = version
        #: (normalized name, value) pairs in arrival order.
        self.headers = headers
        self.content_length = content_length
        self.chunked = chunked
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.has_body = chunked or bool(content_length)
        #: the value of the (single, validated) Host header; None without one.
        self.host = host

    def __repr__(self) -> str:
        return f"RequestHead({self.method} {self.target} {self.version})"


class EndOfMessage:
    """The request body is complete; ``trailers`` holds chunked trailers."""

    __slots__ = ("trailers",)

    def __init__(self, trailers: list[tuple[str, str]] | None = None) -> None:
        self.trailers = trailers or []

    def __repr__(self) -> str:
        return f"EndOfMessage({self.trailers!r})"


# RFC 9110 token characters.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters that may never appear in a head (CR and LF are checked
# separately, HTAB is allowed inside values).
_FORBIDDEN_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# Single bytes to look for with ``in`` are ints: ``b"\t" in data`` first
# tries (and fails) to read b"\t" as an int, which costs more than the search.
_HTAB = ord("\t")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Host: RFC 3986 reg-name / IP-literal characters plus the port colon; no
# comma, so that a merged duplicate Host is refused.
_HOST = re.compile(r"[A-Za-z0-9\-._~!$&'()*+;=:\[\]%]*")

# Raw header name -> normalized name.  Bounded: a client sending many unique
# names must not grow memory (tornado 2.x's memo did).
_NAME_CACHE: dict[bytes, str] = {}
_NAME_CACHE_MAX = 1000


def _normalize_name(raw: bytes) -> str:
    name = _NAME_CACHE.get(raw)
    if name is not None:
        return name
    if _TOKEN.fullmatch(raw) is None:
        raise ProtocolError(400, "invalid header name")
    name = "-".join(word.capitalize() for word in raw.decode("ascii").split("-"))
    if len(_NAME_CACHE) >= _NAME_CACHE_MAX:
        _NAME_CACHE.clear()
    _NAME_CACHE[raw] = name
    return name


def _parse_field_lines(lines: list[bytes], limits: Limits, what: str) -> list[tuple[str, str]]:
    """Parse ``name: value`` lines (headers or trailers) into pairs."""
    if len(lines) > limits.max_headers:
        raise ProtocolError(431, f"too many {what} lines")
    pairs = []
    for line in lines:
        colon = line.find(b":")
        if colon <= 0:
            if line[:1] in (b" ", b"\t"):
                raise ProtocolError(400, "obs-fold line folding is not accepted")
            raise ProtocolError(400, f"{what} line without a colon")
        name = _normalize_name(line[:colon])
        pairs.append((name, line[colon + 1 :].strip(b" \t").decode("latin-1")))
    return pairs


# Every byte a clean head holds only as part of a CRLF line end: deleting
# them all removes exactly two bytes per CRLF.  (Each CR and each LF is
# counted at least once per CRLF, so two per CRLF is reached only when there
# is no bare CR, no bare LF and no other control character.)
_CTL_CR_LF = bytes([*range(0x00, 0x20), 0x7F]).replace(b"\t", b"")

_KNOWN_METHODS = {
    m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
}

# The headers that decide framing, keep-alive and 100-continue.
_F_HOST, _F_CONNECTION, _F_CONTENT_LENGTH, _F_TRANSFER_ENCODING, _F_EXPECT = range(5)
_FRAMING_HEADERS = {
    "Host": _F_HOST,
    "Connection": _F_CONNECTION,
    "Content-Length": _F_CONTENT_LENGTH,
    "Transfer-Encoding": _F_TRANSFER_ENCODING,
    "Expect": _F_EXPECT,
}
# Host values already checked (bounded, like the name cache).
_VALID_HOSTS: set[str] = set()


def _split_tokens(value: str) -> list[str]:
    if "," not in value:  # the usual single token ("keep-alive", "chunked")
        return [value.strip(" \t").lower()]
    return [token.strip(" \t").lower() for token in value.split(",")]


# Parser states.
_HEAD = 0
_BODY_LENGTH = 1
_CHUNK_SIZE = 2
_CHUNK_DATA = 3
_CHUNK_CRLF = 4
_TRAILERS = 5
_DONE = 6
_ERROR = 7
_BODY_END = 8


class RequestParser:
    """Turns the bytes of one connection into request events.

    The buffer is a ``bytes`` object while whole requests arrive in single
    reads (the common case: no copy), and becomes a ``bytearray`` only when a
    request is split across reads.
    """

    __slots__ = (
        "limits",
        "_buf",
        "_pos",
        "_state",
        "_remaining",
        "_body_size",
        "_scanned",
        "_trailer_lines",
        "_trailer_bytes",
        "started",
    )

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._state = _HEAD
        self._remaining = 0
        self._body_size = 0
        self._scanned = 0
        self._trailer_lines: list[bytes] = []
        self._trailer_bytes = 0
        #: True once any byte of the current request has been received.
        self.started = False

    # -- input -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if not data:
            return
        buf = self._buf
        if self._pos >= len(buf):
            self._buf = data
            self._pos = 0
            self._scanned = 0
            return
        if self._pos:
            buf = buf[self._pos :]
            self._scanned -= self._pos
            self._pos = 0
        if not isinstance(buf, bytearray):
            buf = bytearray(buf)
        buf += data
        self._buf = buf

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) - self._pos

    @property
    def waiting_for_head(self) -> bool:
        """True between requests and while a head is incomplete."""
        return self._state == _HEAD

    @property
    def paused(self) -> bool:
        """True once a whole request has been read (until the next cycle)."""
        return self._state == _DONE

    def start_next_cycle(self) -> None:
        """Begin the next request after the current response is complete."""
        if self._state != _DONE:
            raise RuntimeError("start_next_cycle() before the request was read")
        self._state = _HEAD
        self._scanned = self._pos
        self.started = self._pos < len(self._buf)

    # -- events ------------------------------------------------------------

    def next_event(self) -> RequestHead | bytes | EndOfMessage | _Sentinel:
        """Return the next event, or NEED_DATA / PAUSED."""
        state = self._state
        if state == _HEAD:
            return self._read_head()
        if state == _DONE:
            return PAUSED
        if state == _BODY_LENGTH:
            return self._read_fixed_body()
        if state == _BODY_END:
            self._state = _DONE
            return EndOfMessage()
        if state == _ERROR:
            raise ProtocolError(400, "the connection already failed")
        return self._read_chunked()

    def _fail(self, status: int, reason: str) -> ProtocolError:
        self._state = _ERROR
        return ProtocolError(status, reason)

    def _read_head(self) -> RequestHead | _Sentinel:
        buf = self._buf
        pos = self._pos
        # RFC 9112 2.2: ignore empty lines before the request line.
        while buf.startswith(b"\r\n", pos):
            pos += 2
        self._pos = pos
        end = len(buf)
        if pos >= end:
            return NEED_DATA
        self.started = True
        # Resume the search where the last one stopped (minus a possible
        # partial terminator), so a head trickling in stays linear.
        start = self._scanned - 3
        idx = buf.find(b"\r\n\r\n", start if start > pos else pos)
        if idx < 0:
            self._check_incomplete_head(buf, pos, end)
            return NEED_DATA
        limits = self.limits
        if idx - pos > limits.max_header_size:
            raise self._fail(431, "request header block too large")
        head = buf[pos:idx]
        if type(head) is not bytes:  # a head that came in several reads
            head = bytes(head)
        self._pos = idx + 4
        try:
            request = self._parse_head(head, limits)
        except ProtocolError:
            self._state = _ERROR
            raise
        if request.chunked:
            self._state = _CHUNK_SIZE
            self._body_size = 0
        elif request.content_length:
            self._state = _BODY_LENGTH
            self._remaining = request.content_length
        else:
            self._state = _DONE
        return request

    def _check_incomplete_head(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        limits = self.limits
        # Part of the CRLF CRLF terminator may already be here: not counted.
        if buf.endswith(b"\r\n\r", pos):
            partial_terminator = 3
        elif buf.endswith(b"\r\n", pos):
            partial_terminator = 2
        else:
            partial_terminator = buf.endswith(b"\r", pos)
        if end - pos - partial_terminator > limits.max_header_size:
            raise self._fail(431, "request header block too large")
        first_line_end = buf.find(b"\n", pos)
        if first_line_end < 0:
            line_length = end - pos - (buf[end - 1] == 0x0D)
        else:
            line_length = first_line_end - pos - 1
        if line_length > limits.max_request_line:
            raise self._fail(414, "request line too long")
        # A bare LF would leave the request waiting for a CRLF CRLF that
        # never comes: refuse it as soon as it arrives.  Only new bytes are
        # scanned, so a head trickling in byte by byte costs linear time.
        scan = max(self._scanned, pos)
        while True:
            lf = buf.find(b"\n", scan, end)
            if lf < 0:
                break
            if lf == pos or buf[lf - 1] != 0x0D:
                raise self._fail(400, "bare LF in request head")
            scan = lf + 1
        self._scanned = max(end - 1, pos)

    def _parse_head(self, head: bytes, limits: Limits) -> RequestHead:
        lines = head.split(b"\r\n")
        line_ends = len(lines) - 1
        # One C pass checks the whole head for bare CR/LF and control
        # characters; only a head that fails it is searched again, to say why.
        if len(head) - len(head.translate(None, _CTL_CR_LF)) != 2 * line_ends:
            if head.count(b"\r") != line_ends or head.count(b"\n") != line_ends:
                raise ProtocolError(400, "bare CR or LF in request head")
            raise ProtocolError(400, "control character in request head")
        request_line = lines[0]
        if len(request_line) > limits.max_request_line:
            raise ProtocolError(414, "request line too long")
        parts = request_line.split(b" ")
        if len(parts) != 3:
            raise ProtocolError(400, "malformed request line")
        raw_method, raw_target, raw_version = parts
        method = _KNOWN_METHODS.get(raw_method)
        if method is None:
            if _TOKEN.fullmatch(raw_method) is None:
                raise ProtocolError(400, "invalid method")
            method = raw_method.decode("ascii")
        # A target is visible ASCII only (0x21-0x7E).  With no control
        # character in the head (checked above) and no space (the line was
        # split on them), that is: not empty, ASCII, and no HTAB.
        if not raw_target or not raw_target.isascii() or _HTAB in raw_target:
            raise ProtocolError(400, "invalid request target")
        if raw_version == b"HTTP/1.1":
            version = "HTTP/1.1"
            is_11 = True
        else:
            version_match = _VERSION.fullmatch(raw_version)
            if version_match is None:
                raise ProtocolError(400, "invalid HTTP version")
            if version_match.group(1) != b"1":
                raise ProtocolError(505, "HTTP version not supported")
            version = raw_version.decode("ascii")
            is_11 = version_match.group(2) != b"0"
        if line_ends > limits.max_headers:
            raise ProtocolError(431, "too many header lines")
        # Lines are split on CRLF only (bare CR and LF were refused above).
        # The framing headers are collected on the way (usually Host and
        # Connection alone), so only they are looked at again below.
        headers = []
        framing_fields = []
        cache = _NAME_CACHE
        framing = _FRAMING_HEADERS
        field_lines = lines[1:]
        try:
            for line in field_lines:
                raw_name, colon, raw_value = line.partition(b":")
                if not colon:
                    raise ProtocolError(400, "malformed header line (no colon, or obs-fold)")
                field = (
                    cache.get(raw_name) or _normalize_name(raw_name),
                    raw_value.strip(b" \t").decode("latin-1"),
                )
                headers.append(field)
                if field[0] in framing:
                    framing_fields.append(field)
        except ProtocolError:
            # A line without a colon is reported before any bad name.
            if any(b":" not in line for line in field_lines):
                raise ProtocolError(400, "malformed header line (no colon, or obs-fold)") from None
            raise

        content_lengths: list[str] = []
        transfer_codings: list[str] = []
        connection_tokens: list[str] = []
        hosts = 0
        host: str | None = None
        expect_continue = False
        for name, value in framing_fields:
            kind = framing[name]
            if kind == _F_HOST:
                hosts += 1
                host = value
                if value not in _VALID_HOSTS:
                    if _HOST.fullmatch(value) is None:
                        raise ProtocolError(400, "invalid Host header")
                    if len(_VALID_HOSTS) >= _NAME_CACHE_MAX:
                        _VALID_HOSTS.clear()
                    _VALID_HOSTS.add(value)
            elif kind == _F_CONNECTION:
                connection_tokens.extend(_split_tokens(value))
            elif kind == _F_CONTENT_LENGTH:
                content_lengths.extend(v.strip(" \t") for v in value.split(","))
            elif kind == _F_TRANSFER_ENCODING:
                transfer_codings.extend(_split_tokens(value))
            elif "100-continue" in _split_tokens(value):  # Expect
                expect_continue = True
        if hosts > 1:
            raise ProtocolError(400, "more than one Host header")
        if is_11 and not hosts:
            raise ProtocolError(400, "HTTP/1.1 request without a Host header")

        content_length: int | None = None
        chunked = False
        if transfer_codings:
            if content_lengths:
                raise ProtocolError(400, "both Content-Length and Transfer-Encoding")
            if not is_11:
                raise ProtocolError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if transfer_codings != ["chunked"]:
                # RFC 9112 6.3: chunked must be the final coding, else the
                # length cannot be known (400); a coding we do not
                # implement before it is 501 (6.1).
                if (
                    transfer_codings[-1] != "chunked"
                    or transfer_codings.count("chunked") > 1
                    or "" in transfer_codings
                ):
                    raise ProtocolError(400, "invalid Transfer-Encoding")
                raise ProtocolError(501, "only the chunked transfer coding is supported")
            chunked = True
        elif content_lengths:
            first = content_lengths[0]
            for value in content_lengths:
                if not value.isdigit() or not value.isascii() or len(value) > 18:
                    raise ProtocolError(400, "invalid Content-Length")
                if value != first and int(value) != int(first):
                    raise ProtocolError(400, "conflicting Content-Length values")
            content_length = int(first)
            if content_length > limits.max_body_size:
                raise ProtocolError(413, "request body too large")

        if is_11:
            keep_alive = "close" not in connection_tokens
        else:
            # The seed's HTTP/1.0 rule: keep-alive only when asked for, and
            # only when the end of the request is known.
            keep_alive = "keep-alive" in connection_tokens and (
                content_length is not None or method in ("GET", "HEAD")
            )
        return RequestHead(
            method,
            raw_target.decode("ascii"),
            version,
            headers,
            content_length,
            chunked,
            keep_alive,
            expect_continue and is_11 and (chunked or bool(content_length)),
            host,
        )

    def _read_fixed_body(self) -> bytes | _Sentinel:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if not available:
            return NEED_DATA
        take = min(available, self._remaining)
        if pos == 0 and take == len(buf) and isinstance(buf, bytes):
            data: bytes = buf
        else:
            data = bytes(buf[pos : pos + take])
        self._pos = pos + take
        self._remaining -= take
        if not self._remaining:
            self._state = _BODY_END
            self._compact()
        return data

    def _compact(self) -> None:
        if self._pos >= len(self._buf):
            self._buf = b""
            self._pos = 0

    def _read_chunked(self) -> bytes | EndOfMessage | _Sentinel:
        try:
            return self._read_chunked_inner()
        except ProtocolError:
            self._state = _ERROR
            raise

    def _read_chunked_inner(self) -> bytes | EndOfMessage | _Sentinel:
        limits = self.limits
        while True:
            buf = self._buf
            pos = self._pos
            state = self._state
            if state == _CHUNK_SIZE:
                line_end = self._find_line_end(buf, pos)
                if line_end < 0:
                    # The line's CR may already be here (hence the + 1).
                    if len(buf) - pos > limits.max_chunk_line + 1:
                        raise ProtocolError(400, "chunk size line too long")
                    return NEED_DATA
                if line_end - pos > limits.max_chunk_line:
                    raise ProtocolError(400, "chunk size line too long")
                line = bytes(buf[pos:line_end])
                self._pos = line_end + 2
                size_part, _, extension = line.partition(b";")
                size_part = size_part.rstrip(b" \t")
                if _HEX.fullmatch(size_part) is None:
                    raise ProtocolError(400, "invalid chunk size")
                if b"\r" in line or b"\n" in line or _FORBIDDEN_CTL.search(extension):
                    raise ProtocolError(400, "invalid chunk extension")
                size = int(size_part, 16)
                if size == 0:
                    self._state = _TRAILERS
                    self._trailer_lines = []
                    self._trailer_bytes = 0
                    continue
                self._body_size += size
                if self._body_size > limits.max_body_size:
                    raise ProtocolError(413, "request body too large")
                self._remaining = size
                self._state = _CHUNK_DATA
            elif state == _CHUNK_DATA:
                available = len(buf) - pos
                if not available:
                    return NEED_DATA
                take = min(available, self._remaining)
                data = bytes(buf[pos : pos + take])
                self._pos = pos + take
                self._remaining -= take
                if not self._remaining:
                    self._state = _CHUNK_CRLF
                return data
            elif state == _CHUNK_CRLF:
                if len(buf) - pos < 2:
                    if len(buf) - pos == 1 and buf[pos] != 0x0D:
                        raise ProtocolError(400, "chunk data not followed by CRLF")
                    return NEED_DATA
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError(400, "chunk data not followed by CRLF")
                self._pos = pos + 2
                self._state = _CHUNK_SIZE
            else:  # _TRAILERS
                line_end = self._find_line_end(buf, pos)
                if line_end < 0:
                    if len(buf) - pos - 1 + self._trailer_bytes > limits.max_header_size:
                        raise ProtocolError(431, "trailer section too large")
                    return NEED_DATA
                line = bytes(buf[pos:line_end])
                self._pos = line_end + 2
                if not line:
                    trailers = self._parse_trailers()
                    self._state = _DONE
                    self._compact()
                    return EndOfMessage(trailers)
                self._trailer_bytes += len(line) + 2
                if self._trailer_bytes > limits.max_header_size:
                    raise ProtocolError(431, "trailer section too large")
                if b"\r" in line or b"\n" in line or _FORBIDDEN_CTL.search(line):
                    raise ProtocolError(400, "invalid character in trailer section")
                self._trailer_lines.append(line)

    def _find_line_end(self, buf: bytes | bytearray, pos: int) -> int:
        """Index of the CRLF ending the line at ``pos``, or -1 (more needed).

        Only bytes not seen before are scanned, so a long line arriving byte
        by byte costs linear time; a bare LF is refused as soon as it comes.
        """
        start = max(pos, self._scanned - 1)
        line_end = buf.find(b"\r\n", start)
        lf = buf.find(b"\n", start, line_end if line_end >= 0 else len(buf))
        if lf >= 0:
            raise ProtocolError(400, "bare LF in chunked body framing")
        if line_end < 0:
            self._scanned = len(buf)
        else:
            self._scanned = line_end + 2
        return line_end

    def _parse_trailers(self) -> list[tuple[str, str]]:
        return _parse_field_lines(self._trailer_lines, self.limits, "trailer")


# -- responses -----------------------------------------------------------------

REASONS = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    206: "Partial Content",
    301: "Moved Permanently",
    302: "Found",
    303: "See Other",
    304: "Not Modified",
    307: "Temporary Redirect",
    308: "Permanent Redirect",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    414: "URI Too Long",
    415: "Unsupported Media Type",
    417: "Expectation Failed",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
}


class ResponseHead:
    """What the server needs to know of a response head it did not build.

    Shared by every response with the same head (see
    :func:`inspect_response_head`): treat it as read-only.
    """

    __slots__ = (
        "status",
        "content_length",
        "chunked",
        "close",
        "keep_alive",
        "length",
        "no_body_status",
    )

    def __init__(
        self,
        status: int,
        content_length: int | None,
        chunked: bool,
        close: bool,
        keep_alive: bool,
        length: int,
    ) -> None:
        self.status = status
        self.content_length = content_length
        self.chunked = chunked
        #: the response says ``Connection: close``.
        self.close = close
        #: the response says ``Connection: keep-alive``.
        self.keep_alive = keep_alive
        #: bytes of the head including its final CRLF CRLF.
        self.length = length
        #: the status forbids a body (1xx, 204, 304), whatever the request.
        self.no_body_status = 100 <= status < 200 or status in (204, 304)

    def bodyless(self, request_method: str) -> bool:
        """True when no body may follow (RFC 9112 6.3 rules 1 and 2)."""
        return request_method == "HEAD" or self.no_body_status

    def framed(self, request_method: str) -> bool:
        """True when the client can find the end of this response."""
        return self.bodyless(request_method) or self.chunked or self.content_length is not None


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: |\r|$)")
_RESPONSE_FIELDS = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE
)


# Response head bytes -> what they say.  An application usually sends the
# same few heads again and again (the seed's hello world: always the same), so
# each is read once.  Bounded like the name cache, in count and in the size of
# a head (at most ~1 MB held): heads that differ every time (a Date, a request
# id) only cost the lookup and a periodic clear.
_RESPONSE_HEADS: dict[bytes, ResponseHead] = {}
_RESPONSE_HEADS_MAX = 1000
_RESPONSE_HEAD_CACHED_SIZE = 1024


def inspect_response_head(data: bytes | bytearray) -> ResponseHead | None:
    """Read the head of a raw response; None if it is not complete yet.

    A head that does not parse (no status line, a bad Content-Length) is
    reported as unframed, so the server closes the connection after it: the
    bytes still go out as the application wrote them.
    """
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    if end > _RESPONSE_HEAD_CACHED_SIZE:
        return _read_response_head(data, end)
    key = data[:end] if type(data) is bytes else bytes(data[:end])
    head = _RESPONSE_HEADS.get(key)
    if head is None:
        head = _read_response_head(data, end)
        if len(_RESPONSE_HEADS) >= _RESPONSE_HEADS_MAX:
            _RESPONSE_HEADS.clear()
        _RESPONSE_HEADS[key] = head
    return head


def _read_response_head(data: bytes | bytearray, end: int) -> ResponseHead:
    """:func:`inspect_response_head` for a head not seen before."""
    length = end + 4
    match = _STATUS_LINE.match(data)
    if match is None:
        return ResponseHead(0, None, False, True, False, length)
    status = int(match.group(1))
    content_length: int | None = None
    chunked = False
    close = keep_alive = False
    head = data[: end + 2]
    for field in _RESPONSE_FIELDS.finditer(head):
        name = field.group(1).lower()
        value = field.group(2).strip(b" \t").lower()
        if name == b"content-length":
            if value.isdigit() and (content_length is None or content_length == int(value)):
                content_length = int(value)
            else:
                return ResponseHead(status, None, False, True, False, length)
        elif name == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip(b" \t") == b"chunked"
            if not chunked:
                return ResponseHead(status, None, False, True, False, length)
        else:
            tokens = [t.strip(b" \t") for t in value.split(b",")]
            close = close or b"close" in tokens
            keep_alive = keep_alive or b"keep-alive" in tokens
    if chunked:
        content_length = None
    return ResponseHead(status, content_length, chunked, close, keep_alive, length)


_HEADER_VALUE_OK = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def build_response_head(status: int, reason: str | None, headers: list[tuple[str, str]]) -> bytes:
    """Serialize a status line and headers; refuses CR/LF (response splitting)."""
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    if reason is None:
        reason = REASONS.get(status, "Unknown")
    parts = [f"HTTP/1.1 {status} {reason}\r\n"]
    if _HEADER_VALUE_OK.fullmatch(reason) is None:
        raise ValueError("invalid character in reason phrase")
    for name, value in headers:
        if _TOKEN.fullmatch(name.encode("latin-1", "replace")) is None:
            raise ValueError(f"invalid header name {name!r}")
        if _HEADER_VALUE_OK.fullmatch(value) is None:
            raise ValueError(f"invalid character in the value of header {name!r}")
        parts.append(f"{name}: {value}\r\n")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty data encodes to nothing)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


def error_response(status: int, reason: str | None = None) -> bytes:
    """A complete, closing response for a request the server refuses."""
    reason = reason or REASONS.get(status, "Error")
    body = f"{status} {reason}\n".encode("utf-8", "replace")
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode("latin-1") + body
