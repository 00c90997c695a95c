"""PROXY protocol v1/v2 parsing: bytes in, addresses (or None, or an error) out.

The cases follow the specification (haproxy's proxy-protocol.txt): v1 is one
text line of at most 107 bytes ending in CRLF; v2 is a 16-byte binary header
(signature, version/command, family/transport, length) plus addresses and
TLVs.  ``parse_proxy_header`` returns ``(info, consumed)``, None when more
bytes are needed, and raises ProxyProtocolError for anything that cannot be a
valid header -- a plain HTTP request included, since the header is mandatory
once the protocol is switched on.
"""

from __future__ import annotations

import ipaddress
import struct

import pytest

from prefork.worker.proxy_protocol import (
    V2_SIGNATURE,
    ProxyInfo,
    ProxyProtocolError,
    parse_proxy_header,
)

HTTP = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def v2(
    command: int = 1,
    family: int = 0x11,
    payload: bytes = b"",
    *,
    version: int = 2,
    length: int | None = None,
) -> bytes:
    """A v2 header: ``family`` is (address family << 4) | transport."""
    size = len(payload) if length is None else length
    return V2_SIGNATURE + struct.pack("!BBH", (version << 4) | command, family, size) + payload


def ipv4_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv4Address(src).packed
        + ipaddress.IPv4Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def ipv6_block(src: str, dst: str, sport: int, dport: int) -> bytes:
    return (
        ipaddress.IPv6Address(src).packed
        + ipaddress.IPv6Address(dst).packed
        + struct.pack("!HH", sport, dport)
    )


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!BH", kind, len(value)) + value


def parsed(data: bytes) -> tuple[ProxyInfo, int]:
    result = parse_proxy_header(data)
    assert result is not None, f"{data!r} should be a complete header"
    return result


def addresses(info: ProxyInfo) -> tuple:
    return (info.source_ip, info.source_port, info.dest_ip, info.dest_port)


# -- v1 ------------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    header = b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r\n"
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == ("203.0.113.7", 56324, "192.0.2.1", 443)
    assert consumed == len(header)


def test_v1_tcp6() -> None:
    header = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n"
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == ("2001:db8::7", 65535, "2001:db8::1", 80)
    assert consumed == len(header)


def test_v1_tcp6_address_is_normalised() -> None:
    info, _ = parsed(b"PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 1 2\r\n")
    assert info.source_ip == "2001:db8::7"


def test_v1_longest_valid_header() -> None:
    full = "ffff:" * 7 + "ffff"
    header = f"PROXY TCP6 {full} {full} 65535 65535\r\n".encode()
    assert len(header) == 104  # the spec's worst case fits in 107
    info, consumed = parsed(header)
    assert info.source_port == 65535 and consumed == 104


