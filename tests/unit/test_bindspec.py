"""parse_bind: every accepted bind form, and the one-line rejections."""

from __future__ import annotations

import dataclasses

import pytest

from prefork.sockets import BindSpec, parse_bind


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:8000", BindSpec("tcp", host="127.0.0.1", port=8000)),
        ("0.0.0.0:80", BindSpec("tcp", host="0.0.0.0", port=80)),
        ("localhost:8000", BindSpec("tcp", host="localhost", port=8000)),
        ("web-1.example.internal:443", BindSpec("tcp", host="web-1.example.internal", port=443)),
        ("[::1]:8000", BindSpec("tcp", host="::1", port=8000)),
        ("[::]:0", BindSpec("tcp", host="::", port=0)),
        ("[fe80::1%eth0]:8080", BindSpec("tcp", host="fe80::1%eth0", port=8080)),
        (":8000", BindSpec("tcp", host=None, port=8000)),
        ("8000", BindSpec("tcp", host=None, port=8000)),
        ("0", BindSpec("tcp", host=None, port=0)),
        ("65535", BindSpec("tcp", host=None, port=65535)),
        ("  127.0.0.1:8000\n", BindSpec("tcp", host="127.0.0.1", port=8000)),
        ("unix:/run/prefork.sock", BindSpec("unix", path="/run/prefork.sock")),
        ("unix:relative/dir/x.sock", BindSpec("unix", path="relative/dir/x.sock")),
        ("unix:@prefork", BindSpec("unix", path="@prefork")),
        ("fd://3", BindSpec("fd", fd=3)),
        ("fd://0", BindSpec("fd", fd=0)),
    ],
)
def test_accepted_forms(spec: str, expected: BindSpec) -> None:
    assert parse_bind(spec) == expected


@pytest.mark.parametrize(
    ("spec", "canonical"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000"),
        ("[::1]:8000", "[::1]:8000"),
        ("8000", ":8000"),
        (":8000", ":8000"),
        ("unix:/run/x.sock", "unix:/run/x.sock"),
        ("unix:@name", "unix:@name"),
        ("fd://7", "fd://7"),
    ],
)
def test_str_round_trips(spec: str, canonical: str) -> None:
    parsed = parse_bind(spec)
    assert str(parsed) == canonical
    assert parse_bind(str(parsed)) == parsed


def test_abstract_property() -> None:
    assert parse_bind("unix:@name").abstract
    assert not parse_bind("unix:/tmp/x.sock").abstract
    assert not parse_bind("127.0.0.1:80").abstract


def test_bindspec_is_frozen() -> None:
    spec = parse_bind("127.0.0.1:8000")
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.port = 9000  # type: ignore[misc]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("foo:bar", "bind 'foo:bar': port must be a number 0-65535"),
        ("127.0.0.1:65536", "bind '127.0.0.1:65536': port must be a number 0-65535"),
        ("127.0.0.1:", "bind '127.0.0.1:': port must be a number 0-65535"),
        ("127.0.0.1:-1", "bind '127.0.0.1:-1': port must be a number 0-65535"),
        ("127.0.0.1:+80", "bind '127.0.0.1:+80': port must be a number 0-65535"),
        ("127.0.0.1: 80", "bind '127.0.0.1: 80': port must be a number 0-65535"),
        ("127.0.0.1:8_000", "bind '127.0.0.1:8_000': port must be a number 0-65535"),
        ("99999", "bind '99999': port must be a number 0-65535"),
        ("1234567", "bind '1234567': port must be a number 0-65535"),
        ("[::1]:http", "bind '[::1]:http': port must be a number 0-65535"),
        (":", "bind ':': port must be a number 0-65535"),
        ("", "bind '': empty address"),
        ("   ", "bind '   ': empty address"),
        ("localhost", "bind 'localhost': missing port"),
        ("::1:8000", "bind '::1:8000': IPv6 addresses must be in brackets, e.g. '[::1]:8000'"),
        ("::", "bind '::': IPv6 addresses must be in brackets"),
        ("[::1]", "bind '[::1]': missing port (use [IPv6]:PORT)"),
        ("[::1]8000", "bind '[::1]8000': expected ':PORT' after ']'"),
        ("[::1:8000", "bind '[::1:8000': missing ']' after the IPv6 address"),
        ("[127.0.0.1]:80", "bind '[127.0.0.1]:80': '127.0.0.1' is not an IPv6 address"),
        ("[]:80", "bind '[]:80': '' is not an IPv6 address"),
        ("bad host:80", "bind 'bad host:80': invalid host name 'bad host'"),
        ("-lead.example:80", "bind '-lead.example:80': invalid host name '-lead.example'"),
        ("a..b:80", "bind 'a..b:80': invalid host name 'a..b'"),
        ("unix:", "bind 'unix:': missing unix socket path"),
        ("unix:@", "bind 'unix:@': missing abstract socket name after '@'"),
        ("unix:/tmp/" + "x" * 200, "unix socket path is too long (205 bytes, at most 107)"),
        ("unix:@" + "x" * 108, "unix socket path is too long (108 bytes, at most 107)"),
        ("fd://", "bind 'fd://': fd must be a non-negative integer"),
        ("fd://x", "bind 'fd://x': fd must be a non-negative integer"),
        ("fd://-1", "bind 'fd://-1': fd must be a non-negative integer"),
        ("fd://3.0", "bind 'fd://3.0': fd must be a non-negative integer"),
        ("http://127.0.0.1:80", "bind 'http://127.0.0.1:80': unsupported scheme 'http'"),
        ("tcp://127.0.0.1:80", "bind 'tcp://127.0.0.1:80': unsupported scheme 'tcp'"),
    ],
)
def test_rejections_name_the_value(spec: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_bind(spec)
    text = str(info.value)
    assert message in text
    assert text.startswith(f"bind {spec!r}:")
    assert "\n" not in text


def test_unix_path_with_nul_rejected() -> None:
    with pytest.raises(ValueError, match="NUL"):
        parse_bind("unix:/tmp/a\0b")


def test_longest_unix_path_accepted() -> None:
    path = "/" + "p" * 106
    assert parse_bind("unix:" + path) == BindSpec("unix", path=path)
    with pytest.raises(ValueError, match="too long"):
        parse_bind("unix:" + path + "p")
