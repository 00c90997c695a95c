"""Load the :class:`~prefork.settings.Config` from a file, the environment and the CLI.

Precedence, lowest first: defaults, config file, environment
(``PREFORK_<NAME>``), command line.  The config file is Python, as
gunicorn's: ``name = value`` lines for settings and ``def hook(...)`` for
server hooks.  gunicorn's own names for the same settings (``keepalive``,
``loglevel``, ``preload_app``, ...) are understood; gunicorn settings that
prefork has no use for are ignored with a warning, so a gunicorn config file
runs unchanged; any other name is an error (a typo must not pass silently).

A bad value raises :class:`ConfigError`, whose message is one line naming
the setting; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import os
import runpy
import traceback
import types
from collections.abc import Callable, Mapping
from typing import Any

from prefork.cpus import WorkerVariableError, workers_from_environment
from prefork.settings import (
    BY_NAME,
    GUNICORN_ALIASES,
    HOOKS,
    SETTINGS,
    Config,
    ConfigError,
    Hooks,
    Setting,
    parse_size,
)

__all__ = [
    "SETTINGS",
    "Config",
    "ConfigError",
    "Loaded",
    "Setting",
    "check_environment",
    "load",
    "parse_size",
    "reload",
    "validate",
]

#: gunicorn settings that have no meaning for prefork: ignored with a warning.
GUNICORN_IGNORED = frozenset(
    """worker_class daemon worker_tmp_dir
    spew check_config print_config syslog syslog_addr syslog_prefix syslog_facility
    enable_stdio_inheritance logger_class
    tmp_upload_dir secure_scheme_headers forwarder_headers paste sendfile
    strip_header_spaces permit_unconventional_http_method permit_unconventional_http_version
    casefold_http_method header_map ssl_version
    do_handshake_on_connect suppress_ragged_eofs initgroups disable_redirect_access_to_syslog
    errorlog_format proxy_protocol_timeout
    enable_backlog_metric default_proc_name protocol uwsgi_allow_ips http_protocols
    http2_cleartext http2_max_concurrent_streams http2_initial_window_size http2_max_frame_size
    http2_max_header_list_size raw_paste_global_conf permit_obsolete_folding asgi_loop
    asgi_disconnect_grace_period http_parser dirty_apps dirty_workers dirty_timeout
    dirty_threads dirty_graceful_timeout control_socket control_socket_mode
    control_socket_disable""".split()
)

#: what prefork does instead, for ignored gunicorn settings that have a counterpart
GUNICORN_IGNORED_NOTES = {
    "secure_scheme_headers": "is prefork's --proxy-headers (on by default: X-Forwarded-Proto "
    "from --forwarded-allow-ips peers; X-Forwarded-Ssl and X-Forwarded-Protocol are not read)",
    "forwarder_headers": "is prefork's --proxy-headers (X-Forwarded-For, its right-most "
    "address, from --forwarded-allow-ips peers)",
    "worker_tmp_dir": "is not needed: the heartbeat is in shared memory, not a file",
    "syslog": "is a --log-config handler here (logging.handlers.SysLogHandler)",
    "sendfile": "is always on where it can be (plain sockets)",
}

#: gunicorn's hooks that prefork does not call (gunicorn 27's dirty arbiter):
#: a file defining one is warned about, since the code in it would otherwise
#: never run, unnoticed.
GUNICORN_UNSUPPORTED_HOOKS = frozenset(
    "on_dirty_starting dirty_post_fork dirty_worker_init dirty_worker_exit".split()
)

#: gunicorn's limits whose 0 means "unlimited" -> the prefork setting.  prefork
#: refuses 0 for its own names (a limit of nothing is a mistake there); for
#: gunicorn's the limit becomes the widest the head allows: the whole head's
#: bound (max_header_size), which still applies, so nothing is unbounded.
GUNICORN_UNLIMITED = {
    "limit_request_line": "max_request_line",
    "limit_request_fields": "max_headers",
    "limit_request_field_size": "max_header_line",
}


class _HeadBound:
    """A file's gunicorn limit of 0, resolved against max_header_size once every
    source is merged (the environment or the command line may change it)."""


#: the key, in a config file's values, of gunicorn's proxy_allow_ips: merged
#: into forwarded_allow_ips by :func:`load` once proxy_protocol is known.
PROXY_ALLOW_IPS = "proxy_allow_ips"

#: gunicorn 27's proxy_protocol values: prefork reads v1 and v2 headers alike,
#: so every "on" value is on (v1 or v2 alone: the other version is read too).
GUNICORN_PROXY_PROTOCOL = {"v1": True, "v2": True, "auto": True, "none": False}


#: ``PREFORK_*`` variables that are not settings: read by other parts
#: (the config file's name, sockets and the old master's pid handed over by
#: an upgrade, the event loop's choice, the metrics directory, the unlinking
#: of unix sockets) or by the test suite.
OTHER_VARIABLES = frozenset(
    """PREFORK_CONFIG PREFORK_FDS PREFORK_MASTER_PID PREFORK_UVLOOP PREFORK_MULTIPROC_DIR
    PREFORK_UNLINK_UNIX PREFORK_STRICT_SKIPS""".split()
)

#: command-line commands, not settings: their variables are not read
COMMAND_VARIABLES = frozenset({"PREFORK_CHECK_CONFIG", "PREFORK_PRINT_CONFIG"})


@dataclasses.dataclass(frozen=True)
class Loaded:
    """A loaded configuration and the warnings to show once logging is set up."""

    config: Config
    warnings: tuple[str, ...] = ()


def load(
    cli: Mapping[str, Any], environ: Mapping[str, str] = os.environ, base: str | None = None
) -> Loaded:
    """Merge defaults < config file < environment < command line, then validate.

    ``cli`` maps setting names to what the command line gave (None: not
    given); ``app`` is among them.  ``base``: the directory prefork was
    started in (None: the current one); the CLI passes it again on HUP, when
    the master is in its ``--chdir``.  Relative paths are made absolute here,
    by gunicorn's rule (a gunicorn.conf.py runs unchanged): ``--config`` and
    ``--chdir`` from ``base``, every other file (``--pidfile``, the logs,
    ``--pythonpath``, the TLS files...) from ``--chdir``, where the master
    works, when it is given.
    """
    base = os.getcwd() if base is None else base
    given_chdir = cli.get("chdir")
    if given_chdir is None:
        given_chdir = environ.get(BY_NAME["chdir"].env)
    values: dict[str, Any] = {}
    warnings: list[str] = []
    hooks = Hooks()
    config_file = cli.get("config") or environ.get("PREFORK_CONFIG")
    if config_file:
        config_file = BY_NAME["config"].under(base, str(config_file))
        file_values, hooks, warnings = read_config_file(str(config_file), base, given_chdir)
        values.update(file_values)
    elif os.path.isfile(os.path.join(base, "gunicorn.conf.py")):
        # gunicorn reads it when no -c is given; a different server doing so
        # would surprise, but passing it over in silence would too.
        warnings.append("./gunicorn.conf.py is not read: pass -c gunicorn.conf.py to use it")
    if given_chdir is not None:
        values["chdir"] = _parse(BY_NAME["chdir"], given_chdir, base, base)
    files = values.get("chdir") or base
    warnings.extend(check_environment(environ))
    for setting in SETTINGS:
        if setting.env in environ and setting.name != "chdir":
            if setting.name == "workers" and not environ[setting.env].strip():
                continue  # (PREFORK_WORKERS= in a compose file: unset, as WEB_CONCURRENCY=)
            values[setting.name] = _parse(setting, environ[setting.env], base, files)
    for name, value in cli.items():
        if value is not None and name in BY_NAME and name != "chdir":
            values[name] = _parse(BY_NAME[name], value, base, files)
    for gunicorn_name, name in GUNICORN_UNLIMITED.items():
        if isinstance(values.get(name), _HeadBound):
            bound = values.get("max_header_size", BY_NAME["max_header_size"].default)
            # (a header line takes at least 4 bytes, "a:\r\n": no more fit the head)
            values[name] = max(1, bound // 4) if name == "max_headers" else bound
            warnings.append(
                f"{gunicorn_name} = 0 (gunicorn: unlimited): {name} = {values[name]}, "
                f"as far as --max-header-size ({bound} bytes) allows"
            )
    if values.get("umask") is not None and "unix_socket_mode" not in values:
        # gunicorn binds unix sockets under its umask and leaves the mode so:
        # umask = 0o007 gives srwxrwx--- (nginx in the group may connect);
        # prefork's 0600 would refuse it.
        values["unix_socket_mode"] = 0o777 & ~values["umask"]
    proxy_ips = values.pop(PROXY_ALLOW_IPS, None)
    if proxy_ips is not None:
        _apply_proxy_allow_ips(values, proxy_ips, cli, environ, warnings)
    config = Config(**values, hooks=hooks)
    validate(config)
    if config.workers == 0:
        # (the worker count then comes from WEB_CONCURRENCY: a bad one passed
        # --check-config and showed as workers = 0 in --print-config)
        try:
            workers_from_environment(environ)
        except WorkerVariableError as exc:
            raise ConfigError("workers", exc.reason, where=exc.variable) from None
    if "forwarded_allow_ips" in values and not (
        config.xheaders or config.proxy_headers or config.proxy_protocol
    ):
        # (gunicorn reads X-Forwarded-* from these peers on its own: here that
        # is --proxy-headers, on by default; without it the list trusts nobody)
        warnings.append(
            "--forwarded-allow-ips has no effect without --proxy-headers (X-Forwarded-For, "
            "X-Forwarded-Proto), --xheaders or --proxy-protocol: the client address and "
            "scheme stay the proxy's"
        )
    return Loaded(config, tuple(warnings))


def _apply_proxy_allow_ips(
    values: dict[str, Any],
    proxy_ips: str,
    cli: Mapping[str, Any],
    environ: Mapping[str, str],
    warnings: list[str],
) -> None:
    """gunicorn's ``proxy_allow_ips`` (a file's), merged into ``values``.

    gunicorn keeps two lists: ``proxy_allow_ips`` for the PROXY protocol,
    ``forwarded_allow_ips`` for X-Forwarded-*; prefork trusts one list of
    peers for both.  So the PROXY list is used only when the PROXY protocol is
    on (otherwise it means nothing, as in gunicorn), and never silently
    instead of another list: when both are given and differ, a warning names
    both and the one used (the PROXY list, unless ``forwarded_allow_ips`` came
    from the environment or the command line, which win over the file).
    """
    proxy_on = values.get("proxy_protocol", False)
    if not proxy_on:
        warnings.append(
            "proxy_allow_ips (gunicorn's list for the PROXY protocol) is ignored: "
            "--proxy-protocol is off"
        )
        return
    later = cli.get("forwarded_allow_ips") is not None or (
        BY_NAME["forwarded_allow_ips"].env in environ
    )
    forwarded = values.get("forwarded_allow_ips")
    if forwarded is not None and forwarded != proxy_ips:
        used = "forwarded_allow_ips" if later else "proxy_allow_ips"
        warnings.append(
            f"proxy_allow_ips ({proxy_ips}) and forwarded_allow_ips ({forwarded}) differ: "
            f"prefork trusts one list for the PROXY protocol and X-Forwarded-*; using "
            f"{used}"
        )
    if not later:
        values["forwarded_allow_ips"] = proxy_ips


def check_environment(environ: Mapping[str, str]) -> list[str]:
    """Warnings for variables that look like configuration but are not read.

    A misspelt ``PREFORK_*`` name would leave its setting at the default,
    unnoticed: a near miss of a real one is an error (as in a config file),
    any other is named in a warning.  gunicorn's ``GUNICORN_CMD_ARGS`` and
    uvicorn's ``UVICORN_*`` and their shared ``FORWARDED_ALLOW_IPS``, brought
    along from a Dockerfile, are not read either: said once, with prefork's
    name where there is one.
    """
    known = {setting.env for setting in SETTINGS} | OTHER_VARIABLES
    unknown: list[str] = []
    warnings: list[str] = []
    for name in sorted(environ):
        if not name.startswith("PREFORK_") or name in known:
            continue
        if name in COMMAND_VARIABLES:
            option = "--" + name[len("PREFORK_") :].lower().replace("_", "-")
            warnings.append(f"{name}: {option} is a command, not read from the environment")
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
        if close:
            raise ConfigError(
                "", f"not a setting (the environment); did you mean {close[0]}?", where=name
            )
        unknown.append(name)
    if unknown:
        warnings.append(f"not settings, ignored (the environment): {', '.join(unknown)}")
    if "GUNICORN_CMD_ARGS" in environ:
        warnings.append(
            "GUNICORN_CMD_ARGS is gunicorn's and is not read: give the same options on "
            "prefork's command line, or each as PREFORK_<NAME> (prefork --help)"
        )
    if "FORWARDED_ALLOW_IPS" in environ and BY_NAME["forwarded_allow_ips"].env not in environ:
        # (gunicorn and uvicorn both read it: a proxy set-up brought along
        # would otherwise trust only 127.0.0.1 here, unnoticed)
        warnings.append(
            "FORWARDED_ALLOW_IPS (gunicorn's and uvicorn's) is not read: use "
            "PREFORK_FORWARDED_ALLOW_IPS (with --xheaders or --proxy-protocol)"
        )
    uvicorn = sorted(name for name in environ if name.startswith("UVICORN_"))
    if uvicorn:
        named = [
            f"{name} (use PREFORK_BIND=host:port)"
            if name in ("UVICORN_HOST", "UVICORN_PORT")
            else f"{name} (use PREFORK_{name[8:]})"
            if "PREFORK_" + name[8:] in known
            else name
            for name in uvicorn
        ]
        warnings.append(
            f"uvicorn's variables are not read: {', '.join(named)}; prefork's are "
            "PREFORK_<NAME> (prefork --help)"
        )
    return warnings


def validate(config: Config) -> None:
    """Checks that need more than one setting, or the system (users, groups)."""
    from prefork.privileges import resolve_group, resolve_user
    from prefork.worker.xheaders import parse_networks

    try:
        if config.user:
            resolve_user(config.user)
    except ValueError as exc:
        raise ConfigError("user", str(exc)) from None
    try:
        if config.group:
            resolve_group(config.group)
    except ValueError as exc:
        raise ConfigError("group", str(exc)) from None
    try:
        parse_networks(config.forwarded_allow_ips)
    except ValueError as exc:
        raise ConfigError("forwarded_allow_ips", str(exc).split(": ", 1)[-1]) from None
    if config.drain_delay and config.drain_delay >= config.graceful_timeout:
        # (the master kills at --graceful-timeout: the worker would never drain)
        raise ConfigError(
            "drain_delay",
            f"must be less than --graceful-timeout ({config.graceful_timeout:g} s), "
            f"got {config.drain_delay:g}",
        )
    if (config.keyfile or config.ca_certs) and not config.certfile:
        raise ConfigError("certfile", "is required when --keyfile or --ca-certs is given")
    if config.cert_reqs != "none" and not config.ca_certs:
        raise ConfigError("ca_certs", f"is required with --cert-reqs {config.cert_reqs}")
    if config.reload and config.preload:
        raise ConfigError(
            "reload",
            "cannot be used with --preload (the master's imported code cannot be reloaded)",
        )


def reload(
    old: Config, cli: Mapping[str, Any], environ: Mapping[str, str], base: str | None = None
) -> Loaded:
    """HUP: load again; settings that need a restart keep their old values.

    Each kept change is a warning: "--bind changed: needs a restart (USR2)".
    ``base`` as for :func:`load`: the directory the first load resolved from.
    """
    loaded = load(cli, environ, base)
    new = loaded.config
    kept: dict[str, Any] = {}
    warnings = list(loaded.warnings)
    for setting in SETTINGS:
        if setting.restart and getattr(new, setting.name) != getattr(old, setting.name):
            kept[setting.name] = getattr(old, setting.name)
            warnings.append(
                f"{setting.option} changed to {getattr(new, setting.name)!r}: needs a "
                f"restart (USR2); keeping {getattr(old, setting.name)!r}"
            )
    if kept:
        new = dataclasses.replace(new, **kept)
    return Loaded(new, tuple(warnings))


def _parse(setting: Setting, value: Any, base: str | None, files: str | None) -> Any:
    """``value`` of ``setting`` parsed, a relative path in it made absolute:
    ``--config`` and ``--chdir`` from ``base``, other files from ``files``
    (``--chdir``, else ``base``)."""
    start = base if setting.name in ("config", "chdir") else files
    return setting(setting.under(start, value))


def read_config_file(
    path: str, base: str | None = None, chdir: Any = None
) -> tuple[dict[str, Any], Hooks, list[str]]:
    """Settings (parsed), hooks and warnings from a Python config file;
    relative paths in it are made absolute as :func:`load` says (``chdir``:
    the command line's or the environment's, which wins over the file's)."""
    if not os.path.isfile(path):
        raise ConfigError("config", f"no such file: {path!r}")
    try:
        namespace = runpy.run_path(path)
    except SyntaxError as exc:
        raise ConfigError(
            "config", f"{exc.filename or path}, line {exc.lineno}: SyntaxError: {exc.msg}"
        ) from None
    except Exception as exc:  # the file is user code: any error is a config error
        # The line of the config file that raised (the last frame in it), if any.
        lines = [
            frame.lineno
            for frame in traceback.extract_tb(exc.__traceback__)
            if os.path.abspath(frame.filename) == os.path.abspath(path)
        ]
        where = f"{path}, line {lines[-1]}" if lines else path
        raise ConfigError("config", f"{where}: {type(exc).__name__}: {exc}") from None
    values: dict[str, Any] = {}
    hooks: dict[str, Callable[..., Any]] = {}
    warnings: list[str] = []
    unknown: list[str] = []
    files = base
    defined = set(namespace) | _assigned_names(path)
    if chdir is None:
        chdir = namespace.get("chdir")
    if chdir is not None and base is not None:
        files = _parse(BY_NAME["chdir"], chdir, base, base) or base
    for name, value in namespace.items():
        if name.startswith("_") or isinstance(value, types.ModuleType):
            continue
        if name in HOOKS:
            hooks[name] = _check_hook(path, name, value)
            continue
        if name in GUNICORN_UNSUPPORTED_HOOKS and callable(value):
            warnings.append(
                f"{path}: gunicorn hook {name!r} is not supported by prefork: never called"
            )
            continue
        if callable(value) and name not in BY_NAME and name not in GUNICORN_ALIASES:
            close = difflib.get_close_matches(name, HOOKS, n=1, cutoff=0.85)
            if close and isinstance(value, types.FunctionType):
                warnings.append(
                    f"{path}: function {name!r} is not a hook; did you mean {close[0]!r}?"
                )
            continue  # helpers, imported classes
        setting_name = GUNICORN_ALIASES.get(name, name)
        if name == "worker_class" and _worker_kind(value) == "sync" and "threads" not in namespace:
            # gunicorn's sync worker serves one request at a time: an
            # application that is not thread-safe must not get prefork's 4.
            values["threads"] = 1
            warnings.append(
                f"{path}: gunicorn setting 'worker_class' = {value!r}: threads = 1 (one "
                "request at a time per worker, as gunicorn's sync worker); the class itself "
                "is ignored"
            )
            continue
        if name == "worker_class" and _is_uvicorn_worker(value) and "interface" not in namespace:
            values["interface"] = "asgi"
            warnings.append(
                f"{path}: gunicorn setting 'worker_class' = {value!r}: interface = 'asgi' "
                "(prefork serves ASGI itself)"
            )
            continue
        if name in GUNICORN_IGNORED or (name == "access_log_format" and "%(" in str(value)):
            note = GUNICORN_IGNORED_NOTES.get(name, "has no meaning for prefork")
            warnings.append(f"{path}: gunicorn setting {name!r} {note}: ignored")
            continue
        if name == PROXY_ALLOW_IPS:
            values[name] = _parse(BY_NAME["forwarded_allow_ips"], value, base, files)
            continue
        if setting_name not in BY_NAME:
            # A near miss of a setting is a typo (it would otherwise run with
            # the default, unnoticed); anything else is the file's own helper
            # variable (gunicorn config files are full of them), ignored and
            # named once below.
            typo_of = _near_miss(name, defined)
            if typo_of:
                raise ConfigError(
                    "config", f"{path}: unknown setting {name!r}; did you mean {typo_of!r}?"
                )
            if not name.isupper():
                unknown.append(name)
            continue
        if setting_name == "config":
            raise ConfigError("config", f"{path}: a config file cannot name another one")
        if name in GUNICORN_UNLIMITED and not isinstance(value, bool) and value in (0, "0"):
            values[setting_name] = _HeadBound()
            continue
        if setting_name == "proxy_protocol" and (value is None or isinstance(value, str)):
            value = GUNICORN_PROXY_PROTOCOL.get(str(value).strip().lower(), value)
        values[setting_name] = _parse(BY_NAME[setting_name], value, base, files)
    if unknown:
        warnings.append(f"{path}: not settings, ignored (helper variables?): {', '.join(unknown)}")
    if "timeout" in namespace and "request_timeout" not in namespace:
        # (not gthread: its main thread keeps the heartbeat while a request is stuck)
        if _worker_kind(namespace.get("worker_class")) == "sync" and (
            _is_gunicorn_file(path, namespace)
        ):
            warnings.append(
                f"{path}: timeout: gunicorn's sync worker was killed when one request "
                "ran this long (a 500); prefork's --timeout only catches a worker whose event "
                "loop is blocked: to limit a request's time, set request_timeout"
            )
    return values, Hooks(**hooks), warnings


def worker_class_on_command_line(worker_class: str, cli: dict[str, Any]) -> str:
    """gunicorn's ``-k CLASS`` on a ported command line: what it meant, in
    prefork's settings, added to ``cli`` (the command line's own ``--threads``
    or ``--interface`` win); returns the note to show.  A config file's
    ``worker_class`` is read by :func:`read_config_file` the same way."""
    kind = _worker_kind(worker_class)
    if kind == "sync":
        cli.setdefault("threads", 1)
        return (
            f"-k {worker_class}: threads = {cli['threads']} (one request at a time per "
            "worker, as gunicorn's sync worker)"
        )
    if kind == "gthread":
        return f"-k {worker_class}: WSGI with --threads (gunicorn's gthread)"
    if _is_uvicorn_worker(worker_class):
        cli.setdefault("interface", "asgi")
        return f"-k {worker_class}: --interface {cli['interface']} (prefork serves ASGI itself)"
    return f"-k {worker_class}: gunicorn's worker class has no meaning for prefork: ignored"


def _is_uvicorn_worker(worker_class: Any) -> bool:
    """uvicorn's worker classes for gunicorn (and the uvicorn-worker package's)."""
    text = str(worker_class).strip()
    return text.startswith(("uvicorn.workers.", "uvicorn_worker."))


def _worker_kind(worker_class: Any) -> str:
    """gunicorn's worker class, as ``sync``, ``gthread`` or ``other``; ``sync``
    when not set (gunicorn's default)."""
    if worker_class is None:
        return "sync"
    text = str(worker_class).strip()
    if text in ("sync", "gunicorn.workers.sync.SyncWorker"):
        return "sync"
    if text in ("gthread", "gunicorn.workers.gthread.ThreadWorker"):
        return "gthread"
    return "other"


def _is_gunicorn_file(path: str, namespace: Mapping[str, Any]) -> bool:
    """A file written for gunicorn: named so (gunicorn.conf.py,
    gunicorn_conf.py) or using a gunicorn name prefork spells otherwise; a
    prefork file's ``timeout`` means prefork's and gets no gunicorn note."""
    if "gunicorn" in os.path.basename(path):
        return True
    gunicorn_names = {*GUNICORN_ALIASES, *GUNICORN_IGNORED, PROXY_ALLOW_IPS}
    return any(name in gunicorn_names for name in namespace)


def _assigned_names(path: str) -> set[str]:
    """Every name the file assigns anywhere, run or not: ``certfile = cert_file``
    under ``if cert_file:`` still makes ``cert_file`` a helper, not a typo."""
    try:
        with open(path, "rb") as file:
            tree = ast.parse(file.read(), path)
    except (OSError, SyntaxError, ValueError):
        return set()
    return {
        node.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)
    }


