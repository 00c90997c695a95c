"""``HTTPServer.bind`` + ``start(n)``: the seed's multi-process example, for real.

The example script forks workers through the prefork master; these tests
talk to it with real clients and stop it by pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from tests.conftest import APPS, ROOT, wait_for


def _workers(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children()


def test_bind_start_n_serves_ipv4_ipv6_and_stops_on_term(spawn, free_port, ipv6):
    port = free_port()
    server = spawn(ROOT / "examples/hello.py", "--port", port, "--workers", "2", ready_port=port)
    workers = wait_for(
        lambda: len(_workers(server.pid)) == 2 and _workers(server.pid), 10, "2 workers"
    )
    for url in (f"http://127.0.0.1:{port}/v4", f"http://[::1]:{port}/v6"):
        response = requests.get(url, timeout=5)
        assert response.status_code == 200
        assert response.text == f"You requested /{url.rsplit('/', 1)[1]}\n"
    out = subprocess.run(
        ["curl", "-s", "--http1.0", f"http://127.0.0.1:{port}/old"],
        capture_output=True,
        timeout=10,
        check=True,
    )
    assert out.stdout == b"You requested /old\n"
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(10) == 0
    for worker in workers:
        assert not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE


def test_start_n_replaces_a_killed_worker(spawn, free_port):
    port = free_port()
    server = spawn(ROOT / "examples/hello.py", "--port", port, "--workers", "2", ready_port=port)
    before = wait_for(
        lambda: len(_workers(server.pid)) == 2 and _workers(server.pid), 10, "2 workers"
    )
    victim = before[0].pid
    os.kill(victim, signal.SIGKILL)
    after = wait_for(
        lambda: (
            (pids := {p.pid for p in _workers(server.pid)})
            and len(pids) == 2
            and victim not in pids
            and pids
        ),
        5,
        "the killed worker was not replaced",
    )
    assert victim not in after
    for _ in range(10):
        assert requests.get(f"http://127.0.0.1:{port}/again", timeout=5).status_code == 200


def test_start_zero_counts_usable_cpus(spawn, free_port):
    """``start(0)`` under ``taskset -c 0`` forks one worker, not os.cpu_count()."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    port = free_port()
    os.sched_setaffinity(0, {0})
    try:
        server = spawn(
            ROOT / "examples/hello.py", "--port", port, "--workers", "0", ready_port=port
        )
    finally:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    assert requests.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    assert len(_workers(server.pid)) == 1


def test_event_loop_created_before_start_n_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, str(APPS / "loop_before_fork.py")],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert proc.returncode != 0
    assert "event loop" in proc.stderr.lower()
    assert "before" in proc.stderr.lower()
