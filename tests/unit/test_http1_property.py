"""Property tests of prefork.worker.http1 (hypothesis).

* Arbitrary bytes, fed in arbitrary pieces, never raise anything but
  ProtocolError (with one of the documented statuses), and a failed parser
  stays failed.
* Generated valid requests (pipelined, split anywhere) round-trip exactly.
* A request the core accepts whole is accepted identically in any pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.settings import Config
from prefork.worker.http1 import (
    NEED_DATA,
    PAUSED,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
)

STATUSES = {400, 413, 414, 431, 501, 505}
TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TARGET_CHARS = "".join(chr(c) for c in range(0x21, 0x7F))
VALUE_CHARS = TARGET_CHARS + " \t" + "".join(chr(c) for c in range(0x80, 0x100))
# RFC 3986 reg-name characters (no comma: see http1_grammar), then a port.
HOST_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+;="
HOSTS = st.text(alphabet=HOST_CHARS, max_size=20) | st.builds(
    "{}:{}".format,
    st.text(alphabet=HOST_CHARS, min_size=1, max_size=20)
    | st.sampled_from(["%41b", "[::1]", "[2001:db8::7]", "127.0.0.1"]),
    st.sampled_from(["", "0", "80", "8080", "65535"]),
)
SMALL_LIMITS = Config(
    max_header_size=96, max_request_line=40, max_headers=4, max_body_size=32, max_chunk_line=12
)

FUZZ = settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ROUND_TRIP = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- feeding -----------------------------------------------------------------------


@dataclass
class Outcome:
    events: list = field(default_factory=list)
    error: ProtocolError | None = None


def cut(data: bytes, fractions: list[float]) -> list[bytes]:
    offsets = sorted({int(f * len(data)) for f in fractions})
    out, last = [], 0
    for offset in offsets:
        out.append(data[last:offset])
        last = offset
    out.append(data[last:])
    return [p for p in out if p]


def feed_all(pieces: list[bytes], limits: Config | None = None) -> Outcome:
    """Feed the pieces, collecting events; only ProtocolError is caught."""
    parser = RequestParser(limits)
    outcome = Outcome()
    events = outcome.events
    try:
        for piece in pieces:
            parser.feed(piece)
            for _ in range(100_000):
                event = parser.next_event()
                if event is NEED_DATA:
                    break
                if event is PAUSED:
                    assert parser.next_event() is PAUSED
                    events.append("PAUSE")
                    parser.start_next_cycle()
                elif type(event) is bytes:
                    assert event, "empty body event"
                    assert events and events[-1] != "PAUSE", "body bytes outside a request"
                    if isinstance(events[-1], bytearray):
                        events[-1] += event
                    else:
                        events.append(bytearray(event))
                elif isinstance(event, RequestHead):
                    assert not events or events[-1] == "PAUSE", "head inside a request"
                    events.append(
                        (
                            "head",
                            event.method,
                            event.target,
                            event.version,
                            tuple(event.headers),
                            event.content_length,
                            event.chunked,
                            event.keep_alive,
                            event.expect_continue,
                        )
                    )
                elif isinstance(event, EndOfMessage):
                    events.append(("end", tuple(event.trailers)))
                else:
                    raise AssertionError(f"unexpected event {event!r}")
            else:
                raise AssertionError("the parser never asked for more data")
    except ProtocolError as error:
        assert error.status in STATUSES, error
        outcome.error = error
        # A failed parser stays failed.
        try:
            parser.next_event()
        except ProtocolError:
            pass
        else:
            raise AssertionError("next_event() after a ProtocolError did not raise") from None
    outcome.events = [bytes(e) if isinstance(e, bytearray) else e for e in events]
    return outcome


splits = st.lists(st.floats(min_value=0, max_value=1), max_size=8)
limits_choice = st.sampled_from([None, SMALL_LIMITS])

FRAGMENTS = [
    b"\r\n",
    b"\r",
    b"\n",
    b" ",
    b"\t",
    b":",
    b";",
    b",",
    b"0",
    b"5",
    b"f",
    b"a",
    b"\x00",
    b"\x7f",
    b"\xff",
    b"GET",
    b"POST",
    b"/",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"Host: a",
    b"Content-Length: ",
    b"Transfer-Encoding: ",
    b"chunked",
    b"gzip",
    b"Connection: close",
    b"Expect: 100-continue",
    b"\r\n\r\n",
    b"0\r\n\r\n",
]
fragment_soup = st.lists(st.sampled_from(FRAGMENTS), max_size=80).map(b"".join)

SEEDS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;e=1\r\nhello\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["insert", "delete", "replace", "duplicate"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(st.sampled_from(FRAGMENTS) | st.binary(min_size=1, max_size=3))
        elif op == "delete":
            data[pos : pos + draw(st.integers(1, 4))] = b""
        elif op == "replace" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        else:
            end = min(len(data), pos + draw(st.integers(1, 20)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


# -- (a) nothing but ProtocolError --------------------------------------------------


@FUZZ
@given(st.binary(max_size=400), splits, limits_choice)
def test_random_bytes_raise_only_protocol_error(data: bytes, fractions, limits) -> None:
    feed_all(cut(data, fractions), limits)


@FUZZ
@given(
    st.sampled_from(
        [
            b"GET / HTTP/1.1\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        ]
    ),
    st.binary(max_size=300),
    splits,
    limits_choice,
)
def test_valid_prefix_then_random_bytes(prefix: bytes, data: bytes, fractions, limits) -> None:
    feed_all(cut(prefix + data, fractions), limits)


@FUZZ
@given(fragment_soup, splits, limits_choice)
def test_fragment_soup_raises_only_protocol_error(data: bytes, fractions, limits) -> None:
    feed_all(cut(data, fractions), limits)


@FUZZ
@given(mutated(), splits, limits_choice)
def test_mutated_requests_raise_only_protocol_error(data: bytes, fractions, limits) -> None:
    feed_all(cut(data, fractions), limits)


@FUZZ
@given(mutated(), splits)
def test_split_does_not_change_what_is_accepted(data: bytes, fractions) -> None:
    whole = feed_all([data])
    split = feed_all(cut(data, fractions))
    assert (whole.error is None) == (split.error is None), (whole.error, split.error)
    if whole.error is None:
        assert split.events == whole.events
    else:
        # Bytes before the failure point produce the same events.
        shorter = min(len(whole.events), len(split.events))
        assert split.events[: shorter - 1] == whole.events[: shorter - 1]


# -- (b) valid requests round-trip --------------------------------------------------

tokens = st.text(alphabet=TCHARS, min_size=1, max_size=12)
RESERVED = {"host", "content-length", "transfer-encoding"}
header_names = tokens.filter(lambda n: n.lower() not in RESERVED)
header_values = st.text(alphabet=VALUE_CHARS, max_size=30)


def normalized(name: str) -> str:
    return "-".join(word.capitalize() for word in name.split("-"))


def random_case(draw: st.DrawFn, text: str) -> str:
    flips = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(c.upper() if f else c.lower() for c, f in zip(text, flips, strict=True))


@dataclass
class Expected:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    content_length: int | None
    chunked: bool
    trailers: list[tuple[str, str]] | None


@st.composite
def valid_request(draw: st.DrawFn) -> tuple[bytes, Expected]:
    method = draw(tokens.filter(lambda m: m != "CONNECT"))  # CONNECT: authority-form only
    target = draw(st.just("*") | st.text(alphabet=TARGET_CHARS, max_size=40).map(lambda t: "/" + t))
    if target == "*":  # asterisk-form: OPTIONS only
        method = "OPTIONS"
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.0"]))
    raw_headers = draw(st.lists(st.tuples(header_names, header_values), max_size=8))
    if version == "HTTP/1.1" or draw(st.booleans()):
        host = draw(HOSTS)
        raw_headers.insert(draw(st.integers(0, len(raw_headers))), ("Host", host))
    kinds = (
        ["none", "length", "chunked", "chunked"] if version == "HTTP/1.1" else ["none", "length"]
    )
    kind = draw(st.sampled_from(kinds))
    body = draw(st.binary(max_size=200)) if kind != "none" else b""
    content_length = None
    trailers = None
    wire_body = b""
    if kind == "length":
        content_length = len(body)
        raw_headers.insert(
            draw(st.integers(0, len(raw_headers))),
            (random_case(draw, "content-length"), " " * draw(st.integers(0, 2)) + str(len(body))),
        )
        wire_body = body
    elif kind == "chunked":
        raw_headers.insert(
            draw(st.integers(0, len(raw_headers))),
            (random_case(draw, "transfer-encoding"), random_case(draw, "chunked")),
        )
        cuts = sorted(set(draw(st.lists(st.integers(1, max(1, len(body) - 1)), max_size=6))))
        bounds = [0, *[c for c in cuts if 0 < c < len(body)], len(body)]
        parts = [body[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        encoded = []
        for part in parts:
            size = "%x" % len(part)
            size = random_case(draw, "0" * draw(st.integers(0, 3)) + size)
            ext = draw(st.sampled_from(["", ";a", ";a=b", ' ; x="y z"', ";k=v;k2"]))
            encoded.append(f"{size}{ext}\r\n".encode() + part + b"\r\n")
        raw_trailers = draw(st.lists(st.tuples(tokens, header_values), max_size=4))
        trailers = [(normalized(n), v.strip(" \t")) for n, v in raw_trailers]
        last = "0" + draw(st.sampled_from(["", ";end"])) + "\r\n"
        wire_body = (
            b"".join(encoded)
            + last.encode()
            + b"".join(f"{n}:{v}\r\n".encode("latin-1") for n, v in raw_trailers)
            + b"\r\n"
        )
    head_lines = [f"{method} {target} {version}"]
    head_lines += [f"{n}:{v}" for n, v in raw_headers]
    leading = b"\r\n" * draw(st.integers(0, 2))
    wire = leading + "\r\n".join(head_lines).encode("latin-1") + b"\r\n\r\n" + wire_body
    expected = Expected(
        method,
        target,
        version,
        [(normalized(n), v.strip(" \t")) for n, v in raw_headers],
        body,
        content_length,
        kind == "chunked",
        trailers,
    )
    return wire, expected


def check_round_trip(events: list, expected: list[Expected]) -> None:
    index = 0
    for exp in expected:
        head = events[index]
        assert head[0] == "head"
        _, method, target, version, headers, content_length, chunked, _, _ = head
        assert (method, target, version) == (exp.method, exp.target, exp.version)
        assert list(headers) == exp.headers
        assert content_length == exp.content_length
        assert chunked == exp.chunked
        index += 1
        body = b""
        if index < len(events) and isinstance(events[index], bytes):
            body = events[index]
            index += 1
        assert body == exp.body
        if exp.trailers is not None:
            assert events[index] == ("end", tuple(exp.trailers))
            index += 1
        elif exp.content_length:
            assert events[index] == ("end", ())  # a Content-Length body ends too
            index += 1
        assert events[index] == "PAUSE"
        index += 1
    assert index == len(events)


@ROUND_TRIP
@given(st.lists(valid_request(), min_size=1, max_size=3), splits)
def test_valid_requests_round_trip(requests, fractions) -> None:
    wire = b"".join(w for w, _ in requests)
    outcome = feed_all(cut(wire, fractions))
    assert outcome.error is None, outcome.error
    check_round_trip(outcome.events, [e for _, e in requests])


@ROUND_TRIP
@given(valid_request())
def test_valid_request_one_byte_at_a_time(request) -> None:
    wire, expected = request
    outcome = feed_all([wire[i : i + 1] for i in range(len(wire))])
    assert outcome.error is None, outcome.error
    check_round_trip(outcome.events, [expected])
    assert feed_all([wire]).events == outcome.events
