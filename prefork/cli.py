"""The ``prefork`` command: ``prefork [OPTIONS] MODULE:CALLABLE``.

It turns the command line, the environment and an optional config file into
one :class:`~prefork.config.Config`, binds the sockets in the master, and
runs the :class:`~prefork.master.Master` with a worker entry that imports
the application in each worker (in the master with ``--preload``) and serves
it with an :class:`~prefork.worker.httpserver.HTTPServer`.

Exit status: 0 clean stop, 1 runtime error, 2 a bad setting or usage (one
line naming the setting), 3 no worker could boot.  ``prefork status
--pidfile PATH`` prints the workers of a running master.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from prefork import config as config_file
from prefork import process
from prefork.cliargs import argument_parser, fail, flag_values, printing, quiet_on_closed_pipe
from prefork.privileges import drop_privileges, resolve_group, resolve_user
from prefork.process import BootFailure
from prefork.settings import GROUPS, LOG_NOT_FILES, OWN_LOGGERS, SETTINGS, Config, ConfigError

__all__ = ["load_app", "main"]

log = logging.getLogger("prefork.master")


class AppImportError(Exception):
    """The application could not be imported; the message is one line."""


_PREFORK_DIR = os.path.dirname(os.path.abspath(__file__))
_IMPORTLIB_DIR = os.path.dirname(importlib.__file__)


def _user_frames(exc: BaseException) -> str:
    """The traceback of ``exc`` without prefork's and importlib's frames: the
    user's own code only (empty when none of it is on the stack)."""
    frames = [
        frame
        for frame in traceback.extract_tb(exc.__traceback__)
        if not frame.filename.startswith(("<frozen ", _PREFORK_DIR, _IMPORTLIB_DIR))
    ]
    return "".join(traceback.format_list(frames)).rstrip("\n")


def _raised_in_app(spec: str, what: str, exc: BaseException) -> AppImportError:
    """An AppImportError for an exception the application's own code raised."""
    if isinstance(exc, SyntaxError):
        # File, line and caret, as Python shows them, without a traceback.
        detail = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
        return AppImportError(f"app {spec!r}: {what}:\n{detail}")
    frames = _user_frames(exc)
    message = f"app {spec!r}: {what}: {type(exc).__name__}: {exc}"
    return AppImportError(f"{message}\n{frames}" if frames else message)


