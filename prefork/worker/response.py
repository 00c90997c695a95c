"""The response side of the HTTP/1.1 protocol core: values in, bytes and decisions out.

Why a module of its own: what a response looks like on the wire -- its head,
its framing, whether a body may follow it, whether the connection can stay
open after it -- used to be decided inside the connection's write paths, with
the same rule written out in several places.  Here every such rule is written
once, with no socket, event loop or clock, so that each is tested with plain
bytes (``tests/unit/test_response.py``), like the request parser in
:mod:`prefork.worker.http1`.  The connection only moves the bytes.

An application answers in one of two ways (README, "Two ways to answer"):

* **raw**: it writes bytes that begin with a status line.  :func:`frame_raw`
  reads what the head says about its framing (cached: an application sends
  the same few heads again and again) and decides, for one request, whether
  the connection stays open and which ``Connection`` header to add.  At the
  end :func:`body_complete` says whether the body that went out matches what
  the head promised.
* **framed**: it gives a status and headers, then body pieces.
  :func:`frame_response` builds the head and decides the framing
  (Content-Length for a body in one piece, chunked for a streamed body on
  HTTP/1.1, close-delimited on HTTP/1.0, nothing for HEAD/1xx/204/304);
  :func:`encode_chunk` and :data:`LAST_CHUNK` encode a chunked body.

The ``keep_alive`` these functions are given is what the request and the
server allow: the request asked for a persistent connection (as
:mod:`~prefork.worker.http1` decided it: HTTP/1.1 without ``Connection:
close``, HTTP/1.0 with ``Connection: keep-alive``), and the server is not
draining, has keep-alive on and has read the whole request body.  They answer
whether the *response* still lets the connection stay open.
"""

from __future__ import annotations

import re
from http import HTTPStatus

# One definition of a token (RFC 9110 5.6.2) for request and response heads.
from prefork.worker.http1 import _TOKEN

__all__ = [
    "LAST_CHUNK",
    "MAX_RAW_HEAD",
    "REASONS",
    "FramedResponse",
    "ResponseHead",
    "body_complete",
    "bodyless",
    "build_response_head",
    "declared_length",
    "connection_options",
    "encode_chunk",
    "error_response",
    "frame_raw",
    "frame_response",
]

#: reason phrases: every status the standard library knows (IANA's registry),
#: by RFC 9110's names where they changed (413, 414, 416, 422); a status not
#: in it says "Unknown" (the phrase carries no meaning, RFC 9112 4).
REASONS: dict[int, str] = {
    **{status.value: status.phrase for status in HTTPStatus},
    413: "Content Too Large",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    422: "Unprocessable Content",
}

#: the end of a chunked body (a last chunk with no trailers).
LAST_CHUNK = b"0\r\n\r\n"

# Statuses after which no body may follow, whatever the request (RFC 9112
# 6.3 rule 1).  A set, not a chain of comparisons: a raw response asks on
# every request.
_NO_BODY_STATUSES = frozenset((*range(100, 200), 204, 304))
#: statuses that never carry a Content-Length (RFC 9110 8.6: a server MUST
#: NOT send one with 1xx or 204; a 304's may say the length a 200 would have).
NO_LENGTH_STATUSES = frozenset((*range(100, 200), 204))

_KEEP_ALIVE_HEADER = b"Connection: keep-alive\r\n"
_CLOSE_HEADER = b"Connection: close\r\n"


def bodyless(method: str, status: int) -> bool:
    """True when no body may follow the response head (RFC 9112 6.3 rules 1, 2).

    The answer to a HEAD request, and 1xx, 204 and 304 responses, end with
    their head: a client reads no body after them, so bytes sent as one would
    be taken for the next response.  The one place this rule is written: raw,
    framed and WSGI responses all ask here.
    """
    return method == "HEAD" or status in _NO_BODY_STATUSES


def connection_options(value: str) -> tuple[bool, bool]:
    """(says ``close``, says ``keep-alive``) for a ``Connection`` header value.

    The value is a comma-separated list of case-insensitive tokens
    (``close, upgrade``): a token is compared whole, so ``closed`` is not
    ``close``.
    """
    tokens = [token.strip(" \t").lower() for token in value.split(",")]
    return "close" in tokens, "keep-alive" in tokens


