"""Unit tests for prefork.worker.http1, the HTTP/1.1 protocol core.

Plain bytes in, events out: no sockets, no event loop.  Tests marked
``xfail(strict=True, reason="BUG: ...")`` describe how the core *should*
behave where it currently does not; remove the mark once the bug is fixed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest

from prefork.settings import Config
from prefork.worker.http1 import (
    NEED_DATA,
    PAUSED,
    EndOfMessage,
    ProtocolError,
    RequestHead,
    RequestParser,
)
from prefork.worker.response import LAST_CHUNK, encode_chunk

# -- helpers ---------------------------------------------------------------------

PAUSE = "PAUSE"  # marks PAUSED in an event list (once per complete request)


@dataclass(frozen=True)
class Head:
    """A comparable snapshot of a RequestHead."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]
    content_length: int | None = None
    chunked: bool = False
    keep_alive: bool = True
    expect_continue: bool = False

    @classmethod
    def of(cls, head: RequestHead) -> Head:
        assert head.has_body == (head.chunked or bool(head.content_length))
        return cls(
            head.method,
            head.target,
            head.version,
            tuple(head.headers),
            head.content_length,
            head.chunked,
            head.keep_alive,
            head.expect_continue,
        )


@dataclass(frozen=True)
class End:
    trailers: tuple[tuple[str, str], ...] = ()


@dataclass
class Req:
    """One request as reassembled from the events."""

    head: Head
    body: bytes = b""
    end: End | None = None  # the EndOfMessage, if one was emitted


def pieces(data: bytes, splits: Iterable[int] = ()) -> list[bytes]:
    """``data`` cut at the given offsets (empty pieces dropped)."""
    out, last = [], 0
    for offset in sorted(set(splits)):
        out.append(data[last:offset])
        last = offset
    out.append(data[last:])
    return [p for p in out if p]


def drain(parser: RequestParser, events: list, max_events: int = 1_000_000) -> None:
    """Pull events until NEED_DATA; on PAUSED record it and start the next cycle."""
    for _ in range(max_events):
        event = parser.next_event()
        if event is NEED_DATA:
            assert not parser.paused
            return
        if event is PAUSED:
            # Nothing more comes out until start_next_cycle().
            assert parser.paused
            assert parser.next_event() is PAUSED
            events.append(PAUSE)
            parser.start_next_cycle()
            continue
        if isinstance(event, bytes):
            assert type(event) is bytes and len(event) > 0, event
            if events and isinstance(events[-1], bytearray):
                events[-1] += event
            else:
                events.append(bytearray(event))
        elif isinstance(event, RequestHead):
            events.append(Head.of(event))
        elif isinstance(event, EndOfMessage):
            events.append(End(tuple(event.trailers)))
        else:
            raise AssertionError(f"unexpected event {event!r}")
    raise AssertionError("the parser never asked for more data")


def parse_pieces(chunks: Iterable[bytes], limits: Config | None = None) -> list:
    parser = RequestParser(limits)
    events: list = []
    for chunk in chunks:
        parser.feed(chunk)
        drain(parser, events)
    return [bytes(e) if isinstance(e, bytearray) else e for e in events]


def parse(data: bytes, splits: Iterable[int] = (), limits: Config | None = None) -> list:
    """Feed ``data`` (cut at ``splits``); the events, body bytes concatenated."""
    return parse_pieces(pieces(data, splits), limits)


def parse_bytewise(data: bytes, limits: Config | None = None) -> list:
    return parse_pieces((data[i : i + 1] for i in range(len(data))), limits)


def requests_of(events: list) -> list[Req]:
    """Group events into requests; every request must be complete (PAUSED)."""
    out: list[Req] = []
    current: Req | None = None
    for event in events:
        if isinstance(event, Head):
            assert current is None, "a head arrived before the previous request ended"
            current = Req(event)
        elif isinstance(event, bytes):
            assert current is not None and current.end is None and not current.body
            current.body = event
        elif isinstance(event, End):
            assert current is not None and current.end is None
            current.end = event
        else:
            assert event == PAUSE and current is not None
            out.append(current)
            current = None
    assert current is None, "the last request is incomplete"
    return out


def parse_requests(data: bytes, limits: Config | None = None) -> list[Req]:
    return requests_of(parse(data, limits=limits))


def reject(data: bytes, splits: Iterable[int] = (), limits: Config | None = None) -> ProtocolError:
    """The ProtocolError that feeding ``data`` must raise."""
    with pytest.raises(ProtocolError) as info:
        parse(data, splits, limits)
    return info.value


def first_event(data: bytes, limits: Config | None = None):
    parser = RequestParser(limits)
    parser.feed(data)
    return parser.next_event()


def cpu_time(func: Callable[[], object]) -> float:
    """CPU seconds spent in ``func`` (not disturbed by other processes' load)."""
    start = time.process_time()
    func()
    return time.process_time() - start


def req(
    line: bytes = b"GET / HTTP/1.1", headers: bytes = b"Host: a\r\n", body: bytes = b""
) -> bytes:
    return line + b"\r\n" + headers + b"\r\n" + body


CHUNKED_HEAD = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"


def chunked(body: bytes) -> bytes:
    return CHUNKED_HEAD + body


# -- valid requests ----------------------------------------------------------------

PIPELINED = (
    b"GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
    b"POST /two HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    b"PUT /three HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nxy\r\n1\r\nz\r\n0\r\nX-T: 1\r\n\r\n"
    b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
)

VALID = {
    "get": b"GET /path?q=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t/1\r\n\r\n",
    "http10-get": b"GET / HTTP/1.0\r\n\r\n",
    "http10-keepalive-post": (
        b"POST /f HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc"
    ),
    "post-cl": (
        b"POST /submit HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
        b"Content-Length: 11\r\n\r\nhello world"
    ),
    "post-cl-zero": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    "chunked": chunked(
        b'5;name=value\r\nhello\r\n6 ; x ; y="q"\r\n world\r\nA\r\n0123456789\r\n'
        b"0;last\r\nX-Checksum: abc\r\nx-other:  v 1 \r\n\r\n"
    ),
    "chunked-plain": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"3\r\nabc\r\nb\r\nhello world\r\n0\r\n\r\n"
    ),
    "expect": b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
    "headers": (
        b"GET / HTTP/1.1\r\nhost: a\r\ncontent-TYPE: \t text/html \t\r\n"
        b"X-Latin: caf\xe9 \xff\r\nX-Tab: a\tb\r\nX-Empty:\r\nX-Nbsp: \xa0v\xa0\r\n"
        b"x-dup: 1\r\nX-DUP: 2\r\n\r\n"
    ),
    "leading-empty-lines": b"\r\n\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute-form": (
        b"GET http://example.com:8080/a?b=c HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"
    ),
    "options-star": b"OPTIONS * HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    "custom-method": b"PROPFIND /dav HTTP/1.1\r\nHost: a\r\nDepth: 1\r\n\r\n",
    "cl-duplicate-comma": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello",
    "cl-duplicate-lines": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    ),
    "connection-close": b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
    "pipelined": PIPELINED,
}


def test_get_without_body() -> None:
    events = parse(VALID["get"])
    assert events == [
        Head(
            "GET",
            "/path?q=1",
            "HTTP/1.1",
            (("Host", "example.com"), ("User-Agent", "t/1")),
            content_length=None,
            chunked=False,
            keep_alive=True,
            expect_continue=False,
        ),
        PAUSE,  # no body: no bytes and no EndOfMessage
    ]


def test_request_head_attributes() -> None:
    head = first_event(VALID["get"])
    assert isinstance(head, RequestHead)
    assert head.has_body is False
    assert "GET" in repr(head)
    body_head = first_event(VALID["post-cl"])
    assert body_head.has_body is True and body_head.content_length == 11
    chunked_head = first_event(VALID["chunked"])
    assert chunked_head.has_body is True and chunked_head.content_length is None