def load_app(spec: str, factory: bool = False) -> Callable[..., Any]:
    """Import ``MODULE:CALLABLE`` (``CALLABLE`` may be a dotted attribute path).

    ``MODULE:make_app()`` or ``factory=True`` (``--factory``): call it, with
    no arguments, and serve what it returns.  Every failure is an
    :class:`AppImportError` whose message names the spec: one line for a
    missing module or attribute; for an error raised by the application's
    code, the error and the application's own frames (never prefork's); for
    a syntax error, its file, line and caret.
    """
    shown = spec
    if spec.endswith("()"):
        spec, factory = spec[:-2], True
    module_name, _, attribute = spec.partition(":")
    spec = shown  # messages name the spec as the user wrote it
    if not module_name or not attribute:
        raise AppImportError(f"app {spec!r}: expected MODULE:CALLABLE")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as python -m does: the app is usually local
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise AppImportError(f"app {spec!r}: no module named {exc.name!r}") from None
        raise _raised_in_app(spec, f"importing {module_name!r} failed", exc) from None
    except Exception as exc:
        raise _raised_in_app(spec, f"importing {module_name!r} failed", exc) from None
    except SystemExit as exc:
        # sys.exit("FOO is not set") in a settings module: its message is the
        # one thing to show (it went unseen: "see its error above", none above;
        # and --check-config exited 0 in silence for sys.exit(0))
        said = "" if exc.code is None else f": {exc.code}"
        raise AppImportError(
            f"app {spec!r}: importing {module_name!r} called sys.exit(){said}"
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppImportError(
                f"app {spec!r}: {module_name!r} has no attribute {part!r}"
            ) from None
    if not callable(target):
        raise AppImportError(f"app {spec!r}: {attribute!r} is not callable")
    if factory:
        try:
            target = target()
        except Exception as exc:
            raise _raised_in_app(spec, f"the factory {attribute!r} failed", exc) from None
        if not callable(target):
            raise AppImportError(
                f"app {spec!r}: the factory returned {target!r}, not an application"
            )
        if _takes_no_arguments(target):
            raise AppImportError(
                f"app {spec!r}: the factory returned {target!r}, which takes no arguments: "
                "not an application"
            )
    elif _takes_no_arguments(target):
        # myapp:create_app for myapp:create_app(): served, it answered 500 to
        # every request (called with the request, environ or scope it cannot take)
        module_part, _, attribute_part = shown.partition(":")
        raise AppImportError(
            f"app {spec!r}: {attribute}() takes no arguments, so it is not an application "
            "(a callback takes 1, WSGI 2, ASGI 3); if it makes the application, write "
            f"'{module_part}:{attribute_part}()' or give --factory"
        )
    return target


def _takes_no_arguments(target: Callable[..., Any]) -> bool:
    """Whether ``target``'s signature has no parameter at all: then no interface
    can call it (a request callback passes 1 argument, WSGI 2, ASGI 3), and it
    is most likely an application factory named without ``()``.  An unreadable
    signature (some builtins) is not judged."""
    try:
        return not inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False


def tls_problem(config: Config) -> str | None:
    """Why the TLS settings cannot make a server context (a key that is not
    the certificate's, a file that is no PEM...), in one line naming the
    setting; None when they can.  Checked in the master, at start and on
    HUP, so that the mistake is not a traceback from every worker."""
    if not config.certfile:
        return None
    from prefork.worker.tls import options_from_config, server_context

    try:
        server_context(options_from_config(config) or {})
    except ValueError as exc:
        reason = str(exc).removeprefix("ssl_options: ")
        setting = "--ca-certs" if "ca_certs" in reason else "--certfile/--keyfile"
        if "cert_reqs" in reason:
            setting = "--cert-reqs"
        elif "ciphers" in reason:
            setting = "--ciphers"
        return f"{setting}: {reason}"
    return None


#: the logging settings _configure_logging applied, and the error log's handler it made
_logging_config: Config | None = None
_error_handler: logging.Handler | None = None
#: the handler keep_own_logging gave prefork's own loggers, if it did
_own_handler: logging.Handler | None = None


class _OwnLogger(logging.Logger):
    """The class of prefork's own loggers under the command line: never disabled.

    ``logging.config.dictConfig`` and ``fileConfig`` disable every existing
    logger they do not name (``disable_existing_loggers``, True by default):
    an application configuring its logging on import (``django.setup()``) or
    on a request would silence the server's own warnings, errors and drain
    messages, which the operator routed with ``--error-log``/``--log-level``.
    An application that means to quiet them still can: by naming the logger
    (a level, handlers), or with ``logging.disable()``.
    """

    @property  # type: ignore[override]
    def disabled(self) -> bool:
        return False

    @disabled.setter
    def disabled(self, value: bool) -> None:
        pass  # (dictConfig's "disable every logger I do not name")


def _protect_own_loggers() -> None:
    """Make prefork's loggers (the access log's too) :class:`_OwnLogger`s, in
    place: the modules hold them already."""
    for name in (*OWN_LOGGERS, "prefork.access"):
        logger = logging.getLogger(name)
        if not isinstance(logger, _OwnLogger):
            logger.__class__ = _OwnLogger


def _make_error_handler(config: Config) -> logging.Handler:
    handler: logging.Handler
    if config.error_log in (None, "-"):
        handler = logging.StreamHandler(sys.stderr)
    else:
        handler = logging.FileHandler(config.error_log)
    handler.setFormatter(
        logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    )
    return handler


def _configure_logging(config: Config) -> None:
    global _error_handler, _logging_config
    # The new handler first: if its file cannot be opened (a HUP's new
    # path), the error propagates with the old logging still in place.
    handler = None if config.log_config else _make_error_handler(config)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    _release_own_loggers()
    _error_handler = handler
    root.setLevel(getattr(logging, config.log_level.upper()))
    _protect_own_loggers()  # (before the operator's configuration: never disabled by it)
    if handler is not None:
        root.addHandler(handler)
    else:
        try:
            _apply_log_config(config.log_config)
        except ValueError:
            # (at start: one line and exit 2; on HUP: the reload is refused,
            # said where the logs still go)
            _error_handler = _make_error_handler(config)
            root.addHandler(_error_handler)
            raise
    _logging_config = config
    captured = config.error_log if config.capture_output else None
    process.capture_output(captured if captured not in (None, *LOG_NOT_FILES) else None)

    from prefork.worker import accesslog

    accesslog.configure(config.access_log, config.access_log_format)


def _apply_log_config(log_config: Any) -> None:
    """--log-config (gunicorn's logconfig, logconfig_dict, logconfig_json;
    uvicorn's --log-config): the operator's logging, prefork's loggers
    included (they propagate to its root handlers).  A configuration that
    cannot be applied (a handler's file in a missing directory, a class that
    does not import) raises ValueError naming it."""
    import logging.config

    try:
        if isinstance(log_config, dict):
            logging.config.dictConfig(log_config)
        elif str(log_config).endswith(".json"):
            import json

            with open(log_config, encoding="utf-8") as file:
                logging.config.dictConfig(json.load(file))
        else:
            logging.config.fileConfig(log_config, disable_existing_loggers=False)
    except (ValueError, TypeError, AttributeError, ImportError, KeyError, OSError) as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ is not None else ""
        raise ValueError(f"--log-config: {exc}{cause}") from None


def _release_own_loggers() -> None:
    """prefork's loggers back to propagating to the root (undoes keep_own_logging)."""
    global _own_handler
    for name in OWN_LOGGERS:
        own = logging.getLogger(name)
        if _own_handler is not None:
            own.removeHandler(_own_handler)
        own.propagate = True
        own.setLevel(logging.NOTSET)
    if _own_handler is not None:
        _own_handler.close()
    _own_handler = None


def keep_own_logging() -> None:
    """prefork's own messages and access lines stay where the settings send
    them, whatever the application did to the logging configuration on import
    or at startup.

    Some frameworks replace the root logger's handlers (Litestar does by
    default; so does ``logging.basicConfig(force=True)``), and a
    ``dictConfig`` also closes every handler (the access log's too) and
    disables the loggers it does not name (not prefork's: see
    :class:`_OwnLogger`): the worker's messages ("graceful stop", errors)
    would then go where the application's go, and the access log would stop.
    prefork's loggers then get handlers of their own (fresh ones: the old
    ones may be closed), and the access log a fresh sink; the application's
    own logging is left as it made it.  (A configuration made later, on a
    request, is met by the sink itself: it reopens a file closed under it.)
    """
    global _own_handler
    config = _logging_config
    if config is None:
        return
    from prefork.worker import accesslog

    if not accesslog.intact():
        # (dictConfig closed its handler, or took it off prefork.access by
        # naming that logger or "prefork": the operator's --access-log wins)
        accesslog.configure(config.access_log, config.access_log_format)
    if config.log_config:
        return  # (the operator's --log-config routes them: nothing of prefork's to keep)
    root = logging.getLogger()
    owns = [logging.getLogger(name) for name in OWN_LOGGERS]
    if _error_handler in root.handlers and not any(own.disabled for own in owns):
        return
    announce = _own_handler is None  # (once: after the import, again after the startup)
    _release_own_loggers()
    handler = _own_handler = _make_error_handler(config)
    for own in owns:
        own.disabled = False
        own.addHandler(handler)
        own.propagate = False
        own.setLevel(getattr(logging, config.log_level.upper()))
    accesslog.configure(config.access_log, config.access_log_format)  # (a fresh sink)
    if announce:
        logging.getLogger("prefork.worker").info(
            "the application changed the logging configuration: prefork's own messages "
            "keep going to the error log"
        )


class _Service:
    """The worker entry: imports the app (unless preloaded) and serves it."""

    def __init__(self, app: Callable[..., Any] | None) -> None:
        self.app = app  # imported in the master with --preload, else None

    def serve(self, ctx: Any) -> None:
        """Import the app, serve ``ctx.sockets`` with ``ctx.config`` until stopped."""
        # Everything prefork needs is imported before the privilege drop: the
        # new user may not be able to read the interpreter's own files.
        import asyncio
        import concurrent.futures.thread  # noqa: F401  (the WSGI thread pool)
        import inspect

        from prefork.lifecycle import enable_hang_tracebacks, report_waiting_tasks_after
        from prefork.worker import wsgi  # noqa: F401
        from prefork.worker.httpserver import HTTPServer
        from prefork.worker.interfaces import InterfaceMismatch, request_callback_for
        from prefork.worker.ioloop import IOLoop, new_event_loop
        from prefork.worker.runner import attach
        from prefork.worker.tls import SSLContextHookError

        enable_hang_tracebacks()  # (a hung import or lifespan startup shows where)
        config: Config = ctx.config
        IOLoop(new_event_loop()).install()  # imports uvloop, if used, as the old user
        drop_privileges(*_credentials(config))
        app = self.app
        if app is None:
            try:
                app = load_app(config.app or "", config.factory)
            except AppImportError as exc:
                raise BootFailure(str(exc)) from None
            keep_own_logging()
        try:
            callback = request_callback_for(app, config.interface, config.threads, config)
        except InterfaceMismatch as exc:
            raise BootFailure(f"app {config.app!r}: {exc}") from None
        try:
            server = HTTPServer(callback, config=config)
        except SSLContextHookError as exc:
            raise BootFailure(str(exc)) from None
        loop = IOLoop.current().asyncio_loop
        startup = getattr(callback, "startup", None)
        if startup is not None:
            # ASGI lifespan: before this worker accepts anything (a hang is
            # caught by --boot-timeout, a failure fails the boot).
            from prefork.worker.asgi import LifespanFailure

            watch = report_waiting_tasks_after(loop, config.boot_timeout, "ASGI lifespan startup")
            try:
                loop.run_until_complete(startup())
            except LifespanFailure as exc:
                raise BootFailure(f"application startup failed: {exc}") from exc.__cause__
            finally:
                watch.cancel()
            keep_own_logging()
        server.add_sockets(ctx.sockets)
        attach(server, ctx)
        IOLoop.current().start()
        shutdown = getattr(callback, "shutdown", None)
        if shutdown is not None:
            # ASGI: the lifespan shutdown (a coroutine), within what is left
            # before the master's kill; WSGI: the thread pool's shutdown,
            # which returns once its threads are done.
            deadline = server.stop_deadline
            left = config.graceful_timeout if deadline is None else deadline - loop.time()
            left = max(left, 0.1)
            if asyncio.iscoroutinefunction(shutdown):
                # (a request callback of the user's own may have a shutdown()
                # without the timeout ASGIAdapter takes)
                takes_timeout = "timeout" in inspect.signature(shutdown).parameters
                done = shutdown(timeout=left) if takes_timeout else shutdown()
                try:
                    loop.run_until_complete(asyncio.wait_for(done, left))
                except asyncio.TimeoutError:
                    logging.getLogger("prefork.worker").warning(
                        "worker %d: ASGI lifespan shutdown did not finish within "
                        "--graceful-timeout",
                        os.getpid(),
                    )
            else:
                shutdown()


def _credentials(config: Config) -> tuple[int | None, int | None]:
    """--user / --group as numbers (validated when the settings are loaded)."""
    uid = gid = None
    if config.user:
        uid, gid = resolve_user(config.user)
    if config.group:
        gid = resolve_group(config.group)
    return uid, gid


def _apply_process_settings(config: Config) -> None:
    """--chdir, --pythonpath, --env: in the master before the application is
    loaded anywhere (the workers inherit all three across fork)."""
    if config.chdir:
        os.chdir(config.chdir)
    for path in reversed(config.pythonpath):
        sys.path.insert(0, os.path.abspath(path))
    for pair in config.env:
        name, _, value = pair.partition("=")
        os.environ[name] = value


def _import_now(config: Config, checking: bool) -> Callable[..., Any] | None:
    """Import the app where it must be imported now (--preload, --check-config)."""
    if not config.app:
        fail("no application given: prefork [OPTIONS] MODULE:CALLABLE")
    if config.preload or checking:
        from prefork.worker.interfaces import InterfaceMismatch, check_interface

        try:
            app = load_app(config.app, config.factory)
            check_interface(app, config.interface)
        except AppImportError as exc:
            fail(str(exc), 2 if checking else 3)
        except InterfaceMismatch as exc:
            fail(f"app {config.app!r}: {exc}", 2 if checking else 3)
        return app
    return None


def print_config(config: Config) -> None:
    """``--print-config``: every setting as a config-file line, by group."""
    for group in GROUPS:
        print(f"# {group}")
        for setting in SETTINGS:
            if setting.group == group:
                value = getattr(config, setting.name)
                if setting.name == "config":
                    # (a config file cannot name another one: shown, not a setting)
                    print(f"# config = {value!r}")
                elif setting.name in ("umask", "unix_socket_mode") and value is not None:
                    print(f"{setting.name} = {value:#o}")  # (as written: 0o600, not 384)
                else:
                    print(f"{setting.name} = {value!r}")
    hooks = config.hooks.names()
    print(f"# server hooks: {', '.join(hooks) if hooks else 'none'}")


def main(argv: Sequence[str] | None = None) -> None:
    """The ``prefork`` command."""
    try:
        _main(argv)
    except KeyboardInterrupt:
        # Ctrl-C before the master handles its signals (while --preload or
        # --check-config imports the application, say): one line, not the
        # traceback of wherever the import was; 130 as a shell reports it.
        print("prefork: interrupted", file=sys.stderr)
        sys.exit(130)


def _main(argv: Sequence[str] | None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["status"]:
        from prefork.status import main as status_main

        sys.exit(quiet_on_closed_pipe(status_main, args[1:]))
    if args[:1] == ["top"]:
        from prefork.top import main as top_main

        sys.exit(quiet_on_closed_pipe(top_main, args[1:]))
    parsed = vars(argument_parser().parse_args(flag_values(args)))
    checking = parsed.pop("check_config")
    print_only = parsed.pop("print_config")
    worker_class = parsed.pop("worker_class")
    cli = {name: value for name, value in parsed.items() if value is not None}
    notes = []
    if worker_class is not None:
        notes.append(config_file.worker_class_on_command_line(worker_class, cli))
    start_dir = os.getcwd()  # (relative paths mean from here, also after --chdir, on HUP)
    try:
        loaded = config_file.load(cli, os.environ, start_dir)
    except ConfigError as exc:
        fail(str(exc))
    if notes:
        loaded = dataclasses.replace(loaded, warnings=(*notes, *loaded.warnings))
    config = loaded.config
    problem = tls_problem(config)
    if problem is not None:
        fail(problem)
    if print_only:
        # The file's warnings too, on stderr (stdout stays a config file): a
        # setting ignored or changed on the way must show where it is checked.
        for warning in loaded.warnings:
            print(f"prefork: warning: {warning}", file=sys.stderr)
        # (prefork --print-config | head: quiet, as for prefork status)
        sys.exit(quiet_on_closed_pipe(printing(lambda: print_config(config)), []))
    if config.preload and not checking and (config.metrics_path or config.metrics_bind):
        from prefork import appmetrics

        appmetrics.prepare()  # before the application imports prometheus_client
    _apply_process_settings(config)
    app = _import_now(config, checking)
    if checking:
        for warning in loaded.warnings:
            print(f"prefork: warning: {warning}", file=sys.stderr)
        problem = _ssl_context_hook_problem(config)
        if problem is not None:
            fail(problem)
        ok = f"prefork: configuration OK, application {config.app!r} imports"
        sys.exit(quiet_on_closed_pipe(printing(lambda: ok), []))
    try:
        _configure_logging(config)
    except ValueError as exc:
        fail(str(exc))
    for warning in loaded.warnings:
        log.warning("%s", warning)
    _run(config, app, cli, start_dir)


def _ssl_context_hook_problem(config: Config) -> str | None:
    """``--check-config`` runs the config file's ``ssl_context`` hook once, as
    a worker would: one that raises or returns no SSLContext would otherwise
    show only when the workers boot.  (A normal start leaves it to the
    workers: the master never calls it.)"""
    if not config.certfile or config.hooks.ssl_context is None:
        return None
    from prefork.worker.tls import SSLContextHookError, hooked_context, options_from_config

    try:
        hooked_context(config, options_from_config(config) or {}, log_traceback=False)
    except SSLContextHookError as exc:
        return str(exc)
    return None


def _run(
    config: Config, app: Callable[..., Any] | None, cli: dict[str, Any], start_dir: str
) -> NoReturn:
    # The worker stack is imported here, before the fork: the workers share
    # these pages with the master (copy-on-write) and a replacement worker
    # starts serving in milliseconds instead of importing asyncio, ssl and
    # uvloop first.  No event loop is created (the master never has one).
    import prefork.worker.interfaces  # noqa: F401
    import prefork.worker.runner  # noqa: F401
    from prefork.master import Master
    from prefork.sockets import listeners_from_specs, sockets_from_environment, systemd_listen_fds
    from prefork.upgrade import UNLINK_ENV
    from prefork.worker.ioloop import preload_event_loop_module

    if config.umask is not None:
        os.umask(config.umask)
    uid, gid = _credentials(config)
    try:
        # Inherited sockets win: a USR2 upgrade or systemd socket activation.
        # Unix socket files are removed at exit only if prefork created them.
        unlink_unix = os.environ.get(UNLINK_ENV) != "0"
        sockets = sockets_from_environment()
        if not sockets:
            sockets = systemd_listen_fds()
            unlink_unix = not sockets
        if not sockets:
            sockets = listeners_from_specs(
                config.bind,
                config.backlog,
                reuse_port=config.reuse_port,
                unix_mode=config.unix_socket_mode,
                unix_owner=(uid if uid is not None else -1, gid if gid is not None else -1)
                if uid is not None or gid is not None
                else None,
            )
    except (OSError, ValueError) as exc:
        fail(f"--bind: {getattr(exc, 'strerror', None) or exc}")
    preload_event_loop_module()
    service = _Service(app)

    def reload() -> Config:
        """HUP: read the file and the environment again; new workers get the result."""
        loaded = config_file.reload(master.config, cli, os.environ, start_dir)
        problem = tls_problem(loaded.config)
        if problem is not None:
            raise ValueError(problem)
        for warning in loaded.warnings:
            log.warning("%s", warning)
        _configure_logging(loaded.config)
        return loaded.config

    master = Master(
        sockets,
        config=config,
        worker_entry=service.serve,
        reload_hook=reload,
        unlink_unix=unlink_unix,
        reexec_cwd=start_dir,
    )
    master.wait_for_fix = config.reload  # (a first boot that fails waits for the next save)
    reloader = _start_reloader(config) if config.reload else None
    try:
        master.run()
    finally:
        if reloader is not None:
            reloader.stop()
    sys.exit(0)


def _start_reloader(config: Config) -> Any:
    """``--reload``: a watcher thread that sends this master a HUP on each change."""
    import signal

    from prefork.reloader import Reloader, default_dirs

    dirs = list(config.reload_dir) or default_dirs(config.app, config.config)

    def changed(paths: list[str]) -> None:
        names = [os.path.relpath(path) for path in paths]
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        log.info("reloading: %s changed%s", ", ".join(names[:3]), more)
        os.kill(os.getpid(), signal.SIGHUP)  # the readiness-gated roll of a HUP

    engine = config.reload_engine
    reloader = Reloader(
        dirs,
        changed,
        config.reload_include,
        config.reload_exclude,
        use_watchfiles=None if engine == "auto" else engine == "watchfiles",
        extra_files=config.reload_extra_files,
    )
    reloader.start()  # it logs "--reload: watching ..." once it is
    return reloader