# -- raw responses ----------------------------------------------------------


class ResponseHead:
    """What the head of a raw response says about its framing.

    Shared by every response with the same head bytes (see :func:`frame_raw`):
    treat it as read-only.
    """

    __slots__ = ("status", "content_length", "chunked", "close", "keep_alive", "length", "no_body")

    def __init__(
        self,
        status: int,
        content_length: int | None,
        chunked: bool,
        close: bool,
        keep_alive: bool,
        length: int,
    ) -> None:
        #: the status code; 0 when there is no readable status line.
        self.status = status
        #: the length the head promises for the body (None: not given, or
        #: given by chunked).
        self.content_length = content_length
        #: the body is chunked (its last coding is ``chunked``).
        self.chunked = chunked
        #: the head says ``Connection: close`` (or has no status line: then
        #: nothing it says can be trusted, and it goes out untouched).
        self.close = close
        #: the head says ``Connection: keep-alive``.
        self.keep_alive = keep_alive
        #: bytes of the head including its final CRLF CRLF (0: the head
        #: could not be found, see :data:`MAX_RAW_HEAD`).
        self.length = length
        #: :func:`bodyless` for this status, indexed by ``method == "HEAD"``:
        #: asked once per head rather than once per response (the head is
        #: cached; this saves a call on every raw response).
        self.no_body = (bodyless("GET", status), bodyless("HEAD", status))

    def __repr__(self) -> str:
        return (
            f"ResponseHead(status={self.status}, content_length={self.content_length}, "
            f"chunked={self.chunked}, close={self.close}, keep_alive={self.keep_alive}, "
            f"length={self.length})"
        )


#: a raw response that has not ended its head within this many bytes is
#: passed through as it is, unframed (and the connection closed after it):
#: holding more back would only delay a response the server cannot read.
MAX_RAW_HEAD = 65536

# What an unreadable head says: nothing the client could frame by.
_UNREADABLE_HEAD = ResponseHead(0, None, False, True, False, 0)

_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: |\r|$)")
_RESPONSE_FIELDS = re.compile(
    rb"\r\n(content-length|transfer-encoding|connection)[ \t]*:[ \t]*([^\r]*)", re.IGNORECASE
)

# Response head bytes -> what they say.  An application usually sends the
# same few heads again and again (the seed's hello world: always the same), so
# each is read once.  Bounded like the request parser's name cache, in count
# and in the size of a head (at most ~1 MB held): heads that differ every time
# (a Date, a request id) only cost the lookup and a periodic clear.
_RESPONSE_HEADS: dict[bytes, ResponseHead] = {}
_RESPONSE_HEADS_MAX = 1000
_RESPONSE_HEAD_CACHED_SIZE = 1024


