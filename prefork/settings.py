"""Every setting of prefork in one typed, frozen :class:`Config`.

One name per setting, used everywhere: ``--max-body-size`` on the command
line, ``PREFORK_MAX_BODY_SIZE`` in the environment, ``max_body_size`` in a
config file, ``Config.max_body_size`` in the code and
``HTTPServer(cb, max_body_size=...)`` in the Python API.  Each field carries
its parser, help line, group and whether a change needs a restart in its
metadata; :data:`SETTINGS` is that table, read off the dataclass, so the
default is written once and mypy sees every field with its type (a misspelt
setting in the code is a type error).

The object travels whole: command line -> master -> worker -> HTTPServer ->
connection -> parser.  Nothing copies its fields one by one.

This module is the project's vocabulary and sits below every layer: it
imports only the standard library, so the protocol core (``http1.py``) may
take a ``Config`` as its limits.  Loading it from a file, the environment and
the command line is :mod:`prefork.config`'s job.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DEFAULTS",
    "GROUPS",
    "GUNICORN_ALIASES",
    "HOOKS",
    "SETTINGS",
    "Config",
    "ConfigError",
    "Hooks",
    "Setting",
    "make_config",
    "parse_size",
]


class ConfigError(ValueError):
    """A setting has a bad value; ``str()`` is the one line to show (exit status 2)."""

    def __init__(self, setting: str, message: str, where: str | None = None) -> None:
        # (``where``: what to name instead of the option, an environment variable)
        super().__init__(f"{where or '--' + setting.replace('_', '-')}: {message}")
        self.setting = setting


# ---------------------------------------------------------------------- parsers
# Each takes a value as it comes (a string from the command line or the
# environment, any Python value from a config file or the API) and returns
# the typed value, or raises ValueError with a message that follows the
# setting's name.


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _number(kind: type, minimum: float, *, above: bool = False) -> Callable[[Any], Any]:
    """An int or float parser; ``above``: the value must exceed ``minimum``."""

    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = kind(value.strip() if isinstance(value, str) else value)
        except (TypeError, ValueError):
            raise ValueError(
                f"expected {'an integer' if kind is int else 'a number'}, got {value!r}"
            ) from None
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError(f"expected a finite number, got {value!r}")
        if number < minimum or (above and number == minimum):
            raise ValueError(f"must be {'>' if above else '>='} {minimum:g}, got {value!r}")
        return number

    return parse


def _bounded(parse: Callable[[Any], Any], maximum: float) -> Callable[[Any], Any]:
    """``parse``, and the value must be at most ``maximum``."""

    def bounded(value: Any) -> Any:
        number = parse(value)
        if number > maximum:
            shown = maximum if isinstance(maximum, int) else f"{maximum:g}"
            raise ValueError(f"must be <= {shown}, got {value!r}")
        return number

    return bounded


_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


def parse_size(value: Any) -> int:
    """``512M``, ``1k``, ``1.5GiB``, ``1048576`` -> bytes (powers of 1024)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a size such as 64k or 512M, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be >= 0, got {value!r}")
        return value
    match = _SIZE.fullmatch(str(value))
    if match is None:
        raise ValueError(f"expected a size such as 64k or 512M, got {value!r}")
    factor = 1024 ** " kmgt".index((match.group(2) or " ").lower())
    return int(float(match.group(1)) * factor)


def _positive_size(value: Any) -> int:
    size = parse_size(value)
    if size < 1:
        raise ValueError(f"must be at least 1 byte, got {value!r}")
    return size


