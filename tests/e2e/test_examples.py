"""The examples in ``examples/`` run as their docstrings and the README say.

Each example's command line is written in its module docstring and in the
README's "Examples" table; :data:`COMMANDS` holds the same lines, and the
first tests check that both documents still carry them. Every other test
runs one of those exact commands (``python`` being this interpreter), with
only the address changed: ``-b 127.0.0.1:0`` for the ``prefork`` command
(the port is read from the master's log), ``--port FREE --address 127.0.0.1``
for the scripts. It runs in a session of its own from the repository root,
gets one real request (http.client; the chat two ``websockets`` clients),
and is then stopped by its pid with TERM and waited for: it must exit with
status 0 and leave no process of its group behind. Every wait is bounded.

Flask, Django, FastAPI and Starlette are dev dependencies: a test whose
framework is missing skips through ``pytest.importorskip``, and under
``PREFORK_STRICT_SKIPS=1`` such a skip fails the run (tests/conftest.py's
allow-list has no entry for a missing dev dependency, on purpose).
"""

from __future__ import annotations

import ast
import http.client
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0
IO_TIMEOUT = 10.0

#: example -> (the file whose module docstring documents it, its command line)
COMMANDS: dict[str, tuple[str, str]] = {
    "callback-listen": ("examples/hello.py", "python examples/hello.py"),
    "callback-start0": ("examples/hello_prefork.py", "python examples/hello_prefork.py"),
    "flask": (
        "examples/flask_app.py",
        "python -m prefork -w 2 --interface wsgi examples.flask_app:app",
    ),
    "django-wsgi": (
        "examples/django_site/__init__.py",
        "python -m prefork -w 2 --interface wsgi examples.django_site.wsgi:application",
    ),
    "django-asgi": (
        "examples/django_site/__init__.py",
        "python -m prefork -w 2 --interface asgi examples.django_site.asgi:application",
    ),
    "fastapi": (
        "examples/fastapi_app.py",
        "python -m prefork -w 2 --interface asgi examples.fastapi_app:app",
    ),
    "litestar": (
        "examples/litestar_app.py",
        "python -m prefork -w 2 --interface asgi examples.litestar_app:app",
    ),
    "starlette-chat": (
        "examples/starlette_chat.py",
        "python -m prefork -w 1 --interface asgi examples.starlette_chat:app",
    ),
    "config-file": ("examples/prefork.conf.py", "python -m prefork -c examples/prefork.conf.py"),
}


def _need(module: str) -> None:
    """Skip when a framework (a dev dependency) is not installed."""
    pytest.importorskip(module, reason=f"{module} is not installed (pip install -e '.[dev]')")


# ---------------------------------------------------------------- the documents


def _docstring_commands(path: str) -> list[str]:
    """The indented ``python ...`` lines of a module docstring, without their comments."""
    doc = ast.get_docstring(ast.parse((ROOT / path).read_text())) or ""
    return [
        " ".join(shlex.split(line, comments=True))
        for line in doc.splitlines()
        if line.startswith("    python ")
    ]


@pytest.mark.parametrize("example", sorted(COMMANDS))
def test_the_docstring_gives_the_command(example: str) -> None:
    path, command = COMMANDS[example]
    assert command in _docstring_commands(path), f"{path}'s docstring lacks: {command}"


def test_the_readme_examples_table_gives_every_command() -> None:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## Examples\n(.*?)^## ", readme, re.MULTILINE | re.DOTALL)
    assert match, "README.md has no '## Examples' section"
    section = match.group(1)
    for path, command in COMMANDS.values():
        assert f"`{command}`" in section, f"README's Examples table lacks `{command}`"
        assert path.split("/")[1] in section, f"README's Examples table does not name {path}"


