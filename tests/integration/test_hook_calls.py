"""When gunicorn calls nworkers_changed, and whose log a worker hook's failure
goes to, through the real CLI."""

from __future__ import annotations

import os
import re
import signal
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.test_cli_config import get

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

NWORKERS = textwrap.dedent(
    """
    import os

    workers = 2

    def nworkers_changed(server, new_value, old_value):
        with open(os.environ["HOOK_LOG"], "a") as f:
            f.write(f"nworkers_changed {new_value} {old_value}\\n")

    def on_starting(server):
        with open(os.environ["HOOK_LOG"], "a") as f:
            f.write("on_starting\\n")
    """
)


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_nworkers_changed_is_called_as_gunicorns_arbiter_calls_it(cli, tmp_path: Path) -> None:
    """First with old_value None (gunicorn: as the arbiter sets num_workers,
    before on_starting), then on each change; a HUP that keeps the count
    calls nothing (gunicorn's reload never sets num_workers)."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(NWORKERS)
    notes = tmp_path / "hooks.log"
    server = cli("-c", str(conf), env={"HOOK_LOG": str(notes)})
    server.port()
    server.wait_workers(2, generation=1)
    assert _lines(notes) == ["nworkers_changed 2 None", "on_starting"]
    os.kill(server.proc.pid, signal.SIGTTIN)
    server.wait_workers(3)
    assert _lines(notes)[2:] == ["nworkers_changed 3 2"]
    # The file still says 2, as when it was read: the count stays 3, and
    # nothing changed is no call.
    os.kill(server.proc.pid, signal.SIGHUP)
    server.wait_workers(3, generation=2)
    os.kill(server.proc.pid, signal.SIGTTOU)
    server.wait_workers(2, generation=2)
    assert server.stop() == 0
    assert _lines(notes)[2:] == ["nworkers_changed 3 2", "nworkers_changed 2 3"]


def test_a_worker_hooks_failure_is_logged_by_the_worker(cli, tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text(
        "def pre_request(worker, req):\n    raise RuntimeError('pre_request broke')\n"
        "def child_exit(server, worker):\n    raise RuntimeError('child_exit broke')\n"
    )
    server = cli("-w", "1", "-c", str(conf))
    port = server.port()
    [worker] = server.wait_workers(1)
    assert get(port)[0] == 200
    wait_for(lambda: "pre_request broke" in server.log(), 10, "the hook's traceback")
    assert server.stop() == 0
    log = server.log()
    assert re.search(
        rf"\[{worker}\] \[ERROR\] prefork\.worker: server hook pre_request raised", log
    ), log
    master = server.proc.pid
    assert re.search(rf"\[{master}\] \[ERROR\] prefork\.master: server hook child_exit raised", log)
