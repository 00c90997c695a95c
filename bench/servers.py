"""The servers under test: how to tell each is installed and how to launch it.

Every server serves the same app (``bench/apps``) on 127.0.0.1 with the same
number of workers, with access logs off, started the way its users start it.
Nothing is installed here: a missing peer becomes a row that says how to get it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import nginx

PY = sys.executable
ASGI_APP = "bench.apps.asgi_app:app"


@dataclass(frozen=True)
class Launch:
    """One start of one server: where, how many workers, which app flavour."""

    port: int
    workers: int
    workdir: Path
    preload: bool = False
    wsgi: bool = False
    asgi: str | None = None  # serve this ASGI ``module:app`` (an ASGI scenario)
    websocket: bool = False  # the scenario is WebSocket: use the server's WebSocket stack


@dataclass(frozen=True)
class Server:
    """A server under test.

    ``modules`` must import for it to run; ``install`` says how to get them.
    ``wsgi``: it takes part in the WSGI scenario (it has a WSGI interface).
    ``preload``: it has a preload mode (import the app once, then fork), which
    the PSS-per-worker figure is measured with as well.
    ``asgi``: it takes part in the ASGI scenarios, serving the same ASGI app
    files as every other; ``native``: it takes part in the plain scenarios
    (hello ... upload) with its own fastest API; ``ws_modules``: what it
    needs beyond ``modules`` for the WebSocket scenario.
    """

    name: str
    description: str
    distribution: str | None
    modules: tuple[str, ...]
    install: str
    command: Callable[[Launch], list[str]]
    wsgi: bool = False
    preload: bool = False
    asgi: bool = False
    native: bool = True
    ws_modules: tuple[str, ...] = ()

    def takes_part(self, wsgi: bool, asgi: bool) -> bool:
        """Whether it runs in a WSGI, an ASGI or (neither) a plain scenario."""
        return self.wsgi if wsgi else self.asgi if asgi else self.native

    def missing(self) -> str | None:
        """None when the server can run here, else the row text saying what is missing."""
        if self.name == "nginx":
            return None if nginx.binary() else f"not installed: {self.install}"
        absent = [m for m in self.modules if not importable(m)]
        return f"not installed: {self.install}" if absent else None

    def version(self) -> str:
        """The installed version, for the report's labels."""
        if self.name == "nginx":
            return nginx.version()
        try:
            return importlib.metadata.version(self.distribution or self.name)
        except importlib.metadata.PackageNotFoundError:
            return "?"


def importable(module: str) -> bool:
    """Whether ``module`` (dotted: its parents too) can be imported here."""
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a parent package is missing
        return False


def _prefork(launch: Launch) -> list[str]:
    command = [PY, "-m", "prefork", "-b", f"127.0.0.1:{launch.port}", "-w", str(launch.workers)]
    command += ["--access-log", "off", "--log-level", "warning"]
    command += ["--preload"] if launch.preload else []
    if launch.asgi:
        return [*command, "--interface", "asgi", launch.asgi]
    if not launch.wsgi:
        return [*command, "bench.apps.prefork_app:app"]
    if _prefork_has_setting("interface"):
        return [*command, "--interface", "wsgi", "bench.apps.wsgi_app:app"]
    return [*command, "bench.apps.prefork_wsgi_app:app"]  # the adapter, wrapped by hand


def _prefork_access_log(launch: Launch) -> list[str]:
    """prefork as deployed: its default access log (combined format), to a file."""
    command = _prefork(launch)
    at = command.index("--access-log")
    command[at + 1] = str(launch.workdir / "prefork-access.log")
    return command


def _prefork_has_setting(name: str) -> bool:
    """Whether this prefork's command line has setting ``name`` (it is still growing)."""
    from prefork.config import SETTINGS

    return any(setting.name == name for setting in SETTINGS)


def _tornado(launch: Launch) -> list[str]:
    return [PY, "-m", "bench.apps.tornado_app", str(launch.port), str(launch.workers)]


def _gunicorn(worker_class: str, *extra: str) -> Callable[[Launch], list[str]]:
    def command(launch: Launch) -> list[str]:
        args = [PY, "-m", "gunicorn", "-k", worker_class, *extra]
        args += ["-w", str(launch.workers), "-b", f"127.0.0.1:{launch.port}"]
        args += ["--log-level", "warning", *(["--preload"] if launch.preload else [])]
        return [*args, "bench.apps.wsgi_app:app"]

    return command


def _uvicorn(loop: str, http: str) -> Callable[[Launch], list[str]]:
    def command(launch: Launch) -> list[str]:
        app = "bench.apps.wsgi_app:app" if launch.wsgi else launch.asgi or ASGI_APP
        interface = "wsgi" if launch.wsgi else "asgi3"
        args = [PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(launch.port)]
        args += ["--workers", str(launch.workers), "--loop", loop, "--http", http]
        args += ["--interface", interface, "--no-access-log", "--log-level", "warning"]
        args += ["--ws", "websockets"] if launch.websocket else []
        return [*args, app]

    return command


