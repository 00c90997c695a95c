"""The pure WebSocket parts: opening handshake, permessage-deflate negotiation
(RFC 7692 section 7.1) and compression, close codes.  Strings and bytes in,
decisions out."""

from __future__ import annotations

import os
import random
import zlib

import pytest

from prefork.worker.httputil import HTTPHeaders
from prefork.worker.websocket_protocol import (
    DeflateParams,
    Deflater,
    HandshakeError,
    Inflater,
    MessageTooBig,
    accept_token,
    check_upgrade,
    close_code_problem,
    frame_head,
    negotiate_deflate,
    parse_extension_offers,
    parse_subprotocols,
    unmask,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example


def headers(*pairs: tuple[str, str]) -> HTTPHeaders:
    result = HTTPHeaders()
    for name, value in pairs:
        result.add(name, value)
    return result


def upgrade_headers(**replace: str | None) -> HTTPHeaders:
    base = {
        "Host": "example.com",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": KEY,
        "Sec-WebSocket-Version": "13",
    }
    for name, value in replace.items():
        name = name.replace("_", "-")
        if value is None:
            base.pop(name, None)
        else:
            base[name] = value
    return headers(*base.items())


# ------------------------------------------------------------------ the handshake


def test_accept_token_is_the_rfc_example():
    assert accept_token(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_a_valid_handshake_returns_the_key():
    assert check_upgrade("GET", "HTTP/1.1", upgrade_headers()) == KEY


@pytest.mark.parametrize(
    "connection,upgrade",
    [
        ("keep-alive, Upgrade", "websocket"),
        ("upgrade", "WebSocket"),
        ("Upgrade", "h2c, websocket"),
    ],
)
def test_tokens_are_case_insensitive_lists(connection, upgrade):
    assert check_upgrade("GET", "HTTP/1.1", upgrade_headers(Connection=connection, Upgrade=upgrade))


@pytest.mark.parametrize(
    "method,version,replace,status",
    [
        ("POST", "HTTP/1.1", {}, 400),
        ("GET", "HTTP/1.0", {}, 400),
        ("GET", "HTTP/1.1", {"Upgrade": None}, 400),
        ("GET", "HTTP/1.1", {"Upgrade": "h2c"}, 400),
        ("GET", "HTTP/1.1", {"Connection": "keep-alive"}, 400),
        ("GET", "HTTP/1.1", {"Connection": None}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": None}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": "c2hvcnQ="}, 400),  # 5 bytes
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": "not base64!!!!!!!!!!!!=="}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Key": "dGhlIHNhbXBsZSBub25jZQ"}, 400),  # no padding
        ("GET", "HTTP/1.1", {"Content_Length": "5"}, 400),
        ("GET", "HTTP/1.1", {"Transfer_Encoding": "chunked"}, 400),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Version": "8"}, 426),
        ("GET", "HTTP/1.1", {"Sec_WebSocket_Version": None}, 426),
    ],
)
def test_invalid_handshakes_are_refused(method, version, replace, status):
    with pytest.raises(HandshakeError) as caught:
        check_upgrade(method, version, upgrade_headers(**replace))
    assert caught.value.status == status
    if status == 426:  # RFC 6455 section 4.4: say which version we speak
        assert caught.value.headers == [("Sec-WebSocket-Version", "13")]


def test_two_keys_are_refused():
    h = upgrade_headers()
    h.add("Sec-WebSocket-Key", KEY)
    with pytest.raises(HandshakeError):
        check_upgrade("GET", "HTTP/1.1", h)


def test_subprotocols_keep_the_clients_order():
    h = headers(("Sec-WebSocket-Protocol", "chat, superchat"), ("Sec-WebSocket-Protocol", " v2 ,"))
    assert parse_subprotocols(h) == ["chat", "superchat", "v2"]
    assert parse_subprotocols(headers()) == []


# ------------------------------------------------------------ extension offers


