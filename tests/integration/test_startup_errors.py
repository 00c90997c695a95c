"""What a newcomer sees when the application cannot start, through the real CLI.

Each mistake is reported once (not once per worker), names the spec, shows
the user's own code only when the error was raised in it (a syntax error
with its file, line and caret), never prefork's frames, and the master
exits 3 (2 for ``--check-config`` and for a config file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.integration.test_cli_config import run_cli

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

WSGI_APP = "def app(environ, start_response):\n    return []\n"


def serve(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``prefork -w 2 ARGS`` with tmp_path importable; it must exit on its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_")}
    env["PYTHONPATH"] = str(tmp_path)
    return subprocess.run(
        [sys.executable, "-m", "prefork", "-b", "127.0.0.1:0", "-w", "2", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_shown_once(result: subprocess.CompletedProcess[str], text: str) -> None:
    output = result.stdout + result.stderr
    assert output.count(text) == 1, output
    assert "Traceback" not in output, output
    assert "prefork/cli.py" not in output and "prefork/process.py" not in output, output
    assert "<frozen importlib" not in output, output


def test_version_names_the_version_python_the_loop_and_features() -> None:
    import prefork

    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"prefork {prefork.__version__}"
    assert any(line.startswith("Python 3.") for line in lines)
    assert any(line.startswith("event loop: uvloop ") for line in lines), result.stdout
    assert any(line.startswith("TLS: OpenSSL") for line in lines)
    assert any(line.startswith("WebSocket: wsproto ") for line in lines), result.stdout


def test_a_missing_module_is_one_line_once_exit_3(tmp_path: Path) -> None:
    result = serve(tmp_path, "nonexist:app")
    assert result.returncode == 3, result.stderr
    assert_shown_once(result, "app 'nonexist:app': no module named 'nonexist'")


def test_a_missing_attribute_is_one_line_once(tmp_path: Path) -> None:
    (tmp_path / "noattr_app.py").write_text("x = 1\n")
    result = serve(tmp_path, "noattr_app:app")
    assert result.returncode == 3
    assert_shown_once(result, "app 'noattr_app:app': 'noattr_app' has no attribute 'app'")


def test_not_callable_is_one_line_once(tmp_path: Path) -> None:
    (tmp_path / "notcallable_app.py").write_text("app = 42\n")
    result = serve(tmp_path, "notcallable_app:app")
    assert result.returncode == 3
    assert_shown_once(result, "app 'notcallable_app:app': 'app' is not callable")


def test_a_syntax_error_shows_file_line_and_caret_once(tmp_path: Path) -> None:
    source = tmp_path / "syntax_app.py"
    source.write_text("def app(request):\n    return (\n")
    result = serve(tmp_path, "syntax_app:app")
    assert result.returncode == 3
    output = result.stderr
    assert_shown_once(result, f'File "{source}", line 2')
    assert "    return (\n           ^\nSyntaxError: '(' was never closed" in output, output


def test_an_error_raised_at_import_shows_the_users_frames_only(tmp_path: Path) -> None:
    (tmp_path / "helper_mod.py").write_text("def explode():\n    raise RuntimeError('boom')\n")
    (tmp_path / "raising_app.py").write_text("import helper_mod\nhelper_mod.explode()\n")
    result = serve(tmp_path, "raising_app:app")
    assert result.returncode == 3
    assert_shown_once(result, "importing 'raising_app' failed: RuntimeError: boom")
    output = result.stderr
    assert f'File "{tmp_path / "raising_app.py"}", line 2, in <module>' in output
    assert f'File "{tmp_path / "helper_mod.py"}", line 2, in explode' in output


def test_a_missing_dependency_of_the_app_is_the_apps_error(tmp_path: Path) -> None:
    (tmp_path / "dep_app.py").write_text("import not_installed_anywhere\n")
    result = serve(tmp_path, "dep_app:app")
    assert result.returncode == 3
    assert_shown_once(result, "No module named 'not_installed_anywhere'")
    assert f'File "{tmp_path / "dep_app.py"}", line 1, in <module>' in result.stderr


def test_a_failing_factory_shows_its_frames(tmp_path: Path) -> None:
    (tmp_path / "factory_app.py").write_text("def make():\n    raise ValueError('no db')\n")
    result = serve(tmp_path, "factory_app:make()")
    assert result.returncode == 3
    assert_shown_once(result, "app 'factory_app:make()': the factory 'make' failed: ValueError")
    assert f'File "{tmp_path / "factory_app.py"}", line 2, in make' in result.stderr


def test_the_wrong_interface_fails_the_boot_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "wsgi_only.py").write_text(WSGI_APP)
    result = serve(tmp_path, "--interface", "asgi", "wsgi_only:app")
    assert result.returncode == 3
    assert_shown_once(
        result, "--interface asgi, but it looks like a WSGI application (environ, start_response)"
    )
    assert "use --interface wsgi" in result.stderr


def test_check_config_reports_the_same_way_with_status_2(tmp_path: Path) -> None:
    (tmp_path / "syntax2_app.py").write_text("x = [\n")
    env = {"PYTHONPATH": str(tmp_path)}
    result = run_cli("--check-config", "syntax2_app:app", env=env)
    assert result.returncode == 2
    assert result.stderr.count("SyntaxError: '[' was never closed") == 1
    assert "Traceback" not in result.stderr


def test_a_config_file_that_raises_names_its_line(tmp_path: Path) -> None:
    conf = tmp_path / "bad.conf.py"
    conf.write_text("workers = 2\nraise ValueError('conf boom')\n")
    (tmp_path / "ok_app.py").write_text(WSGI_APP)
    result = run_cli("-c", str(conf), "ok_app:app", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 2
    assert (
        result.stderr.strip() == f"prefork: error: --config: {conf}, line 2: ValueError: conf boom"
    )


@pytest.fixture(scope="module")
def mismatched_tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, str]:
    import trustme

    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    one, two = ca.issue_cert("127.0.0.1"), ca.issue_cert("127.0.0.1")
    cert, key, bad = directory / "c1.pem", directory / "k2.pem", directory / "bad.pem"
    one.cert_chain_pems[0].write_to_path(str(cert))
    two.private_key_pem.write_to_path(str(key))
    bad.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
    return str(cert), str(key), str(bad)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--pidfile", "/nonexistent/dir/p.pid"],
            "--pidfile: no such directory: '/nonexistent/dir'",
        ),
        (["--pidfile", "/tmp"], "--pidfile: '/tmp' is a directory, not a file"),
        (["--error-log", "/nonexistent/e.log"], "--error-log: no such directory: '/nonexistent'"),
        (["--access-log", "/tmp"], "--access-log: '/tmp' is a directory, not a file"),
        (["--backlog", "99999999999"], "--backlog: must be <= 2147483647, got '99999999999'"),
        (["-c", "CONF:bind = 47762"], "--bind: expected ADDRESS, got 47762"),
        (["-c", "CONF:reload_dir = 5"], "--reload-dir: expected DIR, got 5"),
        (
            ["TLS:mismatch"],
            "--certfile/--keyfile: cannot load certfile/keyfile: [X509: KEY_VALUES_MISMATCH]",
        ),
        (["TLS:bad"], "--certfile/--keyfile: cannot load certfile/keyfile: [SSL] PEM lib"),
        (["--reload-dir", "/nonexistent"], "--reload-dir: no such directory: '/nonexistent'"),
        # an option from another server: one line, not the whole usage
        (["--port", "8000"], "unrecognized arguments: --port"),
        # no abbreviations: --proxy silently meant --proxy-protocol
        (["--proxy"], "unrecognized arguments: --proxy"),
    ],
)
def test_a_setting_that_cannot_work_is_one_line_exit_2(
    tmp_path: Path, mismatched_tls, args: list[str], line: str
) -> None:
    """Paths the master will write (pid file, logs), a backlog past a C int,
    a config file value of the wrong type, TLS files that make no context:
    each was a traceback (exit 1, or 3 from every worker for TLS) and
    --check-config said OK; now one line naming the setting, at start and
    with --check-config."""
    cert, key, bad = mismatched_tls
    expanded: list[str] = []
    for arg in args:
        if arg.startswith("CONF:"):
            conf = tmp_path / "bad.conf.py"
            conf.write_text(arg[5:] + "\n")
            expanded.append(str(conf))
        elif arg == "TLS:mismatch":
            expanded += ["--certfile", cert, "--keyfile", key]
        elif arg == "TLS:bad":
            expanded += ["--certfile", bad]
        else:
            expanded.append(arg)
    (tmp_path / "ok_app.py").write_text(WSGI_APP)
    env = {"PYTHONPATH": str(tmp_path)}
    for check in ([], ["--check-config"]):
        result = run_cli(*check, *expanded, "ok_app:app", env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(f"prefork: error: {line}"), result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_a_worker_hung_in_its_lifespan_startup_shows_where(tmp_path: Path) -> None:
    """--boot-timeout's SIGABRT dumps the hung worker's traceback: tracebacks
    on SIGABRT were set up only once the worker served, after the import and
    the lifespan startup, so a boot hang showed nothing."""
    (tmp_path / "hang_app.py").write_text(
        "import time\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        time.sleep(3600)  # blocks the worker's loop: a hang\n"
    )
    result = serve(tmp_path, "-w", "1", "--boot-timeout", "2", "hang_app:app")
    assert result.returncode == 3, result.stderr
    assert 'hang_app.py", line 5 in app' in result.stderr, result.stderr


def test_a_lifespan_startup_awaiting_for_ever_shows_the_await(tmp_path: Path) -> None:
    """A startup that awaits for ever leaves the loop idle: the SIGABRT
    traceback showed only prefork's run_until_complete. Before the master's
    kill, the worker logs where its tasks wait: the application's own await."""
    (tmp_path / "await_app.py").write_text(
        "import asyncio\n"
        "async def wait_for_database():\n"
        "    await asyncio.Event().wait()  # a database that never answers\n"
        "async def app(scope, receive, send):\n"
        "    if scope['type'] == 'lifespan':\n"
        "        await receive()\n"
        "        await wait_for_database()\n"
    )
    result = serve(tmp_path, "-w", "1", "--boot-timeout", "2", "await_app:app")
    assert result.returncode == 3, result.stderr
    assert "ASGI lifespan startup still running after 1.0 s" in result.stderr, result.stderr
    assert 'await_app.py", line 3, in wait_for_database' in result.stderr, result.stderr


