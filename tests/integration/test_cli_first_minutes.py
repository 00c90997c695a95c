"""A new user's first ten minutes, through the real ``prefork`` command.

Each test is a mistake or a habit brought from gunicorn that a probe met:
it must either work as that user expects or stop the start with one line
naming the setting and exit status 2, never a traceback or a server that
answers 500.  Servers run in a session of their own, are stopped by the
master's pid and waited for, with bounded waits only.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, MasterWatch, wait_for
from tests.integration.test_cli_config import APP, _env

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

WSGI_APP = (
    "def app(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [b'ok']\n"
)


def prefork(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m prefork ARGS``, which must exit on its own."""
    return subprocess.run(
        [sys.executable, "-m", "prefork", *args],
        cwd=cwd or ROOT,
        env=_env({"PYTHONPATH": str(ROOT), **(env or {})}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], start: str) -> str:
    """Exit 2 and a single line on stderr that starts with ``start``."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(start), lines[0]
    return lines[0]


class Server(MasterWatch):
    """A master started in ``cwd`` with the given arguments (and ``-w 1``)."""

    def __init__(self, cwd: Path, pidfile: Path, error_log: Path, *args: str) -> None:
        self.pidfile = pidfile
        self.log_path = error_log
        self.out = open(cwd / "out.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefork", "-w", "1", "-b", "127.0.0.1:0", *args],
            cwd=cwd,
            env=_env({"PYTHONPATH": str(ROOT)}),
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

    def output(self) -> str:
        return (Path(self.out.name)).read_text(errors="replace")

    def stop(self) -> int:
        """TERM the master by pid, wait for it and for its group to be gone."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_group()
                self.proc.wait(5)
                raise AssertionError("the master did not stop within the timeout") from None
        finally:
            self.out.close()
            wait_for(lambda: not self._group_alive(), 5, "the master's workers to exit")


# -- 1. --chdir and relative paths ---------------------------------------------------------


def test_relative_paths_with_chdir_are_under_it_as_under_gunicorn(tmp_path: Path) -> None:
    """``--chdir app --pidfile run/p.pid --error-log logs/e.log``: by gunicorn's
    rule the files are under ``app/``, the config file is read from the
    starting directory.  They were checked from the starting directory, then
    opened from the --chdir one (a FileNotFoundError traceback from the
    logging setup, exit 1); a relative --config was looked for under --chdir
    on HUP (reload refused)."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "chdir_app.py").write_text(WSGI_APP)
    (app / "run").mkdir()
    (app / "logs").mkdir()
    (tmp_path / "prefork.conf.py").write_text("access_log = 'logs/access.log'\n")
    args = [
        "--chdir",
        "app",
        "-c",
        "prefork.conf.py",
        "--pidfile",
        "run/p.pid",
        "--error-log",
        "logs/error.log",
        "chdir_app:app",
    ]
    printed = prefork("--print-config", *args, cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    for line in (
        f"chdir = {str(app)!r}",
        f"# config = {str(tmp_path / 'prefork.conf.py')!r}",
        f"pidfile = {str(app / 'run' / 'p.pid')!r}",
        f"error_log = {str(app / 'logs' / 'error.log')!r}",
        f"access_log = {str(app / 'logs' / 'access.log')!r}",
    ):
        assert line in printed.stdout.splitlines(), printed.stdout

    server = Server(tmp_path, app / "run" / "p.pid", app / "logs" / "error.log", *args)
    try:
        server.port()
        server.wait_workers(1)
        assert (app / "run" / "p.pid").read_text().strip() == str(server.proc.pid)
        server.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload complete" in server.log(), 30, "the HUP's reload")
        assert "reload failed" not in server.log(), server.log()
    finally:
        status = server.stop()
    assert status == 0, server.output() + server.log()
    assert "Traceback" not in server.output() + server.log()
    assert not (tmp_path / "run").exists() and not (tmp_path / "logs").exists()


# -- 2. a factory named without () -------------------------------------------------------------


FACTORY_APP = WSGI_APP + "\n\ndef create_app():\n    return app\n"


def test_a_factory_named_without_parentheses_is_one_line(tmp_path: Path) -> None:
    """``myapp:create_app`` for ``myapp:create_app()``: it was served as a
    request callback ('cannot tell from the signature') and every request
    answered 500.  No interface calls a callable without parameters."""
    (tmp_path / "factory_only.py").write_text(FACTORY_APP)
    env = {"PYTHONPATH": str(tmp_path)}
    hint = (
        "prefork: error: app 'factory_only:create_app': create_app() takes no arguments, so it "
        "is not an application (a callback takes 1, WSGI 2, ASGI 3); if it makes the "
        "application, write 'factory_only:create_app()' or give --factory"
    )
    assert_one_line(prefork("--check-config", "factory_only:create_app", env=env), hint)
    for spec in (["factory_only:create_app()"], ["--factory", "factory_only:create_app"]):
        ok = prefork("--check-config", *spec, env=env)
        assert ok.returncode == 0, ok.stderr
    # served: the workers fail their boot and the cause is shown once (exit 3,
    # as for any application that cannot be loaded without --check-config)
    served = subprocess.run(
        [sys.executable, "-m", "prefork", "-b", "127.0.0.1:0", "-w", "2"]
        + ["factory_only:create_app"],
        cwd=ROOT,
        env=_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode == 3, served.stderr
    assert served.stderr.count("create_app() takes no arguments") == 1, served.stderr
    assert "Traceback" not in served.stderr


# -- 3. WEB_CONCURRENCY -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["--check-config", "--print-config", "--no-preload"])
def test_a_bad_web_concurrency_is_one_line_naming_it(command: str) -> None:
    """It passed --check-config and --print-config showed workers = 0; only
    the master's run refused it, in its log."""
    result = prefork(
        command, "-b", "127.0.0.1:0", APP, env={"WEB_CONCURRENCY": "abc", "PREFORK_WORKERS": "0"}
    )
    assert_one_line(
        result, "prefork: error: WEB_CONCURRENCY: must be a whole number of workers >= 1, got 'abc'"
    )


