"""Unit tests for prefork.worker.response, the response side of the protocol core.

Values and plain bytes in, bytes and decisions out: no sockets, no event loop.
The connection calls exactly these functions (``frame_raw`` +
``body_complete`` for a raw response, ``frame_response`` + ``encode_chunk`` +
``LAST_CHUNK`` for a framed one), so what is tested here is what goes on the
wire.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

import prefork.worker.response as response_module
from prefork.worker.response import (
    LAST_CHUNK,
    MAX_RAW_HEAD,
    REASONS,
    FramedResponse,
    ResponseHead,
    body_complete,
    bodyless,
    build_response_head,
    connection_options,
    encode_chunk,
    error_response,
    frame_raw,
    frame_response,
)

# -- helpers ---------------------------------------------------------------------

OK_CL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
UNFRAMED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def raw(
    head_bytes: bytes,
    method: str = "GET",
    version: str = "HTTP/1.1",
    keep_alive: bool = True,
    body: bytes = b"",
) -> tuple[bytes, bool, int | None, bool]:
    """frame_raw() for a first write of ``head_bytes + body``, without the head it read."""
    framed = frame_raw(head_bytes + body, method, version, keep_alive)
    assert framed is not None
    data, _, keep_alive, expected, chunked = framed
    return data, keep_alive, expected, chunked


def inspect_response_head(data: bytes | bytearray) -> ResponseHead | None:
    """What frame_raw() read of the head (None: not complete yet)."""
    framed = frame_raw(data, "GET", "HTTP/1.1", True)
    return None if framed is None else framed[1]


def framed(
    status: int = 200,
    headers: list[tuple[str, str]] | None = None,
    body: bytes | None = b"hello",
    method: str = "GET",
    version: str = "HTTP/1.1",
    keep_alive: bool = True,
    reason: str | None = None,
) -> FramedResponse:
    return frame_response(status, reason, headers or [], method, version, keep_alive, body)


def head_fields(head: bytes) -> list[tuple[str, str]]:
    """The header lines of a serialized head, as (lowercased name, value)."""
    assert head.endswith(b"\r\n\r\n")
    lines = head[:-4].decode("latin-1").split("\r\n")[1:]
    return [(name.lower(), value.strip()) for name, _, value in (x.partition(":") for x in lines)]


def field(head: bytes, name: str) -> list[str]:
    return [value for n, value in head_fields(head) if n == name.lower()]


# -- purity ----------------------------------------------------------------------


def test_module_is_pure() -> None:
    """No socket, event loop, clock or TLS: the module is tested with plain bytes."""
    tree = ast.parse(Path(response_module.__file__).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            imported.add(node.module)
    top_level = {name.split(".")[0] for name in imported}
    forbidden = {"asyncio", "socket", "time", "ssl", "selectors", "threading", "uvloop"}
    assert not top_level & forbidden, imported
    # Within prefork, only the protocol core's own layer.
    assert {name for name in imported if name.startswith("prefork")} <= {"prefork.worker.http1"}


# -- no body allowed ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [
        ("HEAD", 200, True),
        ("HEAD", 404, True),
        ("GET", 100, True),
        ("GET", 101, True),
        ("GET", 103, True),
        ("GET", 199, True),
        ("GET", 200, False),
        ("GET", 203, False),
        ("GET", 204, True),
        ("POST", 204, True),
        ("GET", 205, False),
        ("GET", 303, False),
        ("GET", 304, True),
        ("GET", 305, False),
        ("GET", 500, False),
        ("GET", 0, False),  # no readable status line: nothing is known
        ("head", 200, False),  # methods are case-sensitive
    ],
)
def test_bodyless(method: str, status: int, expected: bool) -> None:
    assert bodyless(method, status) is expected


# -- Connection header tokens -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("close", (True, False)),
        ("Close", (True, False)),
        ("CLOSE", (True, False)),
        (" close ", (True, False)),
        ("close, upgrade", (True, False)),
        ("Upgrade,Close", (True, False)),
        ("upgrade, \tclose", (True, False)),
        ("keep-alive", (False, True)),
        ("Keep-Alive", (False, True)),
        ("keep-alive, close", (True, True)),
        ("closed", (False, False)),
        ("x-close", (False, False)),
        ("te", (False, False)),
        ("", (False, False)),
        (",,", (False, False)),
    ],
)
def test_connection_options(value: str, expected: tuple[bool, bool]) -> None:
    assert connection_options(value) == expected


# -- inspecting a raw head -----------------------------------------------------------


def test_inspect_content_length_response() -> None:
    head_bytes = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    head = inspect_response_head(head_bytes + b"hello")
    assert head is not None
    assert (head.status, head.content_length, head.chunked) == (200, 5, False)
    assert (head.close, head.keep_alive) == (False, False)
    assert head.length == len(head_bytes)


def test_inspect_accepts_bytearray_and_http10_and_no_reason() -> None:
    head = inspect_response_head(bytearray(b"HTTP/1.0 404\r\nContent-Length: 0\r\n\r\n"))
    assert head is not None and head.status == 404 and head.content_length == 0


def test_inspect_chunked_response() -> None:
    head = inspect_response_head(CHUNKED)
    assert head is not None and head.chunked and head.content_length is None
    head = inspect_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n")
    assert head is not None and head.chunked
    # chunked wins over a Content-Length (RFC 9112 6.3)
    head = inspect_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert head is not None and head.chunked and head.content_length is None


UNFRAMED_HEADS = {
    "no-framing": b"HTTP/1.1 200 OK\r\n\r\n",
    "x-content-length": b"HTTP/1.1 200 OK\r\nX-Content-Length: 5\r\n\r\n",
    "content-length-x": b"HTTP/1.1 200 OK\r\nContent-Length-X: 5\r\n\r\n",
    "cl-not-digits": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
    "cl-negative": b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    "cl-plus": b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
    "cl-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "cl-list-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n",
    "te-gzip": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    "te-chunked-not-last": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
}


@pytest.mark.parametrize("raw_head", UNFRAMED_HEADS.values(), ids=UNFRAMED_HEADS.keys())
def test_inspect_unframed_response(raw_head: bytes) -> None:
    head = inspect_response_head(raw_head)
    assert head is not None and head.status == 200
    assert not head.chunked and head.content_length is None


@pytest.mark.parametrize("raw_head", UNFRAMED_HEADS.values(), ids=UNFRAMED_HEADS.keys())
def test_unframed_response_closes_the_connection(raw_head: bytes) -> None:
    data, keep_alive, expected, chunked = raw(raw_head, body=b"body")
    assert not keep_alive and expected is None and not chunked
    assert data.endswith(b"\r\nConnection: close\r\n\r\nbody")


def test_inspect_duplicate_equal_content_length_is_framed() -> None:
    head = inspect_response_head(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n"
    )
    assert head is not None and head.content_length == 5


def test_inspect_header_names_case_insensitive_and_bws() -> None:
    head = inspect_response_head(b"HTTP/1.1 200 OK\r\nCONTENT-LENGTH :  7 \r\n\r\n")
    assert head is not None and head.content_length == 7


@pytest.mark.parametrize(
    ("connection", "close", "keep_alive"),
    [
        (b"close", True, False),
        (b"Close", True, False),
        (b"keep-alive", False, True),
        (b"Keep-Alive", False, True),
        (b"upgrade, close", True, False),
        (b"close, upgrade", True, False),
        (b"CLOSE,Upgrade", True, False),
        (b"closed", False, False),
        (b"te", False, False),
    ],
)
def test_inspect_connection_tokens(connection: bytes, close: bool, keep_alive: bool) -> None:
    head = inspect_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: " + connection + b"\r\nContent-Length: 0\r\n\r\n"
    )
    assert head is not None
    assert (head.close, head.keep_alive) == (close, keep_alive)


def test_inspect_connection_tokens_over_several_lines() -> None:
    head = inspect_response_head(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nConnection: upgrade, close\r\n\r\n"
    )
    assert head is not None and head.close and head.keep_alive


@pytest.mark.parametrize(
    "partial",
    [
        b"",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",
        b"HTTP/1.1 200 OK\r\n\r",
        b"HTTP/1.1 200 OK\r\nX: " + b"x" * (MAX_RAW_HEAD - 24),
    ],
    ids=["empty", "status-line", "one-header", "cr", "at-the-size-limit"],
)
def test_inspect_incomplete_head_is_none(partial: bytes) -> None:
    assert len(partial) <= MAX_RAW_HEAD
    assert inspect_response_head(partial) is None


@pytest.mark.parametrize("kind", [bytes, bytearray])
def test_inspect_head_not_ended_within_the_limit_is_unframed(kind: type) -> None:
    data = kind(b"HTTP/1.1 200 OK\r\nX: " + b"x" * MAX_RAW_HEAD)
    head = inspect_response_head(data)
    assert head is not None
    assert (head.status, head.close, head.length) == (0, True, 0)
    # It goes out as written, and the connection closes after it.
    assert frame_raw(data, "GET", "HTTP/1.1", True) == (bytes(data), head, False, None, False)


@pytest.mark.parametrize(
    "raw_head",
    [b"garbage\r\n\r\n", b"HTTP/1.1 2000 OK\r\n\r\n", b"HTTP/2 200 OK\r\n\r\n", b"\r\n\r\n"],
    ids=["garbage", "four-digit-status", "http2", "empty"],
)
def test_inspect_garbage_is_closing(raw_head: bytes) -> None:
    head = inspect_response_head(raw_head)
    assert head is not None
    assert head.status == 0 and head.close and head.length == len(raw_head)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_garbage_goes_out_untouched_and_closes(method: str) -> None:
    assert raw(b"garbage\r\n\r\n", method, body=b"x") == (b"garbage\r\n\r\nx", False, None, False)


def test_inspect_caches_heads() -> None:
    first = inspect_response_head(OK_CL + b"hello")
    again = inspect_response_head(bytearray(OK_CL + b"world"))
    assert first is not None and first is again  # read once, shared (read-only)


def test_inspect_reads_a_long_head_without_caching_it() -> None:
    long_head = b"HTTP/1.1 200 OK\r\nX-Pad: " + b"p" * 2000 + b"\r\nContent-Length: 3\r\n\r\n"
    first = inspect_response_head(long_head + b"abc")
    second = inspect_response_head(long_head + b"abc")
    assert first is not None and second is not None and first is not second
    assert first.content_length == 3 and first.length == len(long_head)


def test_inspect_cache_is_bounded() -> None:
    for i in range(response_module._RESPONSE_HEADS_MAX * 2 + 10):
        inspect_response_head(b"HTTP/1.1 200 OK\r\nX-Id: %d\r\n\r\n" % i)
    assert len(response_module._RESPONSE_HEADS) <= response_module._RESPONSE_HEADS_MAX


# -- deciding a raw response ---------------------------------------------------------


def test_framed_http11_keep_alive_goes_out_untouched() -> None:
    assert raw(OK_CL, body=b"hello") == (OK_CL + b"hello", True, 5, False)


def test_chunked_response_keeps_alive_and_must_end_with_the_last_chunk() -> None:
    assert raw(CHUNKED, body=b"5\r\nhello\r\n") == (CHUNKED + b"5\r\nhello\r\n", True, None, True)


@pytest.mark.parametrize("status", [100, 101, 103, 199])
def test_an_interim_head_passes_what_follows_as_sent(status: int) -> None:
    # (what follows a 1xx is the application's next head: no length to hold it to)
    head_bytes = b"HTTP/1.1 %d X\r\n\r\n" % status
    assert raw(head_bytes) == (head_bytes, True, None, False)


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_is_framed_with_no_room_for_a_body(status: int) -> None:
    head_bytes = b"HTTP/1.1 %d X\r\n\r\n" % status
    assert raw(head_bytes) == (head_bytes, True, 0, False)


@pytest.mark.parametrize("status", [200, 205, 404])
def test_status_with_a_body_and_no_length_is_unframed(status: int) -> None:
    _, keep_alive, _, _ = raw(b"HTTP/1.1 %d X\r\n\r\n" % status)
    assert not keep_alive


@pytest.mark.parametrize("head_bytes", [UNFRAMED, OK_CL, CHUNKED])
def test_answer_to_head_is_framed_and_expects_no_body(head_bytes: bytes) -> None:
    # Whatever the head promises, no body follows a HEAD answer.
    assert raw(head_bytes, "HEAD") == (head_bytes, True, 0, False)


@pytest.mark.parametrize("status", [204, 304])
def test_bodyless_status_ignores_its_content_length(status: int) -> None:
    head_bytes = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status
    assert raw(head_bytes) == (head_bytes, True, 0, False)


@pytest.mark.parametrize("method", ["GET", "POST", "HEAD", "OPTIONS", "PATCH"])
@pytest.mark.parametrize("status", [100, 101, 200, 204, 205, 304, 404])
def test_raw_no_body_is_the_bodyless_rule(method: str, status: int) -> None:
    head_bytes = b"HTTP/1.1 %d X\r\nContent-Length: 3\r\n\r\n" % status
    _, keep_alive, expected, _ = raw(head_bytes, method, body=b"abc")
    assert keep_alive
    if status < 200:
        assert expected is None  # interim: what follows is passed on
    else:
        assert (expected == 0) == bodyless(method, status)


def test_head_written_in_pieces_goes_out_as_bytes() -> None:
    # The connection gathers a head written in pieces in a bytearray.
    assert frame_raw(bytearray(OK_CL[:20]), "GET", "HTTP/1.1", True) is None
    framed = frame_raw(bytearray(OK_CL + b"hello"), "GET", "HTTP/1.1", True)
    assert framed is not None
    data, head, keep_alive, expected, chunked = framed
    assert type(data) is bytes and data == OK_CL + b"hello"
    assert (head.status, head.length, keep_alive, expected, chunked) == (
        200,
        len(OK_CL),
        True,
        5,
        False,
    )


def test_close_added_when_the_server_will_close_and_the_head_does_not_say() -> None:
    # The request asked for close, the server drains, or keep-alive is off:
    # all reach frame_raw as keep_alive=False.
    data, keep_alive, expected, _ = raw(OK_CL, keep_alive=False, body=b"hello")
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    assert not keep_alive and expected == 5


@pytest.mark.parametrize("token", [b"close", b"Close", b"close, upgrade", b"Upgrade, CLOSE"])
@pytest.mark.parametrize("keep_alive", [True, False])
def test_application_close_closes_and_is_not_repeated(token: bytes, keep_alive: bool) -> None:
    head_bytes = b"HTTP/1.1 200 OK\r\nConnection: " + token + b"\r\nContent-Length: 0\r\n\r\n"
    assert raw(head_bytes, keep_alive=keep_alive) == (head_bytes, False, 0, False)


def test_closed_is_not_close() -> None:
    head_bytes = b"HTTP/1.1 200 OK\r\nConnection: closed\r\nContent-Length: 0\r\n\r\n"
    assert raw(head_bytes)[1]


def test_http10_keep_alive_is_said() -> None:
    head_bytes = b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\n"
    data, keep_alive, expected, _ = raw(head_bytes, version="HTTP/1.0", body=b"hello")
    assert data == b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello"
    assert keep_alive and expected == 5


@pytest.mark.parametrize("token", [b"keep-alive", b"Keep-Alive", b"KEEP-ALIVE, foo"])
def test_http10_keep_alive_said_by_the_application_is_not_repeated(token: bytes) -> None:
    head_bytes = b"HTTP/1.0 200 OK\r\nConnection: " + token + b"\r\nContent-Length: 0\r\n\r\n"
    assert raw(head_bytes, version="HTTP/1.0") == (head_bytes, True, 0, False)


def test_http10_without_keep_alive_closes() -> None:
    data, keep_alive, _, _ = raw(OK_CL, version="HTTP/1.0", keep_alive=False)
    assert data == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n"
    assert not keep_alive


def test_http10_unframed_closes() -> None:
    data, keep_alive, _, _ = raw(UNFRAMED, version="HTTP/1.0")
    assert not keep_alive and field(data, "Connection") == ["close"]


def test_http11_keep_alive_is_not_said() -> None:
    # Persistence is the HTTP/1.1 default: nothing to add.
    data, keep_alive, _, _ = raw(OK_CL)
    assert keep_alive and data == OK_CL


def test_the_header_is_added_inside_the_head_of_a_first_write_with_body() -> None:
    body = b"\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"  # body bytes that look like a head
    head_bytes = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    data, _, _, _ = raw(head_bytes, keep_alive=False, body=body)
    assert data.endswith(b"\r\nConnection: close\r\n\r\n" + body)
    reread = inspect_response_head(data)
    assert reread is not None and reread.close and reread.content_length == len(body)


@pytest.mark.parametrize("status", [101, 200, 204, 304, 404])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("allowed", [True, False])
@pytest.mark.parametrize(
    "framing", [b"", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n"]
)
@pytest.mark.parametrize(
    "connection", [b"", b"Connection: close\r\n", b"Connection: keep-alive\r\n"]
)
def test_raw_decision_is_said_on_the_wire(
    status: int, method: str, version: str, allowed: bool, framing: bytes, connection: bytes
) -> None:
    """Every combination: what goes out says what the server will do."""
    head_bytes = b"HTTP/1.1 %d X\r\n" % status + framing + connection + b"\r\n"
    data, keep_alive, expected, chunked = raw(head_bytes, method, version, allowed)
    reread = inspect_response_head(data)
    assert reread is not None
    no_body = method == "HEAD" or status in (101, 204, 304)
    can_frame = no_body or bool(framing)
    assert keep_alive == (allowed and can_frame and connection != b"Connection: close\r\n")
    if keep_alive:
        assert not reread.close
        assert reread.keep_alive or version == "HTTP/1.1"
    else:
        assert reread.close
    if no_body:  # (nothing may follow a final no-body head; a 101 passes what follows)
        assert expected == (None if status == 101 else 0)
    else:
        assert expected == (0 if framing.startswith(b"Content-Length") else None)
    assert chunked == (framing.startswith(b"Transfer-Encoding") and not no_body)
    # The head is only ever added to, once.
    assert len(data) - len(head_bytes) in (0, len(b"Connection: close\r\n"), 24)


# -- the end of a body ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expected", "sent", "tail", "complete"),
    [
        (13, 13, None, True),
        (13, 12, None, False),  # short: the client would wait for the rest
        (13, 14, None, False),  # long: the rest would be read as the next response
        (0, 0, None, True),
        (0, 1, None, False),
        (None, 0, None, True),  # no promise (bodyless, or closed after it)
        (None, 99, None, True),
        (None, 10, LAST_CHUNK, True),
        (None, 0, b"", False),  # a chunked head and no body at all
        (None, 10, b"o\r\n\r\n", False),  # chunk data, no last chunk
        (None, 20, b"X: y\r\n\r\n"[-5:], False),  # trailers end otherwise: close to be safe
    ],
)
def test_body_complete(expected: int | None, sent: int, tail: bytes | None, complete: bool) -> None:
    assert body_complete(expected, sent, tail) is complete


# -- framed responses ----------------------------------------------------------------


def test_framed_whole_body_gets_content_length() -> None:
    response = framed(headers=[("Content-Type", "text/plain")])
    assert response.head == (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n"
    )
    assert response.body == b"hello"
    assert response.keep_alive and not response.chunked and not response.bodyless


def test_framed_empty_whole_body_gets_content_length_zero() -> None:
    response = framed(body=b"")
    assert field(response.head, "Content-Length") == ["0"]
    assert response.keep_alive and response.body == b""


def test_framed_stream_is_chunked_on_http11() -> None:
    response = framed(body=None)
    assert field(response.head, "Transfer-Encoding") == ["chunked"]
    assert field(response.head, "Content-Length") == []
    assert response.chunked and response.keep_alive and response.expected is None


def test_framed_stream_is_close_delimited_on_http10() -> None:
    response = framed(body=None, version="HTTP/1.0")
    assert field(response.head, "Transfer-Encoding") == []
    assert field(response.head, "Content-Length") == []
    assert field(response.head, "Connection") == ["close"]
    assert not response.chunked and not response.keep_alive


def test_framed_whole_body_keeps_http10_keep_alive() -> None:
    response = framed(version="HTTP/1.0")
    assert field(response.head, "Connection") == ["keep-alive"]
    assert field(response.head, "Content-Length") == ["5"]
    assert response.keep_alive


def test_framed_http10_without_keep_alive_closes() -> None:
    response = framed(version="HTTP/1.0", keep_alive=False)
    assert field(response.head, "Connection") == ["close"]
    assert not response.keep_alive


def test_framed_close_when_the_server_will_close() -> None:
    response = framed(keep_alive=False)
    assert field(response.head, "Connection") == ["close"]
    assert not response.keep_alive and response.body == b"hello"


@pytest.mark.parametrize("body", [b"hello", b"", None])
def test_framed_answer_to_head(body: bytes | None) -> None:
    response = framed(body=body, method="HEAD")
    # The length a GET would have had, when it is known; never a body.
    assert field(response.head, "Content-Length") == (["5"] if body else [])
    assert field(response.head, "Transfer-Encoding") == []
    assert response.body == b"" and response.bodyless
    assert response.keep_alive and not response.chunked and response.expected is None


@pytest.mark.parametrize("status", [100, 101, 103, 204, 304])
@pytest.mark.parametrize("body", [b"hello", b"", None])
def test_framed_bodyless_status(status: int, body: bytes | None) -> None:
    response = framed(status, body=body)
    assert field(response.head, "Content-Length") == []
    assert field(response.head, "Transfer-Encoding") == []
    assert response.body == b"" and response.bodyless
    assert response.keep_alive and not response.chunked and response.expected is None


def test_framed_bodyless_status_keeps_a_given_content_length() -> None:
    response = framed(304, [("Content-Length", "10")], body=b"")
    assert field(response.head, "Content-Length") == ["10"]
    assert response.keep_alive and response.expected is None


@pytest.mark.parametrize("status", [100, 103, 204])
@pytest.mark.parametrize("body", [b"hello", b"", None])
def test_framed_1xx_and_204_never_carry_a_content_length(status: int, body: bytes | None) -> None:
    # RFC 9110 8.6: a server MUST NOT send one with 1xx or 204, even when the
    # application gave one (a client honouring it would eat the next response).
    response = framed(status, [("Content-Length", "10")], body=body)
    assert field(response.head, "Content-Length") == []
    assert response.keep_alive and response.expected is None and response.body == b""


def test_framed_declared_length_is_sent_once_and_checked_when_streaming() -> None:
    response = framed(headers=[("Content-Length", "12"), ("content-length", " 12")], body=None)
    assert field(response.head, "Content-Length") == ["12"]
    assert field(response.head, "Transfer-Encoding") == []
    assert not response.chunked and response.keep_alive and response.expected == 12


def test_framed_conflicting_lengths_are_the_applications_error() -> None:
    """Two different lengths: the last one was sent, with a body that
    matched the other (WSGI: CL 5 over 3 bytes, a truncated response); no
    client can tell which is meant (RFC 9112 6.3), so nothing is sent: a
    ValueError, which every interface answers 500."""
    with pytest.raises(ValueError, match="conflicting Content-Length values 10 and 12"):
        framed(headers=[("Content-Length", "10"), ("content-length", "12")], body=None)


def test_framed_application_keep_alive_header_is_the_servers_to_send() -> None:
    """An application's ``Keep-Alive: timeout=...`` promised clients an idle
    lifetime the server's own keep-alive does not keep (gunicorn drops it)."""
    response = framed(headers=[("Keep-Alive", "timeout=600"), ("X-A", "b")])
    assert field(response.head, "Keep-Alive") == [] and field(response.head, "X-A") == ["b"]


