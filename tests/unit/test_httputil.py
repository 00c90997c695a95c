"""Unit tests for prefork.worker.httputil: headers, query strings, form bodies."""

from __future__ import annotations

import copy
import gc
import json
import logging
import pickle
import time
import tracemalloc
import urllib.parse
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from prefork.worker.httputil import (
    HTTPFile,
    HTTPHeaders,
    HTTPInputError,
    _parse_header,
    normalize_header_name,
    parse_body_arguments,
    parse_multipart_form_data,
    parse_qs_bytes,
)

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(alphabet=TCHARS, min_size=1, max_size=20)


def best_time(func: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of a few runs: the least noisy estimate of the cost."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        best = min(best, time.perf_counter() - start)
    return best


def assert_linear(make: Callable[[int], Callable[[], object]], n: int) -> None:
    """Assert that ``make(k)()`` costs time linear in ``k``.

    Sizes n, 2n and 4n are timed in turn (so a busy machine slows all of
    them alike) with the garbage collector paused, keeping the best of five.
    Linear code gives ratios near 2 and 4; quadratic code about 3.5 and 14.
    """
    funcs = {k: make(k * n) for k in (1, 2, 4)}
    best = dict.fromkeys(funcs, float("inf"))
    gc.disable()
    try:
        for _ in range(5):
            for k, func in funcs.items():
                start = time.perf_counter()
                func()
                best[k] = min(best[k], time.perf_counter() - start)
    finally:
        gc.enable()
    assert best[1] < 0.5
    assert best[2] < 4 * best[1] + 0.002
    assert best[4] < 8 * best[1] + 0.004


# -- normalize_header_name ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("content-TYPE", "Content-Type"),
        ("coNtent-TYPE", "Content-Type"),
        ("x-real-ip", "X-Real-Ip"),
        ("WWW-Authenticate", "Www-Authenticate"),
        ("ETAG", "Etag"),
        ("x-b2b-id", "X-B2b-Id"),
        ("a--b", "A--B"),
        ("-x-", "-X-"),
        ("", ""),
    ],
)
def test_normalize_header_name(raw: str, expected: str) -> None:
    assert normalize_header_name(raw) == expected


def test_normalize_cache_is_bounded() -> None:
    info = normalize_header_name.cache_info()
    assert info.maxsize is not None and info.maxsize <= 1000
    for i in range(info.maxsize * 3):
        normalize_header_name(f"x-unique-{i}")
    assert normalize_header_name.cache_info().currsize <= info.maxsize


@given(tokens)
def test_normalize_is_idempotent_and_case_insensitive(name: str) -> None:
    normalized = normalize_header_name(name)
    assert normalize_header_name(normalized) == normalized
    assert normalize_header_name(name.upper()) == normalized
    assert normalize_header_name(name.lower()) == normalized
    assert normalized.lower() == name.lower()


# -- HTTPHeaders: multi-value semantics ----------------------------------------


def make_multi() -> HTTPHeaders:
    h = HTTPHeaders()
    h.add("Set-Cookie", "a=1")
    h.add("content-type", "text/plain")
    h.add("set-cookie", "b=2")
    return h


def test_add_joins_with_comma_and_keeps_list() -> None:
    h = make_multi()
    assert h["Set-Cookie"] == "a=1,b=2"
    assert h["SET-COOKIE"] == "a=1,b=2"
    assert h.get_list("set-cookie") == ["a=1", "b=2"]
    assert h.get_list("Content-Type") == ["text/plain"]
    assert list(h.keys()) == ["Set-Cookie", "Content-Type"]
    assert len(h) == 2


def test_get_list_absent_is_empty_list_and_a_copy() -> None:
    h = make_multi()
    assert h.get_list("X-Missing") == []
    h.get_list("Set-Cookie").append("evil")
    assert h.get_list("Set-Cookie") == ["a=1", "b=2"]


def test_get_all_insertion_order_one_pair_per_value() -> None:
    h = HTTPHeaders()
    for name in ["Zeta", "alpha", "ZETA", "Mid", "Alpha"]:
        h.add(name, name)
    assert list(h.get_all()) == [
        ("Zeta", "Zeta"),
        ("Zeta", "ZETA"),
        ("Alpha", "alpha"),
        ("Alpha", "Alpha"),
        ("Mid", "Mid"),
    ]


def test_setitem_replaces_all_values() -> None:
    h = make_multi()
    h["SET-cookie"] = "c=3"
    assert h["Set-Cookie"] == "c=3"
    assert h.get_list("Set-Cookie") == ["c=3"]
    assert list(h.get_all())[0] == ("Set-Cookie", "c=3")
    h.add("Set-Cookie", "d=4")
    assert h["Set-Cookie"] == "c=3,d=4"