def test_web_concurrency_is_not_read_when_workers_is_given() -> None:
    result = prefork("--check-config", "-w", "2", APP, env={"WEB_CONCURRENCY": "abc"})
    assert result.returncode == 0, result.stderr


# -- 4. gunicorn's timeout = 0 and cert_reqs numbers ---------------------------------------------


def test_a_gunicorn_config_with_timeout_0_serves(tmp_path: Path) -> None:
    """``timeout = 0`` (gunicorn: no timeout) was refused with exit 2; the
    workers must serve, still heartbeating (prefork status reads it)."""
    (tmp_path / "gunicorn.conf.py").write_text("import ssl\ntimeout = 0\nworkers = 1\n")
    pidfile, error_log = tmp_path / "p.pid", tmp_path / "e.log"
    server = Server(
        tmp_path,
        pidfile,
        error_log,
        *("-c", "gunicorn.conf.py", "--pidfile", str(pidfile), "--error-log", str(error_log)),
        APP,
    )
    try:
        port = server.port()
        server.wait_workers(1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    finally:
        status = server.stop()
    assert status == 0, server.output() + server.log()
    assert "Traceback" not in server.output() + server.log()


# -- 5. small ones -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["--version"], ["--print-config", APP], ["--check-config", APP]], ids=str
)
def test_a_reader_that_went_away_ends_a_report_quietly(args: list[str]) -> None:
    """``prefork --print-config | head``: a BrokenPipeError traceback when the
    reader had gone.  Its read end is closed before prefork writes: quiet,
    status 1 (as ``prefork status``)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "prefork", *args],
            cwd=ROOT,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(write_end)
    assert result.stderr == ""
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("args", "hint"),
    [
        (["--workerz", "4"], "unrecognized arguments: --workerz; did you mean --workers?"),
        (["--timout=5"], "unrecognized arguments: --timout=5; did you mean --timeout?"),
        (["--no-preloda"], "unrecognized arguments: --no-preloda; did you mean --no-preload?"),
        # a unique prefix is named, never taken (no abbreviations)
        (
            ["--health-ready"],
            "unrecognized arguments: --health-ready; did you mean --health-ready-path?",
        ),
        # another server's name for an option prefork has under its own
        (["--port", "8000"], "unrecognized arguments: --port; prefork's is -b/--bind HOST:PORT"),
        (["--access-logfile", "-"], "unrecognized arguments: --access-logfile; prefork's is"),
        (
            ["--no-access-log"],
            "unrecognized arguments: --no-access-log; prefork's is --access-log off",
        ),
        # uvicorn's options that prefork has no option for say why, not "did you mean"
        (["--loop", "uvloop"], "unrecognized arguments: --loop; prefork uses uvloop when"),
        (["--env-file", ".env"], "unrecognized arguments: --env-file; prefork reads no .env file"),
        (["--no-server-header"], "unrecognized arguments: --no-server-header; prefork sends no"),
    ],
)
def test_an_unknown_option_suggests_the_closest(args: list[str], hint: str) -> None:
    """An unknown option was one line with no hint (the usage, which showed
    the options, had gone for being 33 lines)."""
    line = assert_one_line(prefork(*args), f"prefork: error: {hint}")
    assert line.endswith("(prefork --help lists the options)")


def test_an_unknown_option_far_from_any_gets_no_guess() -> None:
    line = assert_one_line(prefork("--zzz", APP), "prefork: error: unrecognized arguments: --zzz")
    assert "did you mean" not in line and "prefork's is" not in line


def test_a_pidfile_naming_a_running_process_is_exit_2_naming_it(tmp_path: Path) -> None:
    """Another master's pid file is a clash of the configuration with what
    runs, as an address in use is for --bind: exit 2 and one line naming
    --pidfile (it was exit 1)."""
    other = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "other.pid"
        pidfile.write_text(f"{other.pid}\n")
        result = prefork("-b", "127.0.0.1:0", "--pidfile", str(pidfile), APP)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert (
            f"--pidfile: {pidfile} names running process {other.pid}: already running?" in lines[0]
        )
        assert pidfile.read_text() == f"{other.pid}\n"  # (left as it was)
    finally:
        other.kill()
        other.wait(5)


@pytest.mark.parametrize("where", ["argument", "environment", "gunicorn config"])
def test_an_app_spec_without_a_colon_is_refused_before_any_fork(tmp_path: Path, where: str) -> None:
    """``prefork myapp``: found wrong only in the workers, after the fork
    (exit 3, 'cannot boot').  Refused with the settings, in one line; the
    callable's name is not guessed (gunicorn's 'application', uvicorn none)."""
    (tmp_path / "colonless.py").write_text(WSGI_APP)
    args: list[str] = ["-b", "127.0.0.1:0", "-w", "1"]
    env = {"PYTHONPATH": str(tmp_path)}
    if where == "argument":
        args.append("colonless")
    elif where == "environment":
        env["PREFORK_APP"] = "colonless"
    else:
        (tmp_path / "gunicorn.conf.py").write_text("wsgi_app = 'colonless'\n")
        args += ["-c", str(tmp_path / "gunicorn.conf.py")]
    result = prefork(*args, env=env)
    line = assert_one_line(
        result, "prefork: error: app 'colonless': expected MODULE:CALLABLE, such as 'colonless:app'"
    )
    assert "gunicorn's default was 'colonless:application'" in line


# -- a proxy on the same host ------------------------------------------------------------------


SCHEME_APP = (
    "def app(environ, start_response):\n"
    "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
    "    return [f\"{environ['wsgi.url_scheme']} {environ['REMOTE_ADDR']}\".encode()]\n"
)


def test_a_proxy_on_loopback_is_trusted_by_default_as_under_uvicorn(tmp_path: Path) -> None:
    """nginx on the same host says X-Forwarded-Proto: https; the application
    saw http (and built http:// URLs, or redirected to https for ever) unless
    --xheaders was given, where uvicorn (--proxy-headers) and gunicorn (its
    secure_scheme_headers) trust a loopback peer by default.  Only those two
    headers: X-Real-Ip and X-Scheme, which a proxy set up from uvicorn's or
    gunicorn's docs passes through from the client, are read with --xheaders
    alone (a client named itself through such a proxy, a probe found).
    --no-proxy-headers turns it off."""
    (tmp_path / "scheme_app.py").write_text(SCHEME_APP)
    headers = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "198.51.100.1, 203.0.113.7",
        "X-Real-Ip": "7.7.7.7",
        "X-Scheme": "http",
    }
    for extra, expected in (
        ([], b"https 203.0.113.7"),
        (["--no-proxy-headers"], b"http 127.0.0.1"),
        (["--xheaders"], b"http 7.7.7.7"),
    ):
        tag = extra[0].strip("-") if extra else "default"
        log, pidfile = tmp_path / f"error-{tag}.log", tmp_path / f"p-{tag}.pid"
        args = ["--error-log", str(log), "--pidfile", str(pidfile), *extra, "scheme_app:app"]
        server = Server(tmp_path, pidfile, log, *args)
        try:
            port = server.port()
            server.wait_workers(1)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/", headers=headers)
                assert conn.getresponse().read() == expected
            finally:
                conn.close()
        finally:
            assert server.stop() == 0


def test_gunicorns_short_options_mean_what_they_mean_there(tmp_path: Path) -> None:
    """``gunicorn -t 60 -p app.pid -e A=B -n api -u U -g G`` ported as it is:
    each short option was refused ('unrecognized arguments'), the message
    even blaming the application that followed it."""
    printed = prefork(
        "--print-config",
        "-t",
        "60",
        "-p",
        str(tmp_path / "app.pid"),
        "-e",
        "A=B",
        "-n",
        "api",
        "-u",
        str(os.getuid()),
        "-g",
        str(os.getgid()),
        "examples.flask_app:app",
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    for line in (
        "timeout = 60.0",
        f"pidfile = {str(tmp_path / 'app.pid')!r}",
        "env = ('A=B',)",
        "proc_name = 'api'",
        f"user = '{os.getuid()}'",
        f"group = '{os.getgid()}'",
    ):
        assert line in lines, printed.stdout


@pytest.mark.parametrize(
    ("worker_class", "line", "note"),
    [
        ("uvicorn.workers.UvicornWorker", "interface = 'asgi'", "--interface asgi"),
        ("sync", "threads = 1", "threads = 1"),
        ("gthread", "threads = 4", "gunicorn's gthread"),
        ("gevent", "threads = 4", "has no meaning for prefork: ignored"),
    ],
)
def test_gunicorns_worker_class_option_says_what_it_became(
    worker_class: str, line: str, note: str
) -> None:
    """``gunicorn -k uvicorn.workers.UvicornWorker -w 4 app:app`` ported as it
    is: '-k' was refused, and the message blamed the application."""
    printed = prefork("--print-config", "-k", worker_class, "-w", "4", "examples.flask_app:app")
    assert printed.returncode == 0, printed.stderr
    assert line in printed.stdout.splitlines(), printed.stdout
    assert f"prefork: warning: -k {worker_class}: " in printed.stderr, printed.stderr
    assert note in printed.stderr, printed.stderr


def unix_get(path: Path, target: bytes, extra_headers: bytes) -> bytes:
    """The body of ``GET target`` over the unix socket ``path`` (read to the close)."""
    import socket

    request = b"GET %s HTTP/1.1\r\nHost: x\r\n%sConnection: close\r\n\r\n"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        sock.sendall(request % (target, extra_headers))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def test_an_asgi_client_behind_a_proxy_on_a_unix_socket_is_named(tmp_path: Path) -> None:
    """nginx on the unix socket (the shipped configuration's usual case) says
    X-Forwarded-For: the ASGI scope's client was None (a unix peer has no
    address), where WSGI's REMOTE_ADDR and the access log had the client, and
    uvicorn gives (ip, 0).  Without a forwarded header it stays None."""
    path = tmp_path / "app.sock"
    pidfile, log = tmp_path / "p.pid", tmp_path / "error.log"
    args = ["--bind", f"unix:{path}", "--error-log", str(log), "--pidfile", str(pidfile)]
    server = Server(tmp_path, pidfile, log, *args, "tests.apps.asgi_app:app")
    try:
        server.port()
        server.wait_workers(1)
        clients = [
            json.loads(unix_get(path, b"/scope", extra))["client"]
            for extra in (b"X-Forwarded-For: 203.0.113.7\r\n", b"")
        ]
        assert clients == [["203.0.113.7", 0], None]
    finally:
        assert server.stop() == 0


def test_a_wsgi_client_on_a_unix_socket_has_no_address_unless_a_proxy_names_it(
    tmp_path: Path,
) -> None:
    """REMOTE_ADDR was '0.0.0.0' for a unix-socket peer (the seed's remote_ip),
    which reached the application's logs as if it were an address; gunicorn
    gives ''. A trusted proxy's X-Forwarded-For still names the client."""
    (tmp_path / "scheme_app.py").write_text(SCHEME_APP)
    path = tmp_path / "app.sock"
    pidfile, log = tmp_path / "p.pid", tmp_path / "error.log"
    args = ["--bind", f"unix:{path}", "--error-log", str(log), "--pidfile", str(pidfile)]
    server = Server(tmp_path, pidfile, log, *args, "scheme_app:app")
    try:
        server.port()
        server.wait_workers(1)
        bodies = [
            unix_get(path, b"/", extra) for extra in (b"", b"X-Forwarded-For: 203.0.113.7\r\n")
        ]
        assert bodies == [b"http ", b"http 203.0.113.7"]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "setting"),
    [
        (["--ws-per-message-deflate", "false"], "ws_per_message_deflate = False"),
        (["--ws-per-message-deflate=off"], "ws_per_message_deflate = False"),
        (["--preload=true"], "preload = True"),
        (["--proxy-headers", "no"], "proxy_headers = False"),
    ],
)
def test_a_switch_takes_a_true_or_false_value_as_uvicorns_do(args: list[str], setting: str) -> None:
    """uvicorn's ``--ws-per-message-deflate false`` took ``false`` for the
    application and then refused the real one ("unrecognized arguments:
    myapp:app"); ``--flag=false`` was "ignored explicit argument"."""
    result = prefork(*args, "--print-config", APP)
    assert result.returncode == 0, result.stderr
    assert setting in result.stdout.splitlines()