def test_framed_values_lose_their_surrounding_whitespace() -> None:
    response = framed(headers=[("X-Lead", "  lead"), ("X-Trail", "trail \t")])
    assert b"\r\nX-Lead: lead\r\n" in response.head
    assert b"\r\nX-Trail: trail\r\n" in response.head


def test_framed_declared_length_with_a_whole_body() -> None:
    response = framed(headers=[("Content-Length", " 5 ")])
    assert field(response.head, "Content-Length") == ["5"]
    assert response.keep_alive and response.body == b"hello"


@pytest.mark.parametrize("declared", ["4", "6", "0"])
def test_framed_whole_body_not_matching_its_length_closes(declared: str) -> None:
    response = framed(headers=[("Content-Length", declared)])
    assert field(response.head, "Content-Length") == [declared]
    assert field(response.head, "Connection") == ["close"]
    assert not response.keep_alive


def test_framed_head_answer_with_declared_length_stays_open() -> None:
    response = framed(headers=[("Content-Length", "10")], body=b"", method="HEAD")
    assert field(response.head, "Content-Length") == ["10"]
    assert response.keep_alive and response.expected is None


@pytest.mark.parametrize("value", ["abc", "-1", "+5", "5 5", "\u00b2", ""])
def test_framed_invalid_declared_length_is_replaced(value: str) -> None:
    response = framed(headers=[("Content-Length", value)])
    assert field(response.head, "Content-Length") == ["5"]
    assert response.keep_alive


