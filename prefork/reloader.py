"""``--reload``: roll the workers when the application's files change (development).

A thread of the master watches the directories (``--reload-dir``; by default
the application module's and the config file's) for files matching the
include globs (``*.py`` and ``--reload-include``) and not the exclude globs
(``.*``, ``__pycache__``, ``*.py[cod]``, ``*~`` and ``--reload-exclude``, on
any path component).  A burst of writes (an editor saving, a ``git
checkout``) is one change: the watcher waits until the files are quiet for a
moment (``QUIET`` seconds, at most ``MAX_WAIT``) before it reports.

What a change does is the master's HUP: new workers with the new code first,
the old ones retired only once the new ones are ready.  So a save with a
syntax error leaves the old code serving (the new worker fails to boot and
shows the error), and the next good save recovers.

The watcher is watchfiles (inotify, the library uvicorn uses; the optional
``reload`` extra) when installed, else a stdlib poller (``os.scandir`` every
``POLL_INTERVAL`` seconds); ``--reload-engine`` chooses.  It runs in the master only: a fork keeps just
the forking thread, so workers never inherit it.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_INCLUDE",
    "Reloader",
    "default_dirs",
]

log = logging.getLogger("prefork.master")

DEFAULT_INCLUDE = ("*.py",)
DEFAULT_EXCLUDE = (".*", "__pycache__", "*.py[cod]", "*~", "*.sw?", "#*#")
#: seconds without a further change before a burst counts as one change
QUIET = 0.1
#: the longest a continuous burst is waited for
MAX_WAIT = 1.0
#: the stdlib poller's period
POLL_INTERVAL = 0.25
#: watchfiles' wake-up period without changes (ms): cheap, and the first one
#: confirms the watches are set
WATCHFILES_TIMEOUT_MS = 200


def default_dirs(app_spec: str | None, config_path: str | None) -> list[str]:
    """The application module's directory (its package's, for a package) and
    the config file's; the current directory when the module cannot be found.

    The module is located with ``find_spec`` on its top-level name, which
    does not import it: the master must not run the application's code.
    """
    dirs: list[str] = []
    if app_spec:
        top = app_spec.split(":", 1)[0].split(".", 1)[0]
        if "" not in sys.path and os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(spec.submodule_search_locations)
        elif spec is not None and spec.origin and os.path.isfile(spec.origin):
            dirs.append(os.path.dirname(os.path.abspath(spec.origin)))
    if config_path:
        dirs.append(os.path.dirname(os.path.abspath(config_path)))
    if not dirs:
        dirs.append(os.getcwd())
    unique: list[str] = []
    for directory in dirs:
        real = os.path.realpath(directory)
        if real not in unique:
            unique.append(real)
    return unique


class _Filter:
    """Which paths count: included by name, not excluded by any component;
    and the extra files, named one by one, whatever their names."""

    def __init__(
        self, include: Iterable[str], exclude: Iterable[str], extra: Iterable[str] = ()
    ) -> None:
        self.include = tuple(DEFAULT_INCLUDE) + tuple(include)
        self.exclude = tuple(DEFAULT_EXCLUDE) + tuple(exclude)
        self.extra = frozenset(extra)

    def excluded_name(self, name: str) -> bool:
        return any(fnmatch.fnmatch(name, pattern) for pattern in self.exclude)

    def __call__(self, path: str) -> bool:
        if path in self.extra:
            return True
        parts = Path(path).parts
        if any(self.excluded_name(part) for part in parts[1:]):
            return False
        return any(fnmatch.fnmatch(parts[-1], pattern) for pattern in self.include)


class Reloader:
    """Watch ``dirs`` in a daemon thread; call ``on_change(paths)`` once per burst.

    ``on_change`` runs on the watcher's thread: the master's passes the news
    on as a HUP to itself, which its signal handling serves like any other.
    """

    def __init__(
        self,
        dirs: Iterable[str],
        on_change: Callable[[list[str]], None],
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        use_watchfiles: bool | None = None,
        extra_files: Iterable[str] = (),
    ) -> None:
        self.dirs = [os.path.realpath(d) for d in dirs]
        self.extra_files = [
            os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(f))), os.path.basename(f))
            for f in extra_files
        ]
        #: the directories of extra files outside ``dirs``: watchfiles watches
        #: them (an editor replaces a file on save: a watch on the file itself
        #: would go with it), for those files only; the poller stats the files
        self.extra_dirs: list[str] = []
        for path in self.extra_files:
            parent = os.path.dirname(path)
            if not self._under_dirs(path) and parent not in self.extra_dirs:
                self.extra_dirs.append(parent)
        self.on_change = on_change
        self.filter = _Filter(include, exclude, self.extra_files)
        if use_watchfiles is None:
            use_watchfiles = importlib.util.find_spec("watchfiles") is not None
        self.engine = "watchfiles" if use_watchfiles else "polling"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: set once the watcher is watching (tests wait for it before they write)
        self.watching = threading.Event()

    def _under_dirs(self, path: str) -> bool:
        return any(path.startswith(directory + os.sep) for directory in self.dirs)

    def start(self) -> None:
        target = self._run_watchfiles if self.engine == "watchfiles" else self._run_polling
        self._thread = threading.Thread(target=self._guarded, args=(target,), daemon=True)
        self._thread.name = "prefork-reload"
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    def _now_watching(self) -> None:
        self.watching.set()
        watched = ", ".join(self.dirs)
        if self.extra_files:
            watched += f" and {', '.join(self.extra_files)}"
        log.info("--reload: watching %s (%s)", watched, self.engine)

    def _guarded(self, target: Callable[[], None]) -> None:
        try:
            target()
        except Exception:  # a broken watcher must not take the master down
            log.exception("--reload: the file watcher stopped")

    def _report(self, paths: Iterable[str]) -> None:
        changed = sorted(set(paths))
        if changed and not self._stop.is_set():
            self.on_change(changed)

    # -- watchfiles (inotify) -------------------------------------------------------------
    def _run_watchfiles(self) -> None:
        import watchfiles

        accept = self.filter

        extra_dirs = self.extra_dirs
        if extra_dirs:
            extra = accept.extra

            def wanted(_change: object, path: str) -> bool:
                # (in an extra file's directory: that file alone)
                return path in extra or (self._under_dirs(path) and accept(path))

        else:

            def wanted(_change: object, path: str) -> bool:
                return accept(path)

        for changes in watchfiles.watch(
            *self.dirs,
            *extra_dirs,
            watch_filter=wanted,
            stop_event=self._stop,
            debounce=int(MAX_WAIT * 1000),
            step=int(QUIET * 1000),
            # An empty yield after each quiet period: the first one says the
            # inotify watches are in place (so "watching" is true when logged).
            yield_on_timeout=True,
            rust_timeout=WATCHFILES_TIMEOUT_MS,
            raise_interrupt=False,
        ):
            if not self.watching.is_set():
                self._now_watching()
            if changes:
                self._report(path for _change, path in changes)

    # -- the stdlib poller ------------------------------------------------------------------
    def _scan(self) -> dict[str, int]:
        found: dict[str, int] = {}
        stack = list(self.dirs)
        while stack:
            directory = stack.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue
            for entry in entries:
                if self.filter.excluded_name(entry.name):
                    continue
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file() and self.filter(entry.path):
                        found[entry.path] = entry.stat().st_mtime_ns
                except OSError:
                    continue
        for path in self.extra_files:
            try:
                found[path] = os.stat(path).st_mtime_ns
            except OSError:
                found.pop(path, None)  # (not there: its appearing is a change)
        return found

    @staticmethod
    def _changed(before: dict[str, int], after: dict[str, int]) -> set[str]:
        return {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}

    def _run_polling(self) -> None:
        seen = self._scan()
        self._now_watching()
        while not self._stop.wait(POLL_INTERVAL):
            now = self._scan()
            changed = self._changed(seen, now)
            if not changed:
                continue
            # A burst: wait until a scan finds nothing new (or MAX_WAIT passed).
            deadline = time.monotonic() + MAX_WAIT
            while time.monotonic() < deadline and not self._stop.wait(QUIET):
                later = self._scan()
                more = self._changed(now, later)
                now = later
                if not more:
                    break
                changed |= more
            seen = now
            self._report(changed)
