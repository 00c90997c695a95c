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
``chunked`` on HTTP/1.1: a final coding that is not ``chunked``, ``chunked``
twice, an empty element or any TE on HTTP/1.0 is 400 (RFC 9112 6.3: the
length cannot be known), a coding prefork does not implement before
``chunked`` (``gzip, chunked``) is 501; ``Content-Length`` together with
``Transfer-Encoding`` is rejected; well-formed chunk extensions are accepted
and ignored;
trailers are parsed, validated and reported, never merged into the headers.
Header lines and trailer lines are read by the same function
(:func:`_parse_fields`), so the two can never disagree about what a field
line is.  The grammar checks off the fast path (a request line that cannot
begin, request-target forms, Host, chunk extensions) are in the sibling
module :mod:`prefork.worker.http1_grammar`; at most four empty lines are
ignored before a request line.

The response side (heads, framing, keep-alive after a response) is the
sibling module :mod:`prefork.worker.response`.
"""

from __future__ import annotations

import re

from prefork.settings import DEFAULTS, Config
from prefork.worker.http1_grammar import (
    MAX_EMPTY_LINES,
    MAX_METHOD,
    TCHAR,
    absolute_authority,
    chunk_line_error,
    host_error,
    request_line_prefix_error,
    target_error,
)

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "EndOfMessage",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
]


class ProtocolError(Exception):
    """A request that cannot be served: answer ``status`` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


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
_TOKEN = re.compile(b"[" + TCHAR + b"]+")
# Control characters that may never appear in a head (CR and LF are checked
# separately, HTAB is allowed inside values).
_FORBIDDEN_CTL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_VERSION = re.compile(rb"HTTP/([0-9])\.([0-9])")
# Single bytes to look for with ``in`` are ints: ``b"\t" in data`` first
# tries (and fails) to read b"\t" as an int, which costs more than the search.
_HTAB = ord("\t")
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")

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


def _longest(lines: list[bytes], start: int) -> int:
    return max(map(len, lines[start:]), default=0)


def _parse_field_lines(lines: list[bytes], limits: Config, what: str) -> list[tuple[str, str]]:
    """Parse a trailer section: its line limits, then :func:`_parse_fields`."""
    if len(lines) > limits.max_headers:
        raise ProtocolError(431, f"too many {what} lines")
    if _longest(lines, 0) > limits.max_header_line:
        raise ProtocolError(431, f"a {what} line is too long")
    return _parse_fields(lines, what, _NO_FRAMING, [])


# A trailer field never frames anything: none is collected (_parse_fields).
_NO_FRAMING: dict[str, int] = {}