def test_framed_application_transfer_encoding_is_dropped() -> None:
    response = framed(headers=[("Transfer-Encoding", "gzip")])
    assert field(response.head, "Transfer-Encoding") == []
    assert field(response.head, "Content-Length") == ["5"]
    streamed = framed(headers=[("Transfer-Encoding", "chunked")], body=None)
    assert field(streamed.head, "Transfer-Encoding") == ["chunked"]


@pytest.mark.parametrize("value", ["close", "Close", "close, upgrade", "Upgrade, CLOSE"])
@pytest.mark.parametrize("body", [b"hello", None])
def test_framed_application_close_closes(value: str, body: bytes | None) -> None:
    response = framed(headers=[("Connection", value)], body=body)
    assert field(response.head, "Connection") == ["close"]
    assert not response.keep_alive


@pytest.mark.parametrize("value", ["keep-alive", "upgrade", "closed"])
def test_framed_application_connection_without_close_is_replaced(value: str) -> None:
    response = framed(headers=[("Connection", value)])
    assert field(response.head, "Connection") == []
    assert response.keep_alive
    old = framed(headers=[("Connection", value)], version="HTTP/1.0")
    assert field(old.head, "Connection") == ["keep-alive"]


def test_framed_other_headers_keep_their_order_and_spelling() -> None:
    headers = [("X-B", "2"), ("x-a", "1"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2")]
    response = framed(headers=headers)
    assert response.head.startswith(
        b"HTTP/1.1 200 OK\r\nX-B: 2\r\nx-a: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    )


def test_framed_reason() -> None:
    assert framed(404).head.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert framed(299).head.startswith(b"HTTP/1.1 299 Unknown\r\n")
    assert framed(200, reason="Fine").head.startswith(b"HTTP/1.1 200 Fine\r\n")


@pytest.mark.parametrize(
    "headers",
    [[("X", "a\r\nSet-Cookie: x=1")], [("X\r\nY", "a")], [("X", "a\nb")], [("X", "a\rb")]],
    ids=["value-crlf", "name-crlf", "value-lf", "value-cr"],
)
def test_framed_refuses_response_splitting(headers: list[tuple[str, str]]) -> None:
    with pytest.raises(ValueError):
        framed(headers=headers)


@pytest.mark.parametrize("status", [100, 200, 204, 304, 404])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
@pytest.mark.parametrize("allowed", [True, False])
@pytest.mark.parametrize("body", [b"hello", b"", None])
@pytest.mark.parametrize("app_headers", [[], [("Content-Length", "5")], [("Connection", "close")]])
def test_framed_decision_is_said_on_the_wire(
    status: int,
    method: str,
    version: str,
    allowed: bool,
    body: bytes | None,
    app_headers: list[tuple[str, str]],
) -> None:
    """Every combination: the head parses back to the framing decided."""
    response = framed(status, app_headers, body, method, version, allowed)
    reread = inspect_response_head(response.head)
    assert reread is not None and reread.status == status
    assert reread.length == len(response.head)
    assert len(field(response.head, "Connection")) <= 1
    assert len(field(response.head, "Content-Length")) <= 1
    assert reread.close == (not response.keep_alive)
    if response.keep_alive and version == "HTTP/1.0":
        assert reread.keep_alive
    assert reread.chunked == response.chunked
    if response.chunked:
        assert version == "HTTP/1.1" and body is None and not response.bodyless
    # The connection can stay open only when the client can find the end.
    if response.keep_alive and not response.bodyless:
        assert response.chunked or reread.content_length is not None
    # The same function decides raw responses: the two agree.
    assert response.bodyless == bodyless(method, status)
    _, raw_keep_alive, _, _ = raw(response.head, method, version)
    if response.keep_alive:
        assert raw_keep_alive


# -- serializing -------------------------------------------------------------------


DATE = "Thu, 03 Dec 2026 15:06:00 GMT"


def test_framed_responses_get_the_date_unless_the_application_gave_one() -> None:
    ours = frame_response(200, None, [("X-A", "1")], "GET", "HTTP/1.1", True, b"ok", DATE)
    assert f"\r\nDate: {DATE}\r\n".encode() in ours.head
    theirs = frame_response(
        200, None, [("date", "Mon, 01 Jan 2024 00:00:00 GMT")], "GET", "HTTP/1.1", True, b"", DATE
    )
    assert theirs.head.lower().count(b"\r\ndate: ") == 1
    assert b"\r\ndate: Mon, 01 Jan 2024 00:00:00 GMT\r\n" in theirs.head
    none = frame_response(200, None, [], "GET", "HTTP/1.1", True, b"", None)
    assert b"date" not in none.head.lower()


def test_error_responses_get_the_date_when_given() -> None:
    assert f"\r\nDate: {DATE}\r\n".encode() in error_response(400, date=DATE)
    assert b"Date:" not in error_response(400)


@pytest.mark.parametrize(
    ("status", "phrase"),
    [
        (103, "Early Hints"),
        (409, "Conflict"),
        (410, "Gone"),
        (413, "Content Too Large"),  # RFC 9110's names, whatever the Python
        (416, "Range Not Satisfiable"),
        (422, "Unprocessable Content"),  # every FastAPI validation error
        (426, "Upgrade Required"),  # a WebSocket version refused
        (451, "Unavailable For Legal Reasons"),
        (511, "Network Authentication Required"),
    ],
)
def test_registered_statuses_have_their_reason_phrase(status: int, phrase: str) -> None:
    assert build_response_head(status, None, []) == b"HTTP/1.1 %d %s\r\n\r\n" % (
        status,
        phrase.encode(),
    )


def test_build_response_head() -> None:
    data = build_response_head(200, None, [("Content-Type", "text/plain"), ("X-A", "a\tb")])
    assert data == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-A: a\tb\r\n\r\n"
    assert build_response_head(599, None, []) == b"HTTP/1.1 599 Unknown\r\n\r\n"
    assert build_response_head(200, "Fine", []) == b"HTTP/1.1 200 Fine\r\n\r\n"
    latin = build_response_head(200, None, [("X", "caf\xe9")])
    assert b"X: caf\xe9\r\n" in latin
    parsed = inspect_response_head(build_response_head(204, None, [("Connection", "close")]))
    assert parsed is not None and parsed.status == 204 and parsed.close


@pytest.mark.parametrize(
    ("reason", "headers"),
    [
        ("OK\r\nX: injected", []),
        ("OK\nX", []),
        ("OK\rX", []),
        ("OK\x00", []),
        (None, [("X", "a\r\nSet-Cookie: x=1")]),
        (None, [("X", "a\nb")]),
        (None, [("X", "a\rb")]),
        (None, [("X", "a\x00b")]),
        (None, [("X", "a\x7fb")]),
        (None, [("X\r\nY", "a")]),
        (None, [("X\n", "a")]),
        (None, [("X Y", "a")]),
        (None, [("X:", "a")]),
        (None, [("", "a")]),
        (None, [("X\u20ac", "a")]),
        (None, [("X", "\u20ac")]),
    ],
    ids=[
        "reason-crlf",
        "reason-lf",
        "reason-cr",
        "reason-nul",
        "value-crlf",
        "value-lf",
        "value-cr",
        "value-nul",
        "value-del",
        "name-crlf",
        "name-lf",
        "name-space",
        "name-colon",
        "name-empty",
        "name-non-latin1",
        "value-non-latin1",
    ],
)
def test_build_response_head_refuses_injection(
    reason: str | None, headers: list[tuple[str, str]]
) -> None:
    with pytest.raises(ValueError):
        build_response_head(200, reason, headers)


@pytest.mark.parametrize("status", [0, 99, 1000, -200])
def test_build_response_head_refuses_bad_status(status: int) -> None:
    with pytest.raises(ValueError):
        build_response_head(status, "X", [])


def test_encode_chunk() -> None:
    assert encode_chunk(b"hello") == b"5\r\nhello\r\n"
    assert encode_chunk(b"") == b""  # an empty chunk would end the body
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert encode_chunk(b"x" * 4096).startswith(b"1000\r\n")
    assert encode_chunk(bytearray(b"ab")) == b"2\r\nab\r\n"
    assert LAST_CHUNK == b"0\r\n\r\n"


def test_a_framed_stream_ends_as_body_complete_expects() -> None:
    pieces = [b"a", b"", b"hello", b"0\r\n\r\n"]
    body = b"".join(encode_chunk(p) for p in pieces) + LAST_CHUNK
    assert body_complete(None, len(body), body[-5:])
    assert not body_complete(None, len(body) - 5, body[:-5][-5:])


def _split_response(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


@pytest.mark.parametrize("status", [400, 413, 414, 431, 500, 501, 505, 503, 599])
def test_error_response_is_complete_and_closing(status: int) -> None:
    data = error_response(status)
    head = inspect_response_head(data)
    assert head is not None
    assert head.status == status and head.close
    raw_head, body = _split_response(data)
    assert head.content_length == len(body) == len(data) - head.length
    assert raw_head.startswith(b"HTTP/1.1 %d %s" % (status, REASONS.get(status, "Error").encode()))
    assert body.startswith(b"%d " % status) and body.endswith(b"\n")
    assert b"charset=utf-8" in raw_head
    # It goes out as written (framed, already closing) when sent raw.
    assert raw(data) == (data, False, len(body), False)


def test_error_response_with_reason() -> None:
    data = error_response(400, "bare LF in request head")
    head = inspect_response_head(data)
    _, body = _split_response(data)
    assert body == b"400 bare LF in request head\n"
    assert head is not None and head.content_length == len(body)
    assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")


def test_error_response_reason_cannot_inject_headers() -> None:
    data = error_response(400, "x\r\nSet-Cookie: a=b")
    head = inspect_response_head(data)
    raw_head, body = _split_response(data)
    assert b"Set-Cookie" not in raw_head
    assert head is not None and head.content_length == len(body)


def test_error_response_body_matches_declared_charset() -> None:
    data = error_response(400, "caf\u00e9")
    head = inspect_response_head(data)
    _, body = _split_response(data)
    assert head is not None and head.content_length == len(body)
    assert body.decode("utf-8") == "400 caf\u00e9\n"


def test_reasons_are_serializable() -> None:
    for status, reason in REASONS.items():
        assert build_response_head(status, None, []).startswith(
            b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1"))
        )


def test_response_head_repr_and_slots() -> None:
    head = ResponseHead(200, 5, False, False, False, 38)
    assert "status=200" in repr(head) and "content_length=5" in repr(head)
    with pytest.raises(AttributeError):
        head.other = 1  # type: ignore[attr-defined]
    # the dead per-method helpers are gone: frame_raw decides
    assert not hasattr(head, "framed") and not hasattr(head, "bodyless")


def test_every_combination_of_inputs_runs() -> None:
    """frame_raw never fails, whatever head it is given."""
    heads = [OK_CL, UNFRAMED, CHUNKED, b"garbage\r\n\r\n", *UNFRAMED_HEADS.values()]
    for head_bytes, method, version, allowed in itertools.product(
        heads, ["GET", "HEAD", "POST"], ["HTTP/1.1", "HTTP/1.0"], [True, False]
    ):
        data, keep_alive, _, _ = raw(head_bytes, method, version, allowed, b"xyz")
        assert data.endswith(b"xyz") and isinstance(keep_alive, bool)