@pytest.mark.parametrize(
    "header",
    [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ffff:f::1 ffff:f::2 1 2\r\n"],
    ids=["bare", "with-addresses"],
)
def test_v1_unknown_means_use_the_real_peer(header: bytes) -> None:
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == (None, None, None, None)
    assert consumed == len(header)


def test_v1_header_alone_consumes_everything() -> None:
    header = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    assert parsed(header)[1] == len(header)


@pytest.mark.parametrize(
    "partial",
    [
        b"",
        b"P",
        b"PROX",
        b"PROXY",
        b"PROXY ",
        b"PROXY TCP4 203.0.113.7",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443",
        b"PROXY TCP4 203.0.113.7 192.0.2.1 56324 443\r",
    ],
)
def test_v1_truncated_needs_more(partial: bytes) -> None:
    assert parse_proxy_header(partial) is None


def test_v1_every_prefix_of_a_valid_header_needs_more() -> None:
    header = b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 80\r\n"
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None, header[:end]


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",  # a field missing
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",  # one too many
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",  # trailing space
        b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",  # two spaces
        b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",  # no such family
        b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",  # case matters
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY \r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",  # not an address
        b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",  # leading zero: ambiguous, refused
        b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 2001:db8::7 5.6.7.8 1 2\r\n",  # family does not match
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP4 ::ffff:1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",  # port out of range
        b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",  # leading zero
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa1 2\r\n",  # an Arabic-Indic digit
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 \uff12\r\n".encode(),  # a full-width digit
        b"PROXY TCP4 1.2.3.4\x00 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\nGET / HTTP/1.1\r\n\r\n",  # bare LF
    ],
)
def test_v1_malformed_is_an_error(line: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(line)


@pytest.mark.parametrize(
    "source",
    [b"fe80::1%eth0", b"::1%\x1b[31mred", b'::1%a"b'],
    ids=["zone", "escape-sequence", "quote"],
)
def test_v1_ipv6_zone_is_refused(source: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(b"PROXY TCP6 " + source + b" ::1 1 2\r\n")


def test_v1_too_long_without_crlf_is_an_error() -> None:
    with pytest.raises(ProxyProtocolError, match="too long"):
        parse_proxy_header(b"PROXY TCP4 " + b"1" * 200)


def test_v1_line_of_108_bytes_is_an_error() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (108 - len(b"PROXY UNKNOWN ") - 2) + b"\r\n"
    assert len(line) == 108
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(line)


def test_v1_line_of_107_bytes_is_accepted() -> None:
    line = b"PROXY UNKNOWN " + b"x" * (107 - len(b"PROXY UNKNOWN ") - 2) + b"\r\n"
    assert len(line) == 107
    assert parsed(line)[1] == 107


# -- not a header at all -------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        HTTP,
        b"GET",
        b"G",
        b"POST /upload HTTP/1.1\r\n",
        b"\x16\x03\x01\x02\x00\x01",  # a TLS ClientHello
        b"PROXZ TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"\r\nGET / HTTP/1.1\r\n\r\n",  # starts like v2, is not
        b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x00",
    ],
)
def test_plain_traffic_is_an_error(data: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(data)


# -- v2 ------------------------------------------------------------------------------------


def test_v2_signature_constant() -> None:
    assert V2_SIGNATURE == b"\r\n\r\n\x00\r\nQUIT\n" and len(V2_SIGNATURE) == 12


def test_v2_tcp4() -> None:
    header = v2(1, 0x11, ipv4_block("203.0.113.7", "192.0.2.1", 56324, 443))
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == ("203.0.113.7", 56324, "192.0.2.1", 443)
    assert consumed == len(header) == 16 + 12


def test_v2_tcp6() -> None:
    header = v2(1, 0x21, ipv6_block("2001:db8::7", "2001:db8::1", 1, 65535))
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == ("2001:db8::7", 1, "2001:db8::1", 65535)
    assert consumed == len(header) == 16 + 36


def test_v2_with_tlvs_skips_them() -> None:
    tlvs = (
        tlv(0x01, b"http/1.1")  # PP2_TYPE_ALPN
        + tlv(0x02, b"example.com")  # PP2_TYPE_AUTHORITY
        + tlv(0x05, b"\x00" * 16)  # PP2_TYPE_UNIQUE_ID
        + tlv(0x20, b"\x01" + b"\x00\x00\x00\x00" + tlv(0x21, b"TLSv1.3"))  # PP2_TYPE_SSL
        + tlv(0x04, b"\x00" * 7)  # PP2_TYPE_NOOP padding
    )
    header = v2(1, 0x11, ipv4_block("198.51.100.20", "192.0.2.1", 40000, 8001) + tlvs)
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == ("198.51.100.20", 40000, "192.0.2.1", 8001)
    assert consumed == len(header)


def test_v2_tcp6_with_tlvs() -> None:
    header = v2(1, 0x21, ipv6_block("::1", "::1", 43710, 18540) + tlv(0x03, b"\x00\x00\x00\x00"))
    info, consumed = parsed(header)
    assert info.source_ip == "::1" and info.source_port == 43710 and consumed == len(header)


@pytest.mark.parametrize("family", [0x00, 0x11, 0x21, 0x31], ids=["unspec", "ip4", "ip6", "unix"])
def test_v2_local_means_use_the_real_peer(family: int) -> None:
    # HAProxy's health checks send LOCAL (command 0), usually with no address.
    payload = b"" if family == 0 else ipv4_block("1.2.3.4", "5.6.7.8", 1, 2).ljust(216, b"\0")
    header = v2(0, family, payload)
    info, consumed = parsed(header + HTTP)
    assert addresses(info) == (None, None, None, None)
    assert consumed == len(header)


def test_v2_proxy_unspec_and_unix_give_no_address() -> None:
    info, _ = parsed(v2(1, 0x00))
    assert info.source_ip is None
    unix = b"/tmp/client.sock".ljust(108, b"\0") + b"/tmp/server.sock".ljust(108, b"\0")
    info, consumed = parsed(v2(1, 0x31, unix))
    assert info.source_ip is None and consumed == 16 + 216


def test_v2_every_truncation_needs_more() -> None:
    header = v2(1, 0x21, ipv6_block("2001:db8::7", "2001:db8::1", 1, 2) + tlv(0x04, b"pad"))
    for end in range(len(header)):
        assert parse_proxy_header(header[:end]) is None, end
    assert parsed(header)[1] == len(header)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (v2(1, 0x11, b"\x01\x02\x03\x04"), "short"),  # IPv4 block needs 12 bytes
        (v2(1, 0x21, b"\x00" * 35), "short"),  # IPv6 block needs 36
        (v2(1, 0x12, ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)), "transport"),  # DGRAM
        (v2(1, 0x22, ipv6_block("::1", "::1", 1, 2)), "transport"),
        (v2(1, 0x13), "transport"),
        (v2(1, 0x41), "family"),  # no such address family
        (v2(2), "command"),
        (v2(0xF), "command"),
        (v2(1, version=1), "version"),
        (v2(1, version=3), "version"),
        (v2(1, 0x11, length=4097), "too long"),
        (v2(1, 0x11, length=0xFFFF), "too long"),
    ],
    ids=lambda x: x if isinstance(x, str) else None,
)
def test_v2_malformed_is_an_error(header: bytes, message: str) -> None:
    with pytest.raises(ProxyProtocolError, match=message):
        parse_proxy_header(header + b"\0" * 64)


def test_v2_oversize_is_refused_before_the_payload_arrives() -> None:
    # The length alone decides: no need to buffer 64 KiB from a hostile peer.
    with pytest.raises(ProxyProtocolError, match="too long"):
        parse_proxy_header(v2(1, 0x11, length=0xFFFF))


def test_v2_largest_accepted_payload() -> None:
    payload = ipv4_block("1.2.3.4", "5.6.7.8", 1, 2)
    payload += tlv(0x04, b"\0" * (4096 - len(payload) - 3))
    assert len(payload) == 4096
    info, consumed = parsed(v2(1, 0x11, payload))
    assert info.source_ip == "1.2.3.4" and consumed == 16 + 4096


@pytest.mark.parametrize("end", range(1, 12))
def test_v2_broken_signature_is_refused_early(end: int) -> None:
    broken = bytearray(V2_SIGNATURE[:end])
    broken[-1] ^= 0xFF  # a first byte other than CR falls to the v1 check: an error too
    with pytest.raises(ProxyProtocolError):
        parse_proxy_header(bytes(broken))


def test_info_repr_names_both_ends() -> None:
    info = ProxyInfo("203.0.113.7", 1, "192.0.2.1", 2)
    assert "203.0.113.7:1" in repr(info) and "192.0.2.1:2" in repr(info)
