"""The settings and server hooks through the real ``prefork`` command.

Every server runs as ``python -m prefork ... tests.integration.apps.master_app:app``
in a session of its own; a test stops it by the master's pid (TERM, or INT
where it checks the fast stop), waits for it, and then requires that no
process of its process group is left (the workers never leave the master's
group).
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, MasterWatch, wait_for

APP = "tests.integration.apps.master_app:app"
STOP_TIMEOUT = 15.0

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_")}
    for name in ("LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET", "WEB_CONCURRENCY"):
        env.pop(name, None)
    env.update(extra or {})
    return env


class Cli(MasterWatch):
    """One ``prefork`` master and its workers."""

    def __init__(
        self, tmp: Path, *args: str, env: dict[str, str] | None = None, app: str = APP
    ) -> None:
        self.log_path = tmp / "error.log"
        self.pidfile = tmp / "master.pid"
        self.out = open(tmp / "out.log", "wb")  # noqa: SIM115 - closed in stop()
        cmd = [
            sys.executable,
            "-m",
            "prefork",
            "-b",
            "127.0.0.1:0",
            "--error-log",
            str(self.log_path),
            "--access-log",
            "off",
            "--pidfile",
            str(self.pidfile),
            *args,
            app,
        ]
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(env),
            stdin=subprocess.DEVNULL,
            stdout=self.out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the master by pid, wait for it, and require its group to be gone."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            status = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill_group()
            self.proc.wait(5)
            raise AssertionError("the master did not stop within the timeout") from None
        finally:
            self.out.close()
        wait_for(lambda: not self._group_alive(), 5, "the master's workers to exit")
        return status


@pytest.fixture
def cli(tmp_path: Path):
    started: list[Cli] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Cli:
        server = Cli(tmp_path, *args, env=env)
        started.append(server)
        return server

    yield start
    stop_all(started)


def stop_all(started: list[Cli]) -> None:
    """A fixture's teardown: stop by pid whatever a test left running, then make
    sure no process of any master's group is left."""
    for server in started:
        if server.proc.poll() is None:
            server.stop()
        server.kill_group()


def get(port: int, path: str = "/", body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST" if body is not None else "GET", path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefork", *args],
        cwd=ROOT,
        env=_env(env),
        capture_output=True,
        text=True,
        timeout=30,
    )


# -- limits from every source -------------------------------------------------------


@pytest.mark.parametrize("source", ["option", "environment", "file"])
def test_max_body_size_from_every_source(cli, tmp_path: Path, source: str) -> None:
    args: list[str] = ["-w", "1"]
    env: dict[str, str] = {}
    if source == "option":
        args += ["--max-body-size", "1k"]
    elif source == "environment":
        env["PREFORK_MAX_BODY_SIZE"] = "1k"
    else:
        conf = tmp_path / "prefork.conf.py"
        conf.write_text("max_body_size = '1k'\n")
        args += ["-c", str(conf)]
    server = cli(*args, env=env)
    port = server.port()
    server.wait_workers(1)
    assert get(port, "/", b"x" * 1024)[0] == 200
    assert get(port, "/", b"x" * 2048)[0] == 413
    assert server.stop() == 0


def test_header_limit_and_timeout_from_the_command_line(cli) -> None:
    server = cli("-w", "1", "--max-header-size", "2k", "--header-timeout", "0.5")
    port = server.port()
    server.wait_workers(1)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/", headers={"Cookie": "c" * 4096})
    assert conn.getresponse().status == 431
    conn.close()
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        data = sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert time.monotonic() - started < 5
    assert server.stop() == 0


# -- commands are not settings ------------------------------------------------------------


def test_check_config_in_the_environment_does_not_stop_a_server(cli) -> None:
    server = cli("-w", "1", env={"PREFORK_CHECK_CONFIG": "1", "PREFORK_PRINT_CONFIG": "1"})
    port = server.port()
    server.wait_workers(1)
    assert get(port)[0] == 200
    assert server.stop() == 0


