"""The frame layer of a WebSocket: wsproto, our message filter and a fast path.

No sockets and no event loop: bytes in, frames and messages out, so it is
tested on bytes (``tests/unit/test_websocket_frames.py``).

* wsproto parses every frame (chosen over the ``websockets`` sans-I/O layer
  for strict RFC 6455 conformance: it hands over partial frames, so invalid
  UTF-8 fails a connection at the first bad byte even inside one frame; see
  pyproject.toml for the measurements).
* :class:`MessageFilter`, a wsproto extension, applies the size limit and
  permessage-deflate while frames arrive, so decompression is bounded as it
  happens.
* :func:`take_simple_frames` handles the common case -- whole, unfragmented
  data frames of up to 64 KiB -- without wsproto, ~2 µs a frame instead of
  ~14, while wsproto holds nothing (:func:`wsproto_idle`); everything else
  still goes through wsproto.

This module needs the optional ``wsproto`` package (``pip install
'prefork[asgi]'``): importing it without wsproto raises ImportError saying so.
"""

from __future__ import annotations

import zlib
from typing import Any

from prefork.worker.websocket_protocol import Inflater, MessageTooBig, unmask

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

__all__ = [
    "FAST_PATH",
    "BytesMessage",
    "CloseConnection",
    "Connection",
    "ConnectionState",
    "MessageFilter",
    "Ping",
    "Pong",
    "TextMessage",
    "new_connection",
    "take_simple_frames",
    "wsproto_idle",
]


#: A message may come in this many fragments whatever their size ...
FREE_FRAGMENTS = 1024
#: ... and past that, its fragments must carry this many bytes each on
#: average (after inflating): a message of empty or 2-byte fragments costs a
#: parse and a kept piece per frame, ~30x its size in memory and ~12 µs of
#: CPU per frame, with no byte counted against the size limit.  Autobahn's
#: smallest fragments (64 bytes, 9.5/9.6) are well within it.
MIN_FRAGMENT_AVERAGE = 16


class MessageFilter(Extension):
    """The message size limit, and permessage-deflate when it was negotiated.

    A wsproto extension sees every frame header and every piece of payload
    as it arrives: the limit fails a message at the first byte past it
    (before a compressed one is inflated further), and a fragmented
    compressed message may have control frames in between (wsproto's own
    extension loses track of the message there).  Outgoing data frames are
    the session's own (a server's frames are a header and the payload).
    """

    name = "permessage-deflate"

    def __init__(self, max_size: int, inflater: Inflater | None) -> None:
        self.max_size = max_size
        self.deflate = inflater is not None
        self._inflater = inflater
        self._control = False  # the frame being read is a control frame
        self._compressed = False  # the message being read is compressed
        self._size = 0  # bytes of the message being read, after inflating
        self._frames = 0  # frames of the message being read

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
            self._frames = 0
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
        if self._control:
            return None
        frames = self._frames = self._frames + 1
        if frames > FREE_FRAGMENTS and self._size < frames * MIN_FRAGMENT_AVERAGE:
            return CloseReason.MESSAGE_TOO_BIG  # (too many fragments for its size)
        if not fin or not self._compressed:
            return None
        self._compressed = False
        assert self._inflater is not None
        try:
            return self._inflater.finish(self.max_size - self._size)
        except MessageTooBig:
            return CloseReason.MESSAGE_TOO_BIG
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA


def new_connection(max_size: int, inflater: Inflater | None) -> Connection:
    """A server-side wsproto connection with the message filter."""
    return Connection(ConnectionType.SERVER, [MessageFilter(max_size, inflater)])


def wsproto_idle(conn: Connection) -> bool:
    """wsproto holds no byte of a frame and no part of a message.

    :func:`take_simple_frames` may only run then.  This reads three private
    attributes of wsproto 1.x (checked once at import: without them every
    frame goes through wsproto, which is slower, not wrong; a unit test
    fails so that it does not go unnoticed).
    """
    proto = conn._proto
    decoder = proto._frame_decoder
    return (
        decoder.header is None
        and not decoder.buffer.buffer
        and proto._message_decoder.opcode is None
    )


try:
    FAST_PATH = wsproto_idle(Connection(ConnectionType.SERVER))
except AttributeError:  # pragma: no cover - a wsproto whose insides changed
    FAST_PATH = False

#: (text or binary messages, the bytes wsproto must parse, a failure (code, reason) or None)
Taken = tuple[list[Any], bytes, "tuple[int, str] | None"]


def take_simple_frames(
    data: bytes,
    inflater: Inflater | None,
    max_size: int,
    max_messages: int = 1 << 30,
    max_bytes: int = 1 << 62,
) -> Taken:
    """The whole, unfragmented data frames of up to 64 KiB at the start of ``data``.

    At most ``max_messages`` of them, and none after the one that reaches
    ``max_bytes`` (counted after inflating): the rest is returned untouched
    with what wsproto must parse, for the caller to take later (the
    application's unread messages are bounded, and so is the work one read
    can cause).

    Call it only while wsproto is idle.  It takes only frames it checks
    exactly as wsproto would (FIN, opcode text or binary, RSV1 only with
    deflate, masked, shortest length encoding, complete, within the limit);
    at anything else -- a control frame, a fragment, a partial or broken
    frame -- it stops, and that frame and everything after it is for
    wsproto.  Messages are ``str`` (text) or ``bytes`` (binary).  The
    differential test in ``tests/unit/test_websocket_frames.py`` holds this
    and wsproto to the same results.
    """
    messages: list[Any] = []
    pos, end = 0, len(data)
    taken = 0
    while end - pos >= 6 and len(messages) < max_messages and taken < max_bytes:
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
                return messages, b"", (1009, "message too big")
            except zlib.error:
                return messages, b"", (1007, "invalid compressed data")
        taken += len(payload)
        if first & 0x0F == 1:
            try:
                messages.append(payload.decode())
            except UnicodeDecodeError as exc:
                return messages, b"", (1007, str(exc))
        else:
            messages.append(payload)
    return messages, (data[pos:] if pos else data), None
