"""The ``prefork`` command line: its argument parser and how a command ends.

The parser is argparse with prefork's manners: an unknown or malformed
option is one line (exit 2) naming the closest option, never the whole
usage, and options are never abbreviated; ``--version`` reads the
installation only when asked.  A report (``--version``, ``--print-config``,
``prefork status``) whose reader has gone ends quietly.  The command itself
(settings, application, master) is :mod:`prefork.cli`.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from prefork.settings import GROUPS, SETTINGS

__all__ = ["argument_parser", "fail", "printing", "quiet_on_closed_pipe"]


class _VersionAction(argparse.Action):
    """``--version``: print and exit 0 (argparse's own version action wants the text
    up front; ours reads the installation only when asked)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from prefork.version import version_text

        parser.exit(quiet_on_closed_pipe(printing(version_text), []))


class _Parser(argparse.ArgumentParser):
    """argparse, with an unknown or malformed option in one line (exit 2)
    rather than the whole usage (33 lines that hid the line that mattered),
    and no abbreviations (``--proxy`` silently meant ``--proxy-protocol``)."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message}{self._suggestion(message)} (prefork --help lists the options)")

    def _suggestion(self, message: str) -> str:
        """For an unknown option: prefork's name for another server's option,
        or the closest of prefork's own (``--workerz``: did you mean
        ``--workers``?), since abbreviations are refused and the one line no
        longer shows the usage."""
        prefix = "unrecognized arguments: "
        if not message.startswith(prefix):
            return ""
        options = sorted(name for name in self._option_string_actions if name.startswith("--"))
        for word in message[len(prefix) :].split():
            name = word.split("=", 1)[0]
            if not name.startswith("--"):
                continue
            if name in _OTHER_SERVERS_OPTIONS:
                return f"; prefork's is {_OTHER_SERVERS_OPTIONS[name]}"
            if name in _OTHER_SERVERS_NO_OPTION:
                return f"; {_OTHER_SERVERS_NO_OPTION[name]}"
            # (a unique prefix is named, never taken: --proxy is not --proxy-protocol)
            longer = [option for option in options if option.startswith(name)]
            close = longer if len(longer) == 1 else []
            close = close or difflib.get_close_matches(name, options, n=1, cutoff=0.75)
            if close:
                return f"; did you mean {close[0]}?"
        return ""


#: gunicorn's and uvicorn's command-line options whose prefork name differs
_OTHER_SERVERS_OPTIONS = {
    "--host": "-b/--bind HOST:PORT",
    "--port": "-b/--bind HOST:PORT",
    "--uds": "-b/--bind unix:PATH",
    "--fd": "-b/--bind fd://N",
    "--pid": "--pidfile",
    "--log-file": "--error-log",
    "--error-logfile": "--error-log",
    "--access-logfile": "--access-log",
    "--limit-request-line": "--max-request-line",
    "--limit-request-fields": "--max-headers",
    "--worker-connections": "--max-connections",
    "--limit-concurrency": "--max-concurrency",
    "--limit-max-requests": "--max-requests",
    "--timeout-keep-alive": "--keep-alive",
    "--ssl-certfile": "--certfile",
    "--ssl-keyfile": "--keyfile",
    "--ssl-ca-certs": "--ca-certs",
    "--ssl-cert-reqs": "--cert-reqs",
    "--app-dir": "--pythonpath",
    "--timeout-graceful-shutdown": "--graceful-timeout",
    "--no-access-log": "--access-log off",
    "--h11-max-incomplete-event-size": "--max-header-size",
    "--timeout-worker-healthcheck": "--boot-timeout (and --timeout once booted)",
}

#: uvicorn's options that prefork has no option for, and why
_OTHER_SERVERS_NO_OPTION = {
    "--loop": "prefork uses uvloop when it is installed (PREFORK_UVLOOP=0: asyncio's loop)",
    "--http": "prefork parses HTTP/1.1 itself (no --http choice)",
    "--ws": "prefork serves WebSocket itself, on wsproto (--ws-max-size, --ws-ping-interval, ...)",
    "--ws-max-queue": "prefork holds at most 16 unread WebSocket messages, then stops reading "
    "(no option)",
    "--env-file": "prefork reads no .env file: export the variables (or systemd's "
    "EnvironmentFile=, docker --env-file)",
    "--use-colors": "prefork's log lines have no colours",
    "--no-use-colors": "prefork's log lines have no colours",
    "--server-header": "prefork sends no Server header",
    "--no-server-header": "prefork sends no Server header",
    "--reload-delay": "--reload waits for a burst of saves to end by itself (no option)",
}


_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}  # fmt: skip


def flag_values(args: Sequence[str]) -> list[str]:
    """``--flag=false`` and ``--flag false`` (uvicorn's ``--ws-per-message-deflate
    false``, a config-minded ``--preload=true``) as ``--no-flag`` / ``--flag``.

    A switch takes no value: argparse refused ``--flag=false`` ("ignored
    explicit argument") and took the ``false`` of ``--flag false`` for the
    application, then the real application for an unknown argument.  Only
    true/false words are taken as a switch's value, so ``--reload app:app``
    is still the switch and the application.
    """
    switches = {setting.option for setting in SETTINGS if setting.flag}
    out: list[str] = []
    items = list(args)
    index = 0
    while index < len(items):
        arg = items[index]
        index += 1
        name, equals, value = arg.partition("=")
        if name in switches and equals:
            word = _BOOL_WORDS.get(value.strip().lower())
            if word is None:
                out.append(arg)  # (argparse says what is wrong with it)
            else:
                out.append(name if word else "--no-" + name[2:])
            continue
        if arg in switches and index < len(items):
            word = _BOOL_WORDS.get(items[index].strip().lower())
            if word is not None:
                index += 1
                out.append(arg if word else "--no-" + arg[2:])
                continue
        out.append(arg)
        if arg == "--":
            out.extend(items[index:])
            break
    return out


def argument_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="prefork",
        allow_abbrev=False,
        description="Serve MODULE:CALLABLE (a request callback, a WSGI or an ASGI application) "
        "with a pre-fork master.",
        epilog="Every option can also be set as PREFORK_<NAME> in the environment "
        "(PREFORK_MAX_BODY_SIZE=1M) or as name = value in a --config file, which may "
        "also define server hooks (post_fork, when_ready, pre_request, ...). Precedence: "
        "defaults < config file < environment < command line. "
        "`prefork status --pidfile PATH [--json]` shows the workers of a running master, "
        "`prefork top --pidfile PATH` a live view of them.",
    )
    commands = parser.add_argument_group("commands (command line only, never settings)")
    commands.add_argument(
        "--check-config",
        action="store_true",
        help="check the settings and import the application, then exit",
    )
    commands.add_argument(
        "--print-config", action="store_true", help="print the effective settings, then exit"
    )
    commands.add_argument(
        "-k",
        "--worker-class",
        metavar="CLASS",
        help="gunicorn's worker class, for a ported command line: sync is --threads 1, "
        "uvicorn.workers.UvicornWorker is --interface asgi, gthread needs nothing; "
        "others are ignored (a warning says what it became)",
    )
    commands.add_argument(
        "--version",
        action=_VersionAction,
        help="print prefork's and Python's versions, the event loop and the optional "
        "features available, then exit",
    )
    groups = {name: parser.add_argument_group(name, text) for name, text in GROUPS.items()}
    for setting in SETTINGS:
        group = groups[setting.group]
        if setting.name == "app":
            group.add_argument("app", nargs="?", metavar=setting.metavar, help=setting.help)
            continue
        names = [setting.short, setting.option] if setting.short else [setting.option]
        if setting.alias:
            names.append(setting.alias)
        default = setting.default
        shown = default if not isinstance(default, tuple) else " ".join(default)
        if setting.name in ("unix_socket_mode", "umask") and isinstance(default, int):
            shown = f"{default:03o}"
        text = setting.help if default in (None, False, "", ()) else f"{setting.help} [{shown}]"
        text = text.replace("%", "%%")
        if setting.flag:
            group.add_argument(
                *names,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=text,
            )
        elif setting.multiple:
            group.add_argument(
                *names, dest=setting.name, action="append", metavar=setting.metavar, help=text
            )
        else:
            group.add_argument(*names, dest=setting.name, metavar=setting.metavar, help=text)
    return parser


def quiet_on_closed_pipe(command: Callable[[list[str]], int], args: list[str]) -> int:
    """Run a reporting command; its reader going away (``prefork status |
    head -2``, ``prefork --print-config | head``) ends it quietly, as it ends
    ``ls``, not with a traceback: status 1, as Python's own advice has it."""
    try:
        status = command(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # (Python's flush at exit fails no more)
        return 1


def printing(text: Callable[[], str | None]) -> Callable[[list[str]], int]:
    """A command for :func:`quiet_on_closed_pipe` that prints what ``text``
    returns (if anything) and succeeds."""

    def command(_args: list[str]) -> int:
        shown = text()
        if shown is not None:
            print(shown)
        return 0

    return command


def fail(message: str, status: int = 2) -> NoReturn:
    """Show ``message`` as the one line of a start-up error and exit (2: a
    bad setting or usage, 3: no worker could boot)."""
    print(f"prefork: error: {message}", file=sys.stderr)
    sys.exit(status)
