"""Server-side TLS contexts from the seed's ``ssl_options``.

``ssl_options`` is either an :class:`ssl.SSLContext`, used as given, or the
seed's dict (``certfile``, ``keyfile``, ``cert_reqs``, ``ca_certs``,
``ciphers``).  A dict is checked when the server is constructed, so a missing
certificate is a clear error at start-up rather than a failed handshake.
Defaults: TLS 1.2 minimum, ALPN ``http/1.1``.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefork.settings import Config

__all__ = ["SSLContextHookError", "hooked_context", "options_from_config", "server_context"]

_KNOWN_KEYS = {"certfile", "keyfile", "cert_reqs", "ca_certs", "ciphers", "password"}


def server_context(ssl_options: ssl.SSLContext | Mapping[str, Any]) -> ssl.SSLContext:
    """Return an SSLContext for ``ssl_options``; ValueError names a bad option."""
    if isinstance(ssl_options, ssl.SSLContext):
        return ssl_options
    if not isinstance(ssl_options, Mapping):
        raise TypeError("ssl_options must be a dict or an ssl.SSLContext")
    unknown = set(ssl_options) - _KNOWN_KEYS
    if unknown:
        raise ValueError(f"ssl_options: unknown key(s) {', '.join(sorted(unknown))}")
    certfile = ssl_options.get("certfile")
    if not certfile:
        raise ValueError("ssl_options: 'certfile' is required")
    for key in ("certfile", "keyfile", "ca_certs"):
        path = ssl_options.get(key)
        if path and not os.path.exists(path):
            raise ValueError(f"ssl_options: {key} {path!r} does not exist")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(certfile, ssl_options.get("keyfile"), ssl_options.get("password"))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"ssl_options: cannot load certfile/keyfile: {exc}") from None
    cert_reqs = ssl_options.get("cert_reqs", ssl.CERT_NONE)
    if cert_reqs not in (ssl.CERT_NONE, ssl.CERT_OPTIONAL, ssl.CERT_REQUIRED):
        raise ValueError(f"ssl_options: invalid cert_reqs {cert_reqs!r}")
    ca_certs = ssl_options.get("ca_certs")
    if ca_certs:
        try:
            context.load_verify_locations(ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise ValueError(f"ssl_options: cannot load ca_certs: {exc}") from None
    elif cert_reqs != ssl.CERT_NONE:
        raise ValueError("ssl_options: cert_reqs needs ca_certs to verify clients against")
    context.verify_mode = cert_reqs
    ciphers = ssl_options.get("ciphers")
    if ciphers:
        try:
            context.set_ciphers(ciphers)
        except ssl.SSLError as exc:
            raise ValueError(f"ssl_options: invalid ciphers: {exc}") from None
    context.set_alpn_protocols(["http/1.1"])
    return context


def options_from_config(config: Config) -> dict[str, Any] | None:
    """The seed's ``ssl_options`` dict for ``--certfile`` & co. (None: plain HTTP)."""
    if not config.certfile:
        return None
    options: dict[str, Any] = {"certfile": config.certfile}
    if config.keyfile:
        options["keyfile"] = config.keyfile
    if config.ca_certs:
        options["ca_certs"] = config.ca_certs
    options["cert_reqs"] = {
        "none": ssl.CERT_NONE,
        "optional": ssl.CERT_OPTIONAL,
        "required": ssl.CERT_REQUIRED,
    }[config.cert_reqs]
    if config.ciphers:
        options["ciphers"] = config.ciphers
    return options


class SSLContextHookError(ValueError):
    """The config file's ``ssl_context`` hook raised or returned no SSLContext."""


def hooked_context(
    config: Config, ssl_options: Mapping[str, Any], log_traceback: bool = True
) -> ssl.SSLContext:
    """The context the config file's ``ssl_context(config, default_ssl_context_factory)``
    hook returns (gunicorn >= 21), called once in each worker.

    As in gunicorn, the factory builds the default context from the
    settings (certfile, keyfile, ca_certs, cert_reqs; here also prefork's
    TLS 1.2 minimum and ALPN), which the hook usually adjusts and returns.
    A hook that raises, or returns something else than an SSLContext, fails
    the worker's boot: serving with another context than the one asked for
    (a TLS version the hook meant to refuse) would be a silent downgrade.
    """
    import logging

    from prefork.hooks import GunicornConfig

    hook = config.hooks.ssl_context
    assert hook is not None

    def default_ssl_context_factory() -> ssl.SSLContext:
        return server_context(ssl_options)

    try:
        context = hook(GunicornConfig(config), default_ssl_context_factory)
    except Exception as exc:
        if log_traceback:
            logging.getLogger("prefork.worker").exception("server hook ssl_context raised")
        where = _hook_line(exc, hook)
        raise SSLContextHookError(
            f"server hook ssl_context raised {type(exc).__name__}: {exc}{where}"
        ) from None
    if not isinstance(context, ssl.SSLContext):
        raise SSLContextHookError(
            f"server hook ssl_context returned {type(context).__name__}, not an ssl.SSLContext"
        )
    return context


def _hook_line(exc: BaseException, hook: Any) -> str:
    """`` (FILE, line N)``: where in the hook's file it raised, if it did there."""
    import traceback

    code = getattr(hook, "__code__", None)
    if code is None:
        return ""
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == code.co_filename
    ]
    return f" ({code.co_filename}, line {lines[-1]})" if lines else ""
