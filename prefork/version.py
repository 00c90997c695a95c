"""``prefork --version``: what a bug report needs to start with.

prefork's version, Python's, the event loop a worker will run (uvloop or
asyncio, as ``PREFORK_UVLOOP`` decides) and which optional features this
installation has, each with the version of the library that provides it.
Nothing is imported beyond what is needed to tell (``find_spec`` and package
metadata), so the answer is instant.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform
import sys

import prefork

__all__ = ["version_text"]

#: (feature, the module that provides it, its distribution)
_FEATURES = (
    ("WSGI", None, None),
    ("ASGI", None, None),
    ("WebSocket", "wsproto", "wsproto"),
    ("--reload watcher", "watchfiles", "watchfiles"),
    ("metrics (app registry)", "prometheus_client", "prometheus_client"),
    ("process titles", "setproctitle", "setproctitle"),
)


def _installed(module: str, distribution: str) -> str | None:
    try:
        if importlib.util.find_spec(module) is None:
            return None
    except ImportError:
        return None
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "installed"


def _event_loop() -> str:
    from prefork.worker.ioloop import _uvloop_wanted

    uvloop = _installed("uvloop", "uvloop")
    if uvloop and _uvloop_wanted():
        return f"uvloop {uvloop}"
    why = "PREFORK_UVLOOP=0" if uvloop else "uvloop not installed"
    return f"asyncio ({why})"


def _tls() -> str:
    try:
        import ssl
    except ImportError:  # a Python built without OpenSSL
        return "unavailable (Python built without ssl)"
    return ssl.OPENSSL_VERSION


def version_text() -> str:
    """The lines ``prefork --version`` prints."""
    lines = [
        f"prefork {prefork.__version__}",
        f"Python {platform.python_version()} ({platform.python_implementation()}, {sys.platform})",
        f"event loop: {_event_loop()}",
        f"TLS: {_tls()}",
    ]
    for feature, module, distribution in _FEATURES:
        if module is None or distribution is None:
            lines.append(f"{feature}: built in")
            continue
        found = _installed(module, distribution)
        lines.append(f"{feature}: {f'{module} {found}' if found else 'not installed'}")
    return "\n".join(lines)