def frame_raw(
    data: bytes | bytearray, method: str, version: str, keep_alive: bool
) -> tuple[bytes, ResponseHead, bool, int | None, bool] | None:
    """Read the head of a raw response and decide how it goes out, for one request.

    ``data`` is what the application has written so far, beginning with its
    status line; ``method`` and ``version`` are the request's, ``keep_alive``
    what the request and the server allow (see the module's docstring).
    Returns None while the head is not complete: the caller keeps the bytes
    and asks again with more.  Then:

    * the bytes to send: ``data``, with ``Connection: close`` added when the
      server will close and the head does not say so, or ``Connection:
      keep-alive`` when it keeps an HTTP/1.0 connection open and the head
      does not say so;
    * the :class:`ResponseHead`: what the head says (its ``status`` and its
      ``length``, to count the body bytes);
    * whether the connection stays open: not after an unframed response (no
      Content-Length, not chunked, and a body may follow: only the close
      tells the client where it ends), nor when the head says ``Connection:
      close``;
    * the body length the head promises (None: no promise; 0 when no body
      may follow: HEAD, 204, 304), to check with :func:`body_complete` at the end;
    * whether the body is chunked, so that it must end with :data:`LAST_CHUNK`.

    A head that does not parse (no status line, a Content-Length that is not
    digits or two different ones, a last transfer coding other than chunked)
    is unframed, and so is a head not ended within :data:`MAX_RAW_HEAD`
    bytes; a head with no status line goes out untouched.  The bytes always
    go out as the application wrote them, apart from the added header.

    One function for the whole decision, the head's reading included: this
    runs on every raw response (the seed's hello world), so it costs one call.
    """
    if type(data) is not bytes:  # a head that came in several writes
        data = bytes(data)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        if len(data) <= MAX_RAW_HEAD:
            return None
        head = _UNREADABLE_HEAD
    elif end > _RESPONSE_HEAD_CACHED_SIZE:
        head = _read_response_head(data, end)
    else:
        key = data[:end]
        cached = _RESPONSE_HEADS.get(key)
        if cached is None:
            cached = _read_response_head(data, end)
            if len(_RESPONSE_HEADS) >= _RESPONSE_HEADS_MAX:
                _RESPONSE_HEADS.clear()
            _RESPONSE_HEADS[key] = cached
        head = cached
    no_body = head.no_body[method == "HEAD"]
    keep_alive = (
        keep_alive
        and not head.close
        and (no_body or head.chunked or head.content_length is not None)
    )
    if head.status:
        if keep_alive:
            if version != "HTTP/1.1" and not head.keep_alive:
                cut = head.length - 2
                data = data[:cut] + _KEEP_ALIVE_HEADER + data[cut:]
        elif not head.close:
            cut = head.length - 2
            data = data[:cut] + _CLOSE_HEADER + data[cut:]
    if no_body:
        # Nothing may follow the head (HEAD, 204, 304): a length of 0, so the
        # connection drops what the application writes after it (the seed's
        # handler writes its body to HEAD too).  A 1xx is an interim head:
        # what follows it is the application's next head, passed on as sent.
        return data, head, keep_alive, 0 if head.status >= 200 else None, False
    return data, head, keep_alive, head.content_length, head.chunked


def _read_response_head(data: bytes, end: int) -> ResponseHead:
    """What a head not seen before says (``end``: where its CRLF CRLF is)."""
    length = end + 4
    match = _STATUS_LINE.match(data)
    if match is None:
        return ResponseHead(0, None, False, True, False, length)
    status = int(match.group(1))
    content_length: int | None = None
    chunked = False
    # A length the client cannot read the same way (not digits, two values)
    # or a last coding that is not chunked: the body can only end by the close.
    unframed = False
    close = keep_alive = False
    for field in _RESPONSE_FIELDS.finditer(data, 0, end + 2):
        name = field.group(1).lower()
        value = field.group(2).strip(b" \t").lower()
        if name == b"content-length":
            if value.isdigit() and (content_length is None or content_length == int(value)):
                content_length = int(value)
            else:
                unframed = True
        elif name == b"transfer-encoding":
            chunked = value.rsplit(b",", 1)[-1].strip(b" \t") == b"chunked"
            unframed = unframed or not chunked
        else:
            says_close, says_keep_alive = connection_options(value.decode("latin-1"))
            close = close or says_close
            keep_alive = keep_alive or says_keep_alive
    if unframed:
        return ResponseHead(status, None, False, close, keep_alive, length)
    if chunked:
        content_length = None  # RFC 9112 6.3 rule 3: chunked wins
    return ResponseHead(status, content_length, chunked, close, keep_alive, length)


def body_complete(expected: int | None, sent: int, chunked_tail: bytes | None) -> bool:
    """True when the client can find the end of the body that went out.

    ``expected`` is the length the head promised (None: none), ``sent`` the
    body bytes sent, ``chunked_tail`` the last five body bytes of a chunked
    body (None: not chunked).  A body shorter or longer than promised, or a
    chunked body without its last chunk, leaves the client waiting or reading
    the next response as body: the connection must close after it.
    """
    if expected is not None and sent != expected:
        return False
    return chunked_tail is None or chunked_tail == LAST_CHUNK