def test_http10_get() -> None:
    assert parse(VALID["http10-get"]) == [
        Head("GET", "/", "HTTP/1.0", (), keep_alive=False),
        PAUSE,
    ]


def test_post_with_content_length() -> None:
    [request] = parse_requests(VALID["post-cl"])
    assert request.head == Head(
        "POST",
        "/submit",
        "HTTP/1.1",
        (("Host", "a"), ("Content-Type", "text/plain"), ("Content-Length", "11")),
        content_length=11,
    )
    assert request.body == b"hello world"
    assert request.end == End(())


def test_content_length_body_ends_with_end_of_message() -> None:
    events = parse(VALID["post-cl"])
    assert events[1:] == [b"hello world", End(()), PAUSE]


def test_content_length_zero_has_no_body() -> None:
    events = parse(VALID["post-cl-zero"])
    assert len(events) == 2 and events[1] == PAUSE
    assert events[0].content_length == 0
    assert first_event(VALID["post-cl-zero"]).has_body is False


def test_chunked_with_extensions_and_trailers() -> None:
    events = parse(VALID["chunked"])
    assert events == [
        Head(
            "POST",
            "/",
            "HTTP/1.1",
            (("Host", "a"), ("Transfer-Encoding", "chunked")),
            content_length=None,
            chunked=True,
        ),
        b"hello world0123456789",
        End((("X-Checksum", "abc"), ("X-Other", "v 1"))),
        PAUSE,
    ]
    # Trailers are reported, never merged into the headers.
    assert all(name not in ("X-Checksum", "X-Other") for name, _ in events[0].headers)


def test_chunked_without_trailers_and_case_insensitive_coding() -> None:
    [request] = parse_requests(VALID["chunked-plain"])
    assert request.head.chunked
    assert request.body == b"abchello world"
    assert request.end == End(())


def test_chunked_sizes_are_hex_any_case() -> None:
    body = b"a\r\n" + b"x" * 10 + b"\r\nF\r\n" + b"y" * 15 + b"\r\n00\r\n\r\n"
    [request] = parse_requests(chunked(body))
    assert request.body == b"x" * 10 + b"y" * 15


def test_chunk_of_16_hex_digits_is_a_size_not_a_syntax_error() -> None:
    # 16 hex digits (leading zeros included) is the longest accepted size.
    small = chunked(b"0000000000000003\r\nabc\r\n0\r\n\r\n")
    assert parse_requests(small)[0].body == b"abc"
    assert reject(chunked(b"ffffffffffffffff\r\n")).status == 413


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            req(b"POST / HTTP/1.1", b"Host: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n"),
            True,
        ),
        (
            req(b"POST / HTTP/1.1", b"Host: a\r\nExpect: 100-CONTINUE\r\nContent-Length: 3\r\n"),
            True,
        ),
        (
            req(b"POST / HTTP/1.1", b"Host: a\r\nExpect:  100-Continue \r\nContent-Length: 3\r\n"),
            True,
        ),
        (
            req(
                b"POST / HTTP/1.1",
                b"Host: a\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n",
            ),
            True,
        ),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nExpect: 100-continue\r\n"), False),
        (
            req(b"POST / HTTP/1.1", b"Host: a\r\nExpect: 100-continue\r\nContent-Length: 0\r\n"),
            False,
        ),
        (req(b"POST / HTTP/1.0", b"Expect: 100-continue\r\nContent-Length: 3\r\n"), False),
        (req(b"POST / HTTP/1.1", b"Host: a\r\nExpect: 200-ok\r\nContent-Length: 3\r\n"), False),
        (req(b"POST / HTTP/1.1", b"Host: a\r\nContent-Length: 3\r\n"), False),
    ],
    ids=[
        "lower",
        "upper",
        "padded-mixed",
        "chunked",
        "no-body",
        "cl-zero",
        "http10",
        "other-expectation",
        "absent",
    ],
)
def test_expect_continue(data: bytes, expected: bool) -> None:
    head = first_event(data)
    assert isinstance(head, RequestHead)
    assert head.expect_continue is expected


def test_expect_continue_request_round_trips() -> None:
    [request] = parse_requests(VALID["expect"])
    assert request.head.expect_continue is True
    assert request.body == b"abc"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (req(b"GET / HTTP/1.1"), True),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nConnection: keep-alive\r\n"), True),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nConnection: close\r\n"), False),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nConnection: CLOSE\r\n"), False),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nConnection: foo, Close\r\n"), False),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nConnection: foo\r\nConnection: close\r\n"), False),
        (req(b"GET / HTTP/1.1", b"Host: a\r\nConnection: closed\r\n"), True),
        (req(b"GET / HTTP/1.0", b""), False),
        (req(b"GET / HTTP/1.0", b"Connection: keep-alive\r\n"), True),
        (req(b"GET / HTTP/1.0", b"Connection: Keep-Alive\r\n"), True),
        (req(b"HEAD / HTTP/1.0", b"Connection: keep-alive\r\n"), True),
        (req(b"GET / HTTP/1.0", b"Connection: te, keep-alive\r\n"), True),
        (req(b"POST / HTTP/1.0", b"Connection: keep-alive\r\nContent-Length: 3\r\n"), True),
        (req(b"POST / HTTP/1.0", b"Connection: keep-alive\r\nContent-Length: 0\r\n"), True),
        (req(b"POST / HTTP/1.0", b"Connection: keep-alive\r\n"), False),
        (req(b"DELETE / HTTP/1.0", b"Connection: keep-alive\r\n"), False),
        (req(b"POST / HTTP/1.0", b"Content-Length: 3\r\n"), False),
        (req(b"GET / HTTP/1.0", b"Connection: close\r\n"), False),
    ],
    ids=[
        "11-default",
        "11-keep-alive",
        "11-close",
        "11-CLOSE",
        "11-token-list",
        "11-two-lines",
        "11-not-a-close-token",
        "10-default",
        "10-keep-alive-get",
        "10-Keep-Alive",
        "10-keep-alive-head",
        "10-token-list",
        "10-keep-alive-post-cl",
        "10-keep-alive-post-cl0",
        "10-keep-alive-post-no-cl",
        "10-keep-alive-delete-no-cl",
        "10-post-cl-no-keep-alive",
        "10-close",
    ],
)
def test_keep_alive(data: bytes, expected: bool) -> None:
    head = first_event(data)
    assert isinstance(head, RequestHead)
    assert head.keep_alive is expected


def test_header_names_normalized_and_values_stripped() -> None:
    [request] = parse_requests(VALID["headers"])
    assert request.head.headers == (
        ("Host", "a"),
        ("Content-Type", "text/html"),
        ("X-Latin", "caf\xe9 \xff"),  # obs-text, decoded latin-1
        ("X-Tab", "a\tb"),  # HTAB allowed inside a value
        ("X-Empty", ""),
        ("X-Nbsp", "\xa0v\xa0"),  # only SP and HTAB are stripped
        ("X-Dup", "1"),  # duplicates kept, in order
        ("X-Dup", "2"),
    )


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        (b"content-TYPE", "Content-Type"),
        (b"USER-AGENT", "User-Agent"),
        (b"x-forwarded-for", "X-Forwarded-For"),
        (b"ETag", "Etag"),
        (b"x--y", "X--Y"),
        (b"a_b", "A_b"),
        (b"X-1", "X-1"),
    ],
)
def test_header_name_normalization(raw: bytes, normalized: str) -> None:
    head = first_event(req(headers=b"Host: a\r\n" + raw + b": v\r\n"))
    assert head.headers[-1] == (normalized, "v")