def _ciphers(value: Any) -> str | None:
    """An OpenSSL cipher list (gunicorn's ``ciphers``), checked by OpenSSL
    itself: a list that selects no cipher, or a typo, is refused here, not
    at the first handshake.  Empty: OpenSSL's defaults (TLS 1.3's suites are
    not set by it: OpenSSL keeps those apart)."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    import ssl

    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(text)
    except ssl.SSLError:
        raise ValueError(f"OpenSSL selects no cipher from {text!r}") from None
    return text


def _cert_reqs(value: Any) -> str:
    """none, optional or required; also the ``ssl.CERT_NONE`` / ``CERT_OPTIONAL``
    / ``CERT_REQUIRED`` numbers 0, 1, 2 that a gunicorn config file gives
    (``cert_reqs = ssl.CERT_REQUIRED``, an IntEnum; or its value)."""
    names = ("none", "optional", "required")
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(names):
            return names[value]
        raise ValueError(f"expected one of none, optional, required (or 0, 1, 2), got {value!r}")
    text = str(value).strip()
    if text in ("0", "1", "2"):
        return names[int(text)]
    return _choice(*names)(value)


def _choice(*choices: str, aliases: dict[str, str] | None = None) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        text = (aliases or {}).get(text, text)
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    return parse


def _optional_str(value: Any) -> str | None:
    if value is None or str(value) == "":
        return None
    return str(value)


def _existing_file(value: Any) -> str | None:
    import os.path

    path = _optional_str(value)
    if path is not None and not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    return path


def _log_config(value: Any) -> str | dict[str, Any] | None:
    """A logging configuration: a dict (a config file's, gunicorn's
    ``logconfig_dict``; ``version`` 1 is supplied when missing, as gunicorn
    merges it into its defaults) or a file: ``.json`` (a dictConfig dict, as
    uvicorn's ``--log-config``) or an INI file for ``fileConfig``.  Checked
    now (a file that does not parse is one line); applied at start."""
    import configparser
    import json
    import os.path

    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("a logging configuration dict has str keys")
        return {"version": 1, **value}
    path = _optional_str(value)
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    if path.endswith(".json"):
        try:
            with open(path, encoding="utf-8") as file:
                loaded = json.load(file)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a JSON logging configuration: {exc}") from None
        if not isinstance(loaded, dict) or loaded.get("version") != 1:
            raise ValueError(f'{path}: a dictConfig object with "version": 1 is expected')
        return path
    parser = configparser.ConfigParser()
    try:
        parser.read(path, encoding="utf-8")
    except configparser.Error as exc:
        raise ValueError(f"{path}: not an INI logging configuration: {exc}") from None
    if not parser.has_section("loggers"):
        raise ValueError(f"{path}: an INI logging configuration needs a [loggers] section")
    return path


def _file_to_write(value: Any, *special: str) -> str | None:
    """A file prefork will create or append to: its directory must exist and
    the path must not be a directory (checked now, so that a typo is one line
    at start or a refused HUP, not a traceback from the logging setup).
    ``special``: values that name no file (``-``, ``off``...)."""
    import os.path

    path = _optional_str(value)
    if path is None or path.lower() in special:
        return path
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a file")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise ValueError(f"no such directory: {directory!r}")
    return path


#: what a log setting may say instead of naming a file
LOG_NOT_FILES = ("-", "off", "none", "logging")


def _log_file(value: Any) -> str | None:
    return _file_to_write(value, *LOG_NOT_FILES)


def _app_spec(value: Any) -> str | None:
    """``MODULE:CALLABLE`` (``CALLABLE`` may be dotted and end in ``()``).

    Without the colon (``prefork myapp``) the spec was found wrong only in
    the workers, after the fork; it is refused here, when the settings load.
    The callable's name is not guessed: gunicorn reads ``myapp`` as
    ``myapp:application``, uvicorn refuses it, and a guess that fails would
    again be found only in the workers; the line says what to write.
    """
    spec = _optional_str(value)
    if spec is None:
        return None
    module, colon, attribute = spec.partition(":")
    if not colon or not module.strip() or not attribute.strip():
        module = module.strip() or "myapp"
        raise ValueError(
            f"expected MODULE:CALLABLE, such as '{module}:app' (the callable is not guessed; "
            f"gunicorn's default was '{module}:application')"
        )
    return spec


def _url_path(value: Any) -> str | None:
    path = _optional_str(value)
    if path is not None and not path.startswith("/"):
        raise ValueError(f"expected a path starting with '/', got {value!r}")
    return path


def _root_path(value: Any) -> str:
    """A mount prefix as a client sends it: "" or "/..." in visible ASCII (a
    character outside it percent-encoded), no query or fragment, no trailing
    slash ("/api/" is "/api", "/" is "")."""
    path = str(value).rstrip("/")
    if not path:
        return ""
    if not path.startswith("/"):
        raise ValueError(f"expected a path starting with '/', got {value!r}")
    if not all(0x21 <= ord(c) <= 0x7E for c in path) or "?" in path or "#" in path:
        raise ValueError(
            f"expected a path of visible ASCII without '?' or '#' (percent-encode the rest), "
            f"got {value!r}"
        )
    return path


def _binds(value: Any) -> tuple[str, ...]:
    from prefork.bindspec import parse_bind  # stdlib-only, like this module

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
    return tuple(specs)


def _strings(value: Any) -> tuple[str, ...]:
    """Several strings: repeated options, a list in a config file, or commas."""
    items = [value] if isinstance(value, str) else list(value or ())
    return tuple(part.strip() for item in items for part in str(item).split(",") if part.strip())


def _comma_list(value: Any) -> str:
    """A comma-separated list as one string; a config file may give a list
    (gunicorn takes ``forwarded_allow_ips = ["10.0.0.1", "10.0.0.2"]``)."""
    if isinstance(value, (list, tuple, set, frozenset)):
        return ",".join(str(item).strip() for item in value)
    return str(value)


def _proc_name(value: Any) -> str:
    """gunicorn's ``proc_name = None`` (its default) is prefork's default,
    not a process titled "None: master"."""
    return "prefork" if value is None or str(value).strip() == "" else str(value)


def _directory(value: Any) -> str | None:
    import os.path

    path = _optional_str(value)
    if path is not None and not os.path.isdir(path):
        raise ValueError(f"no such directory: {path!r}")
    return path


def _env_pairs(value: Any) -> tuple[str, ...]:
    """``NAME=VALUE`` strings (a list in a config file); the value may hold
    commas, so each item is one pair (repeat the option for more)."""
    items = [value] if isinstance(value, str) else list(value or ())
    pairs = []
    for item in items:
        name, equals, _ = str(item).partition("=")
        if not equals or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ValueError(f"expected NAME=VALUE, got {item!r}")
        pairs.append(str(item))
    return tuple(pairs)


def _directories(value: Any) -> tuple[str, ...]:
    """Several existing directories (a watcher given one that is not there
    died with a traceback, or watched nothing, silently)."""
    paths = _strings(value)
    for path in paths:
        _directory(path)
    return paths


def _files_in_directories(value: Any) -> tuple[str, ...]:
    """Several files, each in an existing directory (the file itself may
    come later: a watcher sees it appear)."""
    import os.path

    paths = _strings(value)
    for path in paths:
        _directory(os.path.dirname(os.path.abspath(path)))
    return paths


def _text(value: Any) -> str:
    """Text, where a config file's None is no text (not "None")."""
    return "" if value is None else str(value).strip()


def _statsd_host(value: Any) -> str | None:
    from prefork.statsd import parse_address

    text = _optional_str(value)
    if text is None or not text.strip():
        return None
    parse_address(text)
    return text.strip()


def _metrics_bind(value: Any) -> str | None:
    from prefork.bindspec import parse_bind

    spec = _optional_str(value)
    if spec is not None and parse_bind(spec.strip()).kind == "fd":
        raise ValueError("expected HOST:PORT or unix:PATH (fd:// is for --bind)")
    return spec.strip() if spec is not None else None


def _octal(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        try:
            number = int(str(value).strip(), 8)
        except ValueError:
            raise ValueError(f"expected an octal number such as 027, got {value!r}") from None
    if not 0 <= number <= 0o777:
        raise ValueError(f"must be between 000 and 777, got {value!r}")
    return number


def _mode(value: Any) -> int:
    mode = _octal(value)
    if mode is None:
        raise ValueError("expected an octal mode such as 600")
    return mode


# ---------------------------------------------------------------------- the table

#: The groups of ``prefork --help`` and of the README's settings table.
GROUPS: dict[str, str] = {
    "application": "what to serve and how to call it",
    "binding": "where to listen",
    "workers": "how many worker processes, and how they are supervised",
    "limits": "timeouts and limits of every connection and request",
    "logging": "access and error logs",
    "websocket": "WebSocket connections of ASGI applications",
    "proxies": "TLS, proxies and health checks",
    "deployment": "process identity: pid file, user, group, umask",
    "metrics": "Prometheus metrics of the server and the application",
    "development": "reloading workers when the application's code changes",
}


#: prefork's own loggers (not the access log): they keep the error log if
#: the application takes the root logger over; statsd counts their warnings
OWN_LOGGERS = ("prefork.error", "prefork.master", "prefork.sockets", "prefork.worker")


@dataclass(frozen=True)
class Setting:
    """How one setting is written, parsed and documented."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    help: str
    group: str
    short: str | None = None
    #: another long option for it (gunicorn's name, where it differs)
    alias: str | None = None
    flag: bool = False  # a switch on the command line (no value)
    multiple: bool = False  # may be given several times
    metavar: str | None = None
    #: a change cannot apply on HUP (sockets, identity): it needs a USR2 upgrade.
    restart: bool = False
    #: names files or directories: a relative one is taken from the directory
    #: prefork was started in (see :meth:`under`)
    path: bool = False

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "PREFORK_" + self.name.upper()

    def under(self, base: str | None, value: Any) -> Any:
        """``value`` (as given, before parsing) with relative paths joined to ``base``.

        ``--chdir`` moves the master before the pid file and the logs are
        opened, the application is loaded and any HUP re-reads the settings:
        a relative ``--pidfile run/app.pid`` was checked against one
        directory and then opened from another (a traceback, or a file
        somewhere else), and on HUP a relative ``--config`` or ``--chdir``
        was looked for under the ``--chdir`` directory.  Resolving once, by
        the rule :func:`prefork.config.load` applies (gunicorn's), gives every
        reader the same file.  Values that are not text are left to the
        parser (its message names the setting).
        """
        if not self.path or base is None:
            return value

        def join(item: Any) -> Any:
            if not isinstance(item, str) or not item.strip():
                return item
            if self.parse is _log_file and item.strip().lower() in LOG_NOT_FILES:
                return item
            return os.path.join(base, item)  # (an absolute item stays as it is)

        if self.multiple:
            if isinstance(value, str) or (
                isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
            ):
                return tuple(join(part) for part in _strings(value))
            return value
        return join(value)

    def __call__(self, value: Any) -> Any:
        """Parse ``value``; a bad one raises ConfigError naming this setting."""
        try:
            return self.parse(value)
        except ValueError as exc:
            # (the application has no option: named as load errors name it)
            where = f"app {value!r}" if self.name == "app" else None
            raise ConfigError(self.name, str(exc), where=where) from None
        except TypeError:  # (a config file's value of the wrong kind: bind = 8000)
            raise ConfigError(
                self.name, f"expected {self.metavar or 'a value'}, got {value!r}"
            ) from None


def _s(
    default: Any,
    parse: Callable[[Any], Any],
    help: str,
    group: str,
    **options: Any,
) -> Any:
    """A dataclass field whose metadata is its Setting (the name is filled in below)."""
    spec = {"parse": parse, "default": default, "help": help, "group": group, **options}
    return field(default=default, metadata={"setting": spec})


# --------------------------------------------------------------------- server hooks


@dataclass(frozen=True)
class Hooks:
    """Server hooks from a config file, named and called as gunicorn calls them.

    ``server`` is the master (:class:`prefork.master.Master`),
    ``worker`` a worker's (:class:`prefork.hooks.WorkerView`); the README
    says when and in which process each one runs.
    """

    on_starting: Callable[..., Any] | None = None
    on_reload: Callable[..., Any] | None = None
    when_ready: Callable[..., Any] | None = None
    pre_fork: Callable[..., Any] | None = None
    post_fork: Callable[..., Any] | None = None
    post_worker_init: Callable[..., Any] | None = None
    worker_int: Callable[..., Any] | None = None
    worker_abort: Callable[..., Any] | None = None
    pre_exec: Callable[..., Any] | None = None
    pre_request: Callable[..., Any] | None = None
    post_request: Callable[..., Any] | None = None
    child_exit: Callable[..., Any] | None = None
    worker_exit: Callable[..., Any] | None = None
    nworkers_changed: Callable[..., Any] | None = None
    on_exit: Callable[..., Any] | None = None
    ssl_context: Callable[..., Any] | None = None

    def names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]


#: hook name -> the names of its arguments (gunicorn's signatures).
HOOKS: dict[str, tuple[str, ...]] = {
    "on_starting": ("server",),
    "on_reload": ("server",),
    "when_ready": ("server",),
    "pre_fork": ("server", "worker"),
    "post_fork": ("server", "worker"),
    "post_worker_init": ("worker",),
    "worker_int": ("worker",),
    "worker_abort": ("worker",),
    "pre_exec": ("server",),
    "pre_request": ("worker", "req"),
    "post_request": ("worker", "req", "environ", "resp"),
    "child_exit": ("server", "worker"),
    "worker_exit": ("server", "worker"),
    "nworkers_changed": ("server", "new_value", "old_value"),
    "on_exit": ("server",),
    "ssl_context": ("config", "default_ssl_context_factory"),
}


# ---------------------------------------------------------------------- Config


@dataclass(frozen=True)
class Config:
    """Every setting, validated and typed; frozen, so it can be shared and compared."""

    # -- application
    app: str | None = _s(
        None,
        _app_spec,
        "the application, MODULE:CALLABLE (positional on the command line)",
        "application",
        metavar="MODULE:CALLABLE",
    )
    interface: str = _s(
        "auto",
        _choice("auto", "callback", "wsgi", "asgi", aliases={"seed": "callback", "asgi3": "asgi"}),
        "how the application is called: callback (the tornado-style callback(request)), "
        "wsgi (PEP 3333 app(environ, start_response)), asgi (ASGI 3: async "
        "app(scope, receive, send)) or auto (from its signature)",
        "application",
        metavar="KIND",
    )
    threads: int = _s(
        4,
        _number(int, 1),
        "WSGI: application threads per worker (1 for an application that is not thread-safe)",
        "application",
        metavar="N",
    )
    factory: bool = _s(
        False,
        parse_bool,
        "MODULE:CALLABLE is a factory: call it (no arguments) to get the application",
        "application",
        flag=True,
    )
    chdir: str | None = _s(
        None,
        _directory,
        "directory to change into before loading the application (gunicorn's chdir)",
        "application",
        metavar="DIR",
        restart=True,
        path=True,
    )
    pythonpath: tuple[str, ...] = _s(
        (),
        _directories,
        "directories put first on the import path before loading the application "
        "(gunicorn's pythonpath); repeatable or comma-separated",
        "application",
        multiple=True,
        metavar="DIR",
        restart=True,
        path=True,
    )
    env: tuple[str, ...] = _s(
        (),
        _env_pairs,
        "NAME=VALUE set in the environment of the master, the workers and the "
        "application (gunicorn's raw_env); repeatable",
        "application",
        short="-e",
        multiple=True,
        metavar="NAME=VALUE",
        restart=True,
    )
    lifespan: str = _s(
        "auto",
        _choice("auto", "on", "off"),
        "ASGI lifespan protocol: on (a failing startup fails the worker's boot), off, or "
        "auto (on unless the application does not support it)",
        "application",
        metavar="MODE",
    )
    root_path: str = _s(
        "",
        _root_path,
        "the path prefix the application is mounted under behind a proxy (ASGI root_path, "
        "WSGI SCRIPT_NAME)",
        "application",
        metavar="PATH",
    )
    date_header: bool = _s(
        True,
        parse_bool,
        "send a Date header in the responses the server frames (ASGI, WSGI, write_headers; "
        "RFC 9110 6.6.1), unless the application sent one",
        "application",
        flag=True,
    )
    preload: bool = _s(
        False,
        parse_bool,
        "import the application in the master before forking (shared memory; "
        "HUP then does not reload code)",
        "application",
        flag=True,
        restart=True,
    )
    config: str | None = _s(
        None,
        _existing_file,
        "a Python file of settings (name = value) and server hooks",
        "application",
        short="-c",
        metavar="FILE",
        restart=True,
        path=True,
    )
    # -- binding
    bind: tuple[str, ...] = _s(
        ("127.0.0.1:8000",),
        _binds,
        "address to listen on: HOST:PORT, [IPV6]:PORT, PORT or :PORT (every interface), "
        "unix:PATH, unix:@NAME (abstract) or fd://N; repeatable",
        "binding",
        short="-b",
        multiple=True,
        metavar="ADDRESS",
        restart=True,
    )
    backlog: int = _s(
        2048,
        _bounded(_number(int, 1), 2**31 - 1),  # (a C int: listen() takes no more)
        "listen backlog: connections the kernel queues for the workers (where they wait "
        "while every worker is at --max-connections / --max-concurrency)",
        "binding",
        metavar="N",
        restart=True,
    )
    reuse_port: bool = _s(
        False,
        parse_bool,
        "SO_REUSEPORT listening sockets (connections queued on a closing socket are reset)",
        "binding",
        flag=True,
        restart=True,
    )
    unix_socket_mode: int = _s(
        0o600,
        _mode,
        "mode of unix sockets bound by --bind unix:PATH, in octal",
        "binding",
        metavar="MODE",
        restart=True,
    )
    # -- workers
    workers: int = _s(
        0,
        _number(int, 0),
        "worker processes (0: one per usable CPU; WEB_CONCURRENCY is honoured)",
        "workers",
        short="-w",
        metavar="N",
    )
    timeout: float = _s(
        30.0,
        _number(float, 0.0),
        "seconds without a heartbeat before a worker is killed as hung (0: never, as "
        "gunicorn's timeout = 0; --boot-timeout still applies)",
        "workers",
        short="-t",
        metavar="SECONDS",
    )
    boot_timeout: float = _s(
        60.0,
        _number(float, 0.0, above=True),
        "seconds a new worker has to become ready",
        "workers",
        metavar="SECONDS",
    )
    graceful_timeout: float = _s(
        30.0,
        _number(float, 0.0),
        "seconds a stopping worker has to finish its requests",
        "workers",
        metavar="SECONDS",
    )
    max_requests: int = _s(
        0,
        _number(int, 0),
        "recycle a worker after this many requests (0: never)",
        "workers",
        metavar="N",
    )
    max_requests_jitter: int = _s(
        0,
        _number(int, 0),
        "add up to this many requests, at random per worker, to max_requests",
        "workers",
        metavar="N",
    )
    max_memory: int = _s(
        0,
        parse_size,
        "recycle a worker whose RSS exceeds this (e.g. 512M; 0: never)",
        "workers",
        metavar="SIZE",
    )
    # -- limits
    max_header_size: int = _s(
        65536,
        _positive_size,
        "request line + headers, in bytes (over it: 431)",
        "limits",
        metavar="SIZE",
    )
    max_request_line: int = _s(
        8192,
        _positive_size,
        "the request line alone, in bytes (over it: 414)",
        "limits",
        metavar="SIZE",
    )
    max_headers: int = _s(
        100,
        _number(int, 1),
        "header lines per request (over it: 431)",
        "limits",
        metavar="N",
    )
    max_header_line: int = _s(
        8190,
        _positive_size,
        "one header or trailer line, name and value, in bytes (over it: 431; gunicorn's "
        "limit_request_field_size and Apache's LimitRequestFieldSize, the same default)",
        "limits",
        metavar="SIZE",
    )
    max_body_size: int = _s(
        100 * 1024 * 1024,
        parse_size,
        "request body in bytes, after de-chunking (over it: 413)",
        "limits",
        metavar="SIZE",
    )
    max_chunk_line: int = _s(
        4096,
        _positive_size,
        "a chunk-size line with its extensions, in bytes (over it: 400)",
        "limits",
        metavar="SIZE",
    )
    header_timeout: float = _s(
        20.0,
        _number(float, 0.0, above=True),
        "seconds to receive a request head, plus 1 s per --header-min-rate bytes received, "
        "up to --header-timeout-max (slowloris guard; then 408 and close)",
        "limits",
        metavar="SECONDS",
    )
    header_min_rate: int = _s(
        500,
        parse_size,
        "bytes per second a request head must keep up to earn more time than "
        "--header-timeout (0: no extension)",
        "limits",
        metavar="RATE",
    )
    header_timeout_max: float = _s(
        40.0,
        _number(float, 0.0),
        "seconds a request head may take at most, however fast it arrives "
        "(at or below --header-timeout: no extension)",
        "limits",
        metavar="SECONDS",
    )
    body_timeout: float = _s(
        20.0,
        _number(float, 0.0, above=True),
        "seconds to receive a request body, plus 1 s per --body-min-rate bytes received; "
        "a body silent this long (to twice this) is cut too (then 408 and close)",
        "limits",
        metavar="SECONDS",
    )
    body_min_rate: int = _s(
        500,
        parse_size,
        "bytes per second a request body must keep up: each this many bytes extend "
        "--body-timeout by 1 s (0: no minimum rate, only --body-timeout without a byte)",
        "limits",
        metavar="RATE",
    )
    keep_alive: float = _s(
        75.0,
        _number(float, 0.0),
        "seconds an idle keep-alive connection is kept (0: no keep-alive); longer than "
        "the proxy's upstream keep-alive (nginx: 60 s)",
        "limits",
        metavar="SECONDS",
    )
    send_timeout: float = _s(
        60.0,
        _number(float, 0.0),
        "seconds a client may leave its responses unread: output held past the "
        "high-water mark (64 KiB) that does not shrink this long is dropped and the "
        "connection aborted (nginx send_timeout; 0: no limit)",
        "limits",
        metavar="SECONDS",
    )
    drain_grace: float = _s(
        1.0,
        _number(float, 0.0),
        "seconds an idle keep-alive connection stays open once a graceful stop starts",
        "limits",
        metavar="SECONDS",
    )
    drain_delay: float = _s(
        0.0,
        _number(float, 0.0),
        "seconds a stopping worker keeps serving with readiness 503 before it closes its listeners",
        "limits",
        metavar="SECONDS",
    )
    max_connections: int = _s(
        0,
        _number(int, 0),
        "open connections per worker (WebSockets included) past which it stops accepting: "
        "new ones wait in the listen queue for any worker, never refused (0: no limit)",
        "limits",
        metavar="N",
    )
    max_concurrency: int = _s(
        0,
        _number(int, 0),
        "requests in flight per worker past which it stops accepting new connections (0: no limit)",
        "limits",
        metavar="N",
    )
    request_timeout: float = _s(
        0.0,
        _number(float, 0.0),
        "seconds from a request head to the end of its response: then 503 (or a close, "
        "once the response has begun); ASGI tasks are cancelled (0: no limit)",
        "limits",
        metavar="SECONDS",
    )
    # -- websocket
    ws_max_size: int = _s(
        16 * 1024 * 1024,
        _positive_size,
        "largest WebSocket message accepted, in bytes (over it: close 1009)",
        "websocket",
        metavar="SIZE",
    )
    ws_ping_interval: float = _s(
        20.0,
        _number(float, 0.0),
        "seconds between WebSocket pings to an idle client (0: none)",
        "websocket",
        metavar="SECONDS",
    )
    ws_ping_timeout: float = _s(
        20.0,
        _number(float, 0.0, above=True),
        "seconds to wait for the pong before the connection is closed (1011)",
        "websocket",
        metavar="SECONDS",
    )
    ws_per_message_deflate: bool = _s(
        True,
        parse_bool,
        "negotiate permessage-deflate compression (RFC 7692)",
        "websocket",
        flag=True,
    )
    # -- logging
    access_log: str | None = _s(
        "-",
        _log_file,
        "access log file ('-': stdout, 'off': none, 'logging': a LogRecord per line on the "
        "'prefork.access' logger, for your own logging config; slower)",
        "logging",
        metavar="FILE",
        path=True,
    )
    access_log_format: str = _s(
        "combined",
        _choice("combined", "json"),
        "access log format: combined or json",
        "logging",
        metavar="FORMAT",
    )
    error_log: str | None = _s(
        "-", _log_file, "error log file ('-': stderr)", "logging", metavar="FILE", path=True
    )
    capture_output: bool = _s(
        False,
        parse_bool,
        "with --error-log FILE: stdout and stderr of the master and workers (print, "
        "C libraries, a crash's traceback) go to that file too, as gunicorn's",
        "logging",
        flag=True,
    )
    log_level: str = _s(
        "info",
        _choice("debug", "info", "warning", "error", "critical"),
        "log level",
        "logging",
        metavar="LEVEL",
    )
    log_config: str | dict[str, Any] | None = _s(
        None,
        _log_config,
        "logging configuration, applied in the master (the workers inherit it): a .json "
        "dictConfig file (uvicorn's --log-config) or an INI fileConfig file (gunicorn's "
        "--log-config); in a config file also a dict (gunicorn's logconfig_dict). It "
        "replaces --error-log; the access log stays --access-log's",
        "logging",
        metavar="FILE",
        path=True,
    )
    # -- TLS, proxies, health
    certfile: str | None = _s(
        None,
        _existing_file,
        "TLS certificate (PEM); enables HTTPS",
        "proxies",
        metavar="FILE",
        path=True,
    )
    keyfile: str | None = _s(
        None, _existing_file, "TLS private key (PEM)", "proxies", metavar="FILE", path=True
    )
    ca_certs: str | None = _s(
        None,
        _existing_file,
        "CA bundle to verify client certificates against",
        "proxies",
        metavar="FILE",
        path=True,
    )
    cert_reqs: str = _s(
        "none",
        _cert_reqs,
        "client certificates: none, optional or required (or gunicorn's 0, 1, 2)",
        "proxies",
        metavar="MODE",
    )
    ciphers: str | None = _s(
        None,
        _ciphers,
        "TLS 1.2 cipher list, OpenSSL's syntax (TLS 1.3's suites are OpenSSL's own); "
        "default: Python's",
        "proxies",
        metavar="LIST",
    )
    xheaders: bool = _s(
        False,
        parse_bool,
        "use X-Real-Ip / X-Forwarded-For / X-Scheme / X-Forwarded-Proto from trusted peers "
        "(tornado's set: only behind a proxy that sets or clears all four)",
        "proxies",
        flag=True,
    )
    proxy_headers: bool = _s(
        True,
        parse_bool,
        "use X-Forwarded-For (its right-most address) and X-Forwarded-Proto from trusted "
        "peers (--forwarded-allow-ips: loopback by default), as uvicorn's --proxy-headers",
        "proxies",
        flag=True,
    )
    forwarded_allow_ips: str = _s(
        "127.0.0.1,::1",
        _comma_list,
        "comma-separated IPs/networks whose X-Forwarded-* and PROXY headers are trusted ('*': all)",
        "proxies",
        metavar="IPS",
    )
    proxy_protocol: bool = _s(
        False,
        parse_bool,
        "expect a PROXY protocol v1/v2 header from trusted peers (others are refused)",
        "proxies",
        flag=True,
    )
    health_live_path: str | None = _s(
        None,
        _url_path,
        "answer this path with 200 before the application (liveness)",
        "proxies",
        metavar="PATH",
    )
    health_ready_path: str | None = _s(
        None,
        _url_path,
        "answer this path with 200, or 503 while draining (readiness)",
        "proxies",
        metavar="PATH",
    )
    # -- deployment
    pidfile: str | None = _s(
        None,
        _file_to_write,
        "write the master's pid to this file (and PIDFILE.scoreboard for prefork status)",
        "deployment",
        short="-p",
        metavar="FILE",
        restart=True,
        path=True,
    )
    user: str | None = _s(
        None,
        _optional_str,
        "run workers as this user (name or uid) after binding",
        "deployment",
        short="-u",
        metavar="USER",
        restart=True,
    )
    group: str | None = _s(
        None,
        _optional_str,
        "run workers as this group (name or gid) after binding",
        "deployment",
        short="-g",
        metavar="GROUP",
        restart=True,
    )
    umask: int | None = _s(
        None,
        _octal,
        "process umask, in octal (e.g. 027)",
        "deployment",
        metavar="MASK",
        restart=True,
    )
    proc_name: str = _s(
        "prefork",
        _proc_name,
        "process title prefix: PROC_NAME: master, PROC_NAME: worker N",
        "deployment",
        short="-n",
        metavar="NAME",
        restart=True,
    )
    # -- metrics
    metrics_path: str | None = _s(
        None,
        _url_path,
        "answer this path with Prometheus metrics of every worker (and the application's "
        "prometheus_client metrics), before the application",
        "metrics",
        metavar="PATH",
    )
    metrics_bind: str | None = _s(
        None,
        _metrics_bind,
        "serve the same metrics from the master on this address (HOST:PORT or unix:PATH), "
        "apart from the application's sockets",
        "metrics",
        metavar="ADDRESS",
        restart=True,
    )
    statsd_host: str | None = _s(
        None,
        _statsd_host,
        "send gunicorn's statsd metrics (requests, status codes, durations, workers, "
        "log lines) to this address: HOST[:PORT] (UDP, port 8125) or unix:PATH",
        "metrics",
        metavar="ADDRESS",
    )
    statsd_prefix: str = _s(
        "",
        _text,
        "a prefix for the statsd metric names (a dot is added)",
        "metrics",
        metavar="PREFIX",
    )
    dogstatsd_tags: str = _s(
        "",
        _text,
        "DogStatsD tags added to every statsd line: key:value,key2:value2",
        "metrics",
        metavar="TAGS",
    )
    reload: bool = _s(
        False,
        parse_bool,
        "development: roll the workers (as HUP does) when a watched file changes; "
        "not with --preload",
        "development",
        flag=True,
        restart=True,
    )
    reload_engine: str = _s(
        "auto",
        _choice("auto", "watchfiles", "poll", aliases={"inotify": "watchfiles"}),
        "--reload's watcher: watchfiles (inotify), poll (os.scandir every 0.25 s: for "
        "file systems without inotify, such as some bind mounts), or auto (watchfiles "
        "when installed)",
        "development",
        metavar="ENGINE",
        restart=True,
    )
    reload_dir: tuple[str, ...] = _s(
        (),
        _directories,
        "directories --reload watches (default: the application's and the config "
        "file's); repeatable",
        "development",
        multiple=True,
        metavar="DIR",
        restart=True,
        path=True,
    )
    reload_extra_files: tuple[str, ...] = _s(
        (),
        _files_in_directories,
        "files --reload watches too, whatever their names (templates, .env, ...; "
        "gunicorn's --reload-extra-file); repeatable",
        "development",
        alias="--reload-extra-file",
        multiple=True,
        metavar="FILE",
        restart=True,
        path=True,
    )
    reload_include: tuple[str, ...] = _s(
        (),
        _strings,
        "file name globs --reload watches besides *.py; repeatable",
        "development",
        multiple=True,
        metavar="GLOB",
        restart=True,
    )
    reload_exclude: tuple[str, ...] = _s(
        (),
        _strings,
        "file or directory name globs --reload ignores besides .*, __pycache__, *.py[cod], "
        "*~; repeatable",
        "development",
        multiple=True,
        metavar="GLOB",
        restart=True,
    )
    #: server hooks (config file only; not a setting of the command line).
    hooks: Hooks = field(default_factory=Hooks, compare=True)

    def changes(self, other: Config) -> list[str]:
        """Names of the settings (and ``hooks``) whose values differ in ``other``.

        Hooks read again from the same file are new function objects: they
        count as changed only if their code did (every HUP logged "hooks
        changed" otherwise)."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if (
                not _same_hooks(self.hooks, other.hooks)
                if f.name == "hooks"
                else getattr(self, f.name) != getattr(other, f.name)
            )
        ]


def _same_hooks(old: Hooks, new: Hooks) -> bool:
    for f in dataclasses.fields(old):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a is not b and _hook_code(a) != _hook_code(b):
            return False
    return True


def _hook_code(hook: Any) -> Any:
    code = getattr(hook, "__code__", None)
    if code is None:
        return hook  # (None, or a callable object: compared as it is)
    return (code.co_code, code.co_consts, code.co_names, getattr(hook, "__defaults__", None))


#: The table of settings, in ``--help`` order (``hooks`` is not a setting).
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name=f.name, **f.metadata["setting"])
    for f in dataclasses.fields(Config)
    if "setting" in f.metadata
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

#: gunicorn's names for prefork's settings, accepted in config files.
GUNICORN_ALIASES = {
    "keepalive": "keep_alive",
    "loglevel": "log_level",
    "accesslog": "access_log",
    "errorlog": "error_log",
    "preload_app": "preload",
    "wsgi_app": "app",
    "limit_request_line": "max_request_line",
    "limit_request_fields": "max_headers",
    "limit_request_field_size": "max_header_line",
    "worker_connections": "max_connections",
    "raw_env": "env",
    # gunicorn's three ways of giving a logging configuration
    "logconfig": "log_config",
    "logconfig_dict": "log_config",
    "logconfig_json": "log_config",
    # gunicorn 27's ASGI worker: the same values (auto, on, off), the same size
    "asgi_lifespan": "lifespan",
    "websocket_max_message_size": "ws_max_size",
}

#: Every default, as one object (what ``HTTPServer(cb)`` serves with).
DEFAULTS = Config()


def make_config(base: Config | None = None, **values: Any) -> Config:
    """``base`` (default: the defaults) with ``values`` parsed and applied.

    This is how the Python API builds the same object as the command line:
    ``make_config(max_body_size="1k")``.  An unknown name is a TypeError, as
    an unknown keyword argument is; a bad value a ConfigError.
    """
    unknown = sorted(set(values) - BY_NAME.keys() - {"hooks"})
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    parsed = {
        name: value if name == "hooks" else BY_NAME[name](value) for name, value in values.items()
    }
    return dataclasses.replace(base or DEFAULTS, **parsed)
