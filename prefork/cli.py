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

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from prefork.config import SETTINGS, Config, ConfigError
from prefork.privileges import drop_privileges, resolve_group, resolve_user

__all__ = ["load_app", "main"]

log = logging.getLogger("prefork.master")


class AppImportError(Exception):
    """The application could not be imported; the message is one line."""


def load_app(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:CALLABLE`` (``CALLABLE`` may be a dotted attribute path)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AppImportError(f"app {spec!r}: expected MODULE:CALLABLE")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as python -m does: the app is usually local
    try:
        target: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise AppImportError(f"app {spec!r}: no module named {exc.name!r}") from None
        raise
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise AppImportError(
                f"app {spec!r}: {module_name!r} has no attribute {part!r}"
            ) from None
    if not callable(target):
        raise AppImportError(f"app {spec!r}: {attribute!r} is not callable")
    return target


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork",
        description="Serve MODULE:CALLABLE (a request callback or a WSGI application) "
        "with a pre-fork master.",
        epilog="Every option can also be set as PREFORK_<NAME> in the environment "
        "(PREFORK_MAX_REQUESTS=1000) or as NAME = value in a --config file. "
        "`prefork status --pidfile PATH` shows the workers of a running master.",
    )
    parser.add_argument("app", nargs="?", metavar="MODULE:CALLABLE", help="the application")
    for setting in SETTINGS:
        names = [setting.short, setting.option] if setting.short else [setting.option]
        if setting.flag:
            parser.add_argument(
                *names, dest=setting.name, action="store_const", const=True, help=setting.help
            )
        elif setting.multiple:
            parser.add_argument(
                *names,
                dest=setting.name,
                action="append",
                metavar=setting.metavar,
                help=setting.help,
            )
        else:
            parser.add_argument(
                *names, dest=setting.name, metavar=setting.metavar, help=setting.help
            )
    return parser


def _fail(message: str, status: int = 2) -> NoReturn:
    print(f"prefork: error: {message}", file=sys.stderr)
    sys.exit(status)


def _configure_logging(config: Config) -> None:
    level = getattr(logging, config.log_level.upper())  # type: ignore[attr-defined]
    formatter = logging.Formatter(
        "[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
    )
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    error_handler: logging.Handler
    if config.error_log in (None, "-"):  # type: ignore[attr-defined]
        error_handler = logging.StreamHandler(sys.stderr)
    else:
        error_handler = logging.FileHandler(config.error_log)  # type: ignore[attr-defined]
    error_handler.setFormatter(formatter)
    root.addHandler(error_handler)
    root.setLevel(level)

    from prefork.worker import accesslog

    access = logging.getLogger("prefork.access")
    access.propagate = False
    for handler in list(access.handlers):
        access.removeHandler(handler)
    target = config.access_log  # type: ignore[attr-defined]
    if target is None or target.lower() in ("off", "none"):
        access.disabled = True
        access.setLevel(logging.CRITICAL)
        return
    access.disabled = False
    access_handler: logging.Handler = (
        logging.StreamHandler(sys.stdout) if target == "-" else logging.FileHandler(target)
    )
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(access_handler)
    access.setLevel(logging.INFO)
    accesslog.set_format(config.access_log_format)  # type: ignore[attr-defined]


def _ssl_options(config: Config) -> dict[str, Any] | None:
    if not config.certfile:  # type: ignore[attr-defined]
        return None
    options: dict[str, Any] = {"certfile": config.certfile}  # type: ignore[attr-defined]
    if config.keyfile:  # type: ignore[attr-defined]
        options["keyfile"] = config.keyfile  # type: ignore[attr-defined]
    if config.ca_certs:  # type: ignore[attr-defined]
        options["ca_certs"] = config.ca_certs  # type: ignore[attr-defined]
    import ssl  # here, not at import: the master never needs it

    options["cert_reqs"] = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[config.cert_reqs]  # type: ignore[attr-defined]
    return options


class _Service:
    """What the worker entry needs, replaced as a whole on HUP."""

    def __init__(self, config: Config, app: Callable[..., Any] | None) -> None:
        self.config = config
        self.app = app  # imported in the master with --preload, else None
        self.ssl_options = _ssl_options(config)
        self.uid, self.gid = _credentials(config)

    def server_factory(self, app: Callable[..., Any]) -> Any:
        from prefork.worker.httpserver import HTTPServer
        from prefork.worker.wsgi import request_callback_for

        config = self.config
        callback = request_callback_for(app, config.interface, config.threads)  # type: ignore[attr-defined]
        keep_alive = config.keep_alive  # type: ignore[attr-defined]
        settings: dict[str, Any] = {}
        if keep_alive:
            settings["keep_alive_timeout"] = keep_alive
        return HTTPServer(
            callback,
            no_keep_alive=not keep_alive,
            xheaders=config.xheaders,  # type: ignore[attr-defined]
            ssl_options=self.ssl_options,
            forwarded_allow_ips=config.forwarded_allow_ips,  # type: ignore[attr-defined]
            proxy_protocol=config.proxy_protocol,  # type: ignore[attr-defined]
            health_live_path=config.health_live_path,  # type: ignore[attr-defined]
            health_ready_path=config.health_ready_path,  # type: ignore[attr-defined]
            drain_delay=config.drain_delay,  # type: ignore[attr-defined]
            **settings,
        )

    def serve(self, ctx: Any) -> None:
        """The worker entry: import the app, serve ``ctx.sockets`` until stopped."""
        # Everything prefork needs is imported before the privilege drop: the
        # new user may not be able to read the interpreter's own files.
        import concurrent.futures.thread  # noqa: F401  (the WSGI thread pool)

        from prefork.worker import wsgi  # noqa: F401
        from prefork.worker.ioloop import IOLoop, new_event_loop
        from prefork.worker.runner import attach

        IOLoop(new_event_loop()).install()  # imports uvloop, if used, as the old user
        drop_privileges(self.uid, self.gid)
        app = self.app
        if app is None:
            try:
                app = load_app(self.config.app or "")
            except AppImportError as exc:
                log.error("%s", exc)
                raise
        server = self.server_factory(app)
        server.add_sockets(ctx.sockets)
        attach(server, ctx)
        IOLoop.current().start()


