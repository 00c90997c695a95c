"""The application's own Prometheus metrics, without manual setup.

prometheus_client keeps a process's metrics in that process; with several
workers a scrape would see one worker's.  Its multiprocess mode has each
process write its values to files in ``PROMETHEUS_MULTIPROC_DIR``, and a
``MultiProcessCollector`` sums them.  With metrics on (``--metrics-path`` or
``--metrics-bind``) and prometheus_client installed, the master:

* points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory of its own before
  it forks (or imports a ``--preload`` application), unless the user set one;
* calls ``prometheus_client.multiprocess.mark_process_dead(pid)`` for each
  reaped worker (its live gauges go; its counters stay in the sum);
* removes its directory at exit;

and every scrape appends that registry after prefork's own metrics.  A master
exec'd by USR2 finds the old master's directory in its environment, marked
as prefork's (``PREFORK_MULTIPROC_DIR``), and makes its own.

prometheus_client reads the variable when it is first imported: an
application imported before (the Python API, where the script imports it
first) must set it itself; a warning says so.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile

__all__ = ["MultiprocDir", "prepare", "render"]

log = logging.getLogger("prefork.master")

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the directory prefork made (so a USR2-exec'd master knows it is not the user's)
OWNED_ENV = "PREFORK_MULTIPROC_DIR"


class MultiprocDir:
    """The multiprocess directory in use; ``owned`` when this master made it."""

    def __init__(self, path: str, owned: bool) -> None:
        self.path = path
        self.owned = owned
        self.pid = os.getpid()

    def worker_exited(self, pid: int) -> None:
        """prometheus_client's ``mark_process_dead`` for a reaped worker."""
        try:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, self.path)
        except Exception as exc:  # never a reason to disturb supervision
            log.debug("mark_process_dead(%d) failed: %s", pid, exc)

    def remove(self) -> None:
        """At the master's exit: remove the directory if this master made it."""
        if not self.owned or os.getpid() != self.pid:
            return
        shutil.rmtree(self.path, ignore_errors=True)
        if os.environ.get(ENV) == self.path:
            del os.environ[ENV]
            os.environ.pop(OWNED_ENV, None)
        global _current
        if _current is self:
            _current = None


_current: MultiprocDir | None = None


def installed() -> bool:
    return importlib.util.find_spec("prometheus_client") is not None


def prepare() -> MultiprocDir | None:
    """Set up the multiprocess directory of this master (once; None without
    prometheus_client).  Call before forking and before importing the app."""
    global _current
    if _current is not None and _current.pid == os.getpid():
        return _current
    if not installed():
        return None
    given = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if given and os.environ.get(OWNED_ENV) != given:
        _current = MultiprocDir(given, owned=False)
        log.info("application metrics: prometheus_client multiprocess directory %s", given)
    else:
        path = tempfile.mkdtemp(prefix=f"prefork-metrics-{os.getpid()}-")
        os.environ[ENV] = os.environ[OWNED_ENV] = path
        _current = MultiprocDir(path, owned=True)
    values = sys.modules.get("prometheus_client.values")
    if values is not None and getattr(values, "ValueClass", None) is not None:
        if getattr(values.ValueClass, "__name__", "") == "MutexValue":  # single-process
            log.warning(
                "application metrics: prometheus_client was imported before prefork set %s; "
                "the workers' metrics will not be summed (set %s before importing it)",
                ENV,
                ENV,
            )
    return _current


def render() -> bytes:
    """The application's metrics summed over every worker, or b"" (none, or
    prometheus_client missing).  Reads the files of ``PROMETHEUS_MULTIPROC_DIR``."""
    path = os.environ.get(ENV) or os.environ.get(ENV.lower())
    if not path or not os.path.isdir(path):
        return b""
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector
    except ImportError:
        return b""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path)
    return bytes(generate_latest(registry))
