"""The logs survive an application's ``logging.config.dictConfig``.

``dictConfig`` closes every existing handler and takes it off the list
``logging.shutdown()`` flushes, and by default disables every existing logger
it does not name.  Django runs one in ``django.setup()``; many applications
do at import, some later.  Through the real ``prefork`` command: the access
log (to a file, to stdout) keeps every line, and prefork's own messages keep
reaching the error log.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from prefork.worker import accesslog
from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, get, stop_all

APP = "tests.integration.apps.dictconfig_app:app"
LINE = re.compile(r'^127\.0\.0\.1 - - \[[^]]+\] "GET /\?id=(\S+) HTTP/1\.1" 200 2 ')
REOPENED = "was closed by another part of the program"


def ids_in(path: Path) -> list[str]:
    """The ``id`` of every access line for ``/?id=...`` in ``path`` (other lines skipped)."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text(errors="replace").splitlines():
        match = LINE.match(line)
        if match:
            found.append(match.group(1))
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[list[Cli]]:
    started: list[Cli] = []
    yield started
    stop_all(started)


def start(started: list[Cli], tmp: Path, *args: str, disable: bool, when: str) -> Cli:
    env = {"DICTCONFIG_APP_DISABLE": "1" if disable else "0", "DICTCONFIG_APP_WHEN": when}
    cli = Cli(tmp, "-w", "1", *args, env=env, app=APP)
    started.append(cli)
    return cli


@pytest.mark.parametrize("disable", [True, False], ids=["disable_existing", "keep_existing"])
def test_file_access_log_and_error_log_after_dictconfig_at_import(
    server: list[Cli], tmp_path: Path, disable: bool
) -> None:
    access = tmp_path / "access.log"
    cli = start(server, tmp_path, "--access-log", str(access), disable=disable, when="import")
    port = cli.port()
    [worker] = cli.wait_workers(1)
    wanted = [f"a{n}" for n in range(5)]
    for ident in wanted:
        assert get(port, f"/?id={ident}") == (200, b"ok")
    # Written while the server runs (the flush interval), not only at exit.
    wait_for(lambda: ids_in(access) == wanted, 5, "the access lines in the file")
    assert get(port, "/boom")[0] == 500
    assert cli.stop() == 0
    out = (tmp_path / "out.log").read_text(errors="replace")
    assert f"APP dictconfig_app logging configured in {worker}" in out, out
    log = cli.log()
    # prefork's own loggers, after the app's dictConfig, still reach the error log.
    assert "Error in WSGI application: /boom" in log, log
    assert "RuntimeError: dictconfig_app boom" in log, log
    assert f"worker 0 (pid {worker}): graceful stop" in log, log
    assert ids_in(access) == wanted


@pytest.mark.parametrize("disable", [True, False], ids=["disable_existing", "keep_existing"])
def test_stdout_access_log_keeps_its_last_lines_on_a_graceful_stop(
    server: list[Cli], tmp_path: Path, disable: bool
) -> None:
    cli = start(server, tmp_path, "--access-log", "-", disable=disable, when="import")
    port = cli.port()
    cli.wait_workers(1)
    wanted = [f"s{n}" for n in range(5)]
    for ident in wanted:
        assert get(port, f"/?id={ident}") == (200, b"ok")
    # TERM at once: the lines still wait in the worker's batch (FLUSH_INTERVAL).
    assert cli.stop() == 0
    assert ids_in(tmp_path / "out.log") == wanted


def test_dictconfig_on_a_request_keeps_the_access_log_and_prefork_messages(
    server: list[Cli], tmp_path: Path
) -> None:
    """Configured after the worker's checks (on a request): prefork's loggers are
    not disabled, and the access file closed under its sink is reopened, said
    once, instead of its lines queueing for ever."""
    access = tmp_path / "access.log"
    cli = start(server, tmp_path, "--access-log", str(access), disable=True, when="request")
    port = cli.port()
    [worker] = cli.wait_workers(1)
    assert get(port, "/?id=before") == (200, b"ok")
    wait_for(lambda: ids_in(access) == ["before"], 5, "the first access line")
    assert get(port, "/configure-logging") == (200, b"ok")
    wait_for(
        lambda: (
            f"APP dictconfig_app logging configured in {worker}"
            in (tmp_path / "out.log").read_text(errors="replace")
        ),
        5,
        "the application's dictConfig",
    )
    # prefork.error, which the dictConfig would have disabled, still logs.
    assert get(port, "/boom")[0] == 500
    wait_for(lambda: "RuntimeError: dictconfig_app boom" in cli.log(), 5, "the error logged")
    wanted = ["before"] + [f"r{n}" for n in range(5)]
    for ident in wanted[1:]:
        assert get(port, f"/?id={ident}") == (200, b"ok")
    wait_for(lambda: ids_in(access) == wanted, 5, "the access lines after the dictConfig")
    assert get(port, "/?id=last") == (200, b"ok")
    assert cli.stop() == 0
    assert ids_in(access) == [*wanted, "last"]
    log = cli.log()
    assert log.count(REOPENED) == 1, log
    assert "Error in WSGI application: /boom" in log, log
    assert f"worker 0 (pid {worker}): graceful stop" in log, log


def test_a_sink_closed_under_it_reopens_its_file_or_drops_lines(tmp_path: Path) -> None:
    """The batched sink's queue never waits for a stream that will not come back
    (it kept every line for a closed file: a leak as long as the worker ran)."""
    path = tmp_path / "logs" / "access.log"
    path.parent.mkdir()
    sink = accesslog.AccessLogFileHandler(str(path))
    warnings: list[str] = []
    catcher = logging.Handler()
    catcher.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    error = logging.getLogger("prefork.error")
    error.addHandler(catcher)
    try:
        sink.add("one")  # (off a loop: written at once)
        sink.close()  # what dictConfig does to every handler
        sink.add("two")
        assert sink._lines == []
        assert path.read_text() == "one\ntwo\n"
        sink.close()
        path.unlink()
        path.parent.rmdir()  # now it cannot be reopened
        for n in range(3):
            sink.add(f"lost {n}")
        assert sink._lines == []
        assert len(warnings) == 2, warnings  # each once
        assert warnings[0].endswith(": reopened")
        assert "cannot be reopened" in warnings[1] and "dropped" in warnings[1]
    finally:
        error.removeHandler(catcher)
        sink.close()