def _credentials(config: Config) -> tuple[int | None, int | None]:
    """--user / --group as numbers (validated when the settings are loaded)."""
    uid = gid = None
    if config.user:  # type: ignore[attr-defined]
        uid, gid = resolve_user(config.user)  # type: ignore[attr-defined]
    if config.group:  # type: ignore[attr-defined]
        gid = resolve_group(config.group)  # type: ignore[attr-defined]
    return uid, gid


def _check(config: Config) -> Callable[..., Any] | None:
    """Import the app where it must be imported now (--preload, --check-config)."""
    if not config.app:
        _fail("no application given: prefork [OPTIONS] MODULE:CALLABLE")
    if config.preload or config.check_config:  # type: ignore[attr-defined]
        try:
            return load_app(config.app)
        except AppImportError as exc:
            _fail(str(exc))
        except Exception as exc:
            _fail(f"app {config.app!r}: {type(exc).__name__}: {exc}", 3 if config.preload else 2)  # type: ignore[attr-defined]
    return None


def main(argv: Sequence[str] | None = None) -> None:
    """The ``prefork`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["status"]:
        from prefork.status import main as status_main

        sys.exit(status_main(args[1:]))
    parsed = _argument_parser().parse_args(args)
    cli = {name: value for name, value in vars(parsed).items() if name != "app"}
    try:
        config = Config.load(cli, os.environ, parsed.app)
    except ConfigError as exc:
        _fail(str(exc))
    if config.print_config:  # type: ignore[attr-defined]
        for name, value in sorted(config.as_dict().items()):
            print(f"{name} = {value!r}")
        sys.exit(0)
    app = _check(config)
    if config.check_config:  # type: ignore[attr-defined]
        print(f"prefork: configuration OK, application {config.app!r} imports")
        sys.exit(0)
    _configure_logging(config)
    _run(config, app, cli)


def _run(config: Config, app: Callable[..., Any] | None, cli: dict[str, Any]) -> NoReturn:
    # The worker stack is imported here, before the fork: the workers share
    # these pages with the master (copy-on-write) and a replacement worker
    # starts serving in milliseconds instead of importing asyncio, ssl and
    # uvloop first.  No event loop is created (the master never has one).
    import prefork.worker.runner  # noqa: F401
    import prefork.worker.wsgi  # noqa: F401
    from prefork.master import Master
    from prefork.sockets import listeners_from_specs, sockets_from_environment, systemd_listen_fds
    from prefork.upgrade import UNLINK_ENV
    from prefork.worker.ioloop import preload_event_loop_module

    if config.umask is not None:  # type: ignore[attr-defined]
        os.umask(config.umask)  # type: ignore[attr-defined]
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
                config.bind,  # type: ignore[attr-defined]
                reuse_port=config.reuse_port,  # type: ignore[attr-defined]
                unix_mode=config.unix_socket_mode,  # type: ignore[attr-defined]
                unix_owner=(uid if uid is not None else -1, gid if gid is not None else -1)
                if uid is not None or gid is not None
                else None,
            )
    except (OSError, ValueError) as exc:
        _fail(f"--bind: {getattr(exc, 'strerror', None) or exc}")
    preload_event_loop_module()
    service = _Service(config, app)
    pidfile = config.pidfile  # type: ignore[attr-defined]
    master = Master(
        sockets,
        workers=config.workers or 0,  # type: ignore[attr-defined]
        worker_entry=lambda ctx: service.serve(ctx),
        timeout=config.timeout,  # type: ignore[attr-defined]
        boot_timeout=config.boot_timeout,  # type: ignore[attr-defined]
        graceful_timeout=config.graceful_timeout,  # type: ignore[attr-defined]
        max_requests=config.max_requests,  # type: ignore[attr-defined]
        max_requests_jitter=config.max_requests_jitter,  # type: ignore[attr-defined]
        max_memory=config.max_memory,  # type: ignore[attr-defined]
        pidfile=pidfile,
        scoreboard_path=pidfile + ".scoreboard" if pidfile else None,
        reuse_port=config.reuse_port,  # type: ignore[attr-defined]
        unlink_unix=unlink_unix,
    )

    def reload() -> None:
        """HUP: read the settings again; new workers use them (and re-import the app)."""
        nonlocal service
        new = Config.load(cli, os.environ, config.app)
        master.timeout = new.timeout  # type: ignore[attr-defined]
        master.boot_timeout = new.boot_timeout  # type: ignore[attr-defined]
        master.graceful_timeout = new.graceful_timeout  # type: ignore[attr-defined]
        master.max_requests = new.max_requests  # type: ignore[attr-defined]
        master.max_requests_jitter = new.max_requests_jitter  # type: ignore[attr-defined]
        master.max_memory = new.max_memory  # type: ignore[attr-defined]
        _configure_logging(new)
        service = _Service(new, service.app)

    master.reload_hook = reload
    master.run()
    sys.exit(0)