def _parse_fields(
    lines: list[bytes], what: str, framing: dict[str, int], selected: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """Parse ``name: value`` field lines into (normalized name, value) pairs.

    The one reader of field lines, for the header section and the trailer
    section alike, so the two can never disagree about what a field line is
    (a smuggling vector when they do).  The lines were already checked for
    control characters and split on CRLF.  The fields whose name is in
    ``framing`` (the request's framing headers) are also appended to
    ``selected``, in arrival order, so that only they are looked at again
    (none for trailers).  A line without a colon (obs-fold's continuation
    line, usually) is reported before a bad name; a line starting with
    whitespace that has a colon has an invalid name: both are 400.
    """
    fields = []
    cache = _NAME_CACHE
    try:
        for line in lines:
            raw_name, colon, raw_value = line.partition(b":")
            if not colon:
                raise ProtocolError(400, f"malformed {what} line (no colon, or obs-fold)")
            name = cache.get(raw_name) or _normalize_name(raw_name)
            field = (name, raw_value.strip(b" \t").decode("latin-1"))
            fields.append(field)
            if name in framing:
                selected.append(field)
    except ProtocolError:
        if any(b":" not in line for line in lines):
            raise ProtocolError(400, f"malformed {what} line (no colon, or obs-fold)") from None
        raise
    return fields


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
# Still reading a head, after empty lines (counted in _empty_lines): a state
# of its own so that start_next_cycle's ``_state = _HEAD`` resets the count
# and the fast path never touches it.
_HEAD_AFTER_EMPTY_LINES = 9


class RequestParser:
    """Turns the bytes of one connection into request events.

    The buffer is a ``bytes`` object while whole requests arrive in single
    reads (the common case: no copy), and becomes a ``bytearray`` only when a
    request is split across reads.
    """

    __slots__ = (
        "config",
        "_buf",
        "_pos",
        "_state",
        "_remaining",
        "_body_size",
        "_scanned",
        "_trailer_lines",
        "_trailer_bytes",
        "_empty_lines",
        "started",
    )

    def __init__(self, config: Config | None = None) -> None:
        #: the limits come from the server's Config (max_header_size, max_body_size...)
        self.config = config or DEFAULTS
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self._state = _HEAD
        self._remaining = 0
        self._body_size = 0
        self._scanned = 0
        self._trailer_lines: list[bytes] = []
        self._trailer_bytes = 0
        self._empty_lines = 0
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

    def take_buffered(self) -> bytes:
        """Remove and return the bytes received after the current request.

        For a protocol upgrade (WebSocket): what the client sent after the
        request head already belongs to the new protocol.
        """
        data = bytes(self._buf[self._pos :])
        self._buf = b""
        self._pos = 0
        self._scanned = 0
        return data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet turned into events."""
        return len(self._buf) - self._pos

    @property
    def waiting_for_head(self) -> bool:
        """True between requests and while a head is incomplete."""
        return self._state == _HEAD or self._state == _HEAD_AFTER_EMPTY_LINES

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
        if state == _HEAD_AFTER_EMPTY_LINES:
            return self._read_head()
        return self._read_chunked()

    def _fail(self, status: int, reason: str) -> ProtocolError:
        self._state = _ERROR
        return ProtocolError(status, reason)

    def _read_head(self) -> RequestHead | _Sentinel:
        buf = self._buf
        pos = self._pos
        if buf.startswith(b"\r\n", pos):
            pos = self._skip_empty_lines(buf, pos)
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
        limits = self.config
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

    def _skip_empty_lines(self, buf: bytes | bytearray, pos: int) -> int:
        """RFC 9112 2.2: ignore empty lines before a request line, a few.

        At most MAX_EMPTY_LINES (4) per request, counted across reads;
        one more is 400.  Returns the position after those skipped.
        """
        count = self._empty_lines if self._state == _HEAD_AFTER_EMPTY_LINES else 0
        while buf.startswith(b"\r\n", pos):
            count += 1
            if count > MAX_EMPTY_LINES:
                raise self._fail(400, "too many empty lines before the request line")
            pos += 2
        self._empty_lines = count
        self._state = _HEAD_AFTER_EMPTY_LINES
        return pos

    def _check_incomplete_head(self, buf: bytes | bytearray, pos: int, end: int) -> None:
        limits = self.config
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
        # Bytes that cannot begin a request line (a TLS ClientHello, binary,
        # a line of text) are refused now, not after header_timeout.  Once
        # the request line is complete and checked, _parse_head does the rest.
        if first_line_end < 0 or first_line_end >= self._scanned:
            reason = request_line_prefix_error(buf, pos, end, first_line_end, self._scanned)
            if reason is not None:
                raise self._fail(400, reason)
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

    def _parse_head(self, head: bytes, limits: Config) -> RequestHead:
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
            if len(raw_method) > MAX_METHOD or _TOKEN.fullmatch(raw_method) is None:
                raise ProtocolError(400, "invalid method")
            method = raw_method.decode("ascii")
            if method == "CONNECT" and raw_target[:1] == b"/":
                raise ProtocolError(400, "CONNECT needs an authority-form target (host:port)")
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
        # The usual origin-form ("/...") costs one test; any other form is
        # checked against the method by target_error (RFC 9112 3.2), once
        # the version is known to be HTTP/1.x ("PRI * HTTP/2.0" is 505).
        target_host: str | None = None
        if raw_target[0] != 0x2F:
            reason = target_error(method, raw_target)
            if reason is not None:
                raise ProtocolError(400, reason)
            if method != "CONNECT":
                target_host = absolute_authority(raw_target)
        if line_ends > limits.max_headers:
            raise ProtocolError(431, "too many header lines")
        if len(head) > limits.max_header_line and _longest(lines, 1) > limits.max_header_line:
            # (the usual head is shorter than one line may be: one test, no scan)
            raise ProtocolError(431, "a header line is too long")
        # Lines are split on CRLF only (bare CR and LF were refused above).
        # The framing headers are collected on the way (usually Host and
        # Connection alone), so only they are looked at again below.
        framing = _FRAMING_HEADERS
        framing_fields: list[tuple[str, str]] = []
        headers = _parse_fields(lines[1:], "header", framing, framing_fields)

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
                    reason = host_error(value)
                    if reason is not None:
                        raise ProtocolError(400, reason)
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
        if target_host is not None:
            # RFC 9112 3.2.2: with an absolute-form target an origin server MUST
            # ignore the Host header and use the target's authority instead;
            # every interface then sees that one Host (the application builds
            # its URLs from it).
            host = target_host
            headers = [field for field in headers if field[0] != "Host"]
            headers.append(("Host", target_host))

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
            if len(content_lengths) > 1:
                # The same length repeated (``5, 5``, two fields): RFC 9110
                # 8.6 lets a recipient take it only as one value, so the
                # application sees one (int("5, 5") fails in Django & co.).
                headers = [field for field in headers if field[0] != "Content-Length"]
                headers.append(("Content-Length", str(content_length)))

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
        limits = self.config
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
                size_match = _HEX.fullmatch(line)
                if size_match is None:  # extensions (or an error)
                    reason = chunk_line_error(line)
                    if reason is not None:
                        raise ProtocolError(400, reason)
                    size_match = _HEX.match(line)
                    assert size_match is not None
                size = int(size_match.group(), 16)
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
        return _parse_field_lines(self._trailer_lines, self.config, "trailer")
