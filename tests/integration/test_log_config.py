"""--log-config (uvicorn's --log-config; gunicorn's logconfig, logconfig_dict,
logconfig_json) through the real command line: the operator's logging
configuration routes the master's and the workers' messages; a bad one is one
line and exit 2.  Before, gunicorn's three were ignored with a warning (a
deployment's JSON logs silently became prefork's text lines) and uvicorn's
option did not exist."""

from __future__ import annotations

import http.client
import json
import sys
from pathlib import Path

import pytest

from tests.integration.test_cli_first_minutes import Server, assert_one_line, prefork

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

JSON_FORMAT = '{"level": "%(levelname)s", "logger": "%(name)s", "msg": "%(message)s"}'


def dict_config(out: Path) -> dict:  # type: ignore[type-arg]
    return {
        "version": 1,
        "formatters": {"json": {"format": JSON_FORMAT}},
        "handlers": {
            "file": {"class": "logging.FileHandler", "filename": str(out), "formatter": "json"}
        },
        "root": {"level": "INFO", "handlers": ["file"]},
    }


def serve_once(tmp_path: Path, out: Path, *args: str) -> list[dict]:  # type: ignore[type-arg]
    """Start with ``args``, answer one request, stop: the JSON records in ``out``."""
    pidfile = tmp_path / "p.pid"
    server = Server(tmp_path, pidfile, out, "--pidfile", str(pidfile), *args)
    try:
        port = server.port()
        server.wait_workers(1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request("GET", "/hello/x")
            assert conn.getresponse().status == 200
        finally:
            conn.close()
    finally:
        assert server.stop() == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


@pytest.mark.parametrize("how", ["json-file", "gunicorn-logconfig_dict", "ini-file"])
def test_the_operators_logging_configuration_routes_master_and_workers(
    tmp_path: Path, how: str
) -> None:
    out = tmp_path / "records.log"
    if how == "json-file":
        config = tmp_path / "logging.json"
        config.write_text(json.dumps(dict_config(out)))
        args = ["--log-config", str(config)]
    elif how == "gunicorn-logconfig_dict":
        gunicorn = tmp_path / "gunicorn.conf.py"
        gunicorn.write_text(f"logconfig_dict = {dict_config(out)!r}\n")
        args = ["-c", str(gunicorn)]
    else:
        config = tmp_path / "logging.ini"
        config.write_text(
            "[loggers]\nkeys=root\n[handlers]\nkeys=file\n[formatters]\nkeys=json\n"
            "[logger_root]\nlevel=INFO\nhandlers=file\n"
            f"[handler_file]\nclass=FileHandler\nformatter=json\nargs=({str(out)!r},)\n"
            f"[formatter_json]\nformat={JSON_FORMAT}\n"  # (read raw: no %% doubling)
        )
        args = ["--log-config", str(config)]
    records = serve_once(tmp_path, out, *args, "examples.flask_app:app")
    loggers = {record["logger"] for record in records}
    assert {"prefork.master", "prefork.worker"} <= loggers, records
    assert any("listening on" in record["msg"] for record in records)
    assert any(record["msg"].endswith("graceful stop") for record in records), records


def test_a_log_config_that_cannot_apply_is_one_line_exit_2(tmp_path: Path) -> None:
    config = dict_config(tmp_path / "no-such-directory" / "records.log")
    path = tmp_path / "logging.json"
    path.write_text(json.dumps(config))
    result = prefork("-b", "127.0.0.1:0", "--log-config", str(path), "examples.flask_app:app")
    assert_one_line(result, "prefork: error: --log-config: Unable to configure handler 'file'")
    path.write_text('{"version": 2}')
    assert_one_line(
        prefork("--check-config", "--log-config", str(path), "examples.flask_app:app"),
        "prefork: error: --log-config: ",
    )
