"""``--capture-output`` (gunicorn's ``capture_output``) through the real CLI:
with ``--error-log FILE`` the processes' stdout and stderr land in that file
too, and follow it when USR1 reopens the logs after a rotation."""

from __future__ import annotations

import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, stop_all

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")


def get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.read()


@pytest.mark.parametrize("capture", [True, False], ids=["capture-output", "default"])
def test_capture_output_sends_prints_to_the_error_log(tmp_path: Path, capture: bool) -> None:
    args = ["-w", "1", "--interface", "asgi", *(["--capture-output"] if capture else [])]
    server = Cli(tmp_path, *args, app="tests.apps.printing_app:app")
    try:
        server.wait_workers(1)
        port = server.port()
        assert get(port, "/one") == b"ok"
        output = tmp_path / "out.log"  # (the process's own stdout and stderr)
        printed = ["printing_app imported (stdout)", "request one (stdout)", "request one (stderr)"]
        where, elsewhere = (
            (server.log, output.read_text) if capture else (output.read_text, server.log)
        )
        wait_for(lambda: all(line in where() for line in printed), 10, "the printed lines")
        assert not any(line in elsewhere() for line in printed)
        if capture:
            # logrotate: the file moves, USR1 reopens; prints follow to the new file
            rotated = tmp_path / "error.log.1"
            server.log_path.rename(rotated)
            server.proc.send_signal(signal.SIGUSR1)
            wait_for(lambda: "reopened its log files" in server.log(), 10, "the worker to reopen")
            assert get(port, "/two") == b"ok"
            wait_for(lambda: "request two (stderr)" in server.log(), 10, "prints in the new file")
            assert "request two" not in rotated.read_text()
        assert server.stop() == 0
    finally:
        stop_all([server])
