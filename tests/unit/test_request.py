"""HTTPRequest's view of the target: path, query, origin_path; under_root."""

from __future__ import annotations

import pytest

from prefork.worker.request import HTTPRequest, under_root


@pytest.mark.parametrize(
    ("uri", "path", "query", "origin_path"),
    [
        ("/a/b?x=1", "/a/b", "x=1", "/a/b"),
        ("/a#frag", "/a", "", "/a"),
        ("/a?x=1#frag?y=2", "/a", "x=1", "/a"),
        ("/a%23b", "/a%23b", "", "/a%23b"),
        ("*", "*", "", "*"),
        ("http://example.com", "http://example.com", "", "/"),
        ("http://example.com?q=/x", "http://example.com", "q=/x", "/"),
        ("http://example.com#/admin", "http://example.com", "", "/"),
        ("https://example.com:8443/a/b?c", "https://example.com:8443/a/b", "c", "/a/b"),
    ],
)
def test_path_query_and_origin_path(uri: str, path: str, query: str, origin_path: str) -> None:
    """A fragment is not part of a target (RFC 9112 3.2): never in path or
    query; ``uri`` keeps what was sent.  ``path`` of absolute-form stays the
    tornado way (the whole URI before "?"); ``origin_path`` is its path."""
    request = HTTPRequest("GET", uri)
    assert (request.path, request.query, request.origin_path) == (path, query, origin_path)
    assert request.uri == uri


@pytest.mark.parametrize(
    ("raw_path", "under"),
    [
        ("/api", True),
        ("/api/", True),
        ("/api/x", True),
        ("/apix", False),
        ("/%61pi/x", False),
        ("/api%2Fx", False),
        ("/", False),
    ],
)
def test_under_root_at_a_segment_boundary_of_the_bytes_sent(raw_path: str, under: bool) -> None:
    assert under_root("/api", raw_path) is under


def test_cookies_as_tornado_2() -> None:
    """tornado 2.x's request.cookies (a SimpleCookie; empty when absent or unparsable)."""
    from prefork.worker.httputil import HTTPHeaders

    request = HTTPRequest("GET", "/", headers=HTTPHeaders({"Cookie": 'a=1; b="two words"'}))
    assert {k: v.value for k, v in request.cookies.items()} == {"a": "1", "b": "two words"}
    assert dict(HTTPRequest("GET", "/").cookies) == {}
    broken = HTTPRequest("GET", "/", headers=HTTPHeaders({"Cookie": 'a="unterminated'}))
    assert dict(broken.cookies) == {}
