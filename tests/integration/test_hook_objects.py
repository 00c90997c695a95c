"""What gunicorn's server hooks read of their arguments, through the real CLI.

A gunicorn config file's hooks read ``server.cfg.keepalive``,
``server.WORKERS``, ``worker.tmp.notify()``, ``for name, value in
req.headers``, ``req.remote_addr``, ``resp.headers``...: each of these
raised AttributeError or ValueError in prefork, so a migrated config's hook
failed on every call.  The hooks here record what they read (or the error)
in a JSON file, and the test compares it with what gunicorn 27 gives.
"""

from __future__ import annotations

import json
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration.test_cli_config import Cli, stop_all

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

HOOKS = textwrap.dedent(
    """
    import json, os

    workers = 1
    keepalive = 7
    loglevel = "INFO"
    proc_name = "hooked"
    max_requests = 1000

    def _rec(where, **values):
        with open(os.environ["HOOK_LOG"], "a") as f:
            f.write(json.dumps({"hook": where, **values}, default=repr) + "\\n")

    def _try(fn):
        try:
            return fn()
        except Exception as exc:
            return "ERR " + type(exc).__name__ + ": " + str(exc)

    def pre_fork(server, worker):
        _rec("pre_fork", pid=worker.pid)

    def when_ready(server):
        cfg = server.cfg
        _rec(
            "when_ready",
            keepalive=_try(lambda: cfg.keepalive),
            loglevel=_try(lambda: cfg.loglevel),
            preload_app=_try(lambda: cfg.preload_app),
            worker_class_str=_try(lambda: cfg.worker_class_str),
            bind=_try(lambda: cfg.bind),
            address=_try(lambda: [list(a) for a in cfg.address]),
            workers=_try(lambda: cfg.workers),
            timeout=_try(lambda: cfg.timeout),
            keep_alive=_try(lambda: cfg.keep_alive),
            typo=_try(lambda: cfg.keepalvie),
            proc_name=_try(lambda: server.proc_name),
            app=_try(lambda: server.app),
            listeners=_try(lambda: len(server.LISTENERS)),
            workers_pids=_try(lambda: sorted(server.WORKERS)),
            worker_pid=_try(lambda: [w.pid for w in server.WORKERS.values()]),
        )

    def post_worker_init(worker):
        worker.tmp.notify()
        _rec(
            "post_worker_init",
            pid=worker.pid,
            alive=_try(lambda: worker.alive),
            timeout=_try(lambda: worker.timeout),
            max_requests=_try(lambda: worker.max_requests),
            cfg_max_requests=_try(lambda: worker.cfg.max_requests),
            wsgi=_try(lambda: callable(worker.wsgi)),
        )

    def pre_request(worker, req):
        req.started_by_hook = "yes"
        _rec(
            "pre_request",
            headers=_try(lambda: [[name, value] for name, value in req.headers]),
            remote_addr=_try(lambda: list(req.remote_addr)),
            peer_addr=_try(lambda: list(req.peer_addr)),
            scheme=_try(lambda: req.scheme),
            version=_try(lambda: list(req.version)),
            method=req.method, path=req.path, query=req.query, uri=req.uri,
            body=_try(lambda: req.body.read()),
        )

    def post_request(worker, req, environ, resp):
        _rec(
            "post_request",
            kept=_try(lambda: req.started_by_hook),
            status=resp.status, status_code=resp.status_code, sent=resp.sent,
            headers=_try(lambda: [[name, value] for name, value in resp.headers]),
            response_length=_try(lambda: resp.response_length),
        )
    """
)


def _records(path: Path) -> dict[str, dict[str, Any]]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    return {record["hook"]: record for record in map(json.loads, lines)}


def test_hook_arguments_offer_what_gunicorn_hooks_read(tmp_path: Path) -> None:
    import http.client

    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOKS)
    notes = tmp_path / "hooks.jsonl"
    server = Cli(
        tmp_path,
        "-c",
        str(conf),
        "--interface",
        "wsgi",
        env={"HOOK_LOG": str(notes)},
        app="tests.apps.wsgi_app:app",
    )
    try:
        port = server.port()
        [worker] = server.wait_workers(1)
        wait_for(lambda: "post_worker_init" in _records(notes), 10, "post_worker_init")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/some/where?x=1", headers={"X-Request-Id": "abc"})
        response = conn.getresponse()
        assert response.status == 200
        body = response.read()
        client_port = conn.sock.getsockname()[1]
        conn.close()
        wait_for(lambda: "post_request" in _records(notes), 10, "post_request")
        assert server.stop(signal.SIGTERM) == 0
    finally:
        stop_all([server])
    records = _records(notes)
    assert records["pre_fork"]["pid"] == "[booting]"
    ready = records["when_ready"]
    assert ready["keepalive"] == 7 and ready["keep_alive"] == 7
    assert ready["loglevel"] == "info"
    assert ready["preload_app"] is False
    assert isinstance(ready["worker_class_str"], str)
    assert ready["bind"] == ["127.0.0.1:0"]
    assert ready["address"] == [["127.0.0.1", 0]]
    assert ready["workers"] == 1 and ready["timeout"] == 30
    assert ready["typo"].startswith("ERR AttributeError")
    assert ready["proc_name"] == "hooked"
    assert ready["app"] == "tests.apps.wsgi_app:app"
    assert ready["listeners"] == 1
    assert ready["workers_pids"] == [worker] and ready["worker_pid"] == [worker]
    init = records["post_worker_init"]
    assert init["pid"] == worker and init["alive"] is True
    assert init["timeout"] == 15 and init["max_requests"] == 1000
    assert init["cfg_max_requests"] == 1000 and init["wsgi"] is True
    pre = records["pre_request"]
    # gunicorn: (NAME, value) pairs, names upper-cased
    assert ["X-REQUEST-ID", "abc"] in pre["headers"]
    assert all(name == name.upper() for name, _ in pre["headers"])
    assert pre["remote_addr"] == ["127.0.0.1", client_port] == pre["peer_addr"]
    assert pre["scheme"] == "http" and pre["version"] == [1, 1]
    assert (pre["method"], pre["path"], pre["query"]) == ("GET", "/some/where", "x=1")
    assert pre["uri"] == "/some/where?x=1" and pre["body"] == "b''"
    post = records["post_request"]
    assert post["kept"] == "yes"  # the same req in both hooks
    assert post["status"] == "200 OK" and post["status_code"] == 200
    assert post["sent"] == len(body)
    headers = {name.lower(): value for name, value in post["headers"]}
    assert "content-type" in headers
    expected = int(headers["content-length"]) if "content-length" in headers else None
    assert post["response_length"] == expected