def test_delitem_removes_both_views() -> None:
    h = make_multi()
    del h["set-COOKIE"]
    assert "Set-Cookie" not in h
    assert h.get_list("Set-Cookie") == []
    assert list(h.get_all()) == [("Content-Type", "text/plain")]
    with pytest.raises(KeyError):
        del h["Set-Cookie"]
    h.add("Set-Cookie", "new")
    assert h.get_list("Set-Cookie") == ["new"]


def test_contains_and_get_normalize() -> None:
    h = make_multi()
    assert "content-type" in h
    assert "CONTENT-TYPE" in h
    assert "X-Nope" not in h
    assert 42 not in h
    assert h.get("content-TYPE") == "text/plain"
    assert h.get("set-cookie") == "a=1,b=2"
    assert h.get("missing") is None
    assert h.get("missing", "dflt") == "dflt"
    with pytest.raises(KeyError):
        h["missing"]


def test_update_and_dict_constructor_go_through_setitem() -> None:
    h = make_multi()
    h.update({"set-cookie": "z=9"}, x_y="1")
    assert h.get_list("Set-Cookie") == ["z=9"]
    assert h["X_y"] == "1"
    h.update([("content-type", "a"), ("CONTENT-TYPE", "b")])
    assert h.get_list("Content-Type") == ["b"]

    assert dict(HTTPHeaders({"content-type": "b"})) == {"Content-Type": "b"}
    assert dict(HTTPHeaders(host="h")) == {"Host": "h"}
    assert dict(HTTPHeaders([("a", "1"), ("A", "2")])) == {"A": "2"}
    assert dict(HTTPHeaders({"a": "1"}, b="2")) == {"A": "1", "B": "2"}
    # update() with an HTTPHeaders keeps one (joined) value per name, like 2.x.
    other = HTTPHeaders()
    other.update(make_multi())
    assert other.get_list("Set-Cookie") == ["a=1,b=2"]
    with pytest.raises(TypeError):
        HTTPHeaders({}, {})


def test_copy_constructor_and_copy_keep_multiple_values() -> None:
    h = make_multi()
    for c in (HTTPHeaders(h), h.copy(), copy.copy(h), copy.deepcopy(h)):
        assert type(c) is HTTPHeaders
        assert c is not h
        assert c.get_list("Set-Cookie") == ["a=1", "b=2"]
        assert c == h
        c.add("Set-Cookie", "c=3")
        assert h.get_list("Set-Cookie") == ["a=1", "b=2"]


def test_pickle_roundtrip_keeps_values() -> None:
    h = make_multi()
    back = pickle.loads(pickle.dumps(h))
    assert type(back) is HTTPHeaders
    assert list(back.get_all()) == list(h.get_all())


def test_pop_popitem_setdefault_clear() -> None:
    h = make_multi()
    assert h.pop("set-cookie") == "a=1,b=2"
    assert h.get_list("Set-Cookie") == []
    assert h.pop("set-cookie", "gone") == "gone"
    with pytest.raises(KeyError):
        h.pop("set-cookie")
    assert h.setdefault("content-type", "x") == "text/plain"
    assert h.setdefault("x-new", "v") == "v"
    assert h.get_list("X-New") == ["v"]
    assert h.popitem() == ("X-New", "v")
    assert h.get_list("X-New") == []
    h.clear()
    assert len(h) == 0 and list(h.get_all()) == []
    with pytest.raises(KeyError):
        h.popitem()


def test_or_operators_keep_views_consistent() -> None:
    h = make_multi()
    merged = h | {"content-type": "x", "New": "y"}
    assert type(merged) is HTTPHeaders
    assert merged.get_list("Set-Cookie") == ["a=1", "b=2"]
    assert merged.get_list("Content-Type") == ["x"]
    assert merged.get_list("New") == ["y"]
    assert h.get_list("Content-Type") == ["text/plain"]
    h |= {"set-cookie": "only"}
    assert h.get_list("Set-Cookie") == ["only"] and h["Set-Cookie"] == "only"
    assert ({"A": "1"} | make_multi())["Set-Cookie"] == "a=1,b=2"