# ---------------------------------------------------------------- running them


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_")}
    for name in (
        "LISTEN_FDS",
        "LISTEN_PID",
        "NOTIFY_SOCKET",
        "WEB_CONCURRENCY",
        "DJANGO_SETTINGS_MODULE",
    ):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Example:
    """One documented command, running in a session of its own."""

    def __init__(self, tmp: Path, argv: list[str]) -> None:
        self.argv = argv
        self.err_path = tmp / "stderr.log"
        self.out_path = tmp / "stdout.log"
        with open(self.err_path, "wb") as err, open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.err_path.read_text(errors="replace")

    def _check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{shlex.join(self.argv)} exited with status {self.proc.returncode}:\n{self.log()}"
            )

    def wait_log(self, pattern: str, what: str, count: int = 1) -> list[re.Match[str]]:
        """Wait (bounded) until the error log has ``count`` matches of ``pattern``."""

        def found() -> list[re.Match[str]] | None:
            self._check_running()
            matches = list(re.finditer(pattern, self.log(), re.MULTILINE))
            return matches if len(matches) >= count else None

        return wait_for(found, START_TIMEOUT, what)

    def master_port(self) -> int:
        """The port of ``-b 127.0.0.1:0``, from the master's "listening on" line."""
        [match] = self.wait_log(r"listening on http://127\.0\.0\.1:(\d+)", "the master's address")
        return int(match.group(1))

    def wait_accepting(self, port: int) -> None:
        """For the scripts, which log nothing: until the port takes a connection."""

        def accepts() -> bool:
            self._check_running()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            except OSError:
                return False
            return True

        wait_for(accepts, START_TIMEOUT, f"port {port} to accept")

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self) -> int:
        """TERM to the pid, a bounded wait, and no process of its group left."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            status = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait(5)
            raise AssertionError(f"{self.argv} did not stop within {STOP_TIMEOUT} s") from None
        wait_for(lambda: not self.group_alive(), 5, "no process left in the example's group")
        return status

    def kill_group(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def run(tmp_path: Path):
    """``run(example, *extra)``: start its documented command; cleaned up after the test."""
    started: list[Example] = []

    def start(example: str, *extra: str) -> Example:
        argv = shlex.split(COMMANDS[example][1])
        argv[0] = sys.executable
        if argv[1:3] == ["-m", "prefork"]:
            argv[3:3] = ["-b", "127.0.0.1:0"]
        argv += extra
        server = Example(tmp_path, argv)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill_group()
            server.proc.wait(5)
        if server.proc.returncode != 0:
            print(f"--- stderr of {server.argv} ---\n{server.log()}")


def get(port: int, path: str) -> tuple[int, http.client.HTTPMessage, bytes]:
    """One GET on a fresh connection: status, headers (case-insensitive), body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IO_TIMEOUT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def get_json(port: int, path: str) -> dict:
    status, headers, body = get(port, path)
    assert status == 200, (status, body)
    assert headers["Content-Type"].startswith("application/json"), dict(headers)
    return json.loads(body)


# ---------------------------------------------------------------- the callbacks


def test_callback_with_listen(run, free_port) -> None:
    port = free_port()
    server = run("callback-listen", "--port", str(port), "--address", "127.0.0.1")
    server.wait_accepting(port)
    status, _, body = get(port, "/hello?x=1")
    assert (status, body) == (200, b"You requested /hello?x=1\n")
    assert server.stop() == 0


def test_callback_with_bind_and_start0(run, free_port) -> None:
    port = free_port()
    server = run("callback-start0", "--port", str(port))
    server.wait_accepting(port)
    status, _, body = get(port, "/hello")
    assert status == 200, body
    match = re.fullmatch(rb"Hello from worker (\d+): you requested /hello\n", body)
    assert match, body
    assert int(match.group(1)) != server.proc.pid  # a forked worker answered, not the master
    assert os.getpgid(int(match.group(1))) == server.proc.pid
    assert server.stop() == 0


# ---------------------------------------------------------------- WSGI and ASGI frameworks


def test_flask(run) -> None:
    _need("flask")
    server = run("flask")
    port = server.master_port()
    body = get_json(port, "/hello/world")
    assert body["message"] == "hello, world" and body["framework"] == "flask", body
    assert server.stop() == 0


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_django(run, interface: str) -> None:
    _need("django")
    server = run(f"django-{interface}")
    port = server.master_port()
    body = get_json(port, "/hello/world/")
    assert body["message"] == "hello, world" and body["interface"] == interface, body
    assert get_json(port, "/ping/") == {"ping": "pong", "interface": interface}
    status, headers, _ = get(port, "/hello/world")  # CommonMiddleware's APPEND_SLASH
    assert status == 301 and headers["Location"] == "/hello/world/", (status, dict(headers))
    assert server.stop() == 0


