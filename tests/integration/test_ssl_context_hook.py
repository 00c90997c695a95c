"""gunicorn's ``ssl_context(config, default_ssl_context_factory)`` hook, through
the real CLI and real TLS clients.

A config file defining it was loaded without complaint and the hook was
never called: a server meant to refuse TLS 1.2 accepted it.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, stop_all
from tests.integration.test_tls import Certs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

HOOK = textwrap.dedent(
    """
    import os, ssl

    workers = 1

    def ssl_context(conf, default_ssl_context_factory):
        context = default_ssl_context_factory()
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        with open(os.environ["HOOK_LOG"], "a") as f:
            f.write(f"called {os.getpid()} {conf.is_ssl} {conf.certfile == os.environ['CERT']}\\n")
        return context
    """
)


def _handshake(port: int, ca: Path, maximum: ssl.TLSVersion) -> str:
    """The TLS version negotiated by a client capped at ``maximum`` (raises
    ssl.SSLError when the server refuses every version the client offers)."""
    context = ssl.create_default_context(cafile=str(ca))
    context.maximum_version = maximum
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert tls.recv(12).startswith(b"HTTP/1.1 200")
            return str(tls.version())


def test_the_ssl_context_hook_makes_the_workers_context(tmp_path: Path) -> None:
    certs = Certs(tmp_path)
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOK)
    notes = tmp_path / "hook.log"
    server = Cli(
        tmp_path,
        "-c",
        str(conf),
        "--certfile",
        str(certs.server_cert),
        "--keyfile",
        str(certs.server_key),
        env={"HOOK_LOG": str(notes), "CERT": str(certs.server_cert)},
    )
    try:
        port = server.port()
        [worker] = server.wait_workers(1)
        assert _handshake(port, certs.ca, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            _handshake(port, certs.ca, ssl.TLSVersion.TLSv1_2)
        if shutil.which("openssl"):
            refused = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-tls1_2"],
                input=b"",
                capture_output=True,
                timeout=10,
            )
            assert refused.returncode != 0
        # called once, in the worker, with gunicorn's config view
        wait_for(notes.exists, 5, "the hook's note")
        assert notes.read_text().split() == ["called", str(worker), "True", "True"]
        assert server.stop(signal.SIGTERM) == 0
    finally:
        stop_all([server])


def test_a_raising_ssl_context_hook_fails_the_boot(tmp_path: Path) -> None:
    """Serving another context than the hook's would be a silent downgrade."""
    certs = Certs(tmp_path)
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("def ssl_context(conf, factory):\n    raise RuntimeError('no ctx here')\n")
    server = Cli(
        tmp_path,
        "-c",
        str(conf),
        "--certfile",
        str(certs.server_cert),
        "--keyfile",
        str(certs.server_key),
        "--boot-timeout",
        "5",
    )
    try:
        status = server.proc.wait(30)
        assert status == 3
        log = server.log()
        assert "server hook ssl_context raised RuntimeError: no ctx here" in log
    finally:
        stop_all([server])


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (
            "raise RuntimeError('no ctx here')",
            "server hook ssl_context raised RuntimeError: no ctx",
        ),
        ("return None", "server hook ssl_context returned NoneType, not an ssl.SSLContext"),
    ],
)
def test_check_config_runs_the_ssl_context_hook(tmp_path: Path, body: str, said: str) -> None:
    """``--check-config`` said "configuration OK" for a hook that fails every
    worker's boot; now it calls the hook once, as a worker would, and a good
    hook still passes."""
    certs = Certs(tmp_path)
    conf = tmp_path / "gunicorn.conf.py"
    args = [
        sys.executable, "-m", "prefork", "--check-config", "-c", str(conf),
        "--certfile", str(certs.server_cert), "--keyfile", str(certs.server_key),
        "tests.apps.asgi_app:app",
    ]  # fmt: skip
    conf.write_text(f"def ssl_context(conf, factory):\n    {body}\n")
    bad = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2, bad.stderr
    assert said in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    conf.write_text("def ssl_context(conf, factory):\n    return factory()\n")
    good = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert good.returncode == 0 and "configuration OK" in good.stdout, good.stderr