def test_reads_after_add_see_the_joined_value_everywhere() -> None:
    # The join is lazy: every way of reading the dict must see it.
    h = HTTPHeaders()
    h.add("X-A", "1")
    items = h.items()
    values = h.values()
    h.add("x-a", "2")
    assert list(items) == [("X-A", "1,2")]
    h.add("x-a", "3")
    assert list(values) == ["1,2,3"]
    h = HTTPHeaders.from_pairs([("X-A", "1"), ("X-A", "2")])
    expected = {"X-A": "1,2"}
    assert dict(h) == expected
    h.add("X-A", "3")
    h["X-A"] = "1"
    h.add("X-A", "2")
    assert {**h} == expected
    assert json.loads(json.dumps(h)) == expected
    assert repr(h) == "HTTPHeaders({'X-A': '1,2'})"
    target: dict[str, str] = {}
    target.update(h)
    assert target == expected
    h.add("X-A", "3")

    def collect(**kwargs: str) -> dict[str, str]:
        return kwargs

    assert collect(**h) == {"X-A": "1,2,3"}


def test_not_equal_sees_the_lazy_join() -> None:
    h = HTTPHeaders()
    h.add("X-A", "1")
    h.add("X-A", "2")
    assert not (h != {"X-A": "1,2"})
    h.add("X-A", "3")
    assert h != {"X-A": "1,2"}


def test_equality_with_dicts() -> None:
    h = HTTPHeaders()
    h.add("x-a", "1")
    h.add("X-A", "2")
    assert h == {"X-A": "1,2"}
    assert {"X-A": "1,2"} == h
    assert not (h != {"X-A": "1,2"})
    assert h != {"X-A": "1"}
    assert h != {"x-a": "1,2"}  # dict keys are not normalized by ==
    assert h != "X-A"
    other = HTTPHeaders()
    other.add("X-A", "1")
    other.add("X-A", "2")
    assert h == other
    with pytest.raises(TypeError):
        hash(h)


def test_from_pairs_normalizes_and_keeps_repeats() -> None:
    h = HTTPHeaders.from_pairs([("host", "a"), ("ACCEPT", "x"), ("accept", "y")])
    assert type(h) is HTTPHeaders
    assert h == {"Host": "a", "Accept": "x,y"}
    assert h.get_list("Accept") == ["x", "y"]
    assert list(h.get_all()) == [("Host", "a"), ("Accept", "x"), ("Accept", "y")]
    h.add("Host", "b")
    assert h["host"] == "a,b"
    assert HTTPHeaders.from_pairs([]) == {}


def test_from_pairs_is_cheap() -> None:
    pairs = [
        ("Host", "example.com"),
        ("User-Agent", "curl/8.5.0"),
        ("Accept", "*/*"),
        ("Content-Length", "10"),
        ("Content-Type", "text/plain"),
        ("Connection", "keep-alive"),
    ]
    n = 2000

    def build() -> None:
        for _ in range(n):
            HTTPHeaders.from_pairs(pairs)

    per_call = best_time(build) / n
    # A few microseconds on a normal machine; the bound leaves room for slow CI.
    assert per_call < 50e-6


def test_from_pairs_is_linear_in_repeats() -> None:
    def run(count: int) -> Callable[[], object]:
        pairs = [("x-a", "1")] * count
        return lambda: HTTPHeaders.from_pairs(pairs)["X-A"]

    assert_linear(run, 10_000)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["add", "set", "del", "read"]),
            st.sampled_from(["a", "A", "x-y", "X-Y", "X-y", "b"]),
            st.text(alphabet="abc ,", max_size=4),
        ),
        max_size=30,
    )
)
def test_headers_match_a_model(ops: list[tuple[str, str, str]]) -> None:
    h = HTTPHeaders()
    model: dict[str, list[str]] = {}
    for op, name, value in ops:
        key = normalize_header_name(name)
        if op == "add":
            h.add(name, value)
            model.setdefault(key, []).append(value)
        elif op == "set":
            h[name] = value
            model[key] = [value]
        elif op == "del":
            if key in model:
                del h[name]
                del model[key]
            else:
                with pytest.raises(KeyError):
                    del h[name]
        else:
            assert h.get(name) == (",".join(model[key]) if key in model else None)
    assert dict(h) == {k: ",".join(v) for k, v in model.items()}
    assert list(h.get_all()) == [(k, v) for k, vs in model.items() for v in vs]
    for key, values in model.items():
        assert h.get_list(key.lower()) == values


# -- HTTPHeaders.parse / parse_line ----------------------------------------------


def test_parse_basic_crlf_and_lf() -> None:
    h = HTTPHeaders.parse("Host: example.com\r\nX-A:1\nx-a:  2 \t\r\n\r\n")
    assert h == {"Host": "example.com", "X-A": "1,2"}
    assert h.get_list("X-A") == ["1", "2"]


