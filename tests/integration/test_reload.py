"""``--reload`` through the real CLI, with both watchers (watchfiles and the poller).

A client polls the server the whole time: saving a changed handler changes
the answer within 2 s with no failed request; saving a syntax error keeps
the old answer and shows the error once; the next good save recovers; a
burst of writes is one roll; excluded files roll nothing.
"""

from __future__ import annotations

import http.client
import re
import sys
import threading
import time
from pathlib import Path

import pytest

from prefork.reloader import _Filter, default_dirs
from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, run_cli, stop_all

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

HANDLER = """\
def app(request):
    body = b"{answer}"
    request.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n%s" % (len(body), body))
    request.finish()
"""


class Poller:
    """GET / in a loop on fresh connections; every answer and every failure kept."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[str] = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read().decode()
                if response.status != 200:
                    self.failures.append(f"{response.status} {body}")
                else:
                    self.answers.append(body)
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))
            finally:
                conn.close()
            time.sleep(0.01)  # a client polling, not a load test

    def wait_answer(self, text: str, within: float) -> float:
        start = time.monotonic()
        count = len(self.answers)
        wait_for(lambda: text in self.answers[count:], within, f"the answer {text!r}")
        return time.monotonic() - start

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def start(tmp_path: Path, engine: str, *args: str) -> Cli:
    app_dir = tmp_path / "src"
    app_dir.mkdir()
    (app_dir / "reload_app.py").write_text(HANDLER.format(answer="v1"))
    server = Cli(
        tmp_path,
        "-w",
        "1",
        "--reload",
        "--reload-engine",
        engine,
        *args,
        env={"PYTHONPATH": str(app_dir)},
        app="reload_app:app",
    )
    tmp_path = app_dir
    wait_for(lambda: f"--reload: watching {tmp_path.resolve()}" in server.log(), 20, "the watcher")
    server.wait_workers(1)
    return server


def reload_lines(server: Cli) -> list[str]:
    return re.findall(r"reloading: .* changed.*", server.log())


@pytest.fixture
def reload_cli():
    """``make(tmp_path, engine, *args)``: a ``--reload`` master serving
    ``tmp_path/src/reload_app.py``; stopped by pid at the end if a test did not."""
    started: list[Cli] = []

    def make(tmp_path: Path, engine: str, *args: str) -> Cli:
        server = start(tmp_path, engine, *args)
        started.append(server)
        return server

    yield make
    stop_all(started)


@pytest.mark.parametrize("engine", ["watchfiles", "poll"])
def test_save_change_syntax_error_and_recovery(reload_cli, tmp_path: Path, engine: str) -> None:
    server = reload_cli(tmp_path, engine)
    app = tmp_path / "src" / "reload_app.py"
    poller = Poller(server.port())
    poller.wait_answer("v1", 10)

    # An editor's burst of writes: one roll, the new answer within 2 s.
    for n in range(5):
        app.write_text(HANDLER.format(answer=f"v2-{n}" if n < 4 else "v2"))
    took = poller.wait_answer("v2", 2.0)
    assert took < 2.0
    wait_for(lambda: "reload complete" in server.log(), 5, "the roll to complete")
    assert len(reload_lines(server)) == 1, reload_lines(server)
    assert "reload_app.py" in reload_lines(server)[0]

    # A syntax error: the old code keeps serving, the error shows once.
    app.write_text("def app(request):\n    return (\n")
    wait_for(lambda: "reload aborted" in server.log(), 10, "the failed roll")
    log = server.log()
    assert log.count("SyntaxError: '(' was never closed") == 1, log
    assert f'File "{app}", line 2' in log
    assert "Traceback" not in log
    answered = len(poller.answers)
    wait_for(lambda: len(poller.answers) >= answered + 5, 10, "more answers")
    assert set(poller.answers[answered:]) == {"v2"}

    # The next good save recovers.
    app.write_text(HANDLER.format(answer="v3"))
    assert poller.wait_answer("v3", 2.0) < 2.0

    poller.stop()
    assert poller.failures == []
    assert server.stop() == 0


@pytest.mark.parametrize("engine", ["watchfiles", "poll"])
def test_excluded_and_other_files_roll_nothing(reload_cli, tmp_path: Path, engine: str) -> None:
    server = reload_cli(tmp_path, engine, "--reload-exclude", "scratch_*.py")
    tmp_path = tmp_path / "src"
    (tmp_path / "notes.txt").write_text("not watched: not *.py\n")
    (tmp_path / "scratch_1.py").write_text("x = 1  # excluded by --reload-exclude\n")
    (tmp_path / "__pycache__").mkdir(exist_ok=True)
    (tmp_path / "__pycache__" / "junk.py").write_text("# excluded: __pycache__\n")
    (tmp_path / ".hidden.py").write_text("# excluded: a dot file\n")
    (tmp_path / "reload_app.py").write_text(HANDLER.format(answer="after"))
    wait_for(lambda: reload_lines(server), 5, "the roll")
    wait_for(lambda: "reload complete" in server.log(), 5, "the roll to complete")
    lines = reload_lines(server)
    assert len(lines) == 1 and "reload_app.py" in lines[0], lines
    for name in ("notes", "scratch", "junk", "hidden"):
        assert name not in lines[0], lines
    assert server.stop() == 0


def test_reload_include_adds_globs(reload_cli, tmp_path: Path) -> None:
    server = reload_cli(tmp_path, "poll", "--reload-include", "*.html")
    tmp_path = tmp_path / "src"
    (tmp_path / "page.html").write_text("<p>changed</p>\n")
    wait_for(lambda: any("page.html" in line for line in reload_lines(server)), 5, "the roll")
    assert server.stop() == 0


@pytest.mark.parametrize("engine", ["watchfiles", "poll"])
def test_reload_extra_files_roll_for_those_files_alone(
    reload_cli, tmp_path: Path, engine: str
) -> None:
    """gunicorn's ``reload_extra_files`` (``--reload-extra-file``) was ignored
    with a warning: an ``.env`` (a dot file, excluded by default) in the
    watched directory and a file in a directory outside it roll the workers;
    that outside directory's other files do not."""
    outside = tmp_path / "conf"
    outside.mkdir()
    settings = outside / "settings.toml"
    settings.write_text("a = 1\n")
    dotenv = tmp_path / "src" / ".env"  # (start() makes src; the file may come later)
    server = reload_cli(
        tmp_path, engine, "--reload-extra-file", str(settings), "--reload-extra-file", str(dotenv)
    )
    assert f"and {settings.resolve()}" in server.log()
    (outside / "other.py").write_text("x = 1  # outside: not watched\n")
    settings.write_text("a = 2\n")
    wait_for(lambda: reload_lines(server), 5, "the roll for settings.toml")
    wait_for(lambda: "reload complete" in server.log(), 10, "the roll to complete")
    lines = reload_lines(server)
    assert len(lines) == 1 and "settings.toml" in lines[0] and "other.py" not in lines[0], lines
    dotenv.write_text("SECRET=1\n")
    wait_for(lambda: len(reload_lines(server)) == 2, 5, "the roll for .env")
    assert ".env" in reload_lines(server)[1]
    assert server.stop() == 0