def test_gunicorn_chdir_pythonpath_and_raw_env_reach_the_application(tmp_path: Path) -> None:
    """A gunicorn config file's chdir, pythonpath and raw_env were ignored
    ('no meaning for prefork'): its application then failed to import."""
    (tmp_path / "code").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "helper_lib.py").write_text("VALUE = 'from the pythonpath'\n")
    (tmp_path / "code" / "where_app.py").write_text(
        "import os\nimport helper_lib\n"
        "MESSAGE = f'{os.getcwd()}|{helper_lib.VALUE}|{os.environ[\"GREETING\"]}'\n"
        "def app(environ, start_response):\n    return []\n"
    )
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        f"chdir = {str(tmp_path / 'code')!r}\n"
        f"pythonpath = {str(tmp_path / 'lib')!r}\n"
        "raw_env = ['GREETING=hello, world']\n"
    )
    # The import itself proves all three: where_app is found only from the
    # chdir, helper_lib only on the pythonpath, GREETING only from raw_env.
    result = run_cli("--check-config", "-c", str(conf), "where_app:app", env={})
    assert result.returncode == 0, result.stderr
    assert "configuration OK, application 'where_app:app' imports" in result.stdout
    assert "no meaning for prefork" not in result.stderr


def test_a_metrics_address_in_use_is_exit_2_naming_it(tmp_path: Path) -> None:
    """As --bind (it was exit 1)."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "ok_app.py").write_text(WSGI_APP)
        result = serve(tmp_path, "--metrics-bind", f"127.0.0.1:{port}", "ok_app:app")
    assert result.returncode == 2, result.stderr
    assert "--metrics-bind: " in result.stderr and "Address already in use" in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_ctrl_c_while_preload_imports_is_one_line(tmp_path: Path) -> None:
    """Ctrl-C while --preload imports the application (before the master
    handles signals) printed the import's whole traceback; now one line and
    the shell's status for it, 130."""
    marker = tmp_path / "importing"
    (tmp_path / "slow_import_app.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(30)\n"
        "def app(environ, start_response):\n"
        "    return []\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFORK_")}
    env["PYTHONPATH"] = str(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefork", "-b", "127.0.0.1:0", "--preload", "slow_import_app:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # (as from a terminal: a child of a non-interactive shell may inherit SIGINT ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        wait_for(marker.exists, 20, "the import to start")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err == "prefork: interrupted\n", err