def test_print_config_shows_the_merged_settings(tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text("max_body_size = '1k'\ntimeout = 5\ndef post_fork(server, worker):\n    pass\n")
    result = run_cli(
        "--print-config",
        "-c",
        str(conf),
        "--max-headers",
        "9",
        APP,
        env={"PREFORK_TIMEOUT": "6"},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "max_body_size = 1024" in lines
    assert "timeout = 6.0" in lines
    assert "max_headers = 9" in lines
    assert f"app = {APP!r}" in lines
    assert "# server hooks: post_fork" in lines


def test_print_config_output_is_a_config_file_that_loads_the_same(tmp_path: Path) -> None:
    """It said ``config = ...`` (a config file cannot name another: refused)
    and modes in decimal (unix_socket_mode = 384)."""
    first = run_cli("--print-config", "--umask", "027", APP)
    assert first.returncode == 0, first.stderr
    # (--umask 027 without --unix-socket-mode: gunicorn's socket mode, 0o777 & ~027)
    assert "unix_socket_mode = 0o750" in first.stdout.splitlines()
    conf = tmp_path / "printed.conf.py"
    conf.write_text(first.stdout)
    again = run_cli("--print-config", "-c", str(conf), APP)
    assert again.returncode == 0, again.stderr
    differ = set(first.stdout.splitlines()) ^ set(again.stdout.splitlines())
    assert differ == {"# config = None", f"# config = {str(conf)!r}"}


def test_check_config_imports_the_application() -> None:
    ok = run_cli("--check-config", APP)
    assert ok.returncode == 0 and "configuration OK" in ok.stdout
    bad = run_cli("--check-config", "tests.integration.apps.no_such_module:app")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "prefork: error: app 'tests.integration.apps.no_such_module:app': "
        "no module named 'tests.integration.apps.no_such_module'"
    ]


def test_sys_exit_while_importing_the_application_shows_its_message() -> None:
    result = run_cli("--check-config", "tests.integration.apps.exits_at_import:app")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "prefork: error: app 'tests.integration.apps.exits_at_import:app': importing "
        "'tests.integration.apps.exits_at_import' called sys.exit(): config error: FOO is not set"
    ]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "two"], {}, "--workers: expected an integer"),
        (["--max-body-size", "lots"], {}, "--max-body-size: expected a size"),
        ([], {"PREFORK_TIMEOUT": "-1"}, "--timeout: must be >= 0"),
        ([], {"PREFORK_KEEP_ALIVE": "soon"}, "--keep-alive: expected a number"),
        (["--log-level", "loud"], {}, "--log-level: expected one of"),
        (["-b", "300.1.2.3:x"], {}, "--bind:"),
        (["-c", "/nonexistent/prefork.conf.py"], {}, "--config: no such file"),
        ([], {"PREFORK_WORKER": "4"}, "PREFORK_WORKER: not a setting (the environment); did"),
    ],
)
def test_bad_settings_exit_2_with_one_line(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = run_cli(*args, APP, env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"prefork: error: {message}"), lines[0]


def test_check_config_names_gunicorns_variables_it_does_not_read() -> None:
    result = run_cli("--check-config", APP, env={"GUNICORN_CMD_ARGS": "--workers=3"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "prefork: warning: GUNICORN_CMD_ARGS is gunicorn's and is not read: give the same "
        "options on prefork's command line, or each as PREFORK_<NAME> (prefork --help)"
    ]


def test_bad_config_file_exits_2_with_one_line(tmp_path: Path) -> None:
    for text, message in [
        ("max_body_sise = 1\n", "unknown setting 'max_body_sise'"),
        ("workers = (\n", "SyntaxError"),
        ("def when_ready():\n    pass\n", "hook 'when_ready' must accept (server)"),
    ]:
        conf = tmp_path / "bad.py"
        conf.write_text(text)
        result = run_cli("-c", str(conf), APP)
        assert result.returncode == 2, text
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prefork: error: --config: "), lines
        assert message in lines[0]


# -- HUP applies the reloaded settings ---------------------------------------------------------


class Load:
    """Requests in a loop on fresh connections; every failure is recorded."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, _ = get(self.port)
                if status == 200:
                    self.ok += 1
                else:
                    self.failures.append(f"status {status}")
            except (OSError, http.client.HTTPException) as exc:
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)
        assert not self._thread.is_alive()


def test_hup_applies_a_changed_worker_count_and_limit(cli, tmp_path: Path) -> None:
    conf = tmp_path / "prefork.conf.py"
    conf.write_text("workers = 2\nmax_body_size = '1k'\n")
    server = cli("-c", str(conf))
    port = server.port()
    server.wait_workers(2, generation=1)
    load = Load(port)
    wait_for(lambda: load.ok >= 20, 10, "requests served before the HUP")
    conf.write_text("workers = 3\nmax_body_size = '4k'\nbacklog = 100\n")
    os.kill(server.proc.pid, signal.SIGHUP)
    server.wait_workers(3, generation=2)
    served = load.ok
    wait_for(lambda: load.ok >= served + 20, 10, "requests served after the HUP")
    load.stop()
    assert load.failures == []
    assert get(port, "/", b"x" * 3000)[0] == 200  # the new limit
    log = server.log()
    assert "workers 2 -> 3 (from the reloaded configuration)" in log
    assert "--backlog changed to 100: needs a restart (USR2); keeping 2048" in log
    assert server.stop() == 0


def test_a_hup_with_a_log_file_that_cannot_be_opened_keeps_the_logging(cli, tmp_path) -> None:
    """The new error log is checked before anything is changed: the reload is
    refused in the log that works (the master's handlers were removed first,
    and every later line was lost)."""
    conf = tmp_path / "prefork.conf.py"
    conf.write_text("workers = 1\n")
    server = cli("-c", str(conf))
    server.wait_workers(1, generation=1)
    conf.write_text("workers = 1\nerrorlog = '/nonexistent/dir/e.log'\n")
    os.kill(server.proc.pid, signal.SIGHUP)
    wait_for(
        lambda: "reload failed, keeping the old configuration" in server.log(),
        10,
        "the refused reload",
    )
    assert "--error-log: no such directory: '/nonexistent/dir'" in server.log()
    os.kill(server.proc.pid, signal.SIGTTIN)  # the master still logs where it did
    wait_for(lambda: "workers 1 -> 2" in server.log(), 10, "the next master line")
    assert server.stop() == 0


# -- server hooks --------------------------------------------------------------------------------

HOOKS_FILE = """
import os

workers = 2

def _note(*words):
    with open(os.environ["HOOK_LOG"], "a") as f:
        f.write(" ".join(str(w) for w in words) + "\\n")

def on_starting(server):
    _note("on_starting", os.getpid(), server.pid)

def pre_fork(server, worker):
    _note("pre_fork", os.getpid(), worker.index)

def post_fork(server, worker):
    _note("post_fork", os.getpid(), worker.pid, worker.index)

def post_worker_init(worker):
    _note("post_worker_init", os.getpid())

def when_ready(server):
    _note("when_ready", os.getpid(), server.num_workers, len(server.worker_pids))

def pre_request(worker, req):
    worker.log.debug("%s %s", req.method, req.path)
    _note("pre_request", os.getpid(), req.method, req.path)

def post_request(worker, req, environ, resp):
    _note("post_request", os.getpid(), req.path, resp.status_code, worker.nr)

def worker_int(worker):
    _note("worker_int", os.getpid())

def worker_exit(server, worker):
    _note("worker_exit", os.getpid(), worker.pid)

def child_exit(server, worker):
    _note("child_exit", os.getpid(), worker.pid)

def on_exit(server):
    _note("on_exit", os.getpid())
"""


def _notes(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text().splitlines()]
    except FileNotFoundError:
        return []


def test_gunicorn_style_hooks_run_where_and_when_documented(cli, tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOKS_FILE)
    notes_path = tmp_path / "hooks.log"
    server = cli("-c", str(conf), env={"HOOK_LOG": str(notes_path)})
    port = server.port()
    workers = server.wait_workers(2)
    master = server.proc.pid
    wait_for(lambda: any(n[0] == "when_ready" for n in _notes(notes_path)), 10, "when_ready")
    assert get(port, "/hello")[0] == 200
    wait_for(lambda: any(n[0] == "post_request" for n in _notes(notes_path)), 10, "post_request")
    status = server.stop(signal.SIGINT)  # INT: a fast stop, workers get worker_int
    assert status == 0
    notes = _notes(notes_path)
    by_name: dict[str, list[list[str]]] = {}
    for note in notes:
        by_name.setdefault(note[0], []).append(note[1:])
    assert by_name["on_starting"] == [[str(master), str(master)]]
    assert sorted(n[1] for n in by_name["pre_fork"]) == ["0", "1"]
    assert all(n[0] == str(master) for n in by_name["pre_fork"])
    forked = {int(n[0]) for n in by_name["post_fork"]}
    assert forked == set(workers) and all(n[0] == n[1] for n in by_name["post_fork"])
    assert {int(n[0]) for n in by_name["post_worker_init"]} == set(workers)
    assert by_name["when_ready"] == [[str(master), "2", "2"]]
    [pre] = by_name["pre_request"]
    assert int(pre[0]) in workers and pre[1:] == ["GET", "/hello"]
    [post] = by_name["post_request"]
    assert post[0] == pre[0] and post[1:3] == ["/hello", "200"] and post[3] == "1"
    assert {int(n[0]) for n in by_name["worker_int"]} == set(workers)
    assert {int(n[0]) for n in by_name["worker_exit"]} == set(workers)
    assert all(n[0] == n[1] for n in by_name["worker_exit"])
    assert {int(n[1]) for n in by_name["child_exit"]} == set(workers)
    assert all(n[0] == str(master) for n in by_name["child_exit"])
    assert by_name["on_exit"] == [[str(master)]]
    assert notes[0][0] == "on_starting" and notes[-1][0] == "on_exit"


@pytest.mark.parametrize("how", ["raise", "sys.exit"])
@pytest.mark.parametrize("hook", ["on_starting", "when_ready"])
def test_a_raising_start_hook_exits_2_naming_it(cli, tmp_path: Path, hook: str, how: str) -> None:
    """sys.exit() in a hook is its failure too, named (it ended the master
    with exit 1 and a bare message that did not say where it came from)."""
    conf = tmp_path / "c.py"
    body = (
        "raise RuntimeError('database unreachable')"
        if how == "raise"
        else "import sys; sys.exit('database unreachable')"
    )
    conf.write_text(f"def {hook}(server):\n    {body}\n")
    server = cli("-w", "1", "-c", str(conf))
    assert server.proc.wait(STOP_TIMEOUT) == 2
    log = server.log()
    if how == "raise":
        assert f"server hook {hook} raised" in log
        assert "RuntimeError: database unreachable" in log
    else:
        assert f"server hook {hook} called sys.exit('database unreachable')" in log
    assert f"server hook {hook} failed" in log
    assert server.stop() == 2


def test_a_raising_worker_hook_never_stops_the_service(cli, tmp_path: Path) -> None:
    conf = tmp_path / "c.py"
    conf.write_text(
        textwrap.dedent(
            """
            def post_fork(server, worker):
                raise RuntimeError("post_fork broke")

            def pre_request(worker, req):
                raise RuntimeError("pre_request broke")

            def child_exit(server, worker):
                raise RuntimeError("child_exit broke")
            """
        )
    )
    server = cli("-w", "1", "-c", str(conf))
    port = server.port()
    [worker] = server.wait_workers(1)
    assert get(port)[0] == 200
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: (w := server.ready_workers()) and w != [worker], 15, "a replacement")
    assert get(port)[0] == 200
    log = server.log()
    for text in ("post_fork broke", "pre_request broke", "child_exit broke"):
        assert f"RuntimeError: {text}" in log
    assert server.stop() == 0


def test_worker_abort_runs_in_a_hung_worker(cli, tmp_path: Path) -> None:
    """worker_abort, then worker_exit (as gunicorn runs them: its abort
    handler's exit unwinds to worker_exit); worker_exit was never called
    for a hung worker, since the abort that follows runs no ``finally``."""
    conf = tmp_path / "c.py"
    notes_path = tmp_path / "hooks.log"
    conf.write_text(
        "import os\n"
        "def worker_abort(worker):\n"
        "    with open(os.environ['HOOK_LOG'], 'a') as f:\n"
        "        f.write(f'worker_abort {os.getpid()} {worker.pid}\\n')\n"
        "def worker_exit(server, worker):\n"
        "    with open(os.environ['HOOK_LOG'], 'a') as f:\n"
        "        f.write(f'worker_exit {os.getpid()} {worker.pid}\\n')\n"
    )
    server = cli("-w", "1", "--timeout", "1", "-c", str(conf), env={"HOOK_LOG": str(notes_path)})
    port = server.port()
    [worker] = server.wait_workers(1)
    hung = threading.Thread(target=lambda: _quietly(get, port, "/block?s=30"), daemon=True)
    hung.start()
    wait_for(lambda: len(_notes(notes_path)) >= 2, 15, "the worker_abort and worker_exit hooks")
    assert _notes(notes_path) == [
        ["worker_abort", str(worker), str(worker)],
        ["worker_exit", str(worker), str(worker)],
    ]
    server.wait_workers(1)
    assert server.stop() == 0
    hung.join(15)


def _quietly(function, *args):
    try:
        return function(*args)
    except (OSError, http.client.HTTPException):
        return None


# -- supervisor details ------------------------------------------------------------------------


def test_a_crashed_workers_replacement_takes_its_number_after_ttin_ttou(cli) -> None:
    """After TTIN then TTOU (which retires the highest number, 2) a crashed
    worker's replacement takes its number back as a restart; a fresh worker
    later is a start."""
    server = cli("-w", "2")
    server.port()
    server.wait_workers(2)
    master = server.proc.pid
    os.kill(master, signal.SIGTTIN)
    server.wait_workers(3)
    os.kill(master, signal.SIGTTOU)  # retires the highest number: worker 2
    wait_for(
        lambda: re.search(r"retiring worker 2 \(pid \d+, gen 1\) \(scale down\)", server.log()),
        10,
        "TTOU",
    )
    [pid1] = re.findall(r"booting worker 1 \(pid (\d+), gen 1\) \(start\)", server.log())
    server.wait_workers(2)
    os.kill(int(pid1), signal.SIGKILL)
    match = wait_for(
        lambda: re.search(
            r"worker 1 \(pid \d+, gen 1\) ready: accepting [\d.]+ ms after its predecessor died",
            server.log(),
        ),
        15,
        "the replacement of worker 1",
    )
    assert match
    assert re.search(r"booting worker 1 \(pid \d+, gen 1\) \(restart\)", server.log())
    # A fresh worker later is a start, not a restart with a false figure.
    os.kill(master, signal.SIGTTIN)
    server.wait_workers(3)
    log = server.log()
    assert len(re.findall(r"booting worker 2 \(pid \d+, gen 1\) \(start\)", log)) == 2
    assert len(re.findall(r"ready: accepting", log)) == 1
    assert len(re.findall(r"\(restart\)", log)) == 1
    assert server.stop() == 0


# -- the application's own logging configuration ------------------------------------------------


def test_an_application_taking_logging_over_leaves_preforks_messages_in_the_error_log(
    tmp_path: Path,
) -> None:
    """The app replaces the root logger's handlers and disables the loggers it does
    not name (dictConfig), on import in the worker: the worker's own messages
    (its graceful stop, at INFO while the app set WARNING) still reach --error-log,
    the access log still gets its lines, and the application's lines go where it
    sent them."""
    access = tmp_path / "access.log"
    server = Cli(
        tmp_path,
        *("-w", "1", "--access-log", str(access)),
        app="tests.integration.apps.hijack_logging_app:app",
    )
    try:
        port = server.port()
        [worker] = server.wait_workers(1)
        assert get(port) == (200, b"ok")
        assert server.stop() == 0
    finally:
        stop_all([server])
    log = server.log()
    assert f"worker 0 (pid {worker}): graceful stop" in log, log
    assert log.count("prefork's own messages keep going to the error log") == 1
    out = (tmp_path / "out.log").read_text()
    assert "APP hijack_app the application logs its own way" in out, out
    assert "graceful stop" not in out  # (prefork's lines did not follow the app's)
    # The access log (its own sink, on a logger the app's dictConfig disabled) still has its line.
    assert '"GET / HTTP/1.1" 200 2' in access.read_text()
