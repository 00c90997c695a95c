"""nginx as the native ceiling: a generated minimal config, run in the foreground.

Everything nginx writes (pid, logs, temp files) goes into a private directory;
``daemon off`` keeps the master our child, so it is stopped and reaped like
the Python servers.  ``/`` answers ``return 200`` with the same body and an
``X-Pid`` header; ``/big`` is a 1 MiB file (the same bytes as the apps').
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from bench.apps import BIG, HELLO

CANDIDATES = ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")

CONFIG = """\
worker_processes {workers};
daemon off;
master_process on;
{user}pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 2m;
        add_header X-Pid $pid;
        location = /big {{ alias {dir}/big; }}
        location / {{ return 200 "{body}"; }}
    }}
}}
"""


def binary() -> str | None:
    """The nginx binary: on PATH, or where Debian and source builds put it."""
    found = shutil.which("nginx")
    if found:
        return found
    return next((path for path in CANDIDATES if os.access(path, os.X_OK)), None)


@functools.cache
def version() -> str:
    """nginx's version (it prints ``nginx version: nginx/1.22.1`` on stderr)."""
    path = binary()
    if path is None:
        return "?"
    output = subprocess.run([path, "-v"], capture_output=True, text=True).stderr
    return output.strip().rpartition("/")[2] or "?"


def write_config(workdir: Path, port: int, workers: int) -> Path:
    """Write nginx.conf and the 1 MiB file into ``workdir``; return the config path.

    As root, nginx's workers would switch to ``nobody`` and could not read a
    private temp dir, so they stay root (``user root;``), which is harmless
    for a loopback benchmark.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "big").write_bytes(BIG)
    user = "user root;\n" if os.geteuid() == 0 else ""
    text = CONFIG.format(workers=workers, user=user, dir=workdir, port=port, body=HELLO.decode())
    path = workdir / "nginx.conf"
    path.write_text(text)
    return path


def command(workdir: Path, port: int, workers: int) -> list[str]:
    """The nginx command line; ``-e`` keeps even the startup log out of /var/log."""
    config = write_config(workdir / "nginx", port, workers)
    prefix = str(config.parent)
    return [binary() or "nginx", "-p", prefix, "-e", f"{prefix}/error.log", "-c", str(config)]