def test_parse_empty_value_and_colon_in_value() -> None:
    h = HTTPHeaders.parse("X-Empty:\r\nX-Url: http://h:80/p\r\n")
    assert h["X-Empty"] == ""
    assert h["X-Url"] == "http://h:80/p"


def test_parse_obs_fold() -> None:
    h = HTTPHeaders.parse("X-A: one\r\n  two\r\n\tthree \r\nX-B: b\r\n")
    assert h["X-A"] == "one two three"
    assert h.get_list("X-A") == ["one two three"]
    assert h["X-B"] == "b"


def test_obs_fold_continues_the_last_value_of_a_repeated_header() -> None:
    h = HTTPHeaders.parse("X-A: 1\r\nX-A: 2\r\n more\r\n")
    assert h.get_list("X-A") == ["1", "2 more"]
    assert h["X-A"] == "1,2 more"


def test_obs_fold_edge_cases_keep_value_stripped() -> None:
    h = HTTPHeaders.parse("X-A:\r\n tail\r\nX-B: b\r\n \t \r\n")
    assert h["X-A"] == "tail"
    assert h["X-B"] == "b"


def test_parse_line_api() -> None:
    h = HTTPHeaders()
    h.parse_line("Content-Type: text/html\r\n")
    h.parse_line(" ; charset=utf-8\n")
    h.parse_line("X-Plain: v")
    h.parse_line("")
    h.parse_line("\r\n")
    assert h == {"Content-Type": "text/html ; charset=utf-8", "X-Plain": "v"}


