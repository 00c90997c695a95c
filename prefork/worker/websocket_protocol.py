"""The pure parts of a WebSocket connection: handshake, negotiation, compression.

Everything here is bytes and strings in, decisions out -- no sockets, no
event loop, no frame library -- so it can be tested exhaustively on its own
(``tests/unit/test_websocket_protocol.py``), and :mod:`prefork.worker.asgi`
may use the helpers before deciding to hand a request to
:mod:`prefork.worker.websocket` (which needs the optional frame library).

* :func:`check_upgrade` -- is this request a valid RFC 6455 opening
  handshake?  The key to answer, or the HTTP status to refuse it with.
* :func:`accept_token` -- the ``Sec-WebSocket-Accept`` value.
* :func:`negotiate_deflate` -- RFC 7692 permessage-deflate: the first offer
  we can honour and the parameters both sides then use.
* :class:`Deflater` / :class:`Inflater` -- the compression itself, with the
  decompressed size bounded *while* inflating (a 1 KiB "zip bomb" frame
  must not become a gigabyte before anyone can count it).
* :func:`close_code_problem` -- which close codes an application may send.
* :func:`frame_head` / :func:`unmask` -- the two framing operations the
  session does itself on its hot path (a server's frames are never masked,
  so writing one is a header and the payload).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

from prefork.worker.httputil import HTTPHeaders

__all__ = [
    "DeflateParams",
    "Deflater",
    "HandshakeError",
    "Inflater",
    "MessageTooBig",
    "accept_token",
    "check_upgrade",
    "close_code_problem",
    "frame_head",
    "negotiate_deflate",
    "parse_extension_offers",
    "parse_subprotocols",
    "unmask",
]

#: RFC 6455 section 1.3: appended to the client's key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#: Our side of permessage-deflate, as the ``websockets`` library's server
#: defaults: a 4 KiB window (12 bits) and memLevel 5 cost ~64 KiB of zlib
#: state per connection instead of ~320 KiB at 15/8, for a compression ratio
#: within a few per cent on typical JSON (measured: 0.093 vs 0.105 at 12/15 bits).
SERVER_WINDOW_BITS = 12
#: What we ask of the client when it lets us (it keeps our inflater small).
CLIENT_WINDOW_BITS = 12
COMPRESSION_LEVEL = 6
MEM_LEVEL = 5

_SYNC_TAIL = b"\x00\x00\xff\xff"
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# One extension parameter: name, then an optional token or quoted-string value.
_PARAM = re.compile(
    r"\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*(?:([!#$%&'*+\-.^_`|~0-9A-Za-z]+)|\"((?:[^\"\\]|\\.)*)\"))?\s*"
)


class HandshakeError(Exception):
    """The request is not a valid WebSocket opening handshake.

    ``status`` is the HTTP answer (400, or 426 for a version we do not
    speak), ``headers`` what must go with it.
    """

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers or []


class MessageTooBig(Exception):
    """A message (after decompression) is larger than the configured limit."""


# ------------------------------------------------------------------ the handshake


def _tokens(headers: HTTPHeaders, name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header, lowercased."""
    return [
        token.strip().lower()
        for value in headers.get_list(name)
        for token in value.split(",")
        if token.strip()
    ]


