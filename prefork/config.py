"""Settings: one table, read from a config file, the environment and the CLI.

Every setting has one name used everywhere: ``--max-requests`` on the
command line, ``PREFORK_MAX_REQUESTS`` in the environment, ``max_requests``
in a config file (a Python file of assignments, as gunicorn's).  Precedence,
lowest first: defaults, config file, environment, command line.

A bad value raises :class:`ConfigError`, whose message is one line naming
the setting; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
import runpy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prefork.sockets import parse_bind

__all__ = ["SETTINGS", "Config", "ConfigError", "Setting", "parse_size"]


class ConfigError(ValueError):
    """A setting has a bad value; ``str()`` is the one line to show."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"--{setting.replace('_', '-')}: {message}")
        self.setting = setting


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _number(kind: type, minimum: float) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if number < minimum:
            raise ValueError(f"must be >= {minimum:g}, got {value!r}")
        return number

    return parse


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """``512M``, ``1G``, ``1.5GiB``, ``1048576`` -> bytes (0 = off)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"must be >= 0, got {value!r}")
        return value
    match = _SIZE.fullmatch(str(value))
    if match is None:
        raise ValueError(f"expected a size such as 512M or 1G, got {value!r}")
    factor = 1024 ** " kmgt".index((match.group(2) or " ").lower())
    return int(float(match.group(1)) * factor)


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _optional_path(value: Any) -> str | None:
    if value is None or str(value) == "":
        return None
    return str(value)


def _existing_file(value: Any) -> str | None:
    path = _optional_path(value)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    return path


def _binds(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    specs: list[str] = []
    for item in items:
        # The environment form may hold several, separated by commas or spaces
        # (an IPv6 bind keeps its brackets, so commas inside are not split).
        for spec in re.split(r"[\s,]+(?![^\[]*\])", str(item).strip()):
            if spec:
                parse_bind(spec)
                specs.append(spec)
    if not specs:
        raise ValueError("at least one address is needed")
    return specs


def _octal(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = int(str(value), 8)
        except ValueError:
            raise ValueError(f"expected an octal number such as 027, got {value!r}") from None
    if not 0 <= number <= 0o777:
        raise ValueError(f"must be between 000 and 777, got {value!r}")
    return number


def _workers(value: Any) -> int | None:
    if value is None or value == "":
        return None
    return int(_number(int, 0)(value))


@dataclass(frozen=True)
class Setting:
    """One setting: its name, how to parse it, its default and its help."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    short: str | None = None
    flag: bool = False  # a switch on the command line (no value)
    multiple: bool = False  # may be given several times
    metavar: str | None = None

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "PREFORK_" + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "bind",
        _binds,
        ["127.0.0.1:8000"],
        "address to listen on: HOST:PORT, [IPV6]:PORT, unix:PATH or fd://N; repeatable",
        short="-b",
        multiple=True,
        metavar="ADDRESS",
    ),
    Setting(
        "workers",
        _workers,
        None,
        "worker processes (0 or unset: one per usable CPU; WEB_CONCURRENCY is honoured)",
        short="-w",
        metavar="N",
    ),
    Setting(
        "config",
        _existing_file,
        None,
        "a Python file of settings (name = value)",
        short="-c",
        metavar="FILE",
    ),
    Setting("pidfile", _optional_path, None, "write the master's pid to this file", metavar="FILE"),
    Setting(
        "timeout",
        _number(float, 0.1),
        30.0,
        "seconds without a heartbeat before a worker is killed as hung",
        metavar="SECONDS",
    ),
    Setting(
        "boot_timeout",
        _number(float, 0.1),
        60.0,
        "seconds a new worker has to become ready",
        metavar="SECONDS",
    ),
    Setting(
        "graceful_timeout",
        _number(float, 0.0),
        30.0,
        "seconds a stopping worker has to finish its requests",
        metavar="SECONDS",
    ),
    Setting(
        "max_requests",
        _number(int, 0),
        0,
        "recycle a worker after this many requests (0: never)",
        metavar="N",
    ),
    Setting(
        "max_requests_jitter",
        _number(int, 0),
        0,
        "add up to this many requests, at random per worker, to max_requests",
        metavar="N",
    ),
    Setting(
        "max_memory",
        parse_size,
        0,
        "recycle a worker whose RSS exceeds this (e.g. 512M; 0: never)",
        metavar="SIZE",
    ),
    Setting(
        "interface",
        _choice("auto", "seed", "wsgi"),
        "auto",
        "how the application is called: seed (callback(request)), wsgi (PEP 3333 "
        "app(environ, start_response)) or auto (from its signature)",
        metavar="KIND",
    ),
    Setting(
        "threads",
        _number(int, 1),
        4,
        "WSGI: application threads per worker (1 for an application that is not thread-safe)",
        metavar="N",
    ),
    Setting(
        "keep_alive",
        _number(float, 0.0),
        75.0,
        "seconds an idle keep-alive connection is kept (0: no keep-alive)",
        metavar="SECONDS",
    ),
    Setting(
        "xheaders",
        _bool,
        False,
        "trust X-Real-Ip / X-Forwarded-For / X-Forwarded-Proto from clients",
        flag=True,
    ),
    Setting(
        "certfile", _existing_file, None, "TLS certificate (PEM); enables HTTPS", metavar="FILE"
    ),
    Setting("keyfile", _existing_file, None, "TLS private key (PEM)", metavar="FILE"),
    Setting(
        "ca_certs",
        _existing_file,
        None,
        "CA bundle to verify client certificates against",
        metavar="FILE",
    ),
    Setting(
        "cert_reqs",
        _choice("none", "optional", "required"),
        "none",
        "client certificates: none, optional or required",
        metavar="MODE",
    ),
    Setting(
        "access_log",
        _optional_path,
        "-",
        "access log file ('-': stdout, 'off': none)",
        metavar="FILE",
    ),
    Setting(
        "access_log_format",
        _choice("combined", "json"),
        "combined",
        "access log format: combined or json",
        metavar="FORMAT",
    ),
    Setting("error_log", _optional_path, "-", "error log file ('-': stderr)", metavar="FILE"),
    Setting(
        "log_level",
        _choice("debug", "info", "warning", "error", "critical"),
        "info",
        "log level",
        metavar="LEVEL",
    ),
    Setting(
        "forwarded_allow_ips",
        str,
        "127.0.0.1,::1",
        "comma-separated IPs/networks whose X-Forwarded-* and PROXY headers are trusted ('*': all)",
        metavar="IPS",
    ),
    Setting(
        "proxy_protocol",
        _bool,
        False,
        "expect a PROXY protocol v1/v2 header from trusted peers (others are refused)",
        flag=True,
    ),
    Setting(
        "health_live_path",
        _optional_path,
        None,
        "answer this path with 200 before the application (liveness)",
        metavar="PATH",
    ),
    Setting(
        "health_ready_path",
        _optional_path,
        None,
        "answer this path with 200, or 503 while draining (readiness)",
        metavar="PATH",
    ),
    Setting(
        "drain_delay",
        _number(float, 0.0),
        0.0,
        "seconds a stopping worker keeps serving with readiness 503 before it closes its listeners",
        metavar="SECONDS",
    ),
    Setting(
        "user",
        _optional_path,
        None,
        "run workers as this user (name or uid) after binding",
        metavar="USER",
    ),
    Setting(
        "group",
        _optional_path,
        None,
        "run workers as this group (name or gid) after binding",
        metavar="GROUP",
    ),
    Setting("umask", _octal, None, "process umask, in octal (e.g. 027)", metavar="MASK"),
    Setting(
        "unix_socket_mode",
        _octal,
        0o600,
        "mode of unix sockets bound by --bind unix:PATH, in octal",
        metavar="MODE",
    ),
    Setting(
        "preload",
        _bool,
        False,
        "import the application in the master before forking (faster forks, shared memory; HUP then does not reload code)",
        flag=True,
    ),
    Setting(
        "reuse_port",
        _bool,
        False,
        "SO_REUSEPORT listening sockets (connections queued on a closing socket are reset)",
        flag=True,
    ),
    Setting(
        "check_config",
        _bool,
        False,
        "check the settings and import the application, then exit",
        flag=True,
    ),
    Setting("print_config", _bool, False, "print the effective settings, then exit", flag=True),
)