@pytest.mark.parametrize(
    ("example", "not_found", "bad_path_status"),
    [
        ("fastapi", {"detail": "no item 41"}, 422),  # the path parameter is validated as an int
        ("litestar", {"status_code": 404, "detail": "no item 41"}, 404),  # no route matches
    ],
)
def test_json_api_path_parameter_and_lifespan(
    run, example: str, not_found: dict, bad_path_status: int
) -> None:
    _need(example)
    server = run(example)
    port = server.master_port()
    server.wait_log(r"all 2 worker\(s\) ready", "both workers ready")
    started = {
        int(m.group(1))
        for m in server.wait_log(r"lifespan startup in worker (\d+)", "two startups", 2)
    }
    body = get_json(port, "/items/42")
    assert body == {"item_id": 42, "name": "the answer", "worker": body["worker"]}, body
    assert body["worker"] in started  # the state the worker's lifespan set up
    status, _, error = get(port, "/items/41")
    assert status == 404 and json.loads(error) == not_found
    assert get(port, "/items/forty-two")[0] == bad_path_status
    assert server.stop() == 0
    stopped = {int(m) for m in re.findall(r"lifespan shutdown in worker (\d+)", server.log())}
    assert stopped == started and len(started) == 2


def test_starlette_chat_broadcasts_between_connections(run) -> None:
    _need("starlette")
    from websockets.sync.client import connect

    server = run("starlette-chat")
    port = server.master_port()
    status, _, page = get(port, "/")
    assert status == 200 and b"new WebSocket" in page

    def join(name: str):
        return connect(
            f"ws://127.0.0.1:{port}/ws?name={name}",
            open_timeout=IO_TIMEOUT,
            close_timeout=IO_TIMEOUT,
            proxy=None,
        )

    with join("alice") as alice:
        assert alice.recv(timeout=IO_TIMEOUT) == "* alice joined (1 here)"
        with join("bob") as bob:
            assert bob.recv(timeout=IO_TIMEOUT) == "* bob joined (2 here)"
            assert alice.recv(timeout=IO_TIMEOUT) == "* bob joined (2 here)"
            alice.send("hello, bob")
            assert bob.recv(timeout=IO_TIMEOUT) == "alice: hello, bob"
            assert alice.recv(timeout=IO_TIMEOUT) == "alice: hello, bob"  # everyone's copy
        assert alice.recv(timeout=IO_TIMEOUT) == "* bob left"
    assert server.stop() == 0


# ---------------------------------------------------------------- the config file


def test_config_file_settings_and_hooks(run) -> None:
    server = run("config-file")
    port = server.master_port()
    [starting] = server.wait_log(r"hook on_starting: master (\d+), (\d+) worker", "on_starting")
    assert starting.groups() == (str(server.proc.pid), "2")  # workers = 2 from the file
    [ready] = server.wait_log(r"hook when_ready: workers ([\d ]+)$", "when_ready")
    workers = sorted(int(pid) for pid in ready.group(1).split())
    forked = server.wait_log(r"hook post_fork: worker (\d+) \(index (\d)\)", "post_fork", 2)
    assert sorted(int(m.group(1)) for m in forked) == workers and len(workers) == 2
    assert sorted(m.group(2) for m in forked) == ["0", "1"]
    status, _, body = get(port, "/hooks")  # the file's app: examples.hello
    assert (status, body) == (200, b"You requested /hooks\n")
    assert server.stop() == 0
    exited = re.findall(r"hook worker_exit: worker (\d+) served (\d+) request", server.log())
    assert sorted(int(pid) for pid, _ in exited) == workers
    assert sum(int(n) for _, n in exited) == 1
    assert server.log().index("hook on_starting") < server.log().index("hook post_fork")
