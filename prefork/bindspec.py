"""``--bind`` values: ``HOST:PORT``, ``[IPv6]:PORT``, ``unix:PATH``, ``fd://N``.

Parsing only (no socket is made here), so a typo in any address is reported,
naming it, before anything is bound.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["BindKind", "BindSpec", "parse_bind"]

# sun_path is 108 bytes on Linux, including the terminating NUL of a path.
_UNIX_PATH_MAX = 107


BindKind = Literal["tcp", "unix", "fd"]


@dataclass(frozen=True)
class BindSpec:
    """One parsed ``--bind`` value.

    * ``tcp``: ``host`` (None = all interfaces; a name means all its
      addresses; an IPv6 literal without brackets) and ``port``;
    * ``unix``: ``path`` (``@name`` for the abstract namespace);
    * ``fd``: ``fd``, an inherited listening socket.
    """

    kind: BindKind
    host: str | None = None
    port: int | None = None
    path: str | None = None
    fd: int | None = None

    @property
    def abstract(self) -> bool:
        """True for a unix socket in the Linux abstract namespace."""
        return self.kind == "unix" and self.path is not None and self.path.startswith("@")

    def __str__(self) -> str:
        if self.kind == "unix":
            return f"unix:{self.path}"
        if self.kind == "fd":
            return f"fd://{self.fd}"
        if self.host is None:
            return f":{self.port}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


_PORT = re.compile(r"[0-9]{1,5}")
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_FORMS = "use HOST:PORT, [IPv6]:PORT, :PORT, PORT, unix:PATH, unix:@NAME or fd://N"


def _parse_port(spec: str, text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ValueError(f"bind {spec!r}: port must be a number 0-65535")
    return int(text)


def parse_bind(spec: str) -> BindSpec:
    """Parse one bind address; ValueError with a one-line message naming it.

    Accepted forms: ``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (all
    interfaces), ``unix:PATH``, ``unix:@NAME`` (abstract namespace),
    ``fd://N`` (an inherited listening socket). Surrounding whitespace is
    ignored.
    """
    text = spec.strip()
    if not text:
        raise ValueError(f"bind {spec!r}: empty address ({_FORMS})")

    if text.startswith("unix:"):
        path = text[len("unix:") :]
        if not path:
            raise ValueError(f"bind {spec!r}: missing unix socket path")
        if path == "@":
            raise ValueError(f"bind {spec!r}: missing abstract socket name after '@'")
        if "\0" in path:
            raise ValueError(f"bind {spec!r}: unix socket path contains a NUL byte")
        size = len(os.fsencode(path[1:] if path.startswith("@") else path))
        if size > _UNIX_PATH_MAX:
            raise ValueError(
                f"bind {spec!r}: unix socket path is too long "
                f"({size} bytes, at most {_UNIX_PATH_MAX})"
            )
        return BindSpec("unix", path=path)

    if text.startswith("fd://"):
        number = text[len("fd://") :]
        if not number.isascii() or not number.isdigit():
            raise ValueError(f"bind {spec!r}: fd must be a non-negative integer")
        return BindSpec("fd", fd=int(number))

    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise ValueError(f"bind {spec!r}: unsupported scheme {scheme!r} ({_FORMS})")

    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bind {spec!r}: missing ']' after the IPv6 address")
        host = text[1:end]
        rest = text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"bind {spec!r}: {host!r} is not an IPv6 address") from None
        if not rest:
            raise ValueError(f"bind {spec!r}: missing port (use [IPv6]:PORT)")
        if not rest.startswith(":"):
            raise ValueError(f"bind {spec!r}: expected ':PORT' after ']'")
        return BindSpec("tcp", host=host, port=_parse_port(spec, rest[1:]))

    if ":" not in text:
        if _PORT.fullmatch(text):
            return BindSpec("tcp", host=None, port=_parse_port(spec, text))
        if text.isascii() and text.isdigit():
            raise ValueError(f"bind {spec!r}: port must be a number 0-65535")
        raise ValueError(f"bind {spec!r}: missing port ({_FORMS})")

    host, _, port_text = text.rpartition(":")
    if ":" in host:
        raise ValueError(f"bind {spec!r}: IPv6 addresses must be in brackets, e.g. '[::1]:8000'")
    port = _parse_port(spec, port_text)
    if not host:
        return BindSpec("tcp", host=None, port=port)
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise ValueError(f"bind {spec!r}: invalid host name {host!r}")
    return BindSpec("tcp", host=host, port=port)