# -- framed responses -------------------------------------------------------


class FramedResponse:
    """How a response the server frames goes out: see :func:`frame_response`."""

    __slots__ = ("head", "body", "keep_alive", "chunked", "expected", "bodyless")

    def __init__(
        self,
        head: bytes,
        body: bytes,
        keep_alive: bool,
        chunked: bool,
        expected: int | None,
        bodyless: bool,
    ) -> None:
        #: the status line and headers, ending with CRLF CRLF.
        self.head = head
        #: the body to send after the head (the whole body, when it was
        #: given in one piece and may be sent; else empty).
        self.body = body
        #: the connection stays open after this response.
        self.keep_alive = keep_alive
        #: body pieces go out through :func:`encode_chunk`, then
        #: :data:`LAST_CHUNK`.
        self.chunked = chunked
        #: the Content-Length the head declares for a streamed body (None:
        #: none, or no body may follow), to check with :func:`body_complete`.
        self.expected = expected
        #: no body may follow: body pieces written later are dropped.
        self.bodyless = bodyless


def declared_length(value: str, earlier: int | None) -> int | None:
    """An application's Content-Length ``value`` with the one it gave before
    (``earlier``, or None): the length, or ``earlier`` when the value is no
    length (not ASCII digits: ignored, the body then decides).  Two
    different lengths raise ValueError: which would the client believe?
    RFC 9112 6.3: neither."""
    digits = value.strip(" \t")
    # ASCII digits only: str.isdigit() also takes digits int() refuses.
    if not digits.isascii() or not digits.isdigit():
        return earlier
    length = int(digits)
    if earlier is not None and length != earlier:
        raise ValueError(f"conflicting Content-Length values {earlier} and {length}")
    return length


def frame_response(
    status: int,
    reason: str | None,
    headers: list[tuple[str, str]],
    method: str,
    version: str,
    keep_alive: bool,
    body: bytes | None,
    date: str | None = None,
) -> FramedResponse:
    """Build the head of a response the server frames, and decide its framing.

    ``body`` is the whole body when the application finished after at most
    one piece (it then gets a Content-Length), or None when the body streams:
    chunked on HTTP/1.1, delimited by the close on HTTP/1.0.  The server
    decides the framing, so the application's ``Transfer-Encoding`` and
    ``Connection`` headers are not sent as given: ``Connection: close`` among
    them closes the connection, and a ``Content-Length`` of digits is kept
    (once; a body then differing from it closes the connection).  The answer
    to HEAD gets the Content-Length a GET would have had; 304 gets none
    unless the application gave one, 1xx and 204 never one.  Raises ValueError on a header
    that would split the response (CR/LF), before anything is sent.
    ``date``: the ``Date`` to send unless the application gave one.
    """
    no_body = bodyless(method, status)
    is_11 = version == "HTTP/1.1"
    declared: int | None = None
    pairs = []
    for name, value in headers:
        lower = name.lower()
        if lower == "content-length":
            if status in NO_LENGTH_STATUSES:
                continue  # (never with 1xx or 204: RFC 9110 8.6)
            declared = declared_length(value, declared)
            continue  # sent once, below (RFC 9110 8.6: never a duplicate)
        if lower == "transfer-encoding" or lower == "keep-alive":
            # The server decides the framing, and how long an idle connection
            # lives: an application's Keep-Alive (timeout=...) would tell
            # clients to reuse connections the server has already closed.
            continue
        if lower == "connection":
            if connection_options(value)[0]:
                keep_alive = False
            continue
        if lower == "date":
            date = None  # the application's own
        # A field value has no leading or trailing whitespace (RFC 9110 5.5).
        pairs.append((name, value.strip(" \t")))
    if date is not None:
        pairs.append(("Date", date))
    expected: int | None = None
    chunked = False
    if body is not None:
        if declared is not None:
            pairs.append(("Content-Length", str(declared)))
            if not no_body:
                expected = declared  # (the connection cuts a longer body to it)
                if len(body) != declared:
                    keep_alive = False  # the client cannot find the end otherwise
        elif status not in _NO_BODY_STATUSES and (body or not no_body):
            pairs.append(("Content-Length", str(len(body))))
        if no_body:
            body = b""
    elif declared is not None:
        pairs.append(("Content-Length", str(declared)))
        if not no_body:
            expected = declared
    elif not no_body:
        if is_11:
            pairs.append(("Transfer-Encoding", "chunked"))
            chunked = True
        else:
            keep_alive = False  # HTTP/1.0: the end of the body is the close
    if not keep_alive:
        pairs.append(("Connection", "close"))
    elif not is_11:
        pairs.append(("Connection", "keep-alive"))
    return FramedResponse(
        build_response_head(status, reason, pairs),
        body or b"",
        keep_alive,
        chunked,
        expected,
        no_body,
    )