@pytest.mark.parametrize("byte", [0x80, 0x9F, 0xA0, 0xC3, 0xFF])
def test_obs_text_allowed_in_values(byte: int) -> None:
    head = first_event(req(headers=b"Host: a\r\nX: a" + bytes([byte]) + b"b\r\n"))
    assert head.headers[-1] == ("X", "a" + chr(byte) + "b")


def test_empty_lines_before_request_line_ignored() -> None:
    assert parse(VALID["leading-empty-lines"]) == [
        Head("GET", "/", "HTTP/1.1", (("Host", "a"),)),
        PAUSE,
    ]


def test_empty_lines_between_pipelined_requests_ignored() -> None:
    data = req(b"GET /1 HTTP/1.1") + b"\r\n\r\n" + req(b"GET /2 HTTP/1.1")
    assert [r.head.target for r in parse_requests(data)] == ["/1", "/2"]


def test_only_empty_lines_is_not_a_request() -> None:
    parser = RequestParser()
    parser.feed(b"\r\n\r\n\r\n")
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0


def test_absolute_form_and_asterisk_targets() -> None:
    [absolute] = parse_requests(VALID["absolute-form"])
    assert absolute.head.target == "http://example.com:8080/a?b=c"
    [star] = parse_requests(VALID["options-star"])
    assert (star.head.method, star.head.target) == ("OPTIONS", "*")
    assert star.head.headers == (("Host", "[::1]:8080"),)


@pytest.mark.parametrize(
    ("target", "headers", "host"),
    [
        (b"http://example.com:8080/a", b"Host: other\r\n", "example.com:8080"),
        (b"https://example.com?q=/x", b"Host: example.com\r\n", "example.com"),
        (b"http://[::1]/a#f", b"X-A: 1\r\nHost: a\r\nX-B: 2\r\n", "[::1]"),
    ],
)
def test_an_absolute_form_target_names_the_host(target: bytes, headers: bytes, host: str) -> None:
    # RFC 9112 3.2.2: an origin server MUST ignore the Host header then and use
    # the target's authority: the one Host every interface sees.
    head = first_event(req(b"GET " + target + b" HTTP/1.1", headers))
    assert head.host == host
    hosts = [value for name, value in head.headers if name == "Host"]
    assert hosts == [host]
    assert [name for name, _ in head.headers if name != "Host"] == [
        line.split(b":")[0].decode()
        for line in headers.split(b"\r\n")
        if line and b"Host" not in line
    ]


def test_an_absolute_form_target_still_needs_a_host_header_on_http_1_1() -> None:
    # RFC 9112 3.2: a client MUST send Host even with absolute-form.
    assert reject(req(b"GET http://example.com/ HTTP/1.1", b"")).status == 400
    head = first_event(req(b"GET http://example.com/ HTTP/1.0", b""))
    assert head.host == "example.com" and list(head.headers) == [("Host", "example.com")]


def test_unknown_but_valid_method_token_accepted() -> None:
    [request] = parse_requests(VALID["custom-method"])
    assert request.head.method == "PROPFIND"
    head = first_event(req(b"M-SEARCH!#$%&'*+.^_`|~09az /x HTTP/1.1"))
    assert head.method == "M-SEARCH!#$%&'*+.^_`|~09az"


@pytest.mark.parametrize("name", ["cl-duplicate-comma", "cl-duplicate-lines"])
def test_identical_duplicate_content_length_accepted(name: str) -> None:
    """Accepted as the one value it is, and the application sees that one
    value (RFC 9110 8.6: a list of the same length may be replaced by it)."""
    [request] = parse_requests(VALID[name])
    assert request.head.content_length == 5
    assert request.body == b"hello"
    assert [field for field in request.head.headers if field[0] == "Content-Length"] == [
        ("Content-Length", "5")
    ]


def test_equal_content_lengths_with_leading_zeros_accepted() -> None:
    head = first_event(req(b"POST / HTTP/1.1", b"Host: a\r\nContent-Length: 5, 005\r\n"))
    assert head.content_length == 5
    assert ("Content-Length", "5") in head.headers


def test_a_single_content_length_is_left_as_sent() -> None:
    head = first_event(req(b"POST / HTTP/1.1", b"Host: a\r\nContent-Length: 005\r\n"))
    assert head.content_length == 5
    assert ("Content-Length", "005") in head.headers


def test_empty_host_accepted() -> None:
    head = first_event(req(headers=b"Host:\r\n"))
    assert head.headers == [("Host", "")]


def test_http10_needs_no_host() -> None:
    head = first_event(b"GET / HTTP/1.0\r\nX: y\r\n\r\n")
    assert head.version == "HTTP/1.0" and head.headers == [("X", "y")]


def test_pipelined_requests_in_order() -> None:
    requests = parse_requests(PIPELINED)
    assert [(r.head.method, r.head.target) for r in requests] == [
        ("GET", "/one"),
        ("POST", "/two"),
        ("PUT", "/three"),
        ("GET", "/four"),
    ]
    assert [r.body for r in requests] == [b"", b"abc", b"xyz", b""]
    assert [r.end for r in requests] == [None, End(()), End((("X-T", "1"),)), None]
    assert requests[2].end == End((("X-T", "1"),))
    assert [r.head.keep_alive for r in requests] == [True, True, True, False]


def test_pipelined_requests_wait_for_start_next_cycle() -> None:
    parser = RequestParser()
    parser.feed(
        req(b"GET /1 HTTP/1.1")
        + req(b"POST /2 HTTP/1.1", b"Host: a\r\nContent-Length: 2\r\n", b"ab")
        + req(b"GET /3 HTTP/1.1")
    )
    assert parser.waiting_for_head
    first = parser.next_event()
    assert isinstance(first, RequestHead) and first.target == "/1"
    for _ in range(3):  # nothing is emitted before start_next_cycle
        assert parser.next_event() is PAUSED
        assert parser.paused and not parser.waiting_for_head
    assert parser.buffered > 0
    parser.start_next_cycle()
    second = parser.next_event()
    assert isinstance(second, RequestHead) and second.target == "/2"
    assert parser.next_event() == b"ab"
    end = parser.next_event()
    assert isinstance(end, EndOfMessage) and end.trailers == []
    assert parser.next_event() is PAUSED
    assert parser.next_event() is PAUSED
    parser.start_next_cycle()
    third = parser.next_event()
    assert isinstance(third, RequestHead) and third.target == "/3"
    assert parser.next_event() is PAUSED
    parser.start_next_cycle()
    assert parser.next_event() is NEED_DATA
    assert parser.buffered == 0


def test_start_next_cycle_before_request_complete_is_an_error() -> None:
    parser = RequestParser()
    with pytest.raises(RuntimeError):
        parser.start_next_cycle()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\na")
    assert isinstance(parser.next_event(), RequestHead)
    with pytest.raises(RuntimeError):
        parser.start_next_cycle()


