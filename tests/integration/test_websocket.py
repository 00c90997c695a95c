"""WebSockets served by real prefork processes: RFC 6455, RFC 7692, ASGI.

The application is ``tests/apps/ws_app.py`` behind ``HTTPServer(ASGIAdapter(app))``
in one process (the ``spawn`` fixtures of ``tests/conftest.py``), or behind
the CLI with a master and a worker (drain tests).

* An RFC 6455 / 7692 conformance suite modelled on the Autobahn testsuite's
  groups 1-7 (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
  closing), 9-10 (limits and performance: messages up to the default 16 MiB
  limit, 65,536 fragments, 64-byte writes, 1000 round trips; fragments) and
  12-13 (permessage-deflate), spoken through a raw client
  (``wsclient.py``) so that nothing is hidden.  Every case is strict: the
  exact echo, nothing else on the wire, the exact close code, and the server
  closing the TCP connection after the closing handshake (never a reset).
  Where the testsuite accepts a weaker outcome as NON-STRICT (an echo lost
  before a protocol failure, a failure noticed only at the end of a frame),
  the strict outcome is required here.
* The ASGI side with a real client (``websockets``): subprotocols, headers,
  denials, close codes both ways, errors, limits, keepalive, back-pressure
  both ways, and a worker's drain (1001) and reload (1012).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tests.conftest import wait_for, wait_for_lines
from tests.integration.wsclient import Closed, RawWebSocket, build_frame, close_payload

APP = Path(__file__).resolve().parent.parent / "apps" / "ws_app.py"
APP_SPEC = "tests.apps.ws_app:app"
MAX_SIZE = 4 << 20
TEXT = b"Hello, world!"


@pytest.fixture(scope="module")
def port(module_spawn) -> int:
    """The default settings (permessage-deflate on), a 4 MiB message limit."""
    return module_spawn(APP, "--max-size", MAX_SIZE).port


@pytest.fixture(scope="module")
def default_port(module_spawn) -> int:
    """The default settings: a 16 MiB message limit, permessage-deflate on."""
    return module_spawn(APP).port


@pytest.fixture(scope="module")
def plain_port(module_spawn) -> int:
    """No permessage-deflate."""
    return module_spawn(APP, "--no-deflate").port


@pytest.fixture(scope="module")
def small_port(module_spawn) -> int:
    """A 64 KiB message limit and a fast keepalive (ping after 0.3 s of silence)."""
    return module_spawn(
        APP, "--max-size", 65536, "--ping-interval", 0.3, "--ping-timeout", 0.5
    ).port


def send_parts(ws: RawWebSocket, frames: list[bytes], mode: str) -> None:
    """``whole``: in one write; ``frames``: a write per frame, 0.1 s apart;
    ``octets``: a write per byte."""
    if mode == "whole":
        ws.send_raw(b"".join(frames))
    elif mode == "frames":
        for frame in frames:
            ws.send_raw(frame)
            time.sleep(0.1)
    else:
        ws.send_raw(b"".join(frames), chop=1)


# ===================================================================== 1 framing


@pytest.mark.parametrize("opcode", [1, 2], ids=["text", "binary"])
@pytest.mark.parametrize(
    "size,chop",
    [
        (0, None),
        (125, None),
        (126, None),
        (127, None),
        (128, None),
        (65535, None),
        (65536, None),
        (65536, 997),
    ],
)
def test_1_echo_of_every_length_encoding(port, opcode, size, chop):
    payload = (b"*" if opcode == 1 else b"\xfe") * size
    with RawWebSocket(port) as ws:
        ws.send_frame(opcode, payload, chop=chop)
        assert ws.recv_message() == (opcode, payload)
        ws.close()


# ================================================================ 2 pings, pongs


@pytest.mark.parametrize(
    "payload,chop",
    [
        (b"", None),
        (TEXT, None),
        (b"\x00\xff\xfe\xfd\xfc\xfb\x00\xff", None),
        (b"\xfe" * 125, None),
        (b"\xfe" * 125, 1),
    ],
    ids=["2.1-empty", "2.2-text", "2.3-binary", "2.4-125", "2.6-125-octetwise"],
)
def test_2_ping_is_answered_with_its_payload(port, payload, chop):
    with RawWebSocket(port) as ws:
        ws.send_frame(9, payload, chop=chop)
        pong = ws.recv_frame()
        assert (pong.opcode, pong.fin, pong.rsv, pong.payload) == (10, True, 0, payload)
        ws.close()


def test_2_5_ping_over_125_bytes_fails_the_connection(port):
    with RawWebSocket(port) as ws:
        ws.send_frame(9, b"\xfe" * 126)
        ws.expect_close(1002)


@pytest.mark.parametrize("payload", [b"", b"unsolicited pong payload"], ids=["2.7", "2.8"])
def test_2_unsolicited_pong_is_ignored(port, payload):
    with RawWebSocket(port) as ws:
        ws.send_frame(10, payload)
        ws.expect_nothing(0.3)
        ws.close()


def test_2_9_unsolicited_pong_then_ping(port):
    with RawWebSocket(port) as ws:
        ws.send_raw(build_frame(10, b"unsolicited pong payload") + build_frame(9, b"ping payload"))
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (10, b"ping payload")
        ws.close()


@pytest.mark.parametrize("chop", [None, 1], ids=["2.10", "2.11-octetwise"])
def test_2_ten_pings_ten_pongs_in_order(port, chop):
    with RawWebSocket(port) as ws:
        ws.send_raw(b"".join(build_frame(9, b"payload-%d" % i) for i in range(10)), chop=chop)
        for i in range(10):
            pong = ws.recv_frame()
            assert (pong.opcode, pong.payload) == (10, b"payload-%d" % i)
        ws.close()


# ============================================================== 3 reserved bits


@pytest.mark.parametrize(
    "rsv,opcode,framed_by_good_ones,mode",
    [
        (1, 1, False, "whole"),  # 3.1 (no extension negotiated: RSV1 is reserved too)
        (2, 1, True, "whole"),  # 3.2
        (3, 1, True, "frames"),  # 3.3
        (4, 1, True, "octets"),  # 3.4
        (5, 2, False, "whole"),  # 3.5
        (6, 9, False, "whole"),  # 3.6
        (7, 8, False, "whole"),  # 3.7
    ],
    ids=["3.1", "3.2", "3.3", "3.4", "3.5", "3.6", "3.7"],
)
def test_3_reserved_bits_fail_the_connection(plain_port, rsv, opcode, framed_by_good_ones, mode):
    payload = close_payload(1000) if opcode == 8 else (TEXT if opcode in (1, 2) else b"")
    frames = [build_frame(opcode, payload, rsv=rsv)]
    if framed_by_good_ones:
        frames = [build_frame(1, TEXT), *frames, build_frame(9)]
    with RawWebSocket(plain_port) as ws:
        send_parts(ws, frames, mode)
        if framed_by_good_ones:  # strict: the message before the bad frame is answered
            assert ws.recv_message() == (1, TEXT)
        ws.expect_close(1002)  # (and no pong: nothing comes before the close frame)


# ==================================================================== 4 opcodes


@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
@pytest.mark.parametrize("between_good_ones", [False, True])
def test_4_reserved_opcodes_fail_the_connection(port, opcode, between_good_ones):
    frames = [build_frame(opcode, b"reserved opcode payload" if between_good_ones else b"")]
    if between_good_ones:
        frames = [build_frame(1, TEXT), *frames, build_frame(9)]
    with RawWebSocket(port) as ws:
        ws.send_raw(b"".join(frames))
        if between_good_ones:
            assert ws.recv_message() == (1, TEXT)
        ws.expect_close(1002)


# ============================================================== 5 fragmentation


@pytest.mark.parametrize("opcode", [9, 10], ids=["5.1-ping", "5.2-pong"])
def test_5_fragmented_control_frames_fail(port, opcode):
    with RawWebSocket(port) as ws:
        ws.send_raw(build_frame(opcode, b"fragment1", fin=False) + build_frame(0, b"fragment2"))
        ws.expect_close(1002)


@pytest.mark.parametrize("mode", ["whole", "frames", "octets"])
@pytest.mark.parametrize("opcode", [1, 2])
def test_5_3_message_in_two_fragments(port, mode, opcode):
    frames = [build_frame(opcode, b"fragment1", fin=False), build_frame(0, b"fragment2")]
    with RawWebSocket(port) as ws:
        send_parts(ws, frames, mode)
        assert ws.recv_message() == (opcode, b"fragment1fragment2")
        ws.close()


@pytest.mark.parametrize("mode", ["whole", "frames", "octets"], ids=["5.6", "5.7", "5.8"])
def test_5_ping_between_fragments_is_answered_first(port, mode):
    frames = [
        build_frame(1, b"fragment1", fin=False),
        build_frame(9, b"ping payload"),
        build_frame(0, b"fragment2"),
    ]
    with RawWebSocket(port) as ws:
        send_parts(ws, frames, mode)
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (10, b"ping payload")
        assert ws.recv_message() == (1, b"fragment1fragment2")
        ws.close()


@pytest.mark.parametrize("mode", ["whole", "frames", "octets"])
@pytest.mark.parametrize("fin", [True, False])
def test_5_continuation_with_nothing_to_continue_fails(port, mode, fin):
    # 5.9-5.14: no echo of the text message after it: the failure comes first.
    frames = [build_frame(0, b"non-continuation payload", fin=fin), build_frame(1, TEXT)]
    with RawWebSocket(port) as ws:
        send_parts(ws, frames, mode)
        ws.expect_close(1002)


def test_5_15_the_message_before_a_bad_continuation_is_answered(port):
    frames = [
        build_frame(1, b"fragment1", fin=False),
        build_frame(0, b"fragment2"),
        build_frame(0, b"fragment3", fin=False),
        build_frame(1, b"fragment4"),
    ]
    with RawWebSocket(port) as ws:
        ws.send_raw(b"".join(frames))
        assert ws.recv_message() == (1, b"fragment1fragment2")
        ws.expect_close(1002)


@pytest.mark.parametrize("fin", [False, True], ids=["5.16", "5.17"])
def test_5_repeated_bad_continuations(port, fin):
    frames = [
        build_frame(0, b"fragment1", fin=fin),
        build_frame(1, b"fragment2", fin=False),
        build_frame(0, b"fragment3"),
    ] * 2
    with RawWebSocket(port) as ws:
        ws.send_raw(b"".join(frames))
        ws.expect_close(1002)


def test_5_18_a_new_message_inside_a_fragmented_one_fails(port):
    with RawWebSocket(port) as ws:
        ws.send_raw(build_frame(1, b"fragment1", fin=False) + build_frame(1, b"fragment2"))
        ws.expect_close(1002)


@pytest.mark.parametrize("chop", [None, 1], ids=["5.19", "5.20-octetwise"])
def test_5_five_fragments_with_pings_and_pauses(port, chop):
    with RawWebSocket(port) as ws:
        ws.send_raw(
            build_frame(1, b"fragment1", fin=False) + build_frame(0, b"fragment2", fin=False), chop
        )
        ws.send_raw(build_frame(9, b"pongme 1!"), chop)
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (10, b"pongme 1!")
        time.sleep(0.2)
        ws.send_raw(
            build_frame(0, b"fragment3", fin=False) + build_frame(0, b"fragment4", fin=False), chop
        )
        ws.send_raw(build_frame(9, b"pongme 2!"), chop)
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (10, b"pongme 2!")
        time.sleep(0.2)
        ws.send_raw(build_frame(0, b"fragment5"), chop)
        assert ws.recv_message() == (1, b"fragment1fragment2fragment3fragment4fragment5")
        ws.close()


# ======================================================================= 6 UTF-8

VALID_UTF8 = {
    "6.1-empty": b"",
    "6.2-mixed": "Hello-µ@ßöäüàá-UTF-8!!".encode(),
    "6.5-kosme": "κόσμε".encode(),
    "6.7-first-1": b"\x00",
    "6.7-first-2": b"\xc2\x80",
    "6.7-first-3": b"\xe0\xa0\x80",
    "6.7-first-4": b"\xf0\x90\x80\x80",
    "6.8-last-1": b"\x7f",
    "6.8-last-2": b"\xdf\xbf",
    "6.8-last-3": b"\xef\xbf\xbf",
    "6.8-last-4": b"\xf4\x8f\xbf\xbf",
    "6.10-d7ff": b"\xed\x9f\xbf",
    "6.10-e000": b"\xee\x80\x80",
    "6.10-fffd": b"\xef\xbf\xbd",
    "6.22-noncharacter-fffe": b"\xef\xbf\xbe",
    "6.22-noncharacter-1fffe": b"\xf0\x9f\xbf\xbe",
    "6.23-bom": b"\xef\xbb\xbf",
}

INVALID_UTF8 = {
    "6.3-surrogate-in-text": "κόσμε".encode() + b"\xed\xa0\x80" + b"edited",
    "6.6-truncated": "κόσμε".encode()[:-1],
    "6.8-five-bytes": b"\xf8\x88\x80\x80\x80",
    "6.8-six-bytes": b"\xfc\x84\x80\x80\x80\x80",
    "6.9-above-10ffff": b"\xf4\x90\x80\x80",
    "6.12-lone-continuation": b"\x80",
    "6.12-continuations": b"\x80\xbf\x80\xbf",
    "6.13-lonely-start-2": b"\xc0\x20",
    "6.13-lonely-start-3": b"\xe0\x20",
    "6.13-lonely-start-4": b"\xf0\x20",
    "6.14-missing-last-3": b"\xe0\x80",
    "6.14-missing-last-4": b"\xf7\xbf\xbf",
    "6.15-concatenated-incomplete": b"\xc0\xe0\x80\xf0\x80\x80\xdf\xef\xbf",
    "6.16-fe": b"\xfe",
    "6.16-ff": b"\xff",
    "6.17-overlong-slash-2": b"\xc0\xaf",
    "6.17-overlong-slash-3": b"\xe0\x80\xaf",
    "6.17-overlong-slash-4": b"\xf0\x80\x80\xaf",
    "6.18-max-overlong-2": b"\xc1\xbf",
    "6.18-max-overlong-3": b"\xe0\x9f\xbf",
    "6.18-max-overlong-4": b"\xf0\x8f\xbf\xbf",
    "6.19-overlong-nul": b"\xc0\x80",
    "6.20-surrogate-d800": b"\xed\xa0\x80",
    "6.20-surrogate-dfff": b"\xed\xbf\xbf",
    "6.21-surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
}


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "a-frame-per-byte"])
@pytest.mark.parametrize("payload", VALID_UTF8.values(), ids=VALID_UTF8.keys())
def test_6_valid_utf8_is_echoed(port, payload, fragmented):
    with RawWebSocket(port) as ws:
        if fragmented and len(payload) > 1:
            frames = [
                build_frame(1 if i == 0 else 0, payload[i : i + 1], fin=i == len(payload) - 1)
                for i in range(len(payload))
            ]
            ws.send_raw(b"".join(frames))
        else:
            ws.send_frame(1, payload)
        assert ws.recv_message() == (1, payload)
        ws.close()


@pytest.mark.parametrize("fragmented", [False, True], ids=["one-frame", "a-frame-per-byte"])
@pytest.mark.parametrize("payload", INVALID_UTF8.values(), ids=INVALID_UTF8.keys())
def test_6_invalid_utf8_fails_with_1007(port, payload, fragmented):
    with RawWebSocket(port) as ws:
        if fragmented and len(payload) > 1:
            frames = [
                build_frame(1 if i == 0 else 0, payload[i : i + 1], fin=i == len(payload) - 1)
                for i in range(len(payload))
            ]
            ws.send_raw(b"".join(frames))
        else:
            ws.send_frame(1, payload)
        ws.expect_close(1007)


def test_6_invalid_utf8_in_a_close_reason_fails(port):
    with RawWebSocket(port) as ws:  # 7.5.1
        ws.send_close(1000, "κόσμε".encode() + b"\xed\xa0\x80edited")
        ws.expect_close(1007)


FAIL_FAST_PARTS = [
    # 6.4.1 / 6.4.3: the second part makes the sequence invalid (F4 90: above U+10FFFF)
    ["κόσμε".encode(), b"\xf4\x90\x80\x80", b"edited"],
    # 6.4.2 / 6.4.4: ... and the invalid byte is a single one
    ["κόσμε".encode() + b"\xf4", b"\x90", b"\x80\x80edited"],
]


@pytest.mark.parametrize("parts", FAIL_FAST_PARTS, ids=["6.4.1", "6.4.2"])
def test_6_4_fail_fast_across_frames(port, parts):
    """Strict: the close comes after the invalid fragment, before the message ends."""
    with RawWebSocket(port) as ws:
        ws.send_frame(1, parts[0], fin=False)
        ws.expect_nothing(0.5)  # the first fragment is valid so far
        ws.send_frame(0, parts[1], fin=False)
        ws.expect_close(1007, timeout=2.0)  # the third part is never sent


@pytest.mark.parametrize("parts", FAIL_FAST_PARTS, ids=["6.4.3", "6.4.4"])
def test_6_4_fail_fast_inside_one_frame(port, parts):
    """Stricter than frames: one frame whose bytes arrive in three pieces."""
    whole = build_frame(1, b"".join(parts))
    head = len(whole) - sum(map(len, parts))
    with RawWebSocket(port) as ws:
        ws.send_raw(whole[: head + len(parts[0])])
        ws.expect_nothing(0.5)
        ws.send_raw(whole[head + len(parts[0]) : head + len(parts[0]) + len(parts[1])])
        ws.expect_close(1007, timeout=2.0)


# ====================================================================== 7 closing


def test_7_1_1_message_then_close(port):
    with RawWebSocket(port) as ws:
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        ws.close()


@pytest.mark.parametrize(
    "after",
    [
        build_frame(8, close_payload(1000)),  # 7.1.2: a second close frame
        build_frame(9),  # 7.1.3: a ping: no pong
        build_frame(1, TEXT),  # 7.1.4: a message: no echo
    ],
    ids=["7.1.2", "7.1.3", "7.1.4"],
)
def test_7_nothing_after_the_close_frame_is_processed(port, after):
    with RawWebSocket(port) as ws:
        ws.send_raw(build_frame(8, close_payload(1000)) + after)
        frame = ws.recv_frame()
        assert (frame.opcode, frame.close_code) == (8, 1000)
        ws.expect_eof()


def test_7_1_5_close_in_the_middle_of_a_fragmented_message(port):
    with RawWebSocket(port) as ws:
        ws.send_raw(
            build_frame(1, b"fragment1", fin=False)
            + build_frame(8, close_payload(1000))
            + build_frame(0, b"fragment2")
        )
        frame = ws.recv_frame()
        assert (frame.opcode, frame.close_code) == (8, 1000)
        ws.expect_eof()


def test_7_3_1_close_without_a_code_is_answered_without_one(port):
    with RawWebSocket(port) as ws:
        ws.send_close(None)
        frame = ws.recv_frame()
        assert (frame.opcode, frame.payload) == (8, b"")
        ws.expect_eof()


@pytest.mark.parametrize(
    "payload,code",
    [
        (b"\x03", 1002),  # 7.3.2: a one-byte payload
        (close_payload(1000), 1000),  # 7.3.3
        (close_payload(1000, b"Hello World!"), 1000),  # 7.3.4
        (close_payload(1000, b"*" * 123), 1000),  # 7.3.5: a 125-byte payload
        (close_payload(1000, b"*" * 124), 1002),  # 7.3.6: 126 bytes: too long for control
    ],
    ids=["7.3.2", "7.3.3", "7.3.4", "7.3.5", "7.3.6"],
)
def test_7_3_close_payloads(port, payload, code):
    with RawWebSocket(port) as ws:
        ws.send_frame(8, payload)
        frame = ws.recv_frame()
        assert (frame.opcode, frame.close_code) == (8, code)
        if code == 1002:
            ws.send_close(1002)  # (the failing side sent first: answer it)
        ws.expect_eof()


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
)
def test_7_7_valid_close_codes_are_echoed(port, code):
    with RawWebSocket(port) as ws:
        ws.close(code)


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535])
def test_7_9_invalid_close_codes_fail_with_1002(port, code):
    with RawWebSocket(port) as ws:
        ws.send_close(code)
        ws.expect_close(1002)


# ======================================= 9 limits and performance, 10 fragments

#: Autobahn 9.1/9.2: one frame each, up to the default --ws-max-size itself.
BIG_SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20, 8 << 20, 16 << 20]
#: 9.3/9.4: a 4 MiB message in fragments of these sizes (64 bytes: 65,536 frames).
FRAGMENT_SIZES = [64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
#: 9.5/9.6: a 1 MiB frame written to the socket in chops of these sizes.
CHOP_SIZES = [64, 128, 256, 512, 1024, 2048]


def filled(size: int, pattern: bytes) -> bytes:
    return (pattern * (size // len(pattern) + 1))[:size]


def echo_big(port: int, opcode: int, size: int, *, fragment=None, chop=None) -> None:
    """Autobahn 9.x: one large message out, the same message back, a clean close
    (Autobahn allows 10-100 s; each case here takes well under 2 s)."""
    data = filled(size, b"BAsd7&jh23" if opcode == 1 else b"\xfe")
    with RawWebSocket(port, timeout=60) as ws:
        if fragment is None:
            frames = build_frame(opcode, data)
        else:
            frames = b"".join(
                build_frame(
                    opcode if i == 0 else 0, data[i : i + fragment], fin=i + fragment >= size
                )
                for i in range(0, size, fragment)
            )
        ws.send_raw(frames, chop)
        assert ws.recv_message(timeout=60) == (opcode, data)
        ws.close()


@pytest.mark.parametrize("size", BIG_SIZES, ids=[f"9.x.{i}" for i in range(1, 7)])
@pytest.mark.parametrize("opcode", [1, 2], ids=["9.1-text", "9.2-binary"])
def test_9_large_messages_up_to_the_default_limit(default_port, opcode, size):
    echo_big(default_port, opcode, size)


@pytest.mark.parametrize("fragment", FRAGMENT_SIZES, ids=[f"9.x.{i}" for i in range(1, 10)])
@pytest.mark.parametrize("opcode", [1, 2], ids=["9.3-text", "9.4-binary"])
def test_9_a_4mib_message_in_fragments(default_port, opcode, fragment):
    echo_big(default_port, opcode, 4 << 20, fragment=fragment)


@pytest.mark.parametrize("chop", CHOP_SIZES, ids=[f"9.x.{i}" for i in range(1, 7)])
@pytest.mark.parametrize("opcode", [1, 2], ids=["9.5-text", "9.6-binary"])
def test_9_a_1mib_frame_in_small_writes(default_port, opcode, chop):
    echo_big(default_port, opcode, 1 << 20, chop=chop)


@pytest.mark.parametrize("size", [0, 16, 64, 256, 1024, 4096])
@pytest.mark.parametrize("opcode", [1, 2], ids=["9.7-text", "9.8-binary"])
def test_9_a_thousand_round_trips(default_port, opcode, size):
    data = (b"*" if opcode == 1 else b"\xfe") * size
    with RawWebSocket(default_port) as ws:
        for n in range(1000):
            ws.send_raw(build_frame(opcode, data))
            assert ws.recv_message() == (opcode, data), n
        ws.close()


def test_10_1_1_a_message_in_1300_byte_fragments(default_port):
    echo_big(default_port, 1, 65536, fragment=1300)


# ================================================== 12, 13 permessage-deflate

# Autobahn's offers (client_no_context_takeover and client_max_window_bits are
# always offered, then (requestNoContextTakeover, requestMaxWindowBits)).
BASE_OFFER = "permessage-deflate; client_no_context_takeover; client_max_window_bits"
OFFERS = {
    "13.1-default": BASE_OFFER,
    "13.2-no-context": BASE_OFFER + "; server_no_context_takeover",
    "13.3-window-9": BASE_OFFER + "; server_max_window_bits=9",
    "13.4-window-15": BASE_OFFER + "; server_max_window_bits=15",
    "13.5-no-context-9": BASE_OFFER + "; server_no_context_takeover; server_max_window_bits=9",
    "13.6-no-context-15": BASE_OFFER + "; server_no_context_takeover; server_max_window_bits=15",
    "13.7-three-offers": ", ".join(
        [
            BASE_OFFER + "; server_no_context_takeover; server_max_window_bits=9",
            BASE_OFFER + "; server_no_context_takeover",
            BASE_OFFER,
        ]
    ),
    "bare": "permessage-deflate",
    "client-window-9": "permessage-deflate; client_max_window_bits=9",
}

# (payload size, client fragment size or None): Autobahn's MSG_SIZES, fewer messages.
SIZES = [
    (16, None),
    (64, None),
    (256, None),
    (1024, None),
    (4096, None),
    (65536, None),
    (131072, None),
    (8192, 256),
    (131072, 1024),
    (131072, 32768),
]

JSON_DATA = json.dumps(
    [{"id": i, "name": f"user{i}", "tags": ["a", "b"], "score": i * 1.5} for i in range(4000)]
).encode()


@pytest.mark.parametrize("offer", OFFERS.values(), ids=OFFERS.keys())
def test_13_compressed_echo_with_each_offer(port, offer):
    with RawWebSocket(port, extensions=offer) as ws:
        assert ws.deflate is not None, ws.header("sec-websocket-extensions")
        for size, fragment in SIZES:
            for n in range(5):
                start = (n * 7919) % (len(JSON_DATA) - size)
                message = JSON_DATA[start : start + size]
                ws.send_message(1, message, compress=True, fragment=fragment)
                assert ws.recv_message() == (1, message), (size, fragment, n)
        ws.close()


@pytest.mark.parametrize("offer", [OFFERS["13.1-default"], OFFERS["13.5-no-context-9"]])
def test_12_incompressible_binary_and_uncompressed_messages(port, offer):
    with RawWebSocket(port, extensions=offer) as ws:
        for size, fragment in SIZES:
            message = os.urandom(size)
            ws.send_message(2, message, compress=True, fragment=fragment)
            assert ws.recv_message() == (2, message)
            ws.send_message(2, message, compress=False, fragment=fragment)  # RSV1 off: allowed
            assert ws.recv_message() == (2, message)
        ws.close()


def test_12_the_negotiated_response_is_exact(port):
    with RawWebSocket(port, extensions=OFFERS["13.5-no-context-9"]) as ws:
        assert ws.header("sec-websocket-extensions") == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits=12"
        )
        ws.close()


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; foo",
        "x-webkit-deflate-frame",
    ],
)
def test_12_declined_offers_mean_no_compression(port, offer):
    with RawWebSocket(port, extensions=offer) as ws:
        assert ws.header("sec-websocket-extensions") is None
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        ws.close()


def test_12_compressed_fragments_with_a_ping_between(port):
    with RawWebSocket(port, extensions=BASE_OFFER) as ws:
        assert ws.deflate is not None
        wire = ws.deflate.compress(JSON_DATA[:5000])
        half = len(wire) // 2
        ws.send_raw(
            build_frame(1, wire[:half], fin=False, rsv=4)
            + build_frame(9, b"between")
            + build_frame(0, wire[half:])
        )
        pong = ws.recv_frame()
        assert (pong.opcode, pong.payload) == (10, b"between")
        assert ws.recv_message() == (1, JSON_DATA[:5000])
        ws.close()


@pytest.mark.parametrize(
    "frames,code",
    [
        ([build_frame(1, b"a", fin=False, rsv=4), build_frame(0, b"b", rsv=4)], 1002),
        ([build_frame(9, b"", rsv=4)], 1002),
        ([build_frame(2, b"\xff" * 32, rsv=4)], 1007),
    ],
    ids=["rsv1-on-a-continuation", "rsv1-on-a-control-frame", "not-deflate-data"],
)
def test_12_broken_compressed_frames(port, frames, code):
    with RawWebSocket(port, extensions=BASE_OFFER) as ws:
        ws.send_raw(b"".join(frames))
        ws.expect_close(code)


def test_server_fragments_large_messages_and_compresses_them(port):
    with RawWebSocket(port, "/send?n=1048576&text=1", extensions="permessage-deflate") as ws:
        frames = [ws.recv_frame()]
        while not frames[-1].fin:
            frames.append(ws.recv_frame())
        assert len(frames) == 4  # 256 KiB pieces: the loop is free between them
        assert frames[0].rsv == 4 and all(f.rsv == 0 and f.opcode == 0 for f in frames[1:])
        assert ws.deflate is not None
        text = b"".join(ws.deflate.decompress(f.payload, f.fin) for f in frames)
        assert text == (b"0123456789abcdef" * 65536)
        ws.expect_close(1000)


def deflate_final(data: bytes, bits: int = 15, zdict: bytes = b"") -> bytes:
    """A message's DEFLATE data ended by a final block (Z_FINISH), as some
    senders make it (RFC 7692 7.2.3.4), starting from ``zdict`` as its window."""
    window = {"zdict": zdict} if zdict else {}
    c = zlib.compressobj(6, zlib.DEFLATED, -bits, **window)
    return c.compress(data) + c.flush()


def test_12_messages_ended_by_a_final_block(port):
    """Each message whole, the later ones referring to the window of the earlier
    ones (context takeover): they used to reach the application empty."""
    messages = [b"hello hello hello world " * 20, b"hello hello world again", b"", b"world " * 500]
    with RawWebSocket(port, extensions="permessage-deflate") as ws:
        history = b""
        for message in messages:
            ws.send_frame(1, deflate_final(message, zdict=history[-32768:]), rsv=4)
            history += message
            assert ws.recv_message() == (1, message)
        # then a sync-flushed message on the same stream, in two fragments
        wire = zlib.compressobj(6, zlib.DEFLATED, -15, zdict=history[-32768:])
        data = (wire.compress(b"sync " * 40) + wire.flush(zlib.Z_SYNC_FLUSH))[:-4]
        ws.send_raw(build_frame(1, data[:5], fin=False, rsv=4) + build_frame(0, data[5:]))
        assert ws.recv_message() == (1, b"sync " * 40)
        ws.close()


def test_protocol_failures_while_the_app_waits_are_clean(spawn):
    """A client's protocol error while the application waits in ``receive()``:
    the close code, the application's disconnect, and no error in the log
    (``_deliver`` used to resolve the waiter twice: InvalidStateError, a
    fatal transport error and the transport torn down)."""
    server = spawn(APP, "--max-size", 1000)
    cases = [
        (build_frame(1, b"unmasked", mask=False), 1002),
        (build_frame(1, b"\xff\xfe"), 1007),
        (build_frame(9, b"x" * 126), 1002),
        (build_frame(2, b"x" * 1001), 1009),
    ]
    for frame, code in cases:
        with RawWebSocket(server.port) as ws:
            ws.send_text("first")
            assert ws.recv_message() == (1, b"first")  # (the application waits again)
            ws.send_raw(frame)
            ws.expect_close(code)
    log = server.stderr_text()
    assert "InvalidStateError" not in log and "Fatal error" not in log, log[-2000:]


# ==================================================================== limits


def test_a_message_at_the_limit_passes_one_byte_more_is_1009(small_port):
    with RawWebSocket(small_port) as ws:
        ws.send_frame(2, b"x" * 65536)
        assert ws.recv_message() == (2, b"x" * 65536)
        ws.send_frame(2, b"x" * 32768, fin=False)
        ws.send_frame(0, b"x" * 32769)
        ws.expect_close(1009)


def test_an_oversized_frame_fails_at_its_header(small_port):
    with RawWebSocket(small_port) as ws:
        ws.send_raw(build_frame(2, b"", length=1 << 30)[:14])  # only the header of 1 GiB
        ws.expect_close(1009)


def test_a_compression_bomb_fails_before_it_is_inflated(small_port):
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = compressor.compress(bytes(256 << 20)) + compressor.flush(zlib.Z_SYNC_FLUSH)[:-4]
    assert len(bomb) < 300_000  # 256 MiB of zeros
    with RawWebSocket(small_port, extensions="permessage-deflate") as ws:
        assert ws.deflate is not None
        started = time.monotonic()
        ws.send_frame(2, bomb, rsv=4)
        ws.expect_close(1009)
        assert time.monotonic() - started < 3.0


# =============================================================== the handshake


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
    raise AssertionError("the server did not close the connection")


def handshake(
    key: str = "dGhlIHNhbXBsZSBub25jZQ==", version: str = "13", connection: str = "Upgrade"
) -> bytes:
    return (
        f"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: {connection}\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (handshake(key="short"), b"400"),
        (handshake(connection="keep-alive"), b"400"),
        (handshake(version="8"), b"426"),
    ],
    ids=["bad-key", "no-connection-upgrade", "version-8"],
)
def test_invalid_handshakes_get_an_http_error(port, request_bytes, status):
    response = raw_request(port, request_bytes)
    assert response.split(b" ", 2)[1] == status, response
    if status == b"426":
        assert response.startswith(b"HTTP/1.1 426 Upgrade Required\r\n"), response
        assert b"\r\nSec-WebSocket-Version: 13\r\n" in response


def test_plain_http_on_the_same_server(port):
    response = raw_request(port, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.startswith(b"HTTP/1.1 200 ") and response.endswith(b"plain http\n")


def test_bytes_right_after_the_handshake_are_frames(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(handshake() + build_frame(1, TEXT))
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(TEXT):
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        assert data.startswith(b"HTTP/1.1 101 ")


# ============================================================ ASGI, real client


def url(port: int, path: str) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def test_echo_with_a_real_client_and_compression_by_default(port):
    with connect(url(port, "/echo"), open_timeout=5, close_timeout=5, max_size=None) as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
        ws.send("hello")
        assert ws.recv(timeout=5) == "hello"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=5) == b"\x00\x01\x02"
        big = JSON_DATA * 4  # ~1.3 MiB of text, fragmented and compressed both ways
        ws.send(big.decode())
        assert ws.recv(timeout=10) == big.decode()
        data = os.urandom(3 << 20)
        ws.send(data)
        assert ws.recv(timeout=10) == data
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000


def test_wss_over_tls(module_spawn, tmp_path_factory):
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    folder = tmp_path_factory.mktemp("tls")
    cert.private_key_pem.write_to_path(folder / "key.pem")
    cert.cert_chain_pems[0].write_to_path(folder / "cert.pem")
    server = module_spawn(APP, "--certfile", folder / "cert.pem", "--keyfile", folder / "key.pem")
    context = ssl.create_default_context()
    ca.configure_trust(context)
    uri = f"wss://127.0.0.1:{server.port}"
    with connect(uri + "/echo", ssl=context, open_timeout=5, max_size=None) as ws:
        ws.send("over tls")
        assert ws.recv(timeout=5) == "over tls"
        big = "z" * (2 << 20)
        ws.send(big)
        assert ws.recv(timeout=10) == big
    with connect(uri + "/close?code=4003&reason=tls", ssl=context, open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4003


def test_no_compression_when_it_is_turned_off(plain_port):
    with connect(url(plain_port, "/echo"), open_timeout=5) as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        ws.send("x")
        assert ws.recv(timeout=5) == "x"


def test_subprotocol_is_one_the_client_offered(port):
    with connect(
        url(port, "/echo?subprotocol=first"), subprotocols=["chat", "superchat"], open_timeout=5
    ) as ws:
        assert ws.subprotocol == "chat"
    with connect(url(port, "/echo"), subprotocols=["chat"], open_timeout=5) as ws:
        assert ws.subprotocol is None
    with pytest.raises(InvalidStatus) as caught:  # the app's RuntimeError, then its close: 403
        connect(url(port, "/bad-subprotocol"), subprotocols=["chat"], open_timeout=5)
    assert caught.value.response.status_code == 403


def test_accept_headers_reach_the_client(port):
    with connect(url(port, "/headers"), open_timeout=5) as ws:
        assert ws.response.headers["x-extra"] == "1"
        assert ws.response.headers["set-cookie"] == "a=b"


def test_the_handshake_fields_are_the_servers(port):
    """An application's Sec-WebSocket-Protocol header picks the subprotocol
    (the older way; the spec's way is the ``subprotocol`` key); its own
    Sec-WebSocket-Accept and a Content-Length (never on a 1xx) are not sent."""
    with RawWebSocket(port, "/handshake-headers", subprotocols="chat, superchat") as ws:
        assert ws.headers["sec-websocket-protocol"] == ["chat"]
        assert len(ws.headers["sec-websocket-accept"]) == 1  # (and the right one: checked)
        assert "content-length" not in ws.headers
        assert ws.headers["x-extra"] == ["1"]
        ws.send_text("still framed right")
        assert ws.recv_message() == (1, b"still framed right")
        ws.close()
    # A subprotocol the client did not offer, named as a header: refused too.
    RawWebSocket(
        port, "/handshake-headers?protocol=evil", subprotocols="chat", expect_status=403
    ).sock.close()


@pytest.mark.parametrize(
    "path,status,body",
    [
        ("/deny", 403, b""),
        ("/deny-custom", 401, b"not you"),
        ("/raise-before", 500, b"500 Internal Server Error\n"),
        ("/return-before", 500, b"500 Internal Server Error\n"),
        ("/deny-interim", 500, b"500 Internal Server Error\n"),
    ],
)
def test_refusals_before_the_accept_are_http_responses(port, path, status, body):
    with pytest.raises(InvalidStatus) as caught:
        connect(url(port, path), open_timeout=5)
    response = caught.value.response
    assert (response.status_code, bytes(response.body)) == (status, body)
    if path == "/deny-custom":
        assert response.headers["x-denied"] == "yes"


@pytest.mark.parametrize(
    "path,code,reason",
    [
        ("/close?code=4001&reason=bye", 4001, "bye"),
        ("/return", 1000, ""),
        ("/raise-after", 1011, ""),
        # (the close raised: the connection was left open, no frame, no timer)
        ("/bad-reason", 1011, ""),
    ],
)
def test_the_client_sees_the_servers_close_code(port, path, code, reason):
    with connect(url(port, path), open_timeout=5, close_timeout=5) as ws:
        if path == "/raise-after":
            ws.send("trigger")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    assert ws.protocol.close_rcvd is not None
    assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (code, reason)


def test_application_errors_are_logged(module_spawn):
    server = module_spawn(APP)
    with connect(url(server.port, "/raise-after"), open_timeout=5) as ws:
        ws.send("trigger")
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=5)
    wait_for(
        lambda: "failed after the accept, on purpose" in server.stderr_text(), 5, "the traceback"
    )
    assert "Traceback" in server.stderr_text()


def read_log(path: Path, count: int) -> list[dict]:
    return [json.loads(line) for line in wait_for_lines(path, count, 5, f"{count} lines in {path}")]


def test_the_application_sees_the_clients_close_code_and_send_raises(port, tmp_path):
    log = tmp_path / "events"
    with RawWebSocket(port, f"/record?log={log}", subprotocols="a, b") as ws:
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        ws.send_close(4000, b"bye")
        frame = ws.recv_frame()
        assert frame.close_code == 4000
        ws.expect_eof()
    events = read_log(log, 4)
    assert events[0] == {"scope_subprotocols": ["a", "b"]}
    assert events[1] == {"type": "websocket.receive", "size": len(TEXT)}
    assert events[2] == {"type": "websocket.disconnect", "code": 4000, "reason": "bye"}
    assert events[3] == {"send_after_disconnect": "ClientDisconnected"}  # an OSError


@pytest.mark.parametrize("how,code", [("empty-close", 1005), ("drop", 1006), ("reset", 1006)])
def test_disconnect_codes_without_a_close_code(port, tmp_path, how, code):
    log = tmp_path / "events"
    ws = RawWebSocket(port, f"/record?log={log}")
    if how == "empty-close":
        ws.send_close(None)
        ws.recv_frame()
        ws.expect_eof()
    elif how == "reset":
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.sock.close()
    events = read_log(log, 3)
    assert events[1]["type"] == "websocket.disconnect" and events[1]["code"] == code
    assert events[2] == {"send_after_disconnect": "ClientDisconnected"}


def test_send_after_the_applications_close_is_a_runtime_error(port, tmp_path):
    log = tmp_path / "events"
    with RawWebSocket(port, f"/close?code=4002&reason=done&log={log}") as ws:
        ws.expect_close(4002)
    events = read_log(log, 2)
    assert events[0]["send_after_close"] == "RuntimeError"
    assert events[1] == {"type": "websocket.disconnect", "code": 4002, "reason": "done"}


def test_a_message_with_both_bytes_and_text_is_refused(port):
    with connect(url(port, "/bad-send"), open_timeout=5) as ws:
        assert ws.recv(timeout=5).startswith("RuntimeError: ")
        ws.send("still open")
        assert ws.recv(timeout=5) == "still open"


# ================================================================== keepalive


def test_silence_brings_a_ping_and_a_pong_keeps_the_connection(small_port):
    with RawWebSocket(small_port) as ws:
        for _ in range(3):
            ping = ws.recv_frame(timeout=2)
            assert ping.opcode == 9 and len(ping.payload) == 4
            ws.send_frame(10, ping.payload)
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        ws.close()


def test_no_pong_closes_with_1011(small_port):
    with RawWebSocket(small_port) as ws:
        ping = ws.recv_frame(timeout=2)
        assert ping.opcode == 9
        started = time.monotonic()
        frame = ws.recv_frame(timeout=5)
        assert (frame.opcode, frame.close_code) == (8, 1011)
        assert 0.4 < time.monotonic() - started < 4.0  # (the pong timeout is 0.5 s)
        ws.expect_eof()


# ============================================================== back-pressure


def test_reading_stops_while_the_application_does_not_read(plain_port, tmp_path):
    go = tmp_path / "go"
    message = build_frame(2, b"m" * 65536)
    total = 600  # 37.5 MiB: far more than the socket buffers hold
    with RawWebSocket(plain_port, f"/slow?go={go}") as ws:
        sent = [0]

        def sender() -> None:
            try:
                for _ in range(total):
                    ws.sock.sendall(message)
                    sent[0] += 1
                ws.sock.sendall(build_frame(1, b"done"))
            except OSError:
                pass

        ws.sock.settimeout(20)
        thread = threading.Thread(target=sender, daemon=True)
        thread.start()

        def stalled() -> bool:
            before = sent[0]
            time.sleep(0.5)
            return sent[0] == before

        wait_for(stalled, 10, "the sender to be held back")
        assert sent[0] < total // 2, sent[0]
        go.write_text("go")
        thread.join(20)
        assert not thread.is_alive() and sent[0] == total
        assert ws.recv_message(timeout=20) == (1, str(total + 1).encode())
        ws.close()


def test_send_waits_while_the_client_does_not_read(plain_port, tmp_path):
    log = tmp_path / "sent"
    n, size = 400, 65536  # 25 MiB
    with RawWebSocket(plain_port, f"/flood?n={n}&size={size}&log={log}") as ws:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        wait_for(lambda: log.exists(), 5, "the first messages")

        def settled() -> int | None:
            before = log.read_text()
            time.sleep(0.5)
            return int(before) if before == log.read_text() else None

        held = wait_for(settled, 10, "the application to be held back")
        assert held < n // 2, held
        for i in range(n):
            opcode, data = ws.recv_message(timeout=10)
            assert data[:4] == i.to_bytes(4, "big") and len(data) == size
        ws.expect_close(1000)
    assert log.read_text() == str(n)


# ====================================================================== drain


def cli_server(spawner, free_port, *args: str):
    port = free_port()
    process = spawner(
        "-m",
        "prefork",
        "-b",
        f"127.0.0.1:{port}",
        "-w",
        "1",
        "--interface",
        "asgi",
        "--access-log",
        "off",
        *args,
        APP_SPEC,
        ready_port=port,
    )
    return process, port


def _http_get(port: int, timeout: float) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return sock.recv(65536)


def test_an_application_sending_to_a_client_that_reset_ends_and_the_worker_serves_on(
    plain_port, tmp_path
):
    """After a reset the transport is closing: writes go nowhere and never
    fill its buffer, so an application sending from memory never waited in
    send() and the worker froze. send() raises ClientDisconnected at once."""
    log = tmp_path / "ended"
    ws = RawWebSocket(plain_port, f"/send-forever?log={log}")
    ws.recv_frame()  # (it sends)
    ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    ws.sock.close()  # a reset
    assert _http_get(plain_port, timeout=5).startswith(b"HTTP/1.1 200 ")  # (froze: timed out)
    wait_for(lambda: log.exists() and log.read_text() == "ClientDisconnected", 5, "its end")


def test_an_application_sending_to_a_client_that_does_not_read_ends_at_send_timeout(
    module_spawn, tmp_path
):
    """With pings off nothing else notices a client that stopped reading: the
    application waited in send() for ever, holding the connection. After
    send_timeout without progress the connection is aborted and send()
    raises ClientDisconnected."""
    port = module_spawn(APP, "--no-deflate", "--ping-interval", 0, "--send-timeout", 1).port
    log = tmp_path / "ended"
    with RawWebSocket(port, f"/send-forever?log={log}") as ws:
        ws.recv_frame()  # (it sends; from now on the client reads nothing)
        wait_for(
            lambda: log.exists() and log.read_text() == "ClientDisconnected",
            10,
            "the application to learn the client is gone",
        )


@pytest.mark.parametrize("flood", ["empty pings", "empty fragments"])
def test_a_flood_of_tiny_frames_does_not_stall_the_worker(plain_port, flood):
    """Frames cost ~12 µs each to parse whatever their size, so a read of
    256 KiB of 6-byte frames is ~0.5 s of work: the worker parses a bounded
    number per turn of its loop (FRAMES_PER_TURN), its other connections are
    served in between (the flood stalled them for many seconds). A message
    of empty fragments also fails as too big (1009) after FREE_FRAGMENTS: it
    grew the worker's memory without a byte counted against --ws-max-size."""
    ws = RawWebSocket(plain_port)
    blob = (
        build_frame(9, b"") * 20000
        if flood == "empty pings"
        else build_frame(0, b"", fin=False) * 20000
    )
    stop = threading.Event()

    def pump() -> None:
        try:
            if flood == "empty fragments":
                ws.sock.sendall(build_frame(1, b"a", fin=False))
            while not stop.is_set():
                ws.sock.sendall(blob)
        except OSError:
            pass  # (closed: the 1009)

    received = bytearray()

    def drain() -> None:  # the pongs: the client reads what it is sent
        while not stop.is_set():
            try:
                data = ws.sock.recv(1 << 20)
                if not data:
                    return
                if len(received) < 4096:
                    received.extend(data[:4096])
            except TimeoutError:
                continue
            except OSError:
                return

    threads = [
        threading.Thread(target=pump, daemon=True),
        threading.Thread(target=drain, daemon=True),
    ]
    try:
        ws.sock.settimeout(1)
        for thread in threads:
            thread.start()
        for _ in range(3):  # (the flood runs: its first reads are in)
            started = time.monotonic()
            assert _http_get(plain_port, timeout=5).startswith(b"HTTP/1.1 200 ")
            assert time.monotonic() - started < 1.0
        if flood == "empty fragments":
            closing = build_frame(8, close_payload(1009, b"message too big"), mask=False)
            wait_for(lambda: closing in received, 5, "the 1009 close frame")
        else:
            assert received.startswith(build_frame(10, b"", mask=False))  # pongs
    finally:
        stop.set()
        ws.sock.close()
        for thread in threads:
            thread.join(5)


@pytest.mark.parametrize(
    "sig,code,reason",
    [(signal.SIGTERM, 1001, b"server shutting down"), (signal.SIGHUP, 1012, b"server restarting")],
)
def test_a_draining_worker_closes_with_1001_or_1012_and_tells_the_app(
    spawn, free_port, tmp_path, sig, code, reason
):
    process, port = cli_server(spawn, free_port)
    log = tmp_path / "events"
    with RawWebSocket(port, f"/record?log={log}") as ws:
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        os.kill(process.pid, sig)
        frame = ws.expect_close(code, timeout=10)
        assert frame.close_reason == reason
    events = read_log(log, 4)
    assert events[2] == {"type": "websocket.disconnect", "code": code, "reason": reason.decode()}
    assert events[3] == {"send_after_disconnect": "ClientDisconnected"}
    if sig == signal.SIGTERM:
        assert process.proc.wait(10) == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_a_fast_stop_still_sends_an_open_websocket_its_1001_close_frame(spawn, free_port, sig):
    """INT (Ctrl-C) and QUIT close every connection at once, without waiting
    for close handshakes; an open WebSocket still gets its 1001 close frame
    before the socket closes, so its client learns why rather than seeing a
    1006 "abnormal closure" (uvicorn's Ctrl-C gives its clients 1012)."""
    process, port = cli_server(spawn, free_port)
    with RawWebSocket(port) as ws:
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        os.kill(process.pid, sig)
        frame = ws.recv_frame(timeout=10)
        assert frame.opcode == 8, frame
        assert (frame.close_code, frame.close_reason) == (1001, b"server shutting down")
        with pytest.raises((Closed, ConnectionResetError)):
            ws.recv_frame(timeout=10)  # ... and the socket closes: no handshake awaited
    assert process.proc.wait(10) == 0


def test_an_application_outliving_its_websocket_is_cancelled_quietly_at_the_stop(
    spawn, free_port, tmp_path
):
    """The application never reads (it waits for a file that never comes):
    the drain's close handshake completes without it, and at the stop the
    worker cancels it (its ``finally`` runs), without an error in the log."""
    process, port = cli_server(spawn, free_port)
    with RawWebSocket(port, f"/slow?go={tmp_path / 'never'}") as ws:
        os.kill(process.pid, signal.SIGTERM)
        ws.expect_close(1001, timeout=10)
    assert process.proc.wait(15) == 0
    log = process.stderr_text()
    assert "worker 0 (pid" in log and "exited (exit status 0)" in log, log[-2000:]
    assert "Exception in ASGI application" not in log, log[-2000:]


def test_a_client_that_never_answers_does_not_hold_the_drain(spawn, free_port):
    process, port = cli_server(spawn, free_port, "--drain-grace", "0.1")
    with RawWebSocket(port) as ws:
        ws.send_frame(1, TEXT)
        assert ws.recv_message() == (1, TEXT)
        started = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        frame = ws.recv_frame(timeout=10)
        assert frame.close_code == 1001  # ... and it is not answered
        with pytest.raises((Closed, ConnectionResetError)):
            ws.recv_frame(timeout=15)
        assert process.proc.wait(15) == 0
        assert time.monotonic() - started < 10