@pytest.mark.parametrize(
    "text",
    [
        " continuation first\r\n",
        "\tcontinuation first\r\n",
        "no colon here\r\n",
        "Host : spaced\r\n",
        " Host: x\r\n",
        "Ho st: x\r\n",
        "Host\t: x\r\n",
        ": empty name\r\n",
        "X-\x00: nul\r\n",
        "X-(paren): x\r\n",
        "X-A\x7f: del\r\n",
        "X-Caf\xe9: latin1\r\n",
        "X-A: nul\x00byte\r\n",
        "X-A: bell\x07\r\n",
        "X-A: esc\x1b[0m\r\n",
        "X-A: del\x7f\r\n",
        "X-A: a\r\n b\x00\r\n",
        # A bare CR is not a line break; it stays in the value and is rejected.
        "X-A: 1\rX-B: 2\r\n",
        "X-A: 1\r\r\n",
        # \v and \f are not HTTP whitespace: not a continuation, not a token.
        "X-A: 1\r\n\x0bmore\r\n",
        "X-A: 1\r\n\x0cmore\r\n",
        "X-A: 1\r\nX-B\x0b: 2\r\n",
        # Unicode whitespace is not HTTP whitespace either.
        "X-A: 1\r\n\xa0more\r\n",
        "X-A: 1\r\n\u3000more\r\n",
    ],
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(HTTPInputError):
        HTTPHeaders.parse(text)


def test_parse_line_rejects_continuation_first() -> None:
    with pytest.raises(HTTPInputError):
        HTTPHeaders().parse_line(" x\r\n")


def test_http_input_error_is_a_value_error() -> None:
    assert issubclass(HTTPInputError, ValueError)


def test_parse_does_not_split_on_unicode_line_breaks() -> None:
    # str.splitlines would break on these and produce a second header line.
    for sep in ["\x85", "\u2028"]:
        h = HTTPHeaders.parse(f"X-A: 1{sep}X-Injected: 2\r\n")
        assert "X-Injected" not in h
        assert h["X-A"] == f"1{sep}X-Injected: 2"
    with pytest.raises(HTTPInputError):  # \x1c is a control character
        HTTPHeaders.parse("X-A: 1\x1cX-Injected: 2\r\n")


def test_parse_strips_only_sp_and_htab() -> None:
    h = HTTPHeaders.parse("X-A: \t\xa0v\xa0 \r\n")
    assert h["X-A"] == "\xa0v\xa0"
    h = HTTPHeaders.parse("X-Tab: a\tb\r\n")
    assert h["X-Tab"] == "a\tb"


@pytest.mark.parametrize("line", ["X-A: 1\r\n", "X-A: 1\r\n b\r\n"])
def test_repeated_headers_parse_in_linear_time(line: str) -> None:
    def run(count: int) -> Callable[[], object]:
        text = "X-A: 0\r\n" + line * count
        return lambda: HTTPHeaders.parse(text)["X-A"]

    assert_linear(run, 10_000)
    assert HTTPHeaders.parse("X-A: 1\r\n" * 10_000).get_list("X-A") == ["1"] * 10_000


def test_long_obs_fold_parses_in_linear_time() -> None:
    # Appending each continuation to a growing string is quadratic; it shows
    # only past a few tens of thousands of lines, hence the larger n.
    def run(count: int) -> Callable[[], object]:
        text = "X-A: 0\r\n" + " b\r\n" * count + "X-B: 1\r\n" + " c\r\n" * count
        return lambda: HTTPHeaders.parse(text)["X-A"]

    assert_linear(run, 40_000)
    assert HTTPHeaders.parse("X-A: 0\r\n" + " b\r\n" * 3)["X-A"] == "0 b b b"


def test_repeated_add_is_linear() -> None:
    def run(count: int) -> Callable[[], object]:
        def fill() -> str:
            h = HTTPHeaders()
            for _ in range(count):
                h.add("X-A", "value")
            return h["X-A"]

        return fill

    assert_linear(run, 10_000)


@given(st.lists(st.tuples(tokens, st.text(alphabet="abc xyz\t,;=", max_size=10)), max_size=10))
def test_parse_roundtrips_generated_headers(pairs: list[tuple[str, str]]) -> None:
    text = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    h = HTTPHeaders.parse(text)
    expected = HTTPHeaders()
    for name, value in pairs:
        expected.add(name, value.strip(" \t"))
    assert list(h.get_all()) == list(expected.get_all())


# -- HTTPFile ------------------------------------------------------------------


def test_http_file_key_and_attribute_access() -> None:
    f = HTTPFile(filename="a.txt", body=b"data", content_type="text/plain")
    assert f["body"] == f.body == b"data"
    assert f["filename"] == f.filename == "a.txt"
    assert f.content_type == "text/plain"
    f.extra = 1
    assert f["extra"] == 1
    with pytest.raises(AttributeError):
        f.missing  # noqa: B018
    assert not hasattr(f, "missing")
    assert copy.deepcopy(f) == f
    assert pickle.loads(pickle.dumps(f)).body == b"data"


# -- parse_qs_bytes --------------------------------------------------------------


def test_parse_qs_bytes_values_are_bytes() -> None:
    result = parse_qs_bytes("a=1&b=x+y&a=%FF%00&c=%C3%A9")
    assert result == {"a": [b"1", b"\xff\x00"], "b": [b"x y"], "c": [b"\xc3\xa9"]}


def test_parse_qs_bytes_accepts_bytes_input() -> None:
    assert parse_qs_bytes(b"k=%41\xe9") == {"k": [b"A\xe9"]}


def test_parse_qs_bytes_names_are_latin1_str() -> None:
    assert parse_qs_bytes("n%C3%A9=1") == {"n\xc3\xa9": [b"1"]}


def test_parse_qs_bytes_non_latin1_text_is_utf8_encoded() -> None:
    assert parse_qs_bytes("a=\u20ac") == {"a": ["\u20ac".encode()]}


def test_parse_qs_bytes_blank_values() -> None:
    assert parse_qs_bytes("a=&b&c=1&&") == {"c": [b"1"]}
    assert parse_qs_bytes("a=&b&c=1", keep_blank_values=True) == {
        "a": [b""],
        "b": [b""],
        "c": [b"1"],
    }
    assert parse_qs_bytes("") == {}


def test_parse_qs_bytes_splits_on_ampersand_only() -> None:
    assert parse_qs_bytes("a=1;b=2") == {"a": [b"1;b=2"]}


def test_parse_qs_bytes_max_fields() -> None:
    assert len(parse_qs_bytes("&".join(f"f{i}=1" for i in range(1000)))) == 1000
    with pytest.raises(HTTPInputError):
        parse_qs_bytes("&".join(f"f{i}=1" for i in range(1001)))
    with pytest.raises(HTTPInputError):
        parse_qs_bytes("a=1&b=2&c=3", max_fields=2)
    with pytest.raises(HTTPInputError):
        parse_qs_bytes(b"&" * 5_000_000)


@given(
    st.lists(
        st.tuples(st.text(alphabet=TCHARS, min_size=1, max_size=8), st.binary(min_size=1)),
        max_size=20,
    )
)
def test_parse_qs_bytes_roundtrips_urlencode(pairs: list[tuple[str, bytes]]) -> None:
    expected: dict[str, list[bytes]] = {}
    for name, value in pairs:
        expected.setdefault(name, []).append(value)
    assert parse_qs_bytes(urllib.parse.urlencode(pairs)) == expected


# -- _parse_header -----------------------------------------------------------------


def test_parse_header_quoted_semicolon_and_escaped_quote() -> None:
    key, params = _parse_header('form-data; name="a;b"; filename="x\\"y.txt"')
    assert key == "form-data"
    assert params == {"name": "a;b", "filename": 'x"y.txt'}


def test_parse_header_details() -> None:
    assert _parse_header("text/html; Charset=UTF-8") == ("text/html", {"charset": "UTF-8"})
    assert _parse_header(" text/plain ;; novalue; a = b ") == ("text/plain", {"a": "b"})
    assert _parse_header('x; f="C:\\dir\\a.txt"') == ("x", {"f": "C:\\dir\\a.txt"})
    assert _parse_header('x; f="a\\\\b"') == ("x", {"f": "a\\b"})
    assert _parse_header('x; f="a\\\\\\"b"') == ("x", {"f": 'a\\"b'})
    assert _parse_header('x; f=""') == ("x", {"f": ""})
    # An unterminated quote runs to the end, so its ';' does not split.
    assert _parse_header('x; f="a;b=c') == ("x", {"f": '"a;b=c'})
    assert _parse_header("") == ("", {})


def test_parse_header_is_linear() -> None:
    def run(count: int) -> Callable[[], object]:
        line = 'form-data; name="a"' + ';"' * count
        return lambda: _parse_header(line)

    assert_linear(run, 50_000)
    assert best_time(lambda: _parse_header("form-data" + ';"\\' * 50_000)) < 0.5
    assert _parse_header('form-data; name="a"' + ';"' * 50_000)[1]["name"] == "a"


@given(st.text(alphabet=';"\\= ab', max_size=60))
def test_parse_header_never_crashes(line: str) -> None:
    key, params = _parse_header(line)
    assert ";" not in key or '"' in key
    assert all(name == name.strip().lower() for name in params)


# -- multipart ---------------------------------------------------------------------


def multipart(boundary: bytes, *parts: bytes, tail: bytes = b"") -> bytes:
    body = b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts)
    return body + b"--" + boundary + b"--" + tail


