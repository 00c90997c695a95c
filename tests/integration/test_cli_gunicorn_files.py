"""gunicorn config files through the real command line: --check-config and
--print-config on files as they are written for gunicorn."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, wait_for
from tests.integration.test_cli_config import APP, Cli, _env, run_cli, stop_all

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

APPS = Path(__file__).parent / "apps"


def test_tiangolos_gunicorn_conf_runs_unchanged() -> None:
    """It was refused: "unknown setting 'graceful_timeout_str'; did you mean
    'graceful_timeout'?" (exit 2)."""
    result = run_cli("--check-config", "-c", str(APPS / "tiangolo_gunicorn_conf.py"), APP)
    assert result.returncode == 0, result.stderr
    assert "graceful_timeout_str" in result.stderr  # (named among the helper variables)


def test_a_gunicorn_27_file_is_checked_with_one_warning_per_name(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        'proxy_protocol = "v2"\nasgi_lifespan = "on"\ncontrol_socket_disable = True\n'
        "def dirty_worker_init(worker):\n    pass\n"
    )
    result = run_cli("--print-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert "proxy_protocol = True" in result.stdout
    assert "lifespan = 'on'" in result.stdout
    result = run_cli("--check-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"prefork: warning: {conf}: gunicorn setting 'control_socket_disable' has no meaning "
        "for prefork: ignored",
        f"prefork: warning: {conf}: gunicorn hook 'dirty_worker_init' is not supported by "
        "prefork: never called",
    ]


def test_gunicorns_limit_request_line_0_is_accepted(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("limit_request_line = 0\n")
    result = run_cli("--print-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert "max_request_line = 65536" in result.stdout


def test_proxy_allow_ips_and_forwarded_allow_ips_that_differ_are_named(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(
        "proxy_protocol = True\nforwarded_allow_ips = '10.0.0.1'\nproxy_allow_ips = '10.0.0.2'\n"
    )
    result = run_cli("--check-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "prefork: warning: proxy_allow_ips (10.0.0.2) and forwarded_allow_ips (10.0.0.1) "
        "differ: prefork trusts one list for the PROXY protocol and X-Forwarded-*; using "
        "proxy_allow_ips"
    ]


def test_a_sync_worker_file_runs_one_thread_per_worker(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 2\nworker_class = 'sync'\ntimeout = 3\n")
    result = run_cli("--print-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert "threads = 1" in result.stdout.splitlines()
    result = run_cli("--check-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert len(result.stderr.splitlines()) == 2  # (the threads note, the timeout note)
    assert "set request_timeout" in result.stderr


def test_a_gunicorn_umask_gives_the_unix_sockets_mode(tmp_path: Path) -> None:
    """A real start: the socket's mode follows the file's umask as under
    gunicorn (0o007: srwxrwx---), not prefork's 0600."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("workers = 1\numask = 0o007\n")
    sock = tmp_path / "app.sock"
    server = Cli(tmp_path, "-c", str(conf), "-b", f"unix:{sock}")
    try:
        wait_for(sock.exists, 30, "the unix socket")
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o770
    finally:
        stop_all([server])


def test_check_config_names_forwarded_allow_ips_from_the_environment() -> None:
    result = run_cli("--check-config", APP, env={"FORWARDED_ALLOW_IPS": "10.0.0.0/8"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "prefork: warning: FORWARDED_ALLOW_IPS (gunicorn's and uvicorn's) is not read: use "
        "PREFORK_FORWARDED_ALLOW_IPS (with --xheaders or --proxy-protocol)"
    ]


def test_a_gunicorn_conf_py_in_the_working_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "gunicorn.conf.py").write_text("workers = 7\n")
    env = _env({"PYTHONPATH": str(ROOT)})
    result = subprocess.run(
        [sys.executable, "-m", "prefork", "--check-config", APP],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "prefork: warning: ./gunicorn.conf.py is not read: pass -c gunicorn.conf.py to use it"
    ]


def test_print_config_shows_the_files_warnings_on_stderr(tmp_path: Path) -> None:
    """--check-config showed them, --print-config did not: limit_request_line
    = 0 printed as max_request_line = 65536 with no word why."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("limit_request_line = 0\ndaemon = False\n")
    result = run_cli("--print-config", "-c", str(conf), APP)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"prefork: warning: {conf}: gunicorn setting 'daemon' has no meaning for prefork: ignored",
        "prefork: warning: limit_request_line = 0 (gunicorn: unlimited): max_request_line = "
        "65536, as far as --max-header-size (65536 bytes) allows",
    ]
    assert "prefork: warning" not in result.stdout