_BY_NAME = {setting.name: setting for setting in SETTINGS}


class Config:
    """The validated settings, as attributes (``config.max_requests``)."""

    def __init__(self, values: Mapping[str, Any], app: str | None = None) -> None:
        self.app = app
        for setting in SETTINGS:
            setattr(self, setting.name, values.get(setting.name, setting.default))
        self._check_combinations()

    def _check_combinations(self) -> None:
        from prefork.privileges import resolve_group, resolve_user

        try:
            if self.user:  # type: ignore[attr-defined]
                resolve_user(self.user)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ConfigError("user", str(exc)) from None
        try:
            if self.group:  # type: ignore[attr-defined]
                resolve_group(self.group)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ConfigError("group", str(exc)) from None
        try:
            from prefork.worker.xheaders import parse_networks

            parse_networks(self.forwarded_allow_ips)  # type: ignore[attr-defined]
        except ValueError as exc:
            raise ConfigError("forwarded_allow_ips", str(exc).split(": ", 1)[-1]) from None
        if (self.keyfile or self.ca_certs) and not self.certfile:  # type: ignore[attr-defined]
            raise ConfigError("certfile", "is required when --keyfile or --ca-certs is given")
        if self.cert_reqs != "none" and not self.ca_certs:  # type: ignore[attr-defined]
            raise ConfigError("ca_certs", f"is required with --cert-reqs {self.cert_reqs}")  # type: ignore[attr-defined]

    @classmethod
    def load(
        cls,
        cli: Mapping[str, Any],
        environ: Mapping[str, str] = os.environ,
        app: str | None = None,
    ) -> Config:
        """Merge defaults < config file < environment < command line."""
        values: dict[str, Any] = {}
        file_app = None
        config_file = cli.get("config") or environ.get("PREFORK_CONFIG")
        if config_file:
            for name, value in _read_config_file(config_file).items():
                if name == "app":
                    file_app = str(value)
                else:
                    values[name] = _parse(name, value)
        for setting in SETTINGS:
            if setting.env in environ:
                values[setting.name] = _parse(setting.name, environ[setting.env])
        for name, value in cli.items():
            if value is not None and name in _BY_NAME:
                values[name] = _parse(name, value)
        if app is None:
            app = environ.get("PREFORK_APP") or file_app
        return cls(values, app)

    def as_dict(self) -> dict[str, Any]:
        values = {setting.name: getattr(self, setting.name) for setting in SETTINGS}
        values["app"] = self.app
        return values


def _parse(name: str, value: Any) -> Any:
    setting = _BY_NAME[name]
    try:
        return setting.parse(value)
    except ValueError as exc:
        raise ConfigError(name, str(exc)) from None


def _read_config_file(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise ConfigError("config", f"no such file: {path!r}")
    try:
        namespace = runpy.run_path(path)
    except Exception as exc:  # the file is user code: any error is a config error
        raise ConfigError("config", f"{path}: {type(exc).__name__}: {exc}") from None
    values = {}
    for name, value in namespace.items():
        if name.startswith("_") or callable(value) or isinstance(value, type(os)):
            continue
        if name == "app":
            values[name] = value
            continue
        if name not in _BY_NAME:
            raise ConfigError("config", f"{path}: unknown setting {name!r}")
        values[name] = value
    return values
