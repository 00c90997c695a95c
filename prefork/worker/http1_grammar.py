"""HTTP/1.1 grammar checks kept off the request parser's fast path.

Pure predicates over bytes (no state, no I/O), used by
:mod:`prefork.worker.http1`: each returns ``None`` when the input is well
formed and otherwise a short reason, which the parser raises as a
``ProtocolError(400, reason)``.  They run only where the fast path's cheap
test fails (a target that does not start with ``/``, a Host value not seen
before, a chunk size line that is not just hex digits) or while a request
line is still incomplete, so a well-formed request pays (almost) nothing.

* :func:`request_line_prefix_error` -- can these first bytes still begin a
  request line?  (A TLS ClientHello, binary garbage or a line of text is
  refused within the first read, not after ``header_timeout``.)
* :func:`target_error` -- RFC 9112 3.2: which request-target form goes with
  which method.
* :func:`host_error` / the authority grammar -- RFC 9110 4.2.3, 7.2, RFC 3986
  3.2.2: ``uri-host [ ":" port ]``.
* :func:`chunk_line_error` -- RFC 9112 7.1.1: what may follow a chunk size.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = [
    "MAX_EMPTY_LINES",
    "MAX_METHOD",
    "TCHAR",
    "chunk_line_error",
    "host_error",
    "request_line_prefix_error",
    "target_error",
]

#: RFC 9110 5.6.2 tchar, as the inside of a regex character class.
TCHAR = rb"!#$%&'*+\-.^_`|~0-9A-Za-z"

#: The longest method accepted.  The longest registered method
#: (UPDATEREDIRECTREF) has 17 characters; a "method" growing past this is
#: not one, and a request line that begins with it is refused at once.
MAX_METHOD = 32

#: Empty lines (CRLF) ignored before a request line (RFC 9112 2.2 asks to
#: ignore "at least one").  A count, not a share of ``max_header_size``: the
#: bound is the same whatever the header limit, and a client sending nothing
#: but CRLFs is told so after a few instead of after 64 KiB.  Clients that
#: send any (old ones, after a POST body) send one or two.
MAX_EMPTY_LINES = 4

# -- request line (incremental) -----------------------------------------------

_METHOD_CHARS = re.compile(b"[" + TCHAR + b"]+")
# Bytes that may never stand in a request line: controls (HTAB, and a CR
# that is not the line end, included), DEL and non-ASCII.
_NOT_LINE_CHAR = re.compile(rb"[^\x20-\x7e]")
_VERSION_PREFIX = re.compile(rb"(?:H(?:T(?:T(?:P(?:/(?:[0-9](?:\.[0-9]?)?)?)?)?)?)?)?")
_VERSION = re.compile(rb"HTTP/[0-9]\.[0-9]")
# "HTTP/1.1" plus the SP before it: where the last SP of a line may be.
_VERSION_WINDOW = 9
_SP = 0x20
_CR = 0x0D
_TLS_HANDSHAKE = 0x16


def request_line_prefix_error(
    buf: bytes | bytearray, pos: int, end: int, first_lf: int, scan: int
) -> str | None:
    """Why ``buf[pos:end]``, the start of a head, cannot begin a request line.

    ``first_lf`` is the index of the first LF at or after ``pos`` (-1: none
    yet), ``scan`` the first byte not seen by an earlier call for the same
    line.  Each byte is searched once for bad characters, the other checks
    look at the new bytes and a bounded window before them, so a line
    arriving byte by byte costs linear time.  Only a prefix no request line
    can start with is refused, so whatever is refused here the complete head
    would be refused too (by ``RequestParser._parse_head``, which checks the
    whole line again).  Returns None while the prefix can still become
    ``method SP target SP HTTP/d.d CRLF``.
    """
    if first_lf > pos and buf[first_lf - 1] == _CR:
        stop = first_lf - 1  # the CR of the line's CRLF
        complete = True
    elif first_lf >= 0:
        stop = first_lf  # a bare LF: the caller says so
        complete = False
    else:
        stop = end - 1 if buf[end - 1] == _CR else end  # a CR may be half a CRLF
        complete = False
    if stop <= pos:
        return None
    scan = max(scan, pos)
    if _NOT_LINE_CHAR.search(buf, scan, stop) is not None:
        if buf[pos] == _TLS_HANDSHAKE:
            return "a TLS handshake on a plain-HTTP port"
        return "control character or non-ASCII byte in the request line"
    # method: 1 to MAX_METHOD tchars, then SP.
    match = _METHOD_CHARS.match(buf, pos, min(stop, pos + MAX_METHOD + 1))
    if match is None:
        return "not an HTTP request line"
    sp1 = match.end()
    if sp1 - pos > MAX_METHOD:
        return "method too long (not an HTTP request line)"
    if sp1 == stop:
        return "malformed request line" if complete else None
    if buf[sp1] != _SP:
        return "invalid method"
    # target: not empty, then SP and at most 8 bytes of version.
    target = sp1 + 1
    if target == stop:
        return "malformed request line" if complete else None
    if buf[target] == _SP:
        return "malformed request line"
    # The last SP is among the new bytes or within the window before them:
    # an earlier call saw it there, or the version after it would already
    # have been too long and refused.
    window = max(target, min(scan, stop) - _VERSION_WINDOW - 1)
    sp2 = buf.rfind(b" ", window, stop)
    if sp2 < 0:
        # Still in the target (a complete line without a second SP, or
        # with a version too long, is no request line).
        return "malformed request line" if complete else None
    if buf.find(b" ", window, sp2) >= 0:
        return "malformed request line"  # a third SP
    version = _VERSION if complete else _VERSION_PREFIX
    if version.fullmatch(buf, sp2 + 1, stop) is None:
        return "invalid HTTP version"
    return None


# -- request target and Host ----------------------------------------------------

# RFC 3986 3.1 scheme, "://", then the authority up to the path, query or
# fragment.
_ABSOLUTE = re.compile(rb"[A-Za-z][A-Za-z0-9+\-.]*://([^/?#]*)")
# RFC 3986 3.2.2 reg-name characters (unreserved / sub-delims, and the "%"
# of pct-encoded, checked apart) without the comma: a merged duplicate Host
# ("a, b") is refused, not taken for a name.  Single character classes, so
# even a long value that fails is matched in one fast pass.
_REG_NAME = re.compile(r"[A-Za-z0-9\-._~!$&'()*+;=%]*")
_BAD_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PORT = re.compile(r"[0-9]*")
# IP-literal: an IPv6 address (its characters here, the rest by ipaddress,
# which would also take a zone "%eth0": not in a URI, RFC 9110 4.2.3) or
# IPvFuture.
_IPV6_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+\]")
_IP_FUTURE = re.compile(r"\[[vV][0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+;=:]+\]")


def _authority_error(text: str, what: str, *, need_host: bool, need_port: bool) -> str | None:
    """``uri-host [ ":" port ]`` (RFC 3986 3.2.2, 3.2.3): port digits only.

    An empty port after the colon (``example.com:``) is valid RFC 3986 and
    accepted (it means the default port), unless ``need_port``; an empty host
    is accepted only alone (an empty Host header), never with a port.
    """
    if text[:1] == "[":
        close = text.find("]") + 1
        if not close:
            return f"invalid {what}"
        host = text[:close]
        if host[1:2] in ("v", "V"):
            if _IP_FUTURE.fullmatch(host) is None:
                return f"invalid {what}"
        else:
            if _IPV6_LITERAL.fullmatch(host) is None:
                return f"invalid IPv6 address in {what}"
            try:
                ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                return f"invalid IPv6 address in {what}"
    else:
        close = text.find(":")  # a reg-name has no colon
        if close < 0:
            close = len(text)
        host = text[:close]
        if _REG_NAME.fullmatch(host) is None:
            return f"invalid {what}"
        if "%" in host and _BAD_PCT.search(host) is not None:
            return f"invalid %-escape in {what}"
    rest = text[close:]
    port = None
    if rest:
        port = rest[1:]
        if rest[0] != ":" or _PORT.fullmatch(port) is None:
            return f"invalid port in {what}"
    if not host and (need_host or port is not None):
        return f"empty host in {what}"
    if need_port and not (port and len(port) <= 5 and 0 < int(port) <= 65535):
        return f"invalid port in {what}"
    return None


def host_error(value: str) -> str | None:
    """Why a Host header value is not ``uri-host [ ":" port ]`` (or empty)."""
    return _authority_error(value, "Host header", need_host=False, need_port=False)


# Absolute-form "scheme://authority" prefixes already checked (bounded, like
# the parser's caches): a client that uses absolute-form uses it every time.
_VALID_ABSOLUTE: set[bytes] = set()
_CACHE_MAX = 1000


def target_error(method: str, target: bytes) -> str | None:
    """Why ``target`` is not a request-target for ``method`` (RFC 9112 3.2).

    ``target`` is visible ASCII already (the caller checks that first).
    origin-form (``/path?query``) with any method but CONNECT; absolute-form
    (``scheme://authority...``, a non-empty host, no userinfo: RFC 9110
    4.2.1, 4.2.4) with any method but CONNECT; asterisk-form (``*``) only
    with OPTIONS; authority-form (``host:port``) only, and always, with
    CONNECT (RFC 9110 9.3.6: an empty or invalid port is refused).
    """
    if method == "CONNECT":
        return _authority_error(
            target.decode("ascii"), "CONNECT target (host:port)", need_host=True, need_port=True
        )
    if target[0] == 0x2F:  # "/"
        return None
    if target == b"*":
        return None if method == "OPTIONS" else "asterisk-form target (*) only with OPTIONS"
    match = _ABSOLUTE.match(target)
    if match is None:
        return "request target is not a path, an absolute URI or *"
    prefix = match.group()
    if prefix in _VALID_ABSOLUTE:
        return None
    authority = match.group(1).decode("ascii")
    if "@" in authority:
        return "userinfo in the request target"
    reason = _authority_error(authority, "request target's host", need_host=True, need_port=False)
    if reason is None:
        if len(_VALID_ABSOLUTE) >= _CACHE_MAX:
            _VALID_ABSOLUTE.clear()
        _VALID_ABSOLUTE.add(prefix)
    return reason


def absolute_authority(target: bytes) -> str | None:
    """The authority of an absolute-form target (``http://host:port/...``), or
    None for any other form.  The target was accepted by :func:`target_error`."""
    match = _ABSOLUTE.match(target)
    return None if match is None else match.group(1).decode("ascii")


# -- chunk size line ----------------------------------------------------------------

_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_QUOTED_STRING = rb'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_TOKEN_PATTERN = b"[" + TCHAR + b"]+"
# RFC 9112 7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] ),
# name a token, value a token or a quoted-string.
_CHUNK_EXT = re.compile(
    rb"(?:[ \t]*;[ \t]*"
    + _TOKEN_PATTERN
    + rb"(?:[ \t]*=[ \t]*(?:"
    + _TOKEN_PATTERN
    + b"|"
    + _QUOTED_STRING
    + b"))?)*"
)


def chunk_line_error(line: bytes) -> str | None:
    """Why ``line`` (without its CRLF) is not ``chunk-size [ chunk-ext ]``.

    Whitespace after the size is allowed only as BWS before a ``;`` (so
    ``5 `` is refused); an extension needs a name (``;=x``, ``; `` are
    refused).  The size itself is read by the caller.
    """
    size = _HEX.match(line)
    if size is None:
        return "invalid chunk size"
    rest = line[size.end() :]
    if _CHUNK_EXT.fullmatch(rest) is not None:
        return None
    if rest.lstrip(b" \t")[:1] != b";":
        return "invalid chunk size"
    return "invalid chunk extension"
