"""The PROXY protocol (v1 text and v2 binary), bytes in, addresses out.

A load balancer such as HAProxy (``send-proxy`` / ``send-proxy-v2``) or
``curl --haproxy-protocol`` puts one header in front of the HTTP bytes,
saying who the real client is.  Only peers the server trusts may send it;
the connection layer enforces that, this module only parses.

Reference: the PROXY protocol specification (haproxy.org, proxy-protocol.txt).
"""

from __future__ import annotations

import ipaddress
import struct

__all__ = [
    "MAX_HEADER_LENGTH",
    "ProxyInfo",
    "ProxyProtocolError",
    "parse_proxy_header",
    "V2_SIGNATURE",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V1_PREFIX = b"PROXY "
_V1_MAX = 107  # the longest valid v1 line, CRLF included
_V2_HEADER = struct.Struct("!12sBBH")
_V2_MAX_PAYLOAD = 4096
#: the longest header accepted (v2 with its largest payload; v1 is at most 107 bytes)
MAX_HEADER_LENGTH = 16 + _V2_MAX_PAYLOAD
# v2 address family -> (address block layout, address class, name)
_V2_ADDRESSES: dict[int, tuple[struct.Struct, type, str]] = {
    1: (struct.Struct("!4s4sHH"), ipaddress.IPv4Address, "IPv4"),
    2: (struct.Struct("!16s16sHH"), ipaddress.IPv6Address, "IPv6"),
}


class ProxyProtocolError(ValueError):
    """A malformed or missing PROXY header: close the connection."""


class ProxyInfo:
    """What the header says; ``source_ip`` is None for LOCAL / UNKNOWN."""

    __slots__ = ("source_ip", "source_port", "dest_ip", "dest_port")

    def __init__(
        self,
        source_ip: str | None = None,
        source_port: int | None = None,
        dest_ip: str | None = None,
        dest_port: int | None = None,
    ) -> None:
        self.source_ip = source_ip
        self.source_port = source_port
        self.dest_ip = dest_ip
        self.dest_port = dest_port

    def __repr__(self) -> str:
        return f"ProxyInfo({self.source_ip}:{self.source_port} -> {self.dest_ip}:{self.dest_port})"


def parse_proxy_header(data: bytes) -> tuple[ProxyInfo, int] | None:
    """Parse a PROXY header at the start of ``data``.

    Returns ``(info, consumed)``, or None when more bytes are needed.
    Raises :class:`ProxyProtocolError` when ``data`` cannot start with a
    valid header (this includes a plain HTTP request: the header is
    mandatory once the protocol is switched on).
    """
    if data[:1] == b"\r":
        if len(data) < 16:
            if not V2_SIGNATURE.startswith(data[:12]):
                raise ProxyProtocolError("not a PROXY protocol v2 signature")
            return None
        return _parse_v2(data)
    if not _V1_PREFIX.startswith(data[:6]):
        raise ProxyProtocolError("no PROXY protocol header")
    end = data.find(b"\r\n", 0, _V1_MAX)
    if end < 0:
        if len(data) >= _V1_MAX:
            raise ProxyProtocolError("PROXY v1 header too long")
        return None
    return _parse_v1(data[:end].decode("ascii", "replace")), end + 2


def _parse_v1(line: str) -> ProxyInfo:
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return ProxyInfo()
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyProtocolError("malformed PROXY v1 header")
    _, family, source, dest, source_port, dest_port = parts
    version = 4 if family == "TCP4" else 6
    return ProxyInfo(
        _address(source, version),
        _port(source_port),
        _address(dest, version),
        _port(dest_port),
    )


def _address(text: str, version: int) -> str:
    if "%" in text:  # an IPv6 zone: never a client address, and unvalidated text
        raise ProxyProtocolError(f"invalid address {text!r} in PROXY header")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"invalid address {text!r} in PROXY header") from None
    if address.version != version:
        raise ProxyProtocolError("address family does not match the PROXY header")
    return str(address)


def _port(text: str) -> int:
    if not text.isdigit() or len(text) > 5 or (len(text) > 1 and text[0] == "0"):
        raise ProxyProtocolError(f"invalid port {text!r} in PROXY header")
    port = int(text)
    if port > 65535:
        raise ProxyProtocolError(f"invalid port {text!r} in PROXY header")
    return port


def _parse_v2(data: bytes) -> tuple[ProxyInfo, int] | None:
    signature, version_command, family, length = _V2_HEADER.unpack_from(data)
    if signature != V2_SIGNATURE:
        raise ProxyProtocolError("not a PROXY protocol v2 signature")
    if version_command >> 4 != 2:
        raise ProxyProtocolError("unsupported PROXY protocol version")
    command = version_command & 0x0F
    if command not in (0, 1):
        raise ProxyProtocolError("unsupported PROXY v2 command")
    if length > _V2_MAX_PAYLOAD:
        raise ProxyProtocolError("PROXY v2 header too long")
    total = 16 + length
    if len(data) < total:
        return None
    payload = data[16:total]
    if command == 0:  # LOCAL: a health check by the proxy itself
        return ProxyInfo(), total
    transport = family & 0x0F
    address_family = family >> 4
    if transport not in (0, 1):  # UNSPEC or STREAM
        raise ProxyProtocolError("unsupported PROXY v2 transport")
    if address_family in _V2_ADDRESSES:
        layout, address_class, name = _V2_ADDRESSES[address_family]
        if len(payload) < layout.size:
            raise ProxyProtocolError(f"short PROXY v2 {name} address block")
        source, dest, source_port, dest_port = layout.unpack_from(payload)
        info = ProxyInfo(
            str(address_class(source)), source_port, str(address_class(dest)), dest_port
        )
    elif address_family in (0, 3):  # UNSPEC, or a unix socket: no IP to report
        info = ProxyInfo()
    else:
        raise ProxyProtocolError("unsupported PROXY v2 address family")
    return info, total
