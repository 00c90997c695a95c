"""The frame layer: wsproto with prefork's message filter (size limit and
permessage-deflate), fed bytes, giving events.  No sockets, no loop."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from prefork.worker.websocket_frames import MessageFilter
from prefork.worker.websocket_protocol import DeflateParams, Inflater


def frame(opcode: int, payload: bytes = b"", fin: bool = True, rsv: int = 0) -> bytes:
    key = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


def deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


PARAMS = DeflateParams(12, 15, False, False, False)


def server(max_size: int = 1 << 20, params: DeflateParams | None = None) -> Connection:
    inflater = Inflater(params) if params is not None else None
    return Connection(ConnectionType.SERVER, [MessageFilter(max_size, inflater)])


def feed(conn: Connection, data: bytes) -> list:
    conn.receive_data(data)
    return list(conn.events())


def failure(events: list) -> int:
    """The close code of a parse failure (a close event while still OPEN)."""
    assert isinstance(events[-1], CloseConnection), events
    return int(events[-1].code)


def test_partial_frames_are_handed_over_as_they_arrive():
    conn = server()
    data = frame(1, b"x" * 1000)
    first = feed(conn, data[:500])
    assert first and isinstance(first[0], TextMessage) and not first[0].message_finished
    rest = feed(conn, data[500:])
    assert "".join(e.data for e in first + rest) == "x" * 1000
    assert rest[-1].message_finished


def test_invalid_utf8_fails_at_the_first_bad_byte_inside_a_frame():
    conn = server()
    payload = "κόσμε".encode() + b"\xed\xa0\x80" + b"edited" * 100
    data = frame(1, payload)
    good = 8 + 11  # header (with a 2-byte length) + mask + "κόσμε"
    assert not any(isinstance(e, CloseConnection) for e in feed(conn, data[:good]))
    events = feed(conn, data[good : good + 2])  # ED A0: already no valid sequence
    assert failure(events) == 1007
    assert conn.state is ConnectionState.OPEN  # (a failure, not the client's close)


def test_size_limit_fails_at_the_frame_header():
    conn = server(max_size=100)
    events = feed(conn, frame(2, b"a" * 101)[:8])  # only the header has arrived
    assert failure(events) == 1009


def test_size_limit_counts_fragments():
    conn = server(max_size=100)
    events = feed(conn, frame(2, b"a" * 60, fin=False) + frame(0, b"a" * 41))
    assert failure(events) == 1009


def test_a_message_of_exactly_the_limit_passes():
    conn = server(max_size=100)
    events = feed(conn, frame(2, b"a" * 60, fin=False) + frame(0, b"a" * 40))
    assert b"".join(e.data for e in events) == b"a" * 100


def test_compressed_bomb_fails_while_inflating():
    conn = server(max_size=1 << 20, params=PARAMS)
    events = feed(conn, frame(2, deflate(bytes(64 << 20)), rsv=4))
    assert failure(events) == 1009


def test_compressed_message_with_a_ping_between_its_fragments():
    conn = server(params=PARAMS)
    wire = deflate(b"hello world " * 50)
    half = len(wire) // 2
    events = feed(
        conn, frame(1, wire[:half], fin=False, rsv=4) + frame(9, b"p") + frame(0, wire[half:])
    )
    assert [type(e) for e in events if not isinstance(e, TextMessage)] == [Ping]
    text = "".join(e.data for e in events if isinstance(e, TextMessage))
    assert text == "hello world " * 50


@pytest.mark.parametrize(
    "data",
    [
        frame(1, b"a", fin=False, rsv=4) + frame(0, b"b", rsv=4),  # RSV1 on a continuation
        frame(9, b"", rsv=4),  # RSV1 on a control frame
        frame(1, b"a", rsv=2),  # RSV2: no extension defines it
    ],
)
def test_reserved_bits_with_deflate(data):
    assert failure(feed(server(params=PARAMS), data)) == 1002


def test_rsv1_without_deflate_is_a_protocol_error():
    assert failure(feed(server(), frame(1, deflate(b"abc"), rsv=4))) == 1002


def test_uncompressed_messages_pass_when_deflate_was_negotiated():
    events = feed(server(params=PARAMS), frame(2, b"raw"))
    assert isinstance(events[0], BytesMessage) and events[0].data == b"raw"


def test_corrupt_compressed_data_is_1007():
    assert failure(feed(server(params=PARAMS), frame(2, b"\xff" * 20, rsv=4))) == 1007


# ---------------------------------------------- the fast path equals wsproto's


class _Transport:
    """Records what the session writes; nothing else."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.out += data

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.out += chunk

    def can_write_eof(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    abort = close

    def set_write_buffer_limits(self, *args, **kwargs) -> None:
        pass

    def set_protocol(self, protocol) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Connection:
    server = None

    def __init__(self, transport: _Transport) -> None:
        self.transport = transport

    def closed(self) -> bool:
        return False

    def set_close_callback(self, callback) -> None:
        pass

    def detach(self):
        return self.transport, b""


class _Request:
    method, version, uri, remote_ip = "GET", "HTTP/1.1", "/", "127.0.0.1"

    def __init__(self, transport: _Transport, extensions: str | None) -> None:
        from prefork.worker.httputil import HTTPHeaders

        self.headers = HTTPHeaders()
        if extensions:
            self.headers["Sec-WebSocket-Extensions"] = extensions
        self.connection = _Connection(transport)


def run_session(chunks: list[bytes], fast: bool, deflate: bool) -> tuple[list, bytes]:
    """Feed ``chunks`` to an accepted session; what the application and the client see."""
    import asyncio

    from prefork.settings import make_config
    from prefork.worker import websocket, websocket_connection

    async def main():
        transport = _Transport()
        config = make_config(None, ws_ping_interval=0, ws_max_size=3000)
        request = _Request(transport, "permessage-deflate" if deflate else None)
        session = websocket.WebSocketSession({"subprotocols": []}, request, config, "a" * 24)
        await session.receive()
        await session.send({"type": "websocket.accept"})
        transport.out.clear()
        for chunk in chunks:
            session.data_received(chunk)
        events = []
        while True:
            if not session._inbox and session._final is None:
                session.connection_lost(None)  # (the stream ended: the client went away)
            event = await session.receive()
            events.append(event)
            if event["type"] == "websocket.disconnect":
                break
        return events, bytes(transport.out)

    saved = websocket_connection.FAST_PATH
    websocket_connection.FAST_PATH = fast
    try:
        return asyncio.run(main())
    finally:
        websocket_connection.FAST_PATH = saved


def test_the_fast_path_is_on_with_this_wsproto():
    from prefork.worker import websocket_frames

    assert websocket_frames.FAST_PATH  # (off, everything still works, only slower)


_PAYLOADS = [b"", b"hello", "κόσμε".encode(), b"\xed\xa0\x80", b"\xce", b"x" * 130, b"y" * 3001]


def _random_frames(draw, deflate: bool) -> bytes:
    from hypothesis import strategies as st

    out = b""
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["text", "binary", "fragments", "ping", "pong", "bad"]))
        payload = draw(st.sampled_from(_PAYLOADS))
        compress = deflate and draw(st.booleans())
        if kind in ("text", "binary"):
            body = deflate_raw(payload) if compress else payload
            out += frame(1 if kind == "text" else 2, body, rsv=4 if compress else 0)
        elif kind == "fragments":
            out += frame(1, payload[:2], fin=False) + frame(0, payload[2:])
        elif kind in ("ping", "pong"):
            out += frame(9 if kind == "ping" else 10, payload[:125])
        else:
            out += draw(
                st.sampled_from(
                    [
                        frame(1, b"a", rsv=2),
                        frame(5, b""),
                        frame(0, b"lonely"),
                        b"\x81\x05hello",  # not masked
                        frame(8, b"\x03\xe8"),
                        frame(8, b"\x03"),
                    ]
                )
            )
    return out


def deflate_raw(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -9)  # (a fresh stream: valid with or without context)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


@pytest.mark.parametrize("deflate", [False, True])
def test_fast_path_and_wsproto_agree_on_random_streams(deflate):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        stream = _random_frames(data.draw, deflate)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=4)))
        chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
        assert run_session(chunks, True, deflate) == run_session(chunks, False, deflate)

    check()