def test_extension_offers_parse_params_and_quoted_values():
    offers = parse_extension_offers(
        [
            'permessage-deflate; client_max_window_bits; server_max_window_bits="10", foo',
            "x-webkit-deflate-frame",
        ]
    )
    assert offers == [
        (
            "permessage-deflate",
            [("client_max_window_bits", None), ("server_max_window_bits", "10")],
        ),
        ("foo", []),
        ("x-webkit-deflate-frame", []),
    ]


def test_a_malformed_offer_is_left_out():
    assert parse_extension_offers(["permessage-deflate; =1", "a b", "ok"]) == [("ok", [])]


def negotiate(value: str) -> str | None:
    params = negotiate_deflate(headers(("Sec-WebSocket-Extensions", value)))
    return None if params is None else params.response_value()


@pytest.mark.parametrize(
    "offer,response",
    [
        # Our window is 12 bits; the client's only when it lets us say so.
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
        ),
        (
            "permessage-deflate; server_max_window_bits=15",
            "permessage-deflate; server_max_window_bits=12",
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=12",
        ),
        # Autobahn's offers (cases 13.x): (requestNoContextTakeover, requestMaxWindowBits)
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; "
            "server_no_context_takeover; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits=12",
        ),
        (
            'permessage-deflate; server_max_window_bits="10"',
            "permessage-deflate; server_max_window_bits=10",
        ),
        # Offers we must decline (section 7.1): then no compression at all...
        ("permessage-deflate; server_max_window_bits=8", None),  # zlib cannot make 8
        ("permessage-deflate; server_max_window_bits=16", None),
        ("permessage-deflate; server_max_window_bits=7", None),
        ("permessage-deflate; server_max_window_bits=010", None),
        ("permessage-deflate; server_max_window_bits", None),  # a value is required
        ("permessage-deflate; client_max_window_bits=abc", None),
        ("permessage-deflate; server_no_context_takeover=1", None),
        ("permessage-deflate; server_no_context_takeover; server_no_context_takeover", None),
        ("permessage-deflate; mystery", None),
        ("x-webkit-deflate-frame", None),
        # ... or the next offer.
        (
            "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
        ),
    ],
)
def test_deflate_negotiation(offer, response):
    assert negotiate(offer) == response


def test_no_offer_no_compression():
    assert negotiate_deflate(headers()) is None


# ------------------------------------------------------------------ compression


def params(server_bits=12, client_bits=15, server_reset=False, client_reset=False) -> DeflateParams:
    return DeflateParams(server_bits, client_bits, server_reset, client_reset, False)


def client_inflate(data: bytes, bits: int, decompressor=None):
    decompressor = decompressor or zlib.decompressobj(-bits)
    return decompressor.decompress(data + b"\x00\x00\xff\xff"), decompressor


@pytest.mark.parametrize("bits", [9, 12, 15])
def test_deflater_output_inflates_with_the_promised_window(bits):
    deflater = Deflater(params(server_bits=bits))
    message = os.urandom(2000).hex().encode() * 3
    wire = deflater.compress(message, fin=True)
    assert not wire.endswith(b"\x00\x00\xff\xff")
    assert client_inflate(wire, bits)[0] == message


def test_context_takeover_makes_a_repeat_cheap_and_no_context_resets():
    message = os.urandom(500).hex().encode()
    keep = Deflater(params())
    first = keep.compress(message, True)
    second = keep.compress(message, True)
    assert len(second) < len(first) // 4
    decompressor = None
    for wire in (first, second):
        out, decompressor = client_inflate(wire, 12, decompressor)
        assert out == message
    reset = Deflater(params(server_reset=True))
    assert reset.compress(message, True) == reset.compress(message, True)


def test_a_message_compressed_in_pieces_is_one_stream():
    deflater = Deflater(params())
    parts = [os.urandom(3000) for _ in range(4)]
    wire = b"".join(deflater.compress(p, i == 3) for i, p in enumerate(parts))
    assert client_inflate(wire, 12)[0] == b"".join(parts)