def field(name: bytes, value: bytes) -> bytes:
    return b'Content-Disposition: form-data; name="' + name + b'"\r\n\r\n' + value


def test_multipart_fields_and_files() -> None:
    data = multipart(
        b"1234",
        field(b"a", b"hello"),
        field(b"empty", b""),
        b'Content-Disposition: form-data; name="upload"; filename="ab.txt"\r\n'
        b"Content-Type: text/plain\r\n\r\nfile\r\ncontent",
        b'Content-Disposition: form-data; name="upload"; filename="x.bin"\r\n\r\n\x00\xff',
        field(b"a", b"again"),
        tail=b"\r\n",
    )
    arguments: dict[str, list[bytes]] = {"a": [b"before"]}
    files: dict[str, list[HTTPFile]] = {}
    parse_multipart_form_data(b"1234", data, arguments, files)
    assert arguments == {"a": [b"before", b"hello", b"again"], "empty": [b""]}
    first, second = files["upload"]
    assert isinstance(first, HTTPFile)
    assert first["filename"] == first.filename == "ab.txt"
    assert first["body"] == first.body == b"file\r\ncontent"
    assert first.content_type == "text/plain"
    assert second.body == b"\x00\xff"
    assert second.content_type == "application/unknown"


def test_multipart_quoted_boundary_and_trailing_data() -> None:
    data = multipart(b"abc", field(b"a", b"1"), tail=b"\r\n--abc\r\n" + field(b"b", b"2"))
    data += b"\r\n--abc--garbage"
    arguments: dict[str, list[bytes]] = {}
    parse_multipart_form_data(b'"abc"', data, arguments, {})
    # Everything before the LAST closing boundary counts, even an earlier one.
    assert arguments == {"a": [b"1\r\n--abc--"], "b": [b"2"]}
    arguments = {}
    parse_multipart_form_data(
        b"abc", multipart(b"abc", field(b"a", b"1"), tail=b"junk"), arguments, {}
    )
    assert arguments == {"a": [b"1"]}


def test_multipart_utf8_headers_and_escaped_names() -> None:
    data = multipart(
        b"B",
        'Content-Disposition: form-data; name="f;1"; filename="r\u00e9sum\u00e9 \\"1\\".pdf"\r\n\r\nx'.encode(),
    )
    files: dict[str, list[HTTPFile]] = {}
    parse_multipart_form_data(b"B", data, {}, files)
    assert files["f;1"][0].filename == 'r\u00e9sum\u00e9 "1".pdf'


def test_multipart_max_parts() -> None:
    ok = multipart(b"B", *[field(b"f", b"v")] * 100)
    arguments: dict[str, list[bytes]] = {}
    parse_multipart_form_data(b"B", ok, arguments, {})
    assert len(arguments["f"]) == 100
    with pytest.raises(HTTPInputError, match="too many"):
        parse_multipart_form_data(b"B", multipart(b"B", *[field(b"f", b"v")] * 101), {}, {})
    with pytest.raises(HTTPInputError, match="too many"):
        parse_multipart_form_data(b"B", ok, {}, {}, max_parts=99)