def _near_miss(name: str, defined: set[str]) -> str | None:
    """The setting ``name`` is a typo of, or None for one of the file's helpers.

    Candidates are prefork's settings and hooks and gunicorn's names (a
    misspelt ``preload_app`` would otherwise be a helper, ignored).  A near
    miss is not a typo when the name it is near is defined in the same file
    too (tiangolo's ``graceful_timeout_str`` next to ``graceful_timeout``),
    or when the name is that one plus a suffix (``max_requests_str``,
    ``timeout_s``): helpers like these are how gunicorn files are written.
    """
    candidates = [*BY_NAME, *HOOKS, *GUNICORN_ALIASES, *GUNICORN_IGNORED, PROXY_ALLOW_IPS]
    close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.85)
    if any(match in defined or name.startswith(match + "_") for match in close):
        return None
    return close[0] if close else None


def _check_hook(path: str, name: str, value: Any) -> Callable[..., Any]:
    """A hook must be callable with gunicorn's arguments for it."""
    arguments = HOOKS[name]
    if not callable(value):
        raise ConfigError("config", f"{path}: hook {name!r} is not callable")
    try:
        inspect.signature(value).bind(*arguments)
    except TypeError:
        raise ConfigError(
            "config", f"{path}: hook {name!r} must accept ({', '.join(arguments)})"
        ) from None
    except ValueError:
        pass  # no signature to check (a builtin): call it and see
    return value