_HEADER_VALUE_OK = re.compile(r"[^\x00-\x08\x0a-\x1f\x7f]*")


def build_response_head(status: int, reason: str | None, headers: list[tuple[str, str]]) -> bytes:
    """Serialize a status line and headers, refusing what would split the response.

    A CR or LF (or another control character) in a header name, value or
    reason phrase, a name that is not a token, a character outside latin-1,
    or a status outside 100-999 raises ValueError.
    """
    if not 100 <= status <= 999:
        raise ValueError(f"invalid status code {status}")
    if reason is None:
        reason = REASONS.get(status, "Unknown")
    parts = [f"HTTP/1.1 {status} {reason}\r\n"]
    if _HEADER_VALUE_OK.fullmatch(reason) is None:
        raise ValueError("invalid character in reason phrase")
    _append_fields(parts, headers, "header")
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def _append_fields(
    parts: list[str],
    fields: list[tuple[str, str]],
    kind: str,
    forbidden: frozenset[str] = frozenset(),
) -> None:
    """Append ``name: value`` lines to ``parts``, refusing a name that is not a
    token, a name in ``forbidden`` and a control character in a value."""
    for name, value in fields:
        if _TOKEN.fullmatch(name.encode("latin-1", "replace")) is None:
            raise ValueError(f"invalid {kind} name {name!r}")
        if forbidden and name.lower() in forbidden:
            raise ValueError(f"{name!r} must not be sent as a {kind} (RFC 9110 6.5.1)")
        if _HEADER_VALUE_OK.fullmatch(value) is None:
            raise ValueError(f"invalid character in the value of {kind} {name!r}")
        parts.append(f"{name}: {value}\r\n")


#: fields a trailer section must not carry (RFC 9110 6.5.1: framing, routing,
#: connection control, and the fields that announce trailers themselves).
FORBIDDEN_TRAILERS = frozenset(
    {
        "content-length",
        "transfer-encoding",
        "content-encoding",
        "content-type",
        "content-range",
        "host",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "cache-control",
        "expect",
        "authorization",
        "set-cookie",
    }
)


def encode_last_chunk(trailers: list[tuple[str, str]]) -> bytes:
    """The end of a chunked body with a trailer section (RFC 9112 7.1.2).

    A name that is not a token, a control character in a value, or a field
    that must not be a trailer (FORBIDDEN_TRAILERS) raises ValueError.
    """
    if not trailers:
        return LAST_CHUNK
    parts = ["0\r\n"]
    _append_fields(parts, trailers, "trailer", FORBIDDEN_TRAILERS)
    parts.append("\r\n")
    return "".join(parts).encode("latin-1")


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body.

    Empty data encodes to nothing: an empty chunk is the last chunk, and would
    end the body early.
    """
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def error_response(status: int, reason: str | None = None, date: str | None = None) -> bytes:
    """A complete, closing response for a request the server refuses.

    ``reason`` goes only into the body (as UTF-8 text), never into the head,
    so no reason can add a header.  ``date``: a ``Date`` header's value.
    """
    reason = reason or REASONS.get(status, "Error")
    body = f"{status} {reason}\n".encode("utf-8", "replace")
    return (
        f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\n"
        + (f"Date: {date}\r\n" if date else "")
        + f"Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: close\r\n\r\n"
    ).encode("latin-1") + body