def test_multipart_parts_are_counted_before_parsing_any() -> None:
    # The parts are malformed; a parser that split and parsed first would report that.
    data = b"--B\r\n" * 200_000 + b"--B--"
    start = time.perf_counter()
    with pytest.raises(HTTPInputError, match="too many"):
        parse_multipart_form_data(b"B", data, {}, {})
    assert time.perf_counter() - start < 0.5


def test_multipart_parts_are_counted_before_the_body_is_copied_or_split() -> None:
    data = b"--B\r\nxy" * 200_000 + b"--B--"
    tracemalloc.start()
    try:
        with pytest.raises(HTTPInputError, match="too many"):
            parse_multipart_form_data(b"B", data, {}, {})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A split would build a 200,000-item list (megabytes); counting allocates nothing.
    assert peak < 100_000


def test_multipart_part_header_size_limit() -> None:
    def part_with_header(size: int) -> bytes:
        head = b'Content-Disposition: form-data; name="a"\r\nX-Pad: '
        head += b"p" * (size - len(head))
        assert len(head) == size
        return head + b"\r\n\r\nvalue"

    arguments: dict[str, list[bytes]] = {}
    parse_multipart_form_data(b"B", multipart(b"B", part_with_header(10240)), arguments, {})
    assert arguments == {"a": [b"value"]}
    with pytest.raises(HTTPInputError, match="too large"):
        parse_multipart_form_data(b"B", multipart(b"B", part_with_header(10241)), {}, {})
    with pytest.raises(HTTPInputError, match="too large"):
        parse_multipart_form_data(b"B", multipart(b"B", b"X: " + b"p" * 20000), {}, {})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (multipart(b"B", field(b"a", b"1"))[:-5], "closing boundary"),
        (multipart(b"B", b'Content-Disposition: form-data; name=""\r\n\r\nv'), "name"),
        (multipart(b"B", b"Content-Disposition: form-data\r\n\r\nv"), "name"),
        (multipart(b"B", b"Content-Disposition: form-data; filename=a\r\n\r\nv"), "name"),
        (multipart(b"B", b"Content-Type: text/plain\r\n\r\nv"), "invalid"),
        (multipart(b"B", b'Content-Disposition: attachment; name="a"\r\n\r\nv'), "invalid"),
        (multipart(b"B", b'Content-Disposition: form-data; name="a"\r\nvalue'), "separator"),
        (multipart(b"B", b'Content-Disposition: form-data; name="a"\rX: 1\r\n\r\nv'), "bare CR"),
        (multipart(b"B", b'Content-Disposition: form-data; name="\xff"\r\n\r\nv'), "UTF-8"),
        (
            multipart(b"B", b'Content-Disposition: form-data; name="a"\r\nbad line\r\n\r\nv'),
            "colon",
        ),
        (b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\nv--B--', "invalid"),
        (b'--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n--B--', "invalid"),
    ],
)
def test_multipart_errors(data: bytes, message: str) -> None:
    with pytest.raises(HTTPInputError, match=message):
        parse_multipart_form_data(b"B", data, {}, {})


def test_multipart_form_data_disposition_is_case_insensitive() -> None:
    arguments: dict[str, list[bytes]] = {}
    data = multipart(b"B", b'content-disposition: Form-Data; NAME="a"\r\n\r\nv')
    parse_multipart_form_data(b"B", data, arguments, {})
    assert arguments == {"a": [b"v"]}


def test_multipart_empty_boundary_rejected() -> None:
    with pytest.raises(HTTPInputError):
        parse_multipart_form_data(b"", b"----", {}, {})
    with pytest.raises(HTTPInputError):
        parse_multipart_form_data(b'""', b"----", {}, {})


def test_multipart_error_leaves_results_untouched_and_logs_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    data = multipart(b"B", field(b"good", b"1"), b"no separator", b"also bad")
    arguments: dict[str, list[bytes]] = {"x": [b"0"]}
    files: dict[str, list[HTTPFile]] = {}
    with caplog.at_level(logging.DEBUG), pytest.raises(HTTPInputError):
        parse_multipart_form_data(b"B", data, arguments, files)
    assert arguments == {"x": [b"0"]}
    assert files == {}
    assert caplog.records == []


