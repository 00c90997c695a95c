"""Unit tests of the request grammar checks (prefork.worker.http1_grammar).

Four classes of input, each refused with 400 (and the parser failed, so the
connection is closed), fed whole, split at every byte boundary and one byte
at a time:

1. bytes that cannot begin a request line (a TLS ClientHello, binary, a line
   of text), refused before any CRLF arrives;
2. more than MAX_EMPTY_LINES empty lines before a request line;
3. request-target forms that do not go with the method, and Host values
   that are not ``uri-host [ ":" port ]``;
4. chunk size lines with whitespace not before a ``;``, or an extension
   that is not ``name [ = token / quoted-string ]``.

And the inputs next to them that must stay valid.
"""

from __future__ import annotations

import ssl

import pytest

from prefork.worker.http1 import NEED_DATA, PAUSED, ProtocolError, RequestHead, RequestParser
from prefork.worker.http1_grammar import MAX_EMPTY_LINES, MAX_METHOD
from tests.unit.test_http1 import (
    _best_cpu_time,
    chunked,
    parse,
    parse_pieces,
    parse_requests,
    req,
)


def tls_client_hello() -> bytes:
    """The first flight of a real TLS client (what a browser sends to https://)."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="example.com")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def assert_refused_everywhere(data: bytes, status: int = 400) -> None:
    """``status`` whole, at every split into two, and one byte at a time."""
    for offset in range(len(data)):  # 0: whole
        with pytest.raises(ProtocolError) as info:
            parse(data, [offset] if offset else [])
        assert info.value.status == status, (offset, info.value)
    with pytest.raises(ProtocolError) as info:
        parse_pieces(data[i : i + 1] for i in range(len(data)))
    assert info.value.status == status, info.value


def refused_at(data: bytes) -> int:
    """Feeding ``data`` one byte at a time: how many bytes until the 400."""
    parser = RequestParser()
    for i in range(len(data)):
        parser.feed(data[i : i + 1])
        try:
            while (event := parser.next_event()) is not NEED_DATA:
                if event is PAUSED:
                    parser.start_next_cycle()
        except ProtocolError as error:
            assert error.status == 400, error
            return i + 1
    raise AssertionError(f"{data!r} was not refused")


def accepted_everywhere(data: bytes) -> list:
    """The events of ``data``, the same whole, at every split and bytewise."""
    whole = parse(data)
    for offset in range(1, len(data)):
        assert parse(data, [offset]) == whole, offset
    assert parse_pieces(data[i : i + 1] for i in range(len(data))) == whole
    return whole


# -- 1. bytes that cannot begin a request ----------------------------------------------

# (id, bytes with no CRLF, refused after at most this many bytes)
CANNOT_BEGIN: list[tuple[str, bytes, int]] = [
    ("tls-client-hello", tls_client_hello(), 1),
    ("tls-record-header", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 1),
    ("nul", b"\x00\x00\x00\x00", 1),
    ("binary-high", b"\x80\x81GET / HTTP/1.1", 1),
    ("ssh-then-binary", b"SSH-2.0-x\x00\x01", 10),
    ("json", b'{"jsonrpc": "2.0", "method": "x"}', 1),
    ("leading-space", b" GET / HTTP/1.1", 1),
    ("text-no-spaces", b"Thisisalineoftextwithoutanyspacesinit" * 2, MAX_METHOD + 1),
    ("method-33-tchars", b"A" * 40 + b" / HTTP/1.1", MAX_METHOD + 1),
    ("text-with-spaces", b"hello world, this is text", len(b"hello world, t")),
    ("third-space", b"GET /a b HTTP/1.1", len(b"GET /a b H")),
    ("method-paren", b"GE(T / HTTP/1.1", 3),
    ("method-tab", b"GET\t/ HTTP/1.1", 4),
    ("empty-target", b"GET  / HTTP/1.1", 5),
    ("target-ctl", b"GET /a\x01b HTTP/1.1", 7),
    ("target-non-ascii", b"GET /caf\xc3\xa9 HTTP/1.1", 9),
    ("target-del", b"GET /\x7f HTTP/1.1", 6),
    ("bare-cr-in-line", b"GET /\rx HTTP/1.1", 7),
    ("version-https", b"GET / HTTPS/1.1", 11),
    ("version-ftp", b"GET / FTP/1.0", 7),
    ("version-suffix", b"GET / HTTP/1.1x", 15),
    ("version-letter", b"GET / HTTP/x.1", 12),
    ("version-trailing-space", b"GET / HTTP/1.1 ", 15),
]
CANNOT_BEGIN_IDS = [case[0] for case in CANNOT_BEGIN]


@pytest.mark.parametrize(("data", "within"), [c[1:] for c in CANNOT_BEGIN], ids=CANNOT_BEGIN_IDS)
def test_cannot_begin_a_request_refused_before_any_crlf(data: bytes, within: int) -> None:
    assert b"\r\n" not in data[:within]
    assert refused_at(data) <= within
    assert_refused_everywhere(data)


@pytest.mark.parametrize(("data", "within"), [c[1:] for c in CANNOT_BEGIN], ids=CANNOT_BEGIN_IDS)
def test_cannot_begin_a_request_refused_as_a_whole_head_too(data: bytes, within: int) -> None:
    # What the incremental check refuses, the whole-head parse refuses too.
    assert_refused_everywhere(data + b"\r\nHost: a\r\n\r\n")


def test_tls_handshake_is_named_in_the_reason() -> None:
    with pytest.raises(ProtocolError) as info:
        parse(tls_client_hello())
    assert "TLS" in info.value.reason


def test_cannot_begin_after_a_valid_pipelined_request() -> None:
    data = req() + tls_client_hello()
    assert refused_at(data) <= len(req()) + 1


# Complete request lines that are not one: refused at their CRLF, not later.
LINE_REFUSED_AT_CRLF = [
    b"SSH-2.0-OpenSSH_9.6",
    b"GET",
    b"GET /",
    b"GET / ",
    b"GET / HTTP/1.",
]


@pytest.mark.parametrize("line", LINE_REFUSED_AT_CRLF)
def test_impossible_request_line_refused_at_its_crlf(line: bytes) -> None:
    data = line + b"\r\nHost: a\r\n\r\n"
    assert refused_at(data) <= len(line) + 2
    assert_refused_everywhere(data)


@pytest.mark.parametrize(
    "prefix",
    [
        b"G",
        b"GET",
        b"GET ",
        b"GET /",
        b"GET /a/b?c=d HTTP",
        b"GET / HTTP/1.1",
        b"GET / HTTP/1.1\r",
        b"PROPFIND /x HTTP/1.",
        b"A" * MAX_METHOD + b" ",
        b"GET http://example.com/ HTTP/1",
        b"GET /" + b"a" * 1000,
        b"\r\n\r",
    ],
)
def test_possible_request_line_prefixes_wait_for_more(prefix: bytes) -> None:
    parser = RequestParser()
    for i in range(len(prefix)):
        parser.feed(prefix[i : i + 1])
        assert parser.next_event() is NEED_DATA


def test_method_of_max_length_accepted_one_longer_refused() -> None:
    [request] = parse_requests(req(b"A" * MAX_METHOD + b" / HTTP/1.1"))
    assert request.head.method == "A" * MAX_METHOD
    assert_refused_everywhere(req(b"A" * (MAX_METHOD + 1) + b" / HTTP/1.1"))


def test_long_target_trickled_in_is_linear() -> None:
    # The incremental check looks at each byte once (plus a bounded window).
    def feed(size: int) -> None:
        data = b"GET /" + b"a" * size
        parser = RequestParser()
        for i in range(len(data)):
            parser.feed(data[i : i + 1])
            parser.next_event()

    t_small = _best_cpu_time(lambda: feed(1000))
    t_large = _best_cpu_time(lambda: feed(8000))
    assert t_large < 20 * max(t_small, 1e-4), (t_small, t_large)


# -- 2. empty lines before the request line --------------------------------------------

GET = req()


@pytest.mark.parametrize("count", range(1, MAX_EMPTY_LINES + 1))
def test_up_to_max_empty_lines_ignored(count: int) -> None:
    events = accepted_everywhere(b"\r\n" * count + GET)
    assert [type(e).__name__ for e in events] == ["Head", "str"]


def test_one_empty_line_more_refused() -> None:
    assert_refused_everywhere(b"\r\n" * (MAX_EMPTY_LINES + 1) + GET)


def test_empty_lines_alone_refused_without_waiting_for_a_request() -> None:
    assert refused_at(b"\r\n" * (MAX_EMPTY_LINES + 1)) == 2 * (MAX_EMPTY_LINES + 1)


def test_empty_lines_counted_across_reads() -> None:
    parser = RequestParser()
    for _ in range(MAX_EMPTY_LINES):
        parser.feed(b"\r\n")
        assert parser.next_event() is NEED_DATA
        assert parser.waiting_for_head and not parser.started
    parser.feed(b"\r\n")
    with pytest.raises(ProtocolError) as info:
        parser.next_event()
    assert info.value.status == 400


def test_empty_lines_counted_per_request() -> None:
    data = (b"\r\n" * MAX_EMPTY_LINES + GET) * 3
    assert len(parse_requests(data)) == 3
    accepted_everywhere(data)
    assert_refused_everywhere(GET + b"\r\n" * (MAX_EMPTY_LINES + 1) + GET)


# -- 3. request target and Host --------------------------------------------------------

TARGET_REFUSED = [
    ("origin-no-slash", b"GET foo HTTP/1.1"),
    ("origin-query-only", b"GET ?a=b HTTP/1.1"),
    ("authority-form-with-get", b"GET example.com:80 HTTP/1.1"),
    ("asterisk-with-get", b"GET * HTTP/1.1"),
    ("asterisk-with-post", b"POST * HTTP/1.1"),
    ("asterisk-twice", b"OPTIONS ** HTTP/1.1"),
    ("absolute-empty-host", b"GET http:///x HTTP/1.1"),
    ("absolute-nothing", b"GET http:// HTTP/1.1"),
    ("absolute-userinfo", b"GET http://user@example.com/ HTTP/1.1"),
    ("absolute-userinfo-password", b"GET http://u:p@example.com/ HTTP/1.1"),
    ("absolute-userinfo-empty", b"GET http://@example.com/ HTTP/1.1"),
    ("absolute-bad-port", b"GET http://example.com:8o/ HTTP/1.1"),
    ("absolute-empty-host-port", b"GET http://:80/ HTTP/1.1"),
    ("absolute-no-slashes", b"GET http:example.com HTTP/1.1"),
    ("absolute-scheme-digit", b"GET 1http://example.com/ HTTP/1.1"),
    ("absolute-bad-ipv6", b"GET http://[::g]/ HTTP/1.1"),
    ("connect-origin-form", b"CONNECT / HTTP/1.1"),
    ("connect-asterisk", b"CONNECT * HTTP/1.1"),
    ("connect-absolute-form", b"CONNECT http://example.com:443/ HTTP/1.1"),
    ("connect-no-port", b"CONNECT example.com HTTP/1.1"),
    ("connect-empty-port", b"CONNECT example.com: HTTP/1.1"),
    ("connect-port-0", b"CONNECT example.com:0 HTTP/1.1"),
    ("connect-port-65536", b"CONNECT example.com:65536 HTTP/1.1"),
    ("connect-empty-host", b"CONNECT :443 HTTP/1.1"),
    ("connect-userinfo", b"CONNECT u@example.com:443 HTTP/1.1"),
]

HOST_REFUSED = [
    ("port-letters", b"a:b"),
    ("port-mixed", b"a:80x"),
    ("two-ports", b"a:80:80"),
    ("empty-host-with-port", b":80"),
    ("ipv6-unbracketed", b"::1"),
    ("ipv6-unclosed", b"[::1"),
    ("ipv6-bad", b"[::g]"),
    ("ipv6-too-many-groups", b"[1:2:3:4:5:6:7:8:9]"),
    ("ipv6-then-junk", b"[::1]x"),
    ("ipv6-zone", b"[fe80::1%25eth0]"),
    ("bracket-in-name", b"a[b]"),
    ("pct-not-hex", b"a%zz"),
    ("pct-short", b"a%4"),
    ("userinfo", b"u@a"),
    ("comma", b"a,b"),
]


@pytest.mark.parametrize("line", [c[1] for c in TARGET_REFUSED], ids=[c[0] for c in TARGET_REFUSED])
def test_target_form_refused(line: bytes) -> None:
    assert_refused_everywhere(req(line, b"Host: example.com\r\n"))


@pytest.mark.parametrize("host", [c[1] for c in HOST_REFUSED], ids=[c[0] for c in HOST_REFUSED])
def test_invalid_host_refused(host: bytes) -> None:
    assert_refused_everywhere(req(headers=b"Host: " + host + b"\r\n"))
    assert_refused_everywhere(req(b"GET / HTTP/1.0", b"Host: " + host + b"\r\n"))


TARGET_ACCEPTED = [
    (b"OPTIONS * HTTP/1.1", "OPTIONS", "*"),
    (b"GET http://example.com/x HTTP/1.1", "GET", "http://example.com/x"),
    (b"GET http://example.com HTTP/1.1", "GET", "http://example.com"),
    (b"GET https://example.com:8443?q=1 HTTP/1.1", "GET", "https://example.com:8443?q=1"),
    (b"GET http://example.com:/ HTTP/1.1", "GET", "http://example.com:/"),
    (b"POST http://[::1]:8080/p HTTP/1.1", "POST", "http://[::1]:8080/p"),
    (b"OPTIONS http://a.b/ HTTP/1.1", "OPTIONS", "http://a.b/"),
    (b"GET HTTP://EXAMPLE.COM/ HTTP/1.1", "GET", "HTTP://EXAMPLE.COM/"),
    (b"CONNECT example.com:443 HTTP/1.1", "CONNECT", "example.com:443"),
    (b"CONNECT [2001:db8::1]:443 HTTP/1.1", "CONNECT", "[2001:db8::1]:443"),
    (b"CONNECT 127.0.0.1:65535 HTTP/1.1", "CONNECT", "127.0.0.1:65535"),
    (b"GET /a*b HTTP/1.1", "GET", "/a*b"),
    (b"GET //x HTTP/1.1", "GET", "//x"),
]


@pytest.mark.parametrize(("line", "method", "target"), TARGET_ACCEPTED)
def test_target_form_accepted(line: bytes, method: str, target: str) -> None:
    events = accepted_everywhere(req(line, b"Host: example.com\r\n"))
    assert (events[0].method, events[0].target) == (method, target)


@pytest.mark.parametrize(
    "host",
    [
        b"",
        b"example.com",
        b"example.com:8080",
        b"example.com:",  # an empty port: RFC 3986 3.2.3 allows it (the default port)
        b"127.0.0.1:80",
        b"[::1]",
        b"[::1]:8080",
        b"[2001:db8::ff00:42:8329]:443",
        b"[::ffff:192.0.2.1]",
        b"[v1.fe80::a+en1]",
        b"a%41b",
        b"xn--nxasmq6b.example",
        b"a_b~c!$&'()*+;=",
        b"EXAMPLE.com:00080",
    ],
)
def test_valid_host_accepted(host: bytes) -> None:
    events = accepted_everywhere(req(headers=b"Host: " + host + b"\r\n"))
    assert events[0].headers == (("Host", host.decode()),)


def test_host_value_is_stripped_before_the_check() -> None:
    [request] = parse_requests(req(headers=b"Host: \t[::1]:8080 \r\n"))
    assert request.head.headers == (("Host", "[::1]:8080"),)


def test_connect_reaches_the_application_as_before() -> None:
    # prefork does not tunnel: a well-formed CONNECT is a request like any
    # other, for the application to answer (405, usually).
    parser = RequestParser()
    parser.feed(req(b"CONNECT example.com:443 HTTP/1.1", b"Host: example.com:443\r\n"))
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.has_body) == ("CONNECT", "example.com:443", False)


def test_http2_preface_is_505_not_a_target_error() -> None:
    with pytest.raises(ProtocolError) as info:
        parse(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    assert info.value.status == 505


# -- 4. chunk size lines ---------------------------------------------------------------

CHUNK_REFUSED = [
    ("space-after-size", b"5 \r\nhello\r\n0\r\n\r\n"),
    ("tab-after-size", b"5\t\r\nhello\r\n0\r\n\r\n"),
    ("space-after-last-chunk", b"5\r\nhello\r\n0 \r\n\r\n"),
    ("ext-no-name", b"5;\r\nhello\r\n0\r\n\r\n"),
    ("ext-no-name-bws", b"5 ; \r\nhello\r\n0\r\n\r\n"),
    ("ext-space-no-name", b"5; \r\nhello\r\n0\r\n\r\n"),
    ("ext-only-value", b"5;=x\r\nhello\r\n0\r\n\r\n"),
    ("ext-empty-value", b"5;a=\r\nhello\r\n0\r\n\r\n"),
    ("ext-value-two-words", b"5;a=b c\r\nhello\r\n0\r\n\r\n"),
    ("ext-name-two-words", b"5;a b\r\nhello\r\n0\r\n\r\n"),
    ("ext-name-not-token", b"5;a@b\r\nhello\r\n0\r\n\r\n"),
    ("ext-value-not-token", b"5;a=b@c\r\nhello\r\n0\r\n\r\n"),
    ("ext-quoted-unterminated", b'5;a="x\r\nhello\r\n0\r\n\r\n'),
    ("ext-quoted-then-junk", b'5;a="x"y\r\nhello\r\n0\r\n\r\n'),
    ("ext-quoted-escaped-end", b'5;a="x\\"\r\nhello\r\n0\r\n\r\n'),
    ("ext-trailing-semicolon", b"5;a;\r\nhello\r\n0\r\n\r\n"),
    ("ext-nul-in-quoted", b'5;a="\x00"\r\nhello\r\n0\r\n\r\n'),
    ("ext-on-last-chunk-no-name", b"5\r\nhello\r\n0;\r\n\r\n"),
]

CHUNK_ACCEPTED = [
    b"5;ext=val\r\nhello\r\n0\r\n\r\n",
    b"5 ;ext\r\nhello\r\n0\r\n\r\n",
    b"5\t;ext\r\nhello\r\n0\r\n\r\n",
    b"5 ; a = b ; c\r\nhello\r\n0\r\n\r\n",
    b'5;a;b=c;d="e f"\r\nhello\r\n0\r\n\r\n',
    b'5;a="q \\" s"\r\nhello\r\n0\r\n\r\n',
    b'5;a=""\r\nhello\r\n0\r\n\r\n',
    b'5;a="caf\xe9\t"\r\nhello\r\n0;last=1\r\n\r\n',
    b"0005;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nhello\r\n0\r\n\r\n",
]


@pytest.mark.parametrize("body", [c[1] for c in CHUNK_REFUSED], ids=[c[0] for c in CHUNK_REFUSED])
def test_chunk_line_refused(body: bytes) -> None:
    assert_refused_everywhere(chunked(body))


@pytest.mark.parametrize("body", CHUNK_ACCEPTED)
def test_chunk_line_accepted(body: bytes) -> None:
    events = accepted_everywhere(chunked(body))
    assert events[1] == b"hello"
