"""``--statsd-host``: the server's figures as statsd metrics (gunicorn's).

gunicorn users point ``statsd_host`` at a statsd or Datadog agent and build
dashboards and alerts on its metric names, so prefork sends the same ones:

* ``gunicorn.requests`` (counter) and ``gunicorn.request.status.<code>``
  (counter) for every response, ``gunicorn.request.duration`` (timer, ms);
* ``gunicorn.workers`` (gauge): the number of workers the master keeps;
* ``gunicorn.log.critical|error|warning|exception`` (counters): prefork's
  own log lines at those levels.

``--statsd-prefix`` goes in front of every name (with a dot), and
``--dogstatsd-tags`` (``key:value,...``) after every line, as gunicorn does.

Where gunicorn sends three datagrams per request from inside the request,
a worker here only counts (a dict update and a list append) and sends what
it collected at most a second later, several lines per datagram (statsd's
multi-metric packets, each under :data:`MAX_PACKET` bytes): the request path
pays no system call.  UDP or a unix datagram socket (``unix:PATH``); a
statsd that is down costs nothing but the lost figures, never an error.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefork.settings import Config

__all__ = ["MAX_PACKET", "LogCounter", "StatsdClient", "close_all", "parse_address", "start"]

#: the largest datagram sent: fits an Ethernet frame's payload with IP and
#: UDP headers (the size statsd clients use by default)
MAX_PACKET = 1432
#: seconds a worker keeps figures before sending them
FLUSH_DELAY = 1.0
#: lines held at most before they are sent (a busy worker sends sooner)
MAX_HELD = 512
DEFAULT_PORT = 8125


def parse_address(text: str) -> tuple[int, Any]:
    """``HOST:PORT`` (port 8125 if omitted; ``[::1]:8125`` for IPv6) or
    ``unix:PATH``: the socket family and the address; ValueError otherwise."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError("unix: needs a socket path")
        return socket.AF_UNIX, path
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
        family = socket.AF_INET6
    else:
        host, _, port_text = text.rpartition(":") if ":" in text else (text, "", "")
        family = socket.AF_INET
    if not host:
        raise ValueError(f"expected HOST:PORT or unix:PATH, got {text!r}")
    try:
        port = int(port_text) if port_text else DEFAULT_PORT
    except ValueError:
        raise ValueError(f"invalid port in {text!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"invalid port in {text!r}")
    return family, (host, port)


class StatsdClient:
    """Collects metric lines and sends them in datagrams of up to MAX_PACKET bytes.

    ``schedule(delay, callback)`` (a loop's ``call_later``) makes it send a
    second after the first line it holds; without one, every line goes at once
    (the master's rare events).
    """

    def __init__(
        self,
        address: str,
        prefix: str = "",
        tags: str = "",
        schedule: Callable[[float, Callable[[], None]], Any] | None = None,
    ) -> None:
        family, target = parse_address(address)
        if family != socket.AF_UNIX:
            # (a host name: resolved once, now, not per datagram)
            infos = socket.getaddrinfo(target[0], target[1], 0, socket.SOCK_DGRAM)
            family, target = infos[0][0], infos[0][4]
        self._socket = socket.socket(family, socket.SOCK_DGRAM)
        self._socket.setblocking(False)
        self._target = target
        self.prefix = prefix.rstrip(".") + "." if prefix else ""
        self.suffix = "|#" + tags if tags else ""
        self._schedule = schedule
        self._scheduled = False
        self._counts: dict[str, int] = {}
        self._lines: list[str] = []
        _open.append(self)

    # -- figures ---------------------------------------------------------------------
    def increment(self, name: str, value: int = 1) -> None:
        counts = self._counts
        counts[name] = counts.get(name, 0) + value
        self._soon()

    def gauge(self, name: str, value: float) -> None:
        self._lines.append(f"{self.prefix}{name}:{value:g}|g{self.suffix}")
        self._soon()

    def request(self, status: int, seconds: float) -> None:
        """One response (gunicorn's three figures for it)."""
        counts = self._counts
        counts["gunicorn.requests"] = counts.get("gunicorn.requests", 0) + 1
        name = f"gunicorn.request.status.{status}"
        counts[name] = counts.get(name, 0) + 1
        lines = self._lines
        lines.append(
            f"{self.prefix}gunicorn.request.duration:{seconds * 1000.0:.3f}|ms{self.suffix}"
        )
        if len(lines) >= MAX_HELD:
            self.flush()  # (a busy worker: bounded memory, a few datagrams at a time)
        elif not self._scheduled:
            self._soon()

    # -- sending ---------------------------------------------------------------------
    def _soon(self) -> None:
        if self._schedule is None:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            self._schedule(FLUSH_DELAY, self.flush)

    def flush(self) -> None:
        """Send what is held, in as few datagrams as fit."""
        self._scheduled = False
        lines = [
            f"{self.prefix}{name}:{count}|c{self.suffix}" for name, count in self._counts.items()
        ]
        lines += self._lines
        self._counts = {}
        self._lines = []
        packet: list[str] = []
        size = 0
        for line in lines:
            if packet and size + 1 + len(line) > MAX_PACKET:
                self._send("\n".join(packet))
                packet, size = [], 0
            packet.append(line)
            size += len(line) + (1 if size else 0)
        if packet:
            self._send("\n".join(packet))

    def _send(self, data: str) -> None:
        try:
            self._socket.sendto(data.encode(), self._target)
        except OSError:
            pass  # (no statsd listening, a full buffer: the figures are lost, nothing else)

    def close(self) -> None:
        self.flush()
        self._socket.close()
        if self in _open:
            _open.remove(self)


_open: list[StatsdClient] = []


def close_all() -> None:
    """Send what every client holds (a worker ends with ``os._exit``: no atexit)."""
    for client in list(_open):
        client.close()


class LogCounter(logging.Handler):
    """Counts prefork's log lines at WARNING and above (``gunicorn.log.<level>``;
    an ERROR with a traceback is ``exception``, as gunicorn's logger counts it)."""

    def __init__(self, client: StatsdClient) -> None:
        super().__init__(logging.WARNING)
        self.client = client

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.CRITICAL:
            kind = "critical"
        elif record.levelno >= logging.ERROR:
            kind = "exception" if record.exc_info else "error"
        else:
            kind = "warning"
        self.client.increment("gunicorn.log." + kind)


def start(
    config: Config, schedule: Callable[[float, Callable[[], None]], Any] | None = None
) -> StatsdClient | None:
    """``--statsd-host``'s client for this process (the master's sends at
    once, a worker's with ``schedule``), counting prefork's own warnings and
    errors (``gunicorn.log.*``) in place of a counter a fork copied from the
    master.  An address that does not resolve is logged, not fatal: metrics
    are not the service."""
    from prefork.settings import OWN_LOGGERS

    try:
        client = StatsdClient(
            config.statsd_host or "", config.statsd_prefix, config.dogstatsd_tags, schedule
        )
    except OSError as exc:
        logging.getLogger("prefork.error").error(
            "--statsd-host %s: %s; no statsd metrics", config.statsd_host, exc
        )
        return None
    counter = LogCounter(client)
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        for inherited in [h for h in own.handlers if isinstance(h, LogCounter)]:
            own.removeHandler(inherited)
        own.addHandler(counter)
    return client
