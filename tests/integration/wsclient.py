"""A raw WebSocket client for conformance tests: frames made by hand.

A client library hides exactly what a conformance test must see (it
answers pings, validates, reassembles, closes on its own), so the
RFC 6455 / RFC 7692 suite in ``test_websocket.py`` speaks through this
instead: blocking sockets, every read bounded by a timeout, frames built
byte by byte (any opcode, RSV bits, lengths, masks, fragments, chops), and
permessage-deflate done with zlib by the test itself.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 5.0


class Closed(Exception):
    """The server closed the TCP connection (EOF) while a frame was expected."""


@dataclass
class Frame:
    fin: bool
    rsv: int  # the three RSV bits, as 0-7
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    @property
    def close_reason(self) -> bytes:
        return self.payload[2:]


def mask_bytes(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return b""
    repeated = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(n, "big")


def build_frame(
    opcode: int,
    payload: bytes = b"",
    fin: bool = True,
    rsv: int = 0,
    mask: bool = True,
    length: int | None = None,
) -> bytes:
    """One frame, exactly as asked (even when it breaks the rules)."""
    n = len(payload) if length is None else length
    head = bytearray([(0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0x0F)])
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head.append(mask_bit | n)
    elif n < 65536:
        head.append(mask_bit | 126)
        head += struct.pack("!H", n)
    else:
        head.append(mask_bit | 127)
        head += struct.pack("!Q", n)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + mask_bytes(payload, key)


def close_payload(code: int | None, reason: bytes = b"") -> bytes:
    return b"" if code is None else struct.pack("!H", code) + reason


@dataclass
class Deflate:
    """The client's half of permessage-deflate, from the server's response."""

    server_bits: int = 15
    client_bits: int = 15
    server_no_context: bool = False
    client_no_context: bool = False

    @classmethod
    def from_response(cls, value: str) -> Deflate:
        params = [p.strip() for p in value.split(";")]
        assert params[0] == "permessage-deflate", value
        deflate = cls()
        for param in params[1:]:
            name, _, arg = param.partition("=")
            if name == "server_max_window_bits":
                deflate.server_bits = int(arg)
            elif name == "client_max_window_bits":
                deflate.client_bits = int(arg)
            elif name == "server_no_context_takeover":
                deflate.server_no_context = True
            elif name == "client_no_context_takeover":
                deflate.client_no_context = True
            else:
                raise AssertionError(f"unexpected parameter in {value!r}")
        return deflate

    def __post_init__(self) -> None:
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    def compress(self, data: bytes, fin: bool = True) -> bytes:
        if self._compressor is None:
            self._compressor = zlib.compressobj(6, zlib.DEFLATED, -self.client_bits)
        out = self._compressor.compress(data)
        if fin:
            out += self._compressor.flush(zlib.Z_SYNC_FLUSH)
            assert out.endswith(b"\x00\x00\xff\xff")
            out = out[:-4]
            if self.client_no_context:
                self._compressor = None
        return out

    def decompress(self, data: bytes, fin: bool) -> bytes:
        if self._decompressor is None:
            # Exactly the window the server promised: a larger one would
            # hide a server that breaks its promise.
            self._decompressor = zlib.decompressobj(-self.server_bits)
        out = self._decompressor.decompress(data)
        if fin:
            out += self._decompressor.decompress(b"\x00\x00\xff\xff")
            if self.server_no_context:
                self._decompressor = None
        return out


class RawWebSocket:
    """One client connection; every wait is bounded by ``timeout``."""

    def __init__(
        self,
        port: int,
        path: str = "/echo",
        *,
        extensions: str | None = None,
        subprotocols: str | None = None,
        extra: str = "",
        timeout: float = TIMEOUT,
        expect_status: int = 101,
        host: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {path} HTTP/1.1",
            f"Host: {host or f'127.0.0.1:{port}'}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if extensions is not None:
            lines.append(f"Sec-WebSocket-Extensions: {extensions}")
        if subprotocols is not None:
            lines.append(f"Sec-WebSocket-Protocol: {subprotocols}")
        request = "\r\n".join(lines) + "\r\n" + extra + "\r\n"
        self.sock.sendall(request.encode("latin-1"))
        head = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, list[str]] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers.setdefault(name.strip().lower(), []).append(value.strip())
        assert self.status == expect_status, (self.status, head)
        self.deflate: Deflate | None = None
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1(self.key.encode() + GUID).digest()).decode()
            assert self.header("sec-websocket-accept") == expected
            offered = self.header("sec-websocket-extensions")
            if offered:
                self.deflate = Deflate.from_response(offered)

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return ", ".join(values) if values else None

    # -- bytes ----------------------------------------------------------------

    def _recv(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(remaining)
        chunk = self.sock.recv(1 << 20)  # (TimeoutError when nothing comes in time)
        if not chunk:
            raise Closed("the server closed the connection")
        return chunk

    def _read_until(self, marker: bytes) -> bytes:
        deadline = time.monotonic() + self.timeout
        while marker not in self.buffer:
            self.buffer += self._recv(deadline)
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _read_exact(self, n: int, deadline: float) -> bytes:
        while len(self.buffer) < n:
            self.buffer += self._recv(deadline)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send_raw(self, data: bytes, chop: int | None = None, pause: float = 0.0) -> None:
        if chop is None:
            self.sock.sendall(data)
            return
        for i in range(0, len(data), chop):
            self.sock.sendall(data[i : i + chop])
            if pause:
                time.sleep(pause)

    # -- frames ---------------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0, **kw):
        chop = kw.pop("chop", None)
        self.send_raw(build_frame(opcode, payload, fin, rsv, **kw), chop)

    def send_text(self, text: str | bytes, compress: bool = False) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.send_message(1, data, compress)

    def send_message(
        self, opcode: int, data: bytes, compress: bool = False, fragment: int | None = None
    ) -> None:
        """A whole message, compressed with the negotiated deflate and/or fragmented."""
        if compress:
            assert self.deflate is not None
            data = self.deflate.compress(data)
        pieces = [data[i : i + fragment] for i in range(0, len(data), fragment)] if fragment else []
        pieces = pieces or [data]
        out = b""
        for i, piece in enumerate(pieces):
            first, last = i == 0, i == len(pieces) - 1
            out += build_frame(
                opcode if first else 0, piece, fin=last, rsv=4 if (compress and first) else 0
            )
        self.send_raw(out)

    def send_close(self, code: int | None = 1000, reason: bytes = b"") -> None:
        self.send_frame(8, close_payload(code, reason))

    def recv_frame(self, timeout: float | None = None) -> Frame:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        b0, b1 = self._read_exact(2, deadline)
        assert not b1 & 0x80, "a server must not mask its frames"
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2, deadline))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8, deadline))
        payload = self._read_exact(n, deadline)
        return Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, payload)

    def recv_message(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next data message (fragments joined, decompressed); fails on
        any other frame in between except pongs, which are collected."""
        frame = self.recv_frame(timeout)
        assert frame.opcode in (1, 2), f"expected a data message, got {frame}"
        opcode, compressed = frame.opcode, bool(frame.rsv & 4)
        assert frame.rsv in ((0, 4) if self.deflate else (0,)), frame
        pieces = [self._inflate(frame.payload, frame.fin) if compressed else frame.payload]
        while not frame.fin:
            frame = self.recv_frame(timeout)
            assert frame.opcode == 0 and frame.rsv == 0, f"expected a continuation, got {frame}"
            pieces.append(self._inflate(frame.payload, frame.fin) if compressed else frame.payload)
        return opcode, b"".join(pieces)

    def _inflate(self, data: bytes, fin: bool) -> bytes:
        assert self.deflate is not None, "RSV1 set without permessage-deflate"
        return self.deflate.decompress(data, fin)

    def expect_close(self, codes: int | tuple[int, ...] | None, timeout: float | None = None):
        """The server's close frame (nothing else before it), answered; then its EOF."""
        frame = self.recv_frame(timeout)
        assert frame.opcode == 8, f"expected a close frame, got {frame}"
        if codes is not None:
            allowed = codes if isinstance(codes, tuple) else (codes,)
            assert frame.close_code in allowed, (frame.close_code, frame.close_reason)
        try:
            self.send_frame(8, frame.payload[:2])
        except OSError:
            pass  # (a failing server may already be gone: the EOF check says the rest)
        self.expect_eof(timeout)
        return frame

    def expect_eof(self, timeout: float | None = None) -> None:
        """The server closes the TCP connection, with nothing more sent."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                chunk = self._recv(deadline)
            except Closed:
                break
            except ConnectionResetError:
                raise AssertionError("the server reset the connection") from None
            self.buffer += chunk
        assert not self.buffer, f"unexpected bytes before the EOF: {self.buffer[:100]!r}"

    def expect_nothing(self, wait: float) -> None:
        """Nothing arrives within ``wait`` seconds (and the connection stays open)."""
        deadline = time.monotonic() + wait
        try:
            chunk = self._recv(deadline)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected bytes: {chunk[:100]!r}")

    def close(self, code: int = 1000) -> None:
        """The client's closing handshake: the server echoes the code and closes first."""
        self.send_close(code)
        frame = self.recv_frame()
        assert frame.opcode == 8, frame
        assert frame.close_code == code, frame
        self.expect_eof()
        self.sock.close()

    def __enter__(self) -> RawWebSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()