def test_reload_with_preload_is_refused_in_one_line() -> None:
    result = run_cli("--reload", "--preload", "tests.integration.apps.master_app:app")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "prefork: error: --reload: cannot be used with --preload "
        "(the master's imported code cannot be reloaded)"
    )


# -- the pure parts ---------------------------------------------------------------------


def test_filter_includes_py_and_globs_and_excludes_any_component() -> None:
    accept = _Filter(include=["*.html"], exclude=["build"])
    assert accept("/src/app/views.py")
    assert accept("/src/app/templates/index.html")
    assert not accept("/src/app/notes.txt")
    assert not accept("/src/app/__pycache__/views.cpython-311.pyc")
    assert not accept("/src/app/__pycache__/x.py")
    assert not accept("/src/app/.venv/lib/site.py")
    assert not accept("/src/app/build/gen.py")
    assert not accept("/src/app/views.py~")
    assert not accept("/src/app/.views.py.swp")


def test_default_dirs_are_the_module_and_config_directories(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('never imported by the master')\n")
    (package / "web.py").write_text("app = None\n")
    (tmp_path / "single.py").write_text("raise RuntimeError('never imported')\n")
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    assert default_dirs("mypkg.web:app", None) == [str(package.resolve())]
    assert default_dirs("single:app", str(conf_dir / "prefork.conf.py")) == [
        str(tmp_path.resolve()),
        str(conf_dir.resolve()),
    ]
    monkeypatch.chdir(tmp_path)
    assert default_dirs("not_a_module_anywhere:app", None) == [str(tmp_path.resolve())]


def test_a_first_start_that_cannot_import_waits_for_the_fix(tmp_path: Path) -> None:
    """Under --reload, an application that fails to import at the very first
    start is a developer's half-written file: the master waits for the next
    save instead of exiting 3 (as uvicorn --reload does), and serves once
    the file is fixed."""
    app_dir = tmp_path / "src"
    app_dir.mkdir()
    app = app_dir / "reload_app.py"
    app.write_text("def app(request):\n    return (\n")
    server = Cli(
        tmp_path,
        "-w",
        "1",
        "--reload",
        "--reload-engine",
        "poll",
        env={"PYTHONPATH": str(app_dir)},
        app="reload_app:app",
    )
    try:
        wait_for(
            lambda: "--reload: waiting for a change to the code" in server.log(),
            20,
            "the master to wait for a fix",
        )
        assert server.proc.poll() is None, server.log()
        assert server.log().count("SyntaxError: '(' was never closed") == 1, server.log()
        app.write_text(HANDLER.format(answer="fixed"))
        server.wait_workers(1)
        port = server.port()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            assert conn.getresponse().read() == b"fixed"
        finally:
            conn.close()
    finally:
        stop_all([server])