def _granian(launch: Launch) -> list[str]:
    """One runtime thread per worker, single-threaded runtime, uvloop: one core's worth.

    A granian worker still has more threads than that: the Python thread that
    runs the event loop and the app, the Rust runtime thread(s), and helpers;
    the report's threads column counts them all.
    """
    args = [PY, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"]
    args += ["--port", str(launch.port), "--workers", str(launch.workers)]
    args += ["--runtime-threads", "1", "--runtime-mode", "st", "--loop", "uvloop", "--http", "1"]
    args += ["--no-access-log", "--log-level", "warning"]
    return [*args, launch.asgi or ASGI_APP]


def _gunicorn_asgi(launch: Launch) -> list[str]:
    """gunicorn's own ASGI worker (gunicorn >= 24) on uvloop; its C parser when installed."""
    args = [PY, "-m", "gunicorn", "-k", "asgi", "--asgi-loop", "uvloop"]
    args += ["-w", str(launch.workers), "-b", f"127.0.0.1:{launch.port}"]
    args += ["--log-level", "warning", *(["--preload"] if launch.preload else [])]
    return [*args, launch.asgi or ASGI_APP]


def _hypercorn(launch: Launch) -> list[str]:
    """hypercorn's uvloop worker; no --access-logfile, so no access log."""
    args = [PY, "-m", "hypercorn", "-k", "uvloop", "-w", str(launch.workers)]
    args += ["-b", f"127.0.0.1:{launch.port}", "--log-level", "warning"]
    return [*args, launch.asgi or ASGI_APP]


def _nginx(launch: Launch) -> list[str]:
    return nginx.command(launch.workdir, launch.port, launch.workers)


SERVERS: tuple[Server, ...] = (
    Server(
        "prefork",
        "prefork CLI (seed API callback; `--interface asgi` in the ASGI scenarios)",
        "prefork",
        ("prefork",),
        "pip install -e .",
        _prefork,
        wsgi=True,
        preload=True,
        asgi=True,
    ),
    Server(
        "prefork-log",
        "prefork CLI with its default access log (combined format, to a file)",
        "prefork",
        ("prefork",),
        "pip install -e .",
        _prefork_access_log,
        asgi=True,
    ),
    Server(
        "tornado",
        "tornado HTTPServer + fork_processes",
        "tornado",
        ("tornado",),
        "pip install tornado",
        _tornado,
    ),
    Server(
        "gunicorn-sync",
        "gunicorn sync worker (WSGI)",
        "gunicorn",
        ("gunicorn",),
        "pip install gunicorn",
        _gunicorn("sync"),
        wsgi=True,
        preload=True,
    ),
    Server(
        "gunicorn-gthread",
        "gunicorn gthread worker, 4 threads (WSGI)",
        "gunicorn",
        ("gunicorn",),
        "pip install gunicorn",
        _gunicorn("gthread", "--threads", "4"),
        wsgi=True,
        preload=True,
    ),
    Server(
        "uvicorn-httptools",
        "uvicorn httptools + uvloop (ASGI; `--ws websockets` in ws-echo)",
        "uvicorn",
        ("uvicorn", "httptools", "uvloop"),
        "pip install uvicorn httptools uvloop",
        _uvicorn("uvloop", "httptools"),
        wsgi=True,
        asgi=True,
        ws_modules=("websockets",),
    ),
    Server(
        "uvicorn-h11",
        "uvicorn h11 + asyncio (ASGI)",
        "uvicorn",
        ("uvicorn", "h11"),
        "pip install uvicorn",
        _uvicorn("asyncio", "h11"),
        wsgi=True,
    ),
    Server(
        "nginx",
        "nginx `return 200` (the native ceiling)",
        None,
        (),
        "apt-get install nginx-light",
        _nginx,
    ),
    Server(
        "granian",
        "granian --interface asgi, 1 runtime thread (st), uvloop (ASGI scenarios only)",
        "granian",
        ("granian",),
        "pip install granian",
        _granian,
        asgi=True,
        native=False,
    ),
    Server(
        "gunicorn-asgi",
        "gunicorn -k asgi (its native ASGI worker), uvloop (ASGI scenarios only)",
        "gunicorn",
        ("gunicorn.workers.gasgi", "uvloop"),
        "pip install 'gunicorn>=24' uvloop (its ASGI worker came in 24.0)",
        _gunicorn_asgi,
        asgi=True,
        native=False,
        preload=True,
    ),
    Server(
        "hypercorn",
        "hypercorn -k uvloop (ASGI scenarios only)",
        "hypercorn",
        ("hypercorn", "uvloop"),
        "pip install hypercorn uvloop",
        _hypercorn,
        asgi=True,
        native=False,
    ),
)
BY_NAME = {server.name: server for server in SERVERS}


def prefork_wsgi_missing() -> str | None:
    """Why prefork cannot run the WSGI scenario yet, or None once it can."""
    try:
        wsgi = importlib.import_module("prefork.worker.wsgi")
    except ImportError:
        return "n/a (prefork WSGI not built yet)"
    if not hasattr(wsgi, "WSGIAdapter"):
        return "n/a (no prefork.worker.wsgi.WSGIAdapter: adapt bench/apps/prefork_wsgi_app.py)"
    return None