@given(
    st.lists(
        st.tuples(st.text(alphabet=TCHARS.replace('"', ""), min_size=1, max_size=8), st.binary()),
        max_size=10,
    ),
    st.text(alphabet="0123456789abcdef", min_size=8, max_size=16),
)
def test_multipart_roundtrip(pairs: list[tuple[str, bytes]], boundary: str) -> None:
    bound = boundary.encode()
    assume(all(bound not in value for _, value in pairs))
    data = multipart(bound, *(field(name.encode(), value) for name, value in pairs))
    arguments: dict[str, list[bytes]] = {}
    parse_multipart_form_data(bound, data, arguments, {})
    expected: dict[str, list[bytes]] = {}
    for name, value in pairs:
        expected.setdefault(name, []).append(value)
    assert arguments == expected


# -- parse_body_arguments ----------------------------------------------------------


def test_body_urlencoded() -> None:
    arguments: dict[str, list[bytes]] = {"a": [b"from-query"]}
    files: dict[str, list[HTTPFile]] = {}
    parse_body_arguments(
        "application/x-www-form-urlencoded; charset=UTF-8",
        b"a=1&b=%FF&blank=&c=x+y",
        arguments,
        files,
    )
    assert arguments == {"a": [b"from-query", b"1"], "b": [b"\xff"], "c": [b"x y"]}
    assert files == {}


def test_body_urlencoded_max_fields() -> None:
    with pytest.raises(HTTPInputError):
        parse_body_arguments(
            "application/x-www-form-urlencoded", b"a=1&" * 10, {}, {}, max_fields=5
        )
    arguments: dict[str, list[bytes]] = {}
    parse_body_arguments(
        "application/x-www-form-urlencoded", b"a=1&b=2", arguments, {}, max_fields=2
    )
    assert arguments == {"a": [b"1"], "b": [b"2"]}


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data; boundary=XyZ",
        'multipart/form-data; boundary="XyZ"',
        "multipart/form-data;boundary=XyZ;charset=utf-8",
        "Multipart/Form-Data; Boundary=XyZ",
    ],
)
def test_body_multipart(content_type: str) -> None:
    data = multipart(
        b"XyZ",
        field(b"a", b"1"),
        b'Content-Disposition: form-data; name="f"; filename="n.txt"\r\n\r\nbody',
    )
    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[HTTPFile]] = {}
    parse_body_arguments(content_type, data, arguments, files)
    assert arguments == {"a": [b"1"]}
    assert files["f"][0].body == b"body"


def test_body_multipart_max_parts_is_passed_on() -> None:
    data = multipart(b"B", field(b"a", b"1"), field(b"a", b"2"))
    with pytest.raises(HTTPInputError, match="too many"):
        parse_body_arguments("multipart/form-data; boundary=B", data, {}, {}, max_parts=1)


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=", "multipart/form-data; charset=x"],
)
def test_body_multipart_without_boundary(content_type: str) -> None:
    with pytest.raises(HTTPInputError, match="boundary"):
        parse_body_arguments(content_type, multipart(b"B", field(b"a", b"1")), {}, {})


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=B"],
)
def test_body_with_content_encoding_rejected(content_type: str) -> None:
    body = multipart(b"B", field(b"a", b"1"))
    headers = HTTPHeaders({"Content-Encoding": "gzip"})
    with pytest.raises(HTTPInputError, match="Content-Encoding"):
        parse_body_arguments(content_type, body, {}, {}, headers=headers)
    arguments: dict[str, list[bytes]] = {}
    headers = HTTPHeaders({"Content-Encoding": "identity"})
    parse_body_arguments(content_type, body, arguments, {}, headers=headers)
    assert arguments
    arguments = {}
    parse_body_arguments(content_type, body, arguments, {}, headers=HTTPHeaders())
    assert arguments


@pytest.mark.parametrize("content_type", ["text/plain", "application/json", ""])
def test_body_unknown_content_type_ignored(content_type: str) -> None:
    arguments: dict[str, list[bytes]] = {}
    files: dict[str, list[HTTPFile]] = {}
    headers = HTTPHeaders({"Content-Encoding": "gzip"})
    parse_body_arguments(content_type, b"a=1&b=2", arguments, files, headers=headers)
    assert arguments == {} and files == {}


def test_url_concat_as_tornado() -> None:
    from prefork.httputil import url_concat

    assert url_concat("/a", {"y": "2"}) == "/a?y=2"
    assert url_concat("/a?x=1", {"y": "2 3"}) == "/a?x=1&y=2+3"
    assert url_concat("/a?", [("y", "2"), ("y", "3")]) == "/a?y=2&y=3"
    assert url_concat("/a?x=1", None) == "/a?x=1"