def check_upgrade(method: str, version: str, headers: HTTPHeaders) -> str:
    """Validate an opening handshake (RFC 6455 section 4.2.1); return its key.

    Raises :class:`HandshakeError`.  A request body is refused too: the
    bytes after the head belong to the WebSocket, so a body there would be
    read as frames.
    """
    if method != "GET":
        raise HandshakeError(400, "a WebSocket handshake must be a GET")
    if version != "HTTP/1.1":
        raise HandshakeError(400, "a WebSocket handshake needs HTTP/1.1")
    if "websocket" not in _tokens(headers, "Upgrade"):
        raise HandshakeError(400, "missing 'Upgrade: websocket'")
    if "upgrade" not in _tokens(headers, "Connection"):
        raise HandshakeError(400, "missing 'Connection: upgrade'")
    if headers.get("Transfer-Encoding") or headers.get("Content-Length", "0").strip() != "0":
        raise HandshakeError(400, "a WebSocket handshake has no body")
    versions = headers.get_list("Sec-WebSocket-Version")
    if [v.strip() for v in versions] != ["13"]:
        # RFC 6455 section 4.4: say which version we speak.
        raise HandshakeError(
            426, "unsupported Sec-WebSocket-Version", [("Sec-WebSocket-Version", "13")]
        )
    keys = headers.get_list("Sec-WebSocket-Key")
    if len(keys) != 1:
        raise HandshakeError(400, "expected exactly one Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HandshakeError(400, "Sec-WebSocket-Key is not 16 bytes in base64")
    return key


def accept_token(key: str) -> str:
    """``Sec-WebSocket-Accept`` for ``Sec-WebSocket-Key`` ``key`` (section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("ascii") + _GUID).digest()).decode("ascii")


def parse_subprotocols(headers: HTTPHeaders) -> list[str]:
    """The subprotocols the client offers, in its order of preference."""
    return [
        token.strip()
        for value in headers.get_list("Sec-WebSocket-Protocol")
        for token in value.split(",")
        if token.strip()
    ]


# ------------------------------------------------------------ permessage-deflate


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def parse_extension_offers(values: Iterable[str]) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """``Sec-WebSocket-Extensions`` values -> [(name, [(param, value or None)])].

    Quoted values are unquoted (RFC 7692 then requires them to be tokens:
    checked by the negotiation).  An element that does not parse is left
    out: it is an offer we decline, not a reason to refuse the handshake.
    """
    offers: list[tuple[str, list[tuple[str, str | None]]]] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            pieces = _split_outside_quotes(element, ";")
            name = pieces[0].strip()
            if not name:
                continue
            if _TOKEN.fullmatch(name) is None:
                continue
            params: list[tuple[str, str | None]] = []
            for piece in pieces[1:]:
                match = _PARAM.fullmatch(piece)
                if match is None:
                    break
                token, plain, quoted = match.groups()
                if quoted is not None:
                    quoted = re.sub(r"\\(.)", r"\1", quoted)
                params.append((token.lower(), plain if plain is not None else quoted))
            else:
                offers.append((name.lower(), params))
    return offers


@dataclass(frozen=True)
class DeflateParams:
    """The agreed permessage-deflate parameters (RFC 7692 section 7.1)."""

    #: LZ77 window of what we send (9-15; never 8, which zlib cannot make)
    server_max_window_bits: int
    #: LZ77 window the client compresses with (8-15)
    client_max_window_bits: int
    server_no_context_takeover: bool
    client_no_context_takeover: bool
    #: whether to say ``client_max_window_bits`` in the response (only when offered)
    client_bits_in_response: bool

    def response_value(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of our response."""
        parts = ["permessage-deflate"]
        if self.server_no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.client_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.server_max_window_bits < 15:
            parts.append(f"server_max_window_bits={self.server_max_window_bits}")
        if self.client_bits_in_response:
            parts.append(f"client_max_window_bits={self.client_max_window_bits}")
        return "; ".join(parts)


def _window_bits(value: str | None) -> int | None:
    """A window-bits value (RFC 7692: 1*DIGIT, 8-15, no leading zero), else None."""
    if value is None or not value.isdigit() or value.startswith("0"):
        return None
    bits = int(value)
    return bits if 8 <= bits <= 15 else None


def _accept_offer(params: list[tuple[str, str | None]]) -> DeflateParams | None:
    """Our response to one permessage-deflate offer, or None to decline it."""
    seen: set[str] = set()
    server_no_context = client_no_context = False
    server_bits = SERVER_WINDOW_BITS
    client_bits = 15
    client_bits_offered = False
    for name, value in params:
        if name in seen:
            return None  # RFC 7692 section 7.1: a repeated parameter declines the offer
        seen.add(name)
        if name == "server_no_context_takeover":
            if value is not None:
                return None
            server_no_context = True
        elif name == "client_no_context_takeover":
            if value is not None:
                return None
            # A hint that the client will not use context takeover: we
            # confirm it, and can then drop our inflater between messages.
            client_no_context = True
        elif name == "server_max_window_bits":
            bits = _window_bits(value)
            if bits is None:
                return None
            if bits == 8:
                # zlib cannot compress raw deflate with a 256-byte window
                # (it silently uses 512); decline rather than break the limit.
                return None
            server_bits = min(server_bits, bits)
        elif name == "client_max_window_bits":
            client_bits_offered = True
            if value is not None:
                bits = _window_bits(value)
                if bits is None:
                    return None
                client_bits = bits
            client_bits = min(client_bits, CLIENT_WINDOW_BITS)
        else:
            return None  # an unknown parameter declines the offer
    return DeflateParams(
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
        server_no_context_takeover=server_no_context,
        client_no_context_takeover=client_no_context,
        client_bits_in_response=client_bits_offered,
    )


def negotiate_deflate(headers: HTTPHeaders) -> DeflateParams | None:
    """The first permessage-deflate offer we accept, or None (no compression)."""
    for name, params in parse_extension_offers(headers.get_list("Sec-WebSocket-Extensions")):
        if name == "permessage-deflate":
            accepted = _accept_offer(params)
            if accepted is not None:
                return accepted
    return None


class Deflater:
    """Compresses outgoing messages (RFC 7692 section 7.2.1).

    A message may be given in pieces (``fin`` on the last): each piece is
    compressed as it comes, so a large message is sent as fragments without
    being compressed in one long stretch of the event loop.
    """

    def __init__(self, params: DeflateParams) -> None:
        self._bits = params.server_max_window_bits
        self._reset = params.server_no_context_takeover
        self._zlib: zlib._Compress | None = None

    def compress(self, data: bytes, fin: bool) -> bytes:
        compressor = self._zlib
        if compressor is None:
            compressor = self._zlib = zlib.compressobj(
                COMPRESSION_LEVEL, zlib.DEFLATED, -self._bits, MEM_LEVEL
            )
        out = compressor.compress(data)
        if not fin:
            return out
        out += compressor.flush(zlib.Z_SYNC_FLUSH)
        if self._reset:
            self._zlib = None
        # The flush always ends in an empty stored block (00 00 ff ff): it is
        # left off on the wire and added back by the receiver.
        return out[:-4] if out.endswith(_SYNC_TAIL) else out


class Inflater:
    """Decompresses incoming messages, never producing more than a limit.

    Raises :class:`MessageTooBig` as soon as a message grows past the limit
    and ``zlib.error`` on corrupt data.

    A sender may end a message's DEFLATE data with a final block (BFINAL
    set: RFC 7692 7.2.3.4, what a plain ``Z_FINISH`` makes) instead of a
    sync flush.  What follows the final block in that message is ignored
    (the cut tail included), and the next message starts a new stream
    which, with context takeover, may refer to the window of what came
    before: the last ``2**bits`` bytes are kept for that.
    """

    def __init__(self, params: DeflateParams) -> None:
        # A larger window than the peer's always decodes; 9 covers peers
        # whose zlib turned a requested 8 into 9.
        self._bits = max(9, params.client_max_window_bits)
        self._reset = params.client_no_context_takeover
        self._zlib: zlib._Decompress | None = None
        #: the latest output, at least one window of it (context takeover only)
        self._history = bytearray()
        #: this message's DEFLATE data ended with a final block
        self._ended = False

    def decompress(self, data: bytes, room: int) -> bytes:
        """Inflate ``data``; ``room``: bytes the message may still grow by."""
        if self._ended:
            return b""  # (after the final block of this message)
        decompressor = self._zlib
        if decompressor is None:
            decompressor = self._zlib = zlib.decompressobj(-self._bits)
        # (max_length 0 would mean "no limit": one more than the room, at least 1)
        out = decompressor.decompress(data, max(room, 0) + 1)
        if len(out) > room:
            raise MessageTooBig(f"message over the size limit after decompression (+{len(out)})")
        if not self._reset and out:
            history = self._history
            history += out
            window = 1 << self._bits
            if len(history) > 2 * window:
                del history[:-window]  # (trimmed now and then: appending stays cheap)
        if decompressor.eof:
            self._ended = True
            self._zlib = None
            if not self._reset:
                seen = bytes(self._history[-(1 << self._bits) :])
                self._zlib = zlib.decompressobj(-self._bits, zdict=seen)
        return out

    def finish(self, room: int) -> bytes:
        """The end of a compressed message: put back the tail the sender cut."""
        if self._ended:
            self._ended = False  # (a final block ended it: no tail to add)
            out = b""
        else:
            out = self.decompress(_SYNC_TAIL, room)
        if self._reset:
            self._zlib = None
        return out


# ------------------------------------------------------------------ close codes

#: Codes 1000-2999 an application may send (RFC 6455 section 7.4 and the IANA
#: registry): not 1004 (reserved), 1005/1006/1015 (never on the wire), 1016+
#: (unassigned).
_SENDABLE = frozenset((1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))


def close_code_problem(code: object) -> str | None:
    """Why ``code`` cannot be sent in a close frame, or None when it can."""
    if not isinstance(code, int) or isinstance(code, bool):
        return f"close code must be an int, not {type(code).__name__}"
    if code in _SENDABLE or 3000 <= code <= 4999:
        return None
    return f"close code {code} may not be sent (RFC 6455 section 7.4)"


# ------------------------------------------------------------------ framing


def frame_head(first: int, length: int) -> bytes:
    """The header of an unmasked frame: ``first`` is FIN | RSV | opcode."""
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def unmask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte masking ``key``, in C either way.

    One big-integer XOR for small payloads (~1 µs); for larger ones
    (measured crossover near 1 KiB) four ``translate`` passes over every
    fourth byte, as wsproto does: big-integer conversion grows faster than
    linearly.
    """
    n = len(payload)
    if not n:
        return b""
    if n < 1024:
        keys = key * (n // 4 + 1)
        return (int.from_bytes(payload, "big") ^ int.from_bytes(keys[:n], "big")).to_bytes(n, "big")
    data = bytearray(payload)
    for i in range(4):
        data[i::4] = data[i::4].translate(_XOR_TABLES[key[i]])
    return bytes(data)


#: byte -> byte ^ k, one table per key byte k
_XOR_TABLES = [bytes(a ^ k for a in range(256)) for k in range(256)]
