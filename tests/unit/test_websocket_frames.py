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

    def get_write_buffer_size(self) -> int:
        return 0  # (asked by the send_timeout clock as writing pauses)

    def get_extra_info(self, name: str, default=None):  # type: ignore[no-untyped-def]
        return default

    def set_protocol(self, protocol) -> None:
        pass

    paused = False

    def pause_reading(self) -> None:
        assert not self.paused, "paused twice"
        self.paused = True

    def resume_reading(self) -> None:
        assert self.paused, "resumed while reading"
        self.paused = False


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


def run_session(
    chunks: list[bytes], fast: bool, deflate: bool, max_size: int = 3000
) -> tuple[list, bytes]:
    """Feed ``chunks`` to an accepted session; what the application and the client see."""
    import asyncio

    from prefork.settings import make_config
    from prefork.worker import websocket, websocket_connection

    async def main():
        transport = _Transport()
        config = make_config(None, ws_ping_interval=0, ws_max_size=max_size)
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
                if session._held or session._wsproto_pending:
                    await asyncio.sleep(0)  # (held for a later turn: the loop's)
                    continue
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


# -- bounded work and memory per connection (an outside probe's floods) -------------------


class _Session:
    """An accepted session on the recording transport, driven from a test."""

    def __init__(self, max_size: int = 3000, deflate: bool = False) -> None:
        from prefork.settings import make_config
        from prefork.worker import websocket

        self.transport = _Transport()
        config = make_config(None, ws_ping_interval=0, ws_max_size=max_size)
        request = _Request(self.transport, "permessage-deflate" if deflate else None)
        self.session = websocket.WebSocketSession({"subprotocols": []}, request, config, "a" * 24)

    async def accept(self):
        await self.session.receive()
        await self.session.send({"type": "websocket.accept"})
        self.transport.out.clear()
        return self.session


def _pongs(out: bytes) -> list[bytes]:
    """The payloads of the (unmasked, short) pong frames in ``out``."""
    found, pos = [], 0
    while pos + 2 <= len(out):
        opcode, size = out[pos] & 0x0F, out[pos + 1] & 0x7F
        if opcode == 10:
            found.append(bytes(out[pos + 2 : pos + 2 + size]))
        pos += 2 + size
    return found


def test_a_read_of_many_frames_is_parsed_a_bounded_number_per_loop_turn():
    """~12 µs a frame: one read of 256 KiB of empty pings would hold the
    worker ~0.5 s. FRAMES_PER_TURN are parsed at once, the socket is not read
    meanwhile, and the rest follows on the loop's next turns (every ping is
    still answered, in order)."""
    import asyncio

    from prefork.worker.websocket_connection import FRAMES_PER_TURN

    async def main():
        driver = _Session()
        session = await driver.accept()
        pings = [b"%d" % i for i in range(FRAMES_PER_TURN * 5)]
        session.data_received(b"".join(frame(9, payload) for payload in pings))
        assert len(_pongs(driver.transport.out)) == FRAMES_PER_TURN
        assert session._reading_paused and driver.transport.paused
        for _ in range(20):
            await asyncio.sleep(0)
        assert _pongs(driver.transport.out) == pings
        assert not session._reading_paused and not driver.transport.paused

    asyncio.run(main())


def test_pings_while_the_client_does_not_read_get_one_pong_the_latest():
    """RFC 6455 5.5.3: only the most recent ping needs its pong. Answering
    every ping of a client that reads nothing grew the worker by the pongs
    (180 MiB in a probe)."""
    import asyncio

    async def main():
        driver = _Session()
        session = await driver.accept()
        session.pause_writing()  # (the transport's buffer is over its high-water mark)
        session.data_received(b"".join(frame(9, b"p%d" % i) for i in range(100)))
        for _ in range(10):
            await asyncio.sleep(0)
        assert _pongs(driver.transport.out) == []
        session.resume_writing()
        assert _pongs(driver.transport.out) == [b"p99"]

    asyncio.run(main())


def test_compressed_messages_the_application_leaves_unread_are_bounded_in_bytes():
    """Each of these inflates to just under the limit: the socket stops being
    read at ws_max_size unread bytes (or 16 messages), give or take one
    message -- not one whole read of them (60 MiB queued at a 1 MiB limit in
    a probe)."""
    import asyncio

    async def main():
        driver = _Session(max_size=3000, deflate=True)
        session = await driver.accept()
        message = deflate_raw(b"z" * 2900)
        session.data_received(b"".join(frame(2, message, rsv=4) for _ in range(50)))
        assert session._queued_bytes <= 2 * 3000
        assert len(session._inbox) <= 2
        assert session._reading_paused and session._held  # (the rest waits, unread)
        received = 0
        while received < 50:  # the application reads: all of them come, in turn
            event = await asyncio.wait_for(session.receive(), 5)
            assert event == {"type": "websocket.receive", "bytes": b"z" * 2900}
            received += 1
        assert not session._held and not session._reading_paused

    asyncio.run(main())


def test_a_message_of_many_tiny_fragments_fails_as_too_big_and_small_ones_pass():
    """Past FREE_FRAGMENTS, fragments must carry MIN_FRAGMENT_AVERAGE bytes
    each on average: empty fragments never counted against the size limit,
    yet each cost a parse and a kept piece."""
    from prefork.worker.websocket_frames import FREE_FRAGMENTS, MIN_FRAGMENT_AVERAGE

    empty = [frame(1, b"a", fin=False)] + [frame(0, b"", fin=False)] * FREE_FRAGMENTS
    for fast in (True, False):
        events, out = run_session([b"".join(empty), frame(0, b"b")], fast, False)
        assert [e["type"] for e in events] == ["websocket.disconnect"]
        assert events[-1]["code"] == 1009 and out.startswith(b"\x88")
    size = MIN_FRAGMENT_AVERAGE
    pieces = [frame(2, b"x" * size, fin=False)]
    pieces += [frame(0, b"x" * size, fin=False)] * (FREE_FRAGMENTS + 100)
    pieces.append(frame(0, b"x" * size))
    total = size * (FREE_FRAGMENTS + 102)
    events, _ = run_session([b"".join(pieces)], True, False, max_size=total)
    assert events[0] == {"type": "websocket.receive", "bytes": b"x" * total}


def test_the_pieces_of_a_fragmented_message_are_joined_as_they_come():
    """A kept piece per fragment cost ~30x the message's size for 2-byte
    fragments; they are joined by the 256, so a message is kept at about
    its size."""
    import asyncio

    async def main():
        driver = _Session(max_size=1 << 20)
        session = await driver.accept()
        session.data_received(frame(2, b"ab", fin=False))
        for _ in range(1000):
            session.data_received(frame(0, b"cd", fin=False))
            for _ in range(2):
                await asyncio.sleep(0)
        assert len(session._pieces) < 256 and len(session._parts) <= 4
        session.data_received(frame(0, b"ef"))
        event = await asyncio.wait_for(session.receive(), 5)
        assert event == {"type": "websocket.receive", "bytes": b"ab" + b"cd" * 1000 + b"ef"}

    asyncio.run(main())
