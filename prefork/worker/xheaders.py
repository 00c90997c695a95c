"""Client address and scheme as reported by a trusted proxy (``xheaders``).

Pure functions of the request headers: the connection's own peer address is
never modified, so what one request says cannot leak into the next request
on the same keep-alive connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

__all__ = [
    "XHEADERS_ALL",
    "XHEADERS_FORWARDED",
    "forwarded_ip",
    "forwarded_protocol",
    "parse_networks",
]

#: which headers a trusted peer may set: tornado's four (``xheaders``) ...
XHEADERS_ALL = 2
#: ... or X-Forwarded-For and X-Forwarded-Proto alone (``proxy_headers``,
#: uvicorn's): the two a proxy configured from uvicorn's or gunicorn's docs
#: sets or appends.  X-Real-Ip and X-Scheme, which such a proxy passes
#: through from the client unchanged, would let a client name itself.
XHEADERS_FORWARDED = 1


def _last_element(value: str) -> str:
    return value.rsplit(",", 1)[-1].strip(" \t")


def _valid_ip(candidate: str) -> bool:
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def forwarded_ip(
    headers: Mapping[str, str], default: str | None, real_ip: bool = True
) -> str | None:
    """``X-Real-Ip`` (with ``real_ip``), else the right-most ``X-Forwarded-For``
    element.

    The right-most element is the one the nearest proxy appended; the others
    are whatever the client claimed.  An invalid value is ignored.
    """
    candidate = headers.get("X-Real-Ip") if real_ip else None
    if candidate:
        candidate = candidate.strip(" \t")
        if _valid_ip(candidate):
            return candidate
    forwarded_for = headers.get("X-Forwarded-For")
    if forwarded_for:
        candidate = _last_element(forwarded_for)
        if _valid_ip(candidate):
            return candidate
    return default


def forwarded_protocol(headers: Mapping[str, str], default: str, scheme: bool = True) -> str:
    """``X-Scheme`` (with ``scheme``), else the last ``X-Forwarded-Proto``
    element, if http(s)."""
    for name in ("X-Scheme", "X-Forwarded-Proto") if scheme else ("X-Forwarded-Proto",):
        value = headers.get(name)
        if value:
            candidate = _last_element(value).lower()
            if candidate in ("http", "https"):
                return candidate
    return default


def parse_networks(
    value: str | Iterable[str] | None,
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network] | None:
    """``"127.0.0.1,10.0.0.0/8"`` or a list -> networks; ``"*"``/None -> None (all)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item == "*":
            return None
        try:
            network = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(
                f"forwarded_allow_ips: {item!r} is not an IP address or network"
            ) from None
        if "/" in item and network.network_address != ipaddress.ip_address(item.split("/")[0]):
            # (10.0.0.5/8 would trust all of 10.0.0.0/8: say so rather than guess)
            raise ValueError(
                f"forwarded_allow_ips: {item!r} has host bits set: did you mean "
                f"{str(network)!r} (or {item.split('/')[0]!r} alone)?"
            )
        networks.append(network)
    return networks