def test_started_flag() -> None:
    parser = RequestParser()
    assert not parser.started
    parser.feed(b"\r\n")
    assert parser.next_event() is NEED_DATA
    assert not parser.started  # empty lines do not begin a request
    parser.feed(b"G")
    assert parser.next_event() is NEED_DATA
    assert parser.started
    parser.feed(b"ET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() is PAUSED
    parser.start_next_cycle()
    assert not parser.started  # nothing of the next request yet
    parser.feed(b"GET")
    assert parser.next_event() is NEED_DATA
    assert parser.started


def test_started_after_cycle_with_pipelined_bytes() -> None:
    parser = RequestParser()
    parser.feed(req(b"GET /1 HTTP/1.1") + b"GET /2")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() is PAUSED
    parser.start_next_cycle()
    assert parser.started


def test_body_not_consumed_past_content_length() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcGET")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == b"abc"
    assert parser.buffered == 3


def test_feeding_empty_bytes_is_harmless() -> None:
    parser = RequestParser()
    parser.feed(b"")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"GET / HTTP/1.1\r\n")
    parser.feed(b"")
    assert parser.next_event() is NEED_DATA
    parser.feed(b"Host: a\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)


# -- every valid request, split at every byte boundary -------------------------------


@pytest.mark.parametrize("name", list(VALID))
def test_split_at_every_boundary_gives_same_events(name: str) -> None:
    data = VALID[name]
    expected = parse(data)
    assert expected and expected[-1] == PAUSE  # complete requests only
    requests_of(expected)  # well formed
    for offset in range(1, len(data)):
        assert parse(data, [offset]) == expected, f"split at {offset}"


@pytest.mark.parametrize("name", list(VALID))
def test_split_at_every_pair_of_boundaries_gives_same_events(name: str) -> None:
    data = VALID[name][:120]  # bounded: quadratic in the length
    expected = parse(data)
    step = 1 if len(data) <= 60 else 3
    for first in range(1, len(data), step):
        for second in range(first + 1, len(data), step):
            assert parse(data, [first, second]) == expected, (first, second)


@pytest.mark.parametrize("name", list(VALID))
def test_one_byte_at_a_time_gives_same_events(name: str) -> None:
    data = VALID[name]
    assert parse_bytewise(data) == parse(data)


def test_all_valid_requests_pipelined_split_everywhere() -> None:
    data = b"".join(v for k, v in VALID.items() if k not in ("connection-close", "pipelined"))
    expected = parse(data)
    assert len(requests_of(expected)) == len(VALID) - 2
    for offset in range(1, len(data)):
        assert parse(data, [offset]) == expected, f"split at {offset}"
    assert parse_bytewise(data) == expected


# -- rejections ----------------------------------------------------------------------

HOST = b"Host: a\r\n"
POST = b"POST / HTTP/1.1"


def post(headers: bytes, body: bytes = b"") -> bytes:
    return req(POST, HOST + headers, body)


def cl(value: bytes) -> bytes:
    return post(b"Content-Length: " + value + b"\r\n", b"x" * 20)


REJECT: list[tuple[str, bytes, int, Config | None]] = [
    # Content-Length + Transfer-Encoding
    (
        "cl-and-te",
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
        None,
    ),
    (
        "te-and-cl",
        post(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", b"0\r\n\r\n"),
        400,
        None,
    ),
    ("cl-0-and-te", post(b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n"), 400, None),
    # Transfer-Encoding other than a single chunked
    ("te-gzip", post(b"Transfer-Encoding: gzip\r\n"), 400, None),
    ("te-identity", post(b"Transfer-Encoding: identity\r\n"), 400, None),
    ("te-chunked-gzip", post(b"Transfer-Encoding: chunked, gzip\r\n"), 400, None),
    ("te-chunked-param", post(b"Transfer-Encoding: chunked;q=1\r\n"), 400, None),
    ("te-chunked-chunked", post(b"Transfer-Encoding: chunked, chunked\r\n"), 400, None),
    (
        "te-two-chunked-lines",
        post(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        400,
        None,
    ),
    ("te-gzip-chunked", post(b"Transfer-Encoding: gzip, chunked\r\n"), 501, None),
    (
        "te-gzip-line-chunked-line",
        post(b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        501,
        None,
    ),
    ("te-empty", post(b"Transfer-Encoding: \r\n"), 400, None),
    ("te-trailing-comma", post(b"Transfer-Encoding: chunked,\r\n"), 400, None),
    ("te-leading-comma", post(b"Transfer-Encoding: , chunked\r\n"), 400, None),
    (
        "te-http10",
        req(b"POST / HTTP/1.0", b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
        None,
    ),
    ("te-http10-gzip", req(b"POST / HTTP/1.0", b"Transfer-Encoding: gzip\r\n"), 400, None),
    # Content-Length values
    ("cl-differ-comma", cl(b"5, 6"), 400, None),
    ("cl-differ-lines", post(b"Content-Length: 5\r\nContent-Length: 6\r\n", b"x" * 6), 400, None),
    ("cl-zero-and-n", post(b"Content-Length: 0\r\nContent-Length: 44\r\n"), 400, None),
    ("cl-plus", cl(b"+5"), 400, None),
    ("cl-minus", cl(b"-1"), 400, None),
    ("cl-hex", cl(b"0x10"), 400, None),
    ("cl-inner-space", cl(b" 5 5"), 400, None),
    ("cl-underscore", cl(b"5_0"), 400, None),
    ("cl-empty", cl(b""), 400, None),
    ("cl-fullwidth-digit", cl("\uff15".encode()), 400, None),
    ("cl-superscript-latin1", cl(b"\xb2"), 400, None),
    ("cl-float", cl(b"5.0"), 400, None),
    ("cl-exponent", cl(b"1e1"), 400, None),
    ("cl-19-digits", cl(b"1" * 19), 400, None),
    ("cl-trailing-comma", cl(b"5,"), 400, None),
    ("cl-empty-element", cl(b"5,,5"), 400, None),
    ("cl-valid-and-invalid", cl(b"5, x"), 400, None),
    ("cl-over-max", cl(b"11"), 413, Config(max_body_size=10)),
    ("cl-over-default-max", cl(b"%d" % (100 * 1024 * 1024 + 1)), 413, None),
    # chunked bodies
    (
        "chunked-over-max",
        chunked(b"6\r\nxxxxxx\r\n5\r\nxxxxx\r\n0\r\n\r\n"),
        413,
        Config(max_body_size=10),
    ),
    ("chunk-size-huge", chunked(b"ffffffffffffffff\r\n"), 413, None),
    ("chunk-size-g", chunked(b"g\r\nx\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-minus", chunked(b"-1\r\nx\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-plus", chunked(b"+1\r\nx\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-0x", chunked(b"0x5\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-empty", chunked(b"\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-17-digits", chunked(b"1" + b"0" * 16 + b"\r\n"), 400, None),
    ("chunk-size-leading-space", chunked(b" 5\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-inner-space", chunked(b"5 5\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-size-underscore", chunked(b"1_0\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-ext-only", chunked(b";a\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-missing-crlf", chunked(b"5\r\nhelloXY0\r\n\r\n"), 400, None),
    ("chunk-data-longer", chunked(b"3\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-data-then-lf", chunked(b"5\r\nhello\n0\r\n\r\n"), 400, None),
    ("chunk-data-then-cr", chunked(b"5\r\nhello\r0\r\n\r\n"), 400, None),
    ("last-chunk-data", chunked(b"0\r\nhello\r\n\r\n"), 400, None),
    # bare CR / bare LF
    ("bare-cr-request-line", b"GET / HTTP/1.1\rHost: a\r\n\r\n", 400, None),
    ("bare-cr-in-value", req(headers=HOST + b"X: a\rb\r\n"), 400, None),
    ("bare-cr-line-end", req(headers=HOST + b"X: a\r\r\n"), 400, None),
    ("bare-cr-in-name", req(headers=HOST + b"X\r: a\r\n"), 400, None),
    ("bare-lf-line-ends", b"GET / HTTP/1.1\nHost: a\n\n", 400, None),
    ("bare-lf-request-line", b"GET / HTTP/1.1\nHost: a\r\n\r\n", 400, None),
    ("bare-lf-in-value", req(headers=HOST + b"X: a\nb\r\n"), 400, None),
    ("bare-lf-terminator", b"GET / HTTP/1.1\r\nHost: a\r\n\n", 400, None),
    ("bare-lf-first-byte", b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("bare-lf-after-empty-line", b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("bare-cr-lf-reversed", req(headers=HOST + b"X: a\r\r\n\nY: b\r\n"), 400, None),
    ("chunk-line-bare-lf", chunked(b"5\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-line-bare-cr", chunked(b"5\rhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-ext-bare-cr", chunked(b"5;a\rb\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-ext-bare-lf", chunked(b"5;a\nb\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-ext-cr-before-crlf", chunked(b"5;a\r\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("last-chunk-bare-lf", chunked(b"0\n\r\n"), 400, None),
    ("trailer-bare-cr", chunked(b"0\r\nX: a\rb\r\n\r\n"), 400, None),
    ("trailer-bare-lf", chunked(b"0\r\nX: a\nY: b\r\n\r\n"), 400, None),
    ("trailer-bare-lf-end", chunked(b"0\r\nX: a\n\n"), 400, None),
    ("trailer-final-bare-lf", chunked(b"0\r\nX: a\r\n\n"), 400, None),
    # control characters (see also test_control_character_rejected)
    ("chunk-ext-nul", chunked(b"5;a\x00\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("chunk-ext-del", chunked(b"5;a\x7f\r\nhello\r\n0\r\n\r\n"), 400, None),
    ("trailer-nul", chunked(b"0\r\nX: a\x00\r\n\r\n"), 400, None),
    ("trailer-name-nul", chunked(b"0\r\nX\x00: a\r\n\r\n"), 400, None),
    ("tab-in-request-line", b"GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("tab-separators", b"GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("tab-in-name", req(headers=HOST + b"X\tY: a\r\n"), 400, None),
    # header syntax
    ("space-before-colon", req(headers=b"Host : a\r\n"), 400, None),
    ("tab-before-colon", req(headers=HOST + b"X\t: a\r\n"), 400, None),
    ("space-in-name", req(headers=HOST + b"X Y: a\r\n"), 400, None),
    ("obs-fold-space", req(headers=HOST + b"X: a\r\n b\r\n"), 400, None),
    ("obs-fold-tab", req(headers=HOST + b"X: a\r\n\tb\r\n"), 400, None),
    ("obs-fold-with-colon", req(headers=HOST + b"X: a\r\n Y: b\r\n"), 400, None),
    ("obs-fold-first-line", req(headers=b" X: a\r\n" + HOST), 400, None),
    ("no-colon", req(headers=HOST + b"X a\r\n"), 400, None),
    ("empty-name", req(headers=HOST + b": a\r\n"), 400, None),
    ("name-paren", req(headers=HOST + b"X(y): a\r\n"), 400, None),
    ("name-non-ascii", req(headers=HOST + b"X\xe9: a\r\n"), 400, None),
    ("name-slash", req(headers=HOST + b"X/Y: a\r\n"), 400, None),
    ("trailer-no-colon", chunked(b"0\r\nXa\r\n\r\n"), 400, None),
    ("trailer-space-before-colon", chunked(b"0\r\nX : a\r\n\r\n"), 400, None),
    ("trailer-obs-fold", chunked(b"0\r\nX: a\r\n b\r\n\r\n"), 400, None),
    ("trailer-empty-name", chunked(b"0\r\n: a\r\n\r\n"), 400, None),
    # method
    ("method-space", b"GE T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("method-paren", b"G(ET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("method-empty", b" / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("method-at", b"GET@ / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("method-slash", b"GET/ / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("method-non-ascii", b"G\xc9T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    # version
    ("version-HTTP/1", b"GET / HTTP/1\r\nHost: a\r\n\r\n", 400, None),
    ("version-lowercase", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("version-trailing-space", b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400, None),
    ("version-1.10", b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", 400, None),
    ("version-11.1", b"GET / HTTP/11.1\r\nHost: a\r\n\r\n", 400, None),
    ("version-empty", b"GET / \r\nHost: a\r\n\r\n", 400, None),
    ("version-suffix", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400, None),
    ("version-fullwidth", "GET / HTTP/\uff11.1\r\nHost: a\r\n\r\n".encode(), 400, None),
    ("version-2.0", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, None),
    ("version-0.9", b"GET / HTTP/0.9\r\n\r\n", 505, None),
    ("version-3.0", b"GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505, None),
    ("version-9.9", b"GET / HTTP/9.9\r\n\r\n", 505, None),
    # request line shape
    ("line-1-part", b"GET\r\nHost: a\r\n\r\n", 400, None),
    ("line-2-parts", b"GET /\r\nHost: a\r\n\r\n", 400, None),
    ("line-4-parts", b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n", 400, None),
    ("line-double-space", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("line-double-space-2", b"GET /  HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("line-leading-space", b" GET / HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("line-is-a-header", b"Host: a\r\n\r\n", 400, None),
    ("line-space-in-target", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    # target
    ("target-utf8", "GET /caf\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n".encode(), 400, None),
    ("target-latin1", b"GET /caf\xe9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("target-nbsp", b"GET /\xa0 HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("target-ctl", b"GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("target-nul", b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    ("target-del", b"GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400, None),
    # Host
    ("no-host-11", req(headers=b""), 400, None),
    ("no-host-11-other-headers", req(headers=b"X: a\r\n"), 400, None),
    ("two-hosts-same", req(headers=HOST + HOST), 400, None),
    ("two-hosts-differ", req(headers=HOST + b"Host: b\r\n"), 400, None),
    ("two-hosts-http10", req(b"GET / HTTP/1.0", HOST + HOST), 400, None),
    ("host-comma", req(headers=b"Host: a,b\r\n"), 400, None),
    ("host-comma-space", req(headers=b"Host: a, b\r\n"), 400, None),
    ("host-space", req(headers=b"Host: a b\r\n"), 400, None),
    ("host-tab-inside", req(headers=b"Host: a\tb\r\n"), 400, None),
    ("host-userinfo", req(headers=b"Host: u@a\r\n"), 400, None),
    ("host-slash", req(headers=b"Host: a/b\r\n"), 400, None),
    ("host-non-ascii", req(headers=b"Host: caf\xe9\r\n"), 400, None),
    ("host-comma-http10", req(b"GET / HTTP/1.0", b"Host: a,b\r\n"), 400, None),
    # limits
    (
        "request-line-414",
        req(b"GET /" + b"a" * 40 + b" HTTP/1.1"),
        414,
        Config(max_request_line=32),
    ),
    (
        "request-line-414-incomplete",
        b"GET /" + b"a" * 40,
        414,
        Config(max_request_line=32),
    ),
    (
        "request-line-414-default",
        req(b"GET /" + b"a" * 8200 + b" HTTP/1.1"),
        414,
        None,
    ),
    (
        "header-431",
        req(headers=HOST + b"X: " + b"a" * 80 + b"\r\n"),
        431,
        Config(max_header_size=64),
    ),
    (
        "header-431-incomplete",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 80,
        431,
        Config(max_header_size=64),
    ),
    (
        "header-431-default",
        req(headers=HOST + b"X: " + b"a" * 65536 + b"\r\n"),
        431,
        None,
    ),
    (
        "too-many-headers",
        req(headers=HOST + b"A: 1\r\nB: 2\r\nC: 3\r\n"),
        431,
        Config(max_headers=3),
    ),
    (
        "too-many-headers-default",
        req(headers=HOST + b"".join(b"X-%d: v\r\n" % i for i in range(100))),
        431,
        None,
    ),
    (
        "trailer-431",
        chunked(b"0\r\nX: " + b"a" * 100 + b"\r\n\r\n"),
        431,
        Config(max_header_size=80),
    ),
    (
        "trailer-431-incomplete",
        chunked(b"0\r\nX: " + b"a" * 100),
        431,
        Config(max_header_size=80),
    ),
    (
        "trailer-431-many-lines",
        chunked(b"0\r\n" + b"X: aaaaaaaaaaaa\r\n" * 10 + b"\r\n"),
        431,
        Config(max_header_size=80),
    ),
    (
        "too-many-trailers",
        chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n"),
        431,
        Config(max_headers=3),
    ),
    (
        "chunk-line-too-long",
        chunked(b"5;" + b"a" * 20 + b"\r\nhello\r\n0\r\n\r\n"),
        400,
        Config(max_chunk_line=16),
    ),
    ("chunk-line-too-long-incomplete", chunked(b"5;" + b"a" * 20), 400, Config(max_chunk_line=16)),
    ("chunk-line-too-long-default", chunked(b"5;" + b"a" * 5000), 400, None),
    # a bad request after good pipelined ones
    (
        "pipelined-then-smuggle",
        req() + post(b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n", b"0\r\n\r\n"),
        400,
        None,
    ),
    ("pipelined-then-bad-chunk", VALID["chunked"] + chunked(b"z\r\n"), 400, None),
]

REJECT_IDS = [case[0] for case in REJECT]
assert len(set(REJECT_IDS)) == len(REJECT_IDS)


@pytest.mark.parametrize(("data", "status", "limits"), [c[1:] for c in REJECT], ids=REJECT_IDS)
def test_rejected_with_status(data: bytes, status: int, limits: Config | None) -> None:
    error = reject(data, limits=limits)
    assert error.status == status, error.reason
    assert error.reason and str(error).startswith(str(status))


@pytest.mark.parametrize(("data", "status", "limits"), [c[1:] for c in REJECT], ids=REJECT_IDS)
def test_rejected_with_same_status_at_every_split(
    data: bytes, status: int, limits: Config | None
) -> None:
    if len(data) <= 600:
        offsets = range(1, len(data))
    else:  # every early boundary, then a sample across the rest
        offsets = [*range(1, 300), *range(300, len(data), len(data) // 200)]
    for offset in offsets:
        assert reject(data, [offset], limits).status == status, f"split at {offset}"


@pytest.mark.parametrize(("data", "status", "limits"), [c[1:] for c in REJECT], ids=REJECT_IDS)
def test_rejected_one_byte_at_a_time(data: bytes, status: int, limits: Config | None) -> None:
    size = 1 if len(data) <= 10_000 else 61  # the few huge cases: small pieces
    with pytest.raises(ProtocolError) as info:
        parse_pieces((data[i : i + size] for i in range(0, len(data), size)), limits)
    assert info.value.status == status


@pytest.mark.parametrize(("data", "status", "limits"), [c[1:] for c in REJECT], ids=REJECT_IDS)
def test_parser_stays_failed(data: bytes, status: int, limits: Config | None) -> None:
    parser = RequestParser(limits)
    events: list = []
    parser.feed(data)
    with pytest.raises(ProtocolError):
        drain(parser, events)
    for _ in range(2):
        with pytest.raises(ProtocolError):
            parser.next_event()
    parser.feed(req())  # even a good request afterwards
    with pytest.raises(ProtocolError):
        parser.next_event()
    assert not parser.paused


CONTROL_BYTES = [0x00, 0x01, 0x07, 0x08, 0x0B, 0x0C, 0x0E, 0x1B, 0x1F, 0x7F]


def _with_control(where: str, ctl: bytes) -> bytes:
    if where == "method":
        return b"G" + ctl + b"ET / HTTP/1.1\r\nHost: a\r\n\r\n"
    if where == "target":
        return b"GET /a" + ctl + b"b HTTP/1.1\r\nHost: a\r\n\r\n"
    if where == "version":
        return b"GET / HTTP/1.1" + ctl + b"\r\nHost: a\r\n\r\n"
    if where == "name":
        return req(headers=HOST + b"X" + ctl + b"Y: v\r\n")
    if where == "value":
        return req(headers=HOST + b"X: a" + ctl + b"b\r\n")
    if where == "value-end":
        return req(headers=HOST + b"X: ab" + ctl + b"\r\n")
    if where == "host":
        return req(headers=b"Host: a" + ctl + b"\r\n")
    if where == "trailer-name":
        return chunked(b"0\r\nX" + ctl + b"Y: v\r\n\r\n")
    if where == "trailer-value":
        return chunked(b"0\r\nX: a" + ctl + b"b\r\n\r\n")
    assert where == "chunk-ext"
    return chunked(b"1;a" + ctl + b"b\r\nx\r\n0\r\n\r\n")


CONTROL_PLACES = [
    "method",
    "target",
    "version",
    "name",
    "value",
    "value-end",
    "host",
    "trailer-name",
    "trailer-value",
    "chunk-ext",
]


@pytest.mark.parametrize("where", CONTROL_PLACES)
@pytest.mark.parametrize("ctl", CONTROL_BYTES, ids=lambda b: f"0x{b:02x}")
def test_control_character_rejected(where: str, ctl: int) -> None:
    data = _with_control(where, bytes([ctl]))
    assert reject(data).status == 400
    assert reject(data, [len(data) // 2]).status == 400


def test_htab_allowed_inside_values_and_trailers() -> None:
    data = post(b"X: a\tb\r\nTransfer-Encoding: chunked\r\n", b"0\r\nT: c\td\r\n\r\n")
    [request] = parse_requests(data)
    assert ("X", "a\tb") in request.head.headers
    assert request.end == End((("T", "c\td"),))


@pytest.mark.parametrize(
    ("data", "valid_prefix"),
    [
        (b"\n", b""),
        (b"GET / HTTP/1.1\n", b""),
        (b"GET / HTTP/1.1\r\nHost: a\n", b""),
        (b"GET / HTTP/1.1\r\nHost: a\r\n\n", b""),
        (b"5\n", CHUNKED_HEAD),
        (b"5;ext\n", CHUNKED_HEAD),
        (b"5\r\nhello\n", CHUNKED_HEAD),
        (b"0\r\nX: a\n", CHUNKED_HEAD),
        (b"0\r\n\n", CHUNKED_HEAD),
        (b"0\r\nX: a\r\n\n", CHUNKED_HEAD),
    ],
    ids=[
        "first-byte",
        "request-line",
        "header-line",
        "terminator",
        "chunk-size",
        "chunk-ext",
        "after-chunk-data",
        "trailer",
        "last-chunk-end",
        "trailer-end",
    ],
)
def test_bare_lf_rejected_as_soon_as_it_arrives(data: bytes, valid_prefix: bytes) -> None:
    parser = RequestParser()
    if valid_prefix:
        parser.feed(valid_prefix)
        assert isinstance(parser.next_event(), RequestHead)
        assert parser.next_event() is NEED_DATA
    parser.feed(data)
    with pytest.raises(ProtocolError) as info:
        drain(parser, [])
    assert info.value.status == 400


def test_bare_lf_rejected_as_soon_as_it_arrives_on_the_second_request() -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() is PAUSED
    parser.start_next_cycle()
    parser.feed(b"GET / HTTP/1.1\nHost: a\n")
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert info.value.status == 400


@pytest.mark.parametrize(
    "headers",
    [
        HOST + b"X: a\n\rY: b\r\n",  # LF CR instead of CR LF
        HOST + b"X: a\rb\r\nY: c\nd\r\n",  # one bare CR and one bare LF
        HOST + b"X: a\n\rb\r\n",
    ],
    ids=["lf-cr-swapped", "bare-cr-plus-bare-lf", "lf-cr-in-value"],
)
def test_balanced_bare_cr_and_lf_rejected(headers: bytes) -> None:
    data = req(headers=headers)
    assert reject(data).status == 400


def test_rejection_happens_before_the_body_arrives() -> None:
    # Framing errors are decided on the head alone: no need to wait for a body.
    for data in (
        post(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        post(b"Content-Length: 5, 6\r\n"),
        post(b"Transfer-Encoding: gzip\r\n"),
    ):
        parser = RequestParser()
        parser.feed(data)
        with pytest.raises(ProtocolError):
            parser.next_event()


def test_chunk_overrun_detected_at_first_extra_byte() -> None:
    parser = RequestParser()
    parser.feed(CHUNKED_HEAD + b"3\r\nabcd")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == b"abc"
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert info.value.status == 400


def test_chunked_total_over_limit_rejected_before_the_data() -> None:
    parser = RequestParser(Config(max_body_size=10))
    parser.feed(CHUNKED_HEAD + b"8\r\n12345678\r\n3\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    assert parser.next_event() == b"12345678"
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert info.value.status == 413


def test_protocol_error_carries_status_and_reason() -> None:
    error = ProtocolError(431, "too big")
    assert (error.status, error.reason, str(error)) == (431, "too big", "431 too big")


# -- limits are settings ------------------------------------------------------------


def test_limit_defaults() -> None:
    limits = Config()
    assert limits.max_header_size == 65536
    assert limits.max_request_line == 8192
    assert limits.max_headers == 100
    assert limits.max_body_size == 100 * 1024 * 1024
    assert limits.max_chunk_line == 4096
    assert limits.header_timeout > 0 and limits.body_timeout > 0
    assert limits.keep_alive > 60  # outlives nginx's upstream keep-alive
    assert RequestParser().config == Config()


def request_line_of(length: int) -> bytes:
    line = b"GET /" + b"a" * (length - len(b"GET / HTTP/1.1")) + b" HTTP/1.1"
    assert len(line) == length
    return line


def test_request_line_limit_boundary() -> None:
    limits = Config(max_request_line=64)
    head = first_event(req(request_line_of(64)), limits)
    assert isinstance(head, RequestHead)
    assert reject(req(request_line_of(65)), limits=limits).status == 414
    # The line alone, still incomplete: at the limit waits, one over fails.
    parser = RequestParser(limits)
    parser.feed(request_line_of(64))
    assert parser.next_event() is NEED_DATA
    assert reject(request_line_of(65), limits=limits).status == 414


def test_request_line_at_limit_accepted_at_every_split() -> None:
    limits = Config(max_request_line=64)
    data = req(request_line_of(64))
    expected = parse(data, limits=limits)
    for offset in range(1, len(data)):
        assert parse(data, [offset], limits) == expected, f"split at {offset}"


def head_of(size: int) -> bytes:
    """A request head of exactly ``size`` bytes, not counting the final CRLFCRLF."""
    start = b"GET / HTTP/1.1\r\nHost: a\r\nX: "
    head = start + b"v" * (size - len(start))
    assert len(head) == size
    return head


def test_header_size_limit_boundary() -> None:
    limits = Config(max_header_size=128)
    assert isinstance(first_event(head_of(128) + b"\r\n\r\n", limits), RequestHead)
    assert reject(head_of(129) + b"\r\n\r\n", limits=limits).status == 431
    parser = RequestParser(limits)
    parser.feed(head_of(128))  # incomplete, at the limit: waits
    assert parser.next_event() is NEED_DATA
    assert reject(head_of(129), limits=limits).status == 431


def test_header_size_at_limit_accepted_one_byte_at_a_time() -> None:
    limits = Config(max_header_size=128)
    data = head_of(128) + b"\r\n\r\n"
    assert parse_bytewise(data, limits) == parse(data, limits=limits)


def test_header_count_limit_boundary() -> None:
    limits = Config(max_headers=5)
    four = b"".join(b"X-%d: v\r\n" % i for i in range(4))
    assert len(first_event(req(headers=HOST + four), limits).headers) == 5
    assert reject(req(headers=HOST + four + b"Y: v\r\n"), limits=limits).status == 431


def test_body_size_limit_boundary_content_length() -> None:
    limits = Config(max_body_size=100)
    [request] = parse_requests(post(b"Content-Length: 100\r\n", b"b" * 100), limits)
    assert request.body == b"b" * 100
    assert reject(post(b"Content-Length: 101\r\n", b"b" * 101), limits=limits).status == 413


def test_body_size_limit_boundary_chunked() -> None:
    limits = Config(max_body_size=100)
    body = b"32\r\n" + b"a" * 50 + b"\r\n" + b"32\r\n" + b"b" * 50 + b"\r\n0\r\n\r\n"
    [request] = parse_requests(chunked(body), limits)
    assert request.body == b"a" * 50 + b"b" * 50
    over = b"32\r\n" + b"a" * 50 + b"\r\n" + b"33\r\n" + b"b" * 51 + b"\r\n0\r\n\r\n"
    assert reject(chunked(over), limits=limits).status == 413


def test_zero_body_limit() -> None:
    limits = Config(max_body_size=0)
    assert first_event(post(b"Content-Length: 0\r\n"), limits).content_length == 0
    assert reject(post(b"Content-Length: 1\r\n", b"x"), limits=limits).status == 413
    assert parse_requests(chunked(b"0\r\n\r\n"), limits)[0].body == b""
    assert reject(chunked(b"1\r\nx\r\n0\r\n\r\n"), limits=limits).status == 413


def chunk_line_of(length: int) -> bytes:
    line = b"5;" + b"e" * (length - 2)
    assert len(line) == length
    return line


def test_chunk_line_limit_boundary() -> None:
    limits = Config(max_chunk_line=16)
    ok = chunked(chunk_line_of(16) + b"\r\nhello\r\n0\r\n\r\n")
    assert parse_requests(ok, limits)[0].body == b"hello"
    bad = chunked(chunk_line_of(17) + b"\r\nhello\r\n0\r\n\r\n")
    assert reject(bad, limits=limits).status == 400


def test_chunk_line_at_limit_accepted_at_every_split() -> None:
    limits = Config(max_chunk_line=16)
    data = chunked(chunk_line_of(16) + b"\r\nhello\r\n0\r\n\r\n")
    expected = parse(data, limits=limits)
    for offset in range(len(CHUNKED_HEAD), len(data)):
        assert parse(data, [offset], limits) == expected, f"split at {offset}"


def trailers_of(size: int) -> bytes:
    """Trailer lines totalling ``size`` bytes with their CRLFs."""
    line = b"X-T: " + b"t" * (size - 7) + b"\r\n"
    assert len(line) == size
    return line


def test_trailer_size_limit_boundary() -> None:
    limits = Config(max_header_size=80)  # the head is 52 bytes
    ok = chunked(b"0\r\n" + trailers_of(80) + b"\r\n")
    [request] = parse_requests(ok, limits)
    assert request.end is not None and len(request.end.trailers) == 1
    assert reject(chunked(b"0\r\n" + trailers_of(81) + b"\r\n"), limits=limits).status == 431


def test_trailer_size_at_limit_accepted_at_every_split() -> None:
    limits = Config(max_header_size=80)
    data = chunked(b"0\r\n" + trailers_of(80) + b"\r\n")
    expected = parse(data, limits=limits)
    for offset in range(len(CHUNKED_HEAD), len(data)):
        assert parse(data, [offset], limits) == expected, f"split at {offset}"


def test_trailer_count_limit_boundary() -> None:
    limits = Config(max_headers=3)
    ok = chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n")
    assert len(parse_requests(ok, limits)[0].end.trailers) == 3
    bad = chunked(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n")
    assert reject(bad, limits=limits).status == 431


@pytest.mark.parametrize(
    ("data", "raised", "status"),
    [
        (req(request_line_of(10000)), Config(max_request_line=10000), 414),
        (
            req(headers=HOST + b"X: " + b"v" * 70000 + b"\r\n"),
            Config(max_header_size=80000, max_header_line=80000),
            431,
        ),
        (req(headers=HOST + b"X: " + b"v" * 9000 + b"\r\n"), Config(max_header_line=9100), 431),
        (
            req(headers=HOST + b"".join(b"X-%d: v\r\n" % i for i in range(150))),
            Config(max_headers=200),
            431,
        ),
        (chunked(b"1;" + b"e" * 5000 + b"\r\nx\r\n0\r\n\r\n"), Config(max_chunk_line=6000), 400),
        (
            chunked(b"0\r\nX: " + b"v" * 70000 + b"\r\n\r\n"),
            Config(max_header_size=80000, max_header_line=80000),
            431,
        ),
        (chunked(b"0\r\nX: " + b"v" * 9000 + b"\r\n\r\n"), Config(max_header_line=9100), 431),
    ],
    ids=[
        "request-line",
        "header-size",
        "header-line",
        "header-count",
        "chunk-line",
        "trailer-size",
        "trailer-line",
    ],
)
def test_raising_a_limit_accepts_what_the_default_refuses(
    data: bytes, raised: Config, status: int
) -> None:
    assert reject(data).status == status
    requests = parse_requests(data, raised)
    assert len(requests) == 1


def test_raising_body_limit_accepts_large_content_length() -> None:
    size = 200 * 1024 * 1024
    data = post(b"Content-Length: %d\r\n" % size)
    assert reject(data).status == 413
    head = first_event(data, Config(max_body_size=size))
    assert head.content_length == size


# -- the response side's chunks, read back by the parser ------------------------------
# (the response side itself: tests/unit/test_response.py)


def test_encoded_chunks_parse_back() -> None:
    parts = [b"a", b"", b"hello", b"\r\n", b"x" * 300]
    body = b"".join(encode_chunk(p) for p in parts) + LAST_CHUNK
    [request] = parse_requests(chunked(body))
    assert request.body == b"".join(parts)
    assert request.end == End(())


# -- one reader for header lines and trailer lines -------------------------------------

FIELD_SECTIONS = [
    b"X-A: 1\r\nx-b:2\r\nX-C:  spaced \t\r\nX-Empty:\r\nX-Latin: caf\xe9\r\n",
    b"X: a\r\n b\r\n",  # obs-fold, no colon
    b"X: a\r\n Y: b\r\n",  # obs-fold with a colon
    b"X: a\r\n\tb\r\n",
    b"No colon\r\n",
    b": no name\r\n",
    b"X Y: space in name\r\n",
    b"X : space before colon\r\n",
    b"X\x80: non-token\r\n",
    b"Bad@Name: v\r\nNo colon\r\n",
]


def _neutral(reason: str) -> str:
    """A refusal's reason without the word naming the section."""
    return reason.replace("header", "field").replace("trailer", "field")


def _header_outcome(fields: bytes) -> object:
    data = b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n"
    try:
        [request] = parse_requests(data)
    except ProtocolError as exc:
        return exc.status, _neutral(exc.reason)
    return tuple(h for h in request.head.headers if h[0] != "Host")


def _trailer_outcome(fields: bytes) -> object:
    try:
        [request] = parse_requests(chunked(b"0\r\n" + fields + b"\r\n"))
    except ProtocolError as exc:
        return exc.status, _neutral(exc.reason)
    assert request.end is not None
    return request.end.trailers


@pytest.mark.parametrize("fields", FIELD_SECTIONS)
def test_headers_and_trailers_are_read_alike(fields: bytes) -> None:
    """The same field lines give the same pairs, or the same refusal, in both places."""
    assert _header_outcome(fields) == _trailer_outcome(fields)


# -- linear time ----------------------------------------------------------------------

MANY_HEADERS_LIMITS = Config(max_headers=100_000)


def many_headers_head(size: int) -> bytes:
    lines = [b"GET / HTTP/1.1\r\nHost: a\r\n"]
    total = len(lines[0])
    i = 0
    while total < size:
        line = b"X-%d: v\r\n" % i
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines) + b"\r\n"


def test_60k_head_of_short_headers_is_fast() -> None:
    data = many_headers_head(60 * 1024)
    result: list = []
    elapsed = cpu_time(lambda: result.append(first_event(data, MANY_HEADERS_LIMITS)))
    assert isinstance(result[0], RequestHead) and len(result[0].headers) > 5000
    assert elapsed < 2.0


def _feed_bytewise_until_head(data: bytes, limits: Config, budget: float = 10.0):
    """Feed one byte at a time; give up (return None) once ``budget`` CPU seconds pass."""
    parser = RequestParser(limits)
    start = time.process_time()
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        event = parser.next_event()
        if event is not NEED_DATA:
            return event
        if i % 1024 == 0 and time.process_time() - start > budget:
            return None
    return None


def test_60k_head_one_byte_at_a_time_finishes() -> None:
    data = many_headers_head(60 * 1024)
    result: list = []
    elapsed = cpu_time(
        lambda: result.append(_feed_bytewise_until_head(data, MANY_HEADERS_LIMITS, budget=2.0))
    )
    assert isinstance(result[0], RequestHead)
    assert elapsed < 2.0


def _best_cpu_time(func: Callable[[], object], repeat: int = 3) -> float:
    return min(cpu_time(func) for _ in range(repeat))


def test_head_one_byte_at_a_time_scales_linearly() -> None:
    limits = Config(max_headers=100_000, max_header_size=1 << 20)
    small, large = many_headers_head(4 * 1024), many_headers_head(32 * 1024)
    t_small = _best_cpu_time(lambda: _feed_bytewise_until_head(small, limits))
    t_large = _best_cpu_time(lambda: _feed_bytewise_until_head(large, limits))
    # 8x the bytes: linear is ~8x the time, quadratic ~64x.
    assert t_large < 20 * max(t_small, 1e-4), (t_small, t_large)


def _feed_trailer_bytewise(trailer: bytes, limits: Config) -> object:
    parser = RequestParser(limits)
    parser.feed(CHUNKED_HEAD + b"0\r\n")
    assert isinstance(parser.next_event(), RequestHead)
    event = None
    for i in range(len(trailer)):
        parser.feed(trailer[i : i + 1])
        event = parser.next_event()
    return event


def test_trailer_one_byte_at_a_time_scales_linearly() -> None:
    limits = Config(max_header_size=1 << 20, max_header_line=1 << 20)

    def trailer(n: int) -> bytes:
        return b"X: " + b"t" * n + b"\r\n\r\n"

    small, large = trailer(4 * 1024), trailer(32 * 1024)
    assert isinstance(_feed_trailer_bytewise(small, limits), EndOfMessage)
    t_small = _best_cpu_time(lambda: _feed_trailer_bytewise(small, limits))
    t_large = _best_cpu_time(lambda: _feed_trailer_bytewise(large, limits))
    assert t_large < 20 * max(t_small, 1e-4), (t_small, t_large)


def test_200k_one_byte_chunks_in_64k_pieces_is_fast() -> None:
    count = 200_000
    data = CHUNKED_HEAD + b"1\r\nx\r\n" * count + LAST_CHUNK
    received = 0
    chunks = 0

    def run() -> None:
        nonlocal received, chunks
        parser = RequestParser()
        for i in range(0, len(data), 65536):
            parser.feed(data[i : i + 65536])
            while True:
                event = parser.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if type(event) is bytes:
                    received += len(event)
                    chunks += 1
        assert parser.paused

    elapsed = cpu_time(run)
    assert received == count and chunks == count
    assert elapsed < 2.0


def test_large_content_length_body_in_small_pieces_is_fast() -> None:
    size = 4 * 1024 * 1024
    data = post(b"Content-Length: %d\r\n" % size, b"z" * size)
    received = 0

    def run() -> None:
        nonlocal received
        parser = RequestParser()
        for i in range(0, len(data), 1000):
            parser.feed(data[i : i + 1000])
            while True:
                event = parser.next_event()
                if event is NEED_DATA or event is PAUSED:
                    break
                if type(event) is bytes:
                    received += len(event)

    assert cpu_time(run) < 2.0
    assert received == size


def test_10k_pipelined_requests_are_fast() -> None:
    data = req(b"GET /x HTTP/1.1") * 10_000
    result: list = []
    elapsed = cpu_time(lambda: result.append(parse(data)))
    assert result[0].count(PAUSE) == 10_000
    assert elapsed < 2.0