def compress_client(data: bytes, bits: int = 15) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def test_inflater_round_trip_and_context():
    inflater = Inflater(params())
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    for message in (b"hello " * 100, b"hello " * 100, b""):
        wire = (c.compress(message) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        got = inflater.decompress(wire, 10_000)
        got += inflater.finish(10_000 - len(got))
        assert got == message


@pytest.mark.parametrize("client_reset", [False, True], ids=["context", "no-context"])
@pytest.mark.parametrize("bits", [9, 12, 15])
def test_inflater_takes_messages_ended_by_a_final_block(bits, client_reset):
    """RFC 7692 7.2.3.4: a sender may end a message with a final (BFINAL)
    block, as a plain Z_FINISH does, mixed with sync-flushed messages, in
    fragments; with context takeover the next message may refer to the
    window of the ones before (a new stream whose dictionary is that window).
    Each message comes back whole (they used to come back empty)."""
    rng = random.Random(bits)
    words = [b"hello", b"world", b"again", b"prefork", b"x" * 50, b"{", b"}"]
    inflater = Inflater(params(client_bits=bits, client_reset=client_reset))
    history = b""
    c = zlib.compressobj(6, zlib.DEFLATED, -bits)
    for n in range(120):
        message = b" ".join(rng.choice(words) for _ in range(rng.randint(0, 2000)))
        final = n % 3 != 2
        if client_reset:
            c = zlib.compressobj(6, zlib.DEFLATED, -bits)
        wire = c.compress(message) + (c.flush() if final else c.flush(zlib.Z_SYNC_FLUSH)[:-4])
        history = (history + message)[-(1 << bits) :]
        if final and not client_reset:  # (the sender's next stream starts from its window)
            window = {"zdict": history} if history else {}
            c = zlib.compressobj(6, zlib.DEFLATED, -bits, **window)
        cut = sorted(rng.sample(range(len(wire) + 1), 2))
        parts = [wire[: cut[0]], wire[cut[0] : cut[1]], wire[cut[1] :]]
        got = b"".join(inflater.decompress(part, 1 << 22) for part in parts)
        got += inflater.finish(1 << 22)
        assert got == message, (n, final, len(got), len(message))


def test_inflater_stops_a_bomb_without_inflating_it():
    bomb = compress_client(bytes(50 << 20))  # 50 MiB of zeros: ~50 KiB on the wire
    assert len(bomb) < 100_000
    inflater = Inflater(params())
    with pytest.raises(MessageTooBig):
        inflater.decompress(bomb, 1 << 20)


def test_inflater_limit_is_exact():
    data = os.urandom(1000)
    wire = compress_client(data)
    assert Inflater(params()).decompress(wire, 1000) + b"" == data
    with pytest.raises(MessageTooBig):
        Inflater(params()).decompress(wire, 999)


def test_corrupt_deflate_data_is_a_zlib_error():
    with pytest.raises(zlib.error):
        Inflater(params()).decompress(b"\xff\xff\xff\xff garbage", 1000)


# ------------------------------------------------------------------ close codes


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999])
def test_sendable_close_codes(code):
    assert close_code_problem(code) is None


@pytest.mark.parametrize(
    "code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, "1000", True, None]
)
def test_close_codes_an_application_may_not_send(code):
    assert close_code_problem(code) is not None


# ------------------------------------------------------------------ framing


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 1023, 1024, 1025, 70000])
def test_unmask_is_the_rfc_xor(size):
    payload, key = os.urandom(size), os.urandom(4)
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@pytest.mark.parametrize(
    "length,expected",
    [
        (0, b"\x81\x00"),
        (125, b"\x81\x7d"),
        (126, b"\x81\x7e\x00\x7e"),
        (65535, b"\x81\x7e\xff\xff"),
        (65536, b"\x81\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
    ],
)
def test_frame_head_uses_the_shortest_length(length, expected):
    assert frame_head(0x81, length) == expected
