"""Real ASGI applications (Starlette, FastAPI, Litestar, Django) under the real ``prefork`` command.

Every server is ``python -m prefork --interface asgi -w 2 -b 127.0.0.1:0
--pidfile ... --error-log ... MODULE:APP`` in a session of its own; it is
driven over loopback by real clients (httpx, the ``websockets`` library),
stopped by the master's pid and waited for, and its whole process group must
be gone afterwards.  The applications live in ``tests/apps/``
(``starlette_app.py``, ``fastapi_app.py``, ``litestar_app.py``, ``django_project/``,
``lifespan_fail_app.py``); what they do inside a worker (lifespan startup
and shutdown, a background task, a WebSocket accepted or disconnected) they
write to an events file (``tests/apps/asgi_events.py``), and the tests wait
for those lines with a bound instead of sleeping.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.lifespan_fail_app import MESSAGE as LIFESPAN_FAIL_MESSAGE
from tests.conftest import wait_for
from tests.e2e.support.asgi_harness import (
    GRACEFUL,
    IO_TIMEOUT,
    Load,
    Server,
    client,
    close_code,
    events_of,
    running,
    ws_connect,
    ws_on_every_worker,
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux process model")

FRAMEWORKS = {
    "starlette": "tests.apps.starlette_app:app",
    "fastapi": "tests.apps.fastapi_app:app",
    "litestar": "tests.apps.litestar_app:app",
}
DJANGO_APP = "tests.apps.django_project.asgi:application"
DJANGO_SETTINGS = "tests.apps.django_project.settings"


# ------------------------------------------------------------------ Starlette and FastAPI


@pytest.fixture(scope="module", params=sorted(FRAMEWORKS))
def served(request, tmp_path_factory):
    """(framework, server, port, worker pids): one server per framework, shared by its tests."""
    framework = request.param
    tmp = tmp_path_factory.mktemp(framework)
    with running(tmp, FRAMEWORKS[framework]) as server:
        port = server.port()
        workers = server.wait_workers(2)
        yield framework, server, port, workers
        assert server.stop() == 0
    # Every worker ran its lifespan shutdown before it exited.
    assert sorted(int(e[1]) for e in events_of(server, "closed")) == workers


def test_lifespan_startup_runs_before_the_first_request_of_every_worker(served) -> None:
    framework, server, port, workers = served
    # A worker is ready only after its startup: both have opened the resource.
    assert sorted(int(e[1]) for e in events_of(server, "opened")) == workers
    seen: dict[int, dict[str, Any]] = {}

    def both_workers_answered() -> bool:
        with client(port) as http:  # a fresh connection each time
            body = http.get("/state").json()
        seen[body["pid"]] = body
        return len(seen) == 2

    wait_for(both_workers_answered, 20, "/state answered by both workers")
    assert sorted(seen) == workers
    for pid, body in seen.items():
        assert body["resource"] == f"{framework}-pool"
        assert body["opened_in"] == pid  # the lifespan of this very worker
    lines = server.events()
    for pid in workers:
        opened = lines.index(["opened", str(pid)])
        [first] = [i for i, e in enumerate(lines) if e[:2] == ["first-request", str(pid)]]
        assert opened < first, lines
        assert lines[first][3] == "state=yes", lines[first]


def test_json(served) -> None:
    framework, _server, port, workers = served
    with client(port) as http:
        response = http.get("/json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body == {"framework": framework, "message": "hello", "pid": body["pid"]}
        assert body["pid"] in workers
        document = {"b": [1, 2, {"c": None}], "a": "é ☕", "n": 1.5}
        response = http.post("/json", json=document)
        assert response.status_code == 201
        assert response.json() == {"received": document, "keys": ["a", "b", "n"]}


def test_path_and_query_parameters(served) -> None:
    framework, _server, port, _workers = served
    with client(port) as http:
        response = http.get(
            "/items/42", params=[("q", "a b&c"), ("limit", "3"), ("tag", "x"), ("tag", "y")]
        )
        assert response.status_code == 200
        assert response.json() == {"item_id": 42, "q": "a b&c", "limit": 3, "tags": ["x", "y"]}
        assert http.get("/items/7").json() == {"item_id": 7, "q": None, "limit": 10, "tags": []}
        bad = http.get("/items/seven")
        if framework == "starlette":  # the int convertor does not match: no route
            assert (bad.status_code, bad.text) == (404, "Not Found")
        elif framework == "litestar":  # the int path type does not match: no route ...
            assert bad.status_code == 404
            bad = http.get("/items/7", params={"limit": "many"})  # ... a bad query: 400
            assert bad.status_code == 400
            assert [p["key"] for p in bad.json()["extra"]] == ["limit"]
        else:  # FastAPI validates the typed parameter
            assert bad.status_code == 422
            [problem] = bad.json()["detail"]
            assert problem["loc"] == ["path", "item_id"] and problem["type"] == "int_parsing"
            bad = http.get("/items/7", params={"limit": "many"})
            assert bad.status_code == 422
            assert [p["loc"] for p in bad.json()["detail"]] == [["query", "limit"]]


@pytest.mark.parametrize("served", ["fastapi"], indirect=True)
def test_fastapi_model_validation(served) -> None:
    _framework, _server, port, _workers = served
    with client(port) as http:
        response = http.post("/items", json={"name": "pen", "price": "1.25", "tags": ["blue"]})
        assert response.status_code == 201
        assert response.json() == {"created": {"name": "pen", "price": 1.25, "tags": ["blue"]}}
        response = http.post("/items", json={"name": "pen"})
        assert response.status_code == 422
        assert [p["loc"] for p in response.json()["detail"]] == [["body", "price"]]


def test_file_upload_through_python_multipart(served) -> None:
    _framework, _server, port, _workers = served
    content = random.Random(10).randbytes(3 * 1024 * 1024 + 17)  # several receive() pieces
    with client(port) as http:
        response = http.post(
            "/upload",
            files={"file": ("data ☕.bin", content, "application/x-test")},
            data={"note": "café"},
        )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "filename": "data ☕.bin",
        "content_type": "application/x-test",
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
        "note": "café",
    }


def test_streaming_response(served) -> None:
    _framework, _server, port, _workers = served
    with client(port) as http:
        response = http.get("/stream", params={"n": 200})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["transfer-encoding"] == "chunked"
    assert "content-length" not in response.headers
    assert response.content == b"".join(b"line %d\n" % i for i in range(200))


def test_a_streamed_piece_arrives_before_the_response_ends(served, tmp_path: Path) -> None:
    """The app sends ``first``, then waits for a file the client makes only once it has read it."""
    _framework, _server, port, _workers = served
    gate = tmp_path / "gate"
    with client(port) as http, http.stream("GET", "/gated", params={"gate": str(gate)}) as response:
        assert response.status_code == 200
        pieces = response.iter_raw()
        received = b""
        while b"\n" not in received:
            received += next(pieces)
        assert received == b"first\n"
        gate.touch()
        received += b"".join(pieces)
    assert received == b"first\nsecond\n"


def test_server_sent_events(served) -> None:
    _framework, _server, port, _workers = served
    with client(port) as http, http.stream("GET", "/sse", params={"n": 4}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        events = []
        current: dict[str, str] = {}
        for line in response.iter_lines():
            if not line:
                events.append(current)
                current = {}
                continue
            field, _, value = line.partition(": ")
            current[field] = value
    assert events == [
        {"id": str(i), "event": "tick", "data": json.dumps({"n": i})} for i in range(4)
    ]


def _leave_an_event_stream(server: Server, port: int) -> list[str]:
    """Read 5 events of a 100000-event stream, hang up; the app's ``sse-end`` event."""
    before = len(events_of(server, "sse-end"))
    with client(port) as http, http.stream("GET", "/sse", params={"n": 100000}) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        for _ in range(5 * 4):  # 5 events of 4 lines (id, event, data, blank)
            next(lines)
    ended = wait_for(
        lambda: events_of(server, "sse-end")[before:],
        IO_TIMEOUT,
        "the event stream to end once its client left",
    )
    return ended[0]


def test_an_event_stream_ends_when_its_client_leaves(served) -> None:
    _framework, server, port, workers = served
    _name, pid, sent = _leave_an_event_stream(server, port)
    assert int(pid) in workers
    assert 5 <= int(sent) < 100000


def test_a_client_leaving_an_event_stream_is_not_an_application_error(served) -> None:
    _framework, server, port, _workers = served
    errors = server.log().count("Exception in ASGI application")
    _leave_an_event_stream(server, port)
    log = server.log()
    assert log.count("Exception in ASGI application") == errors, log[-3000:]


def test_head_and_a_chunked_request_body_keep_the_connection_usable(served) -> None:
    framework, _server, port, _workers = served
    with client(port) as http:
        head = http.head("/stream", params={"n": 50})
        if framework == "starlette":  # a GET route answers HEAD: the head only
            assert head.status_code == 200
            assert head.content == b""
            assert head.headers["content-type"] == "text/plain; charset=utf-8"
        else:  # FastAPI's @app.get and Litestar's @get routes are GET only
            assert head.status_code == 405
        document = {"parts": list(range(1000))}
        encoded = json.dumps(document).encode()
        pieces = (encoded[i : i + 1000] for i in range(0, len(encoded), 1000))
        response = http.post(
            "/json", content=pieces, headers={"Content-Type": "application/json"}
        )  # an iterator: Transfer-Encoding: chunked
        assert response.status_code == 201
        assert response.json() == {"received": document, "keys": ["parts"]}
        # The same connection still frames correctly after both.
        assert http.get("/items/1").json() == {"item_id": 1, "q": None, "limit": 10, "tags": []}


def test_background_task_runs_after_the_response(served) -> None:
    _framework, server, port, workers = served
    word = uuid.uuid4().hex
    with client(port) as http:
        response = http.post("/background", params={"word": word})
    assert response.status_code == 200
    assert response.json() == {"scheduled": word}
    line = wait_for(
        lambda: [e for e in events_of(server, "background") if e[2:] == [word]],
        IO_TIMEOUT,
        "the background task",
    )
    assert len(line) == 1 and int(line[0][1]) in workers


def test_websocket_chat_broadcasts_within_a_worker(served) -> None:
    _framework, server, port, workers = served
    prefix = f"c{uuid.uuid4().hex[:6]}-"
    with contextlib.ExitStack() as stack:
        rooms = ws_on_every_worker(stack, port, workers, 2, prefix)
        for pid, members in rooms.items():
            for name, _ws in members:
                server.wait_event("ws-accepted", str(pid), name)
        # Each worker's room hears its own members' messages, and only those:
        # the next message every member receives is its own room's.
        for pid, members in rooms.items():
            sender_name, sender = members[0]
            sender.send(f"hello from {pid}")
            expected = {"type": "message", "from": sender_name, "text": f"hello from {pid}"}
            for _name, ws in members:
                assert json.loads(ws.recv(timeout=IO_TIMEOUT)) == expected
        leaving = [(pid, name, ws) for pid, members in rooms.items() for name, ws in members]
        for _pid, _name, ws in leaving:
            ws.close()  # 1000
        for pid, name, _ws in leaving:
            server.wait_event("ws-disconnect", str(pid), name, "1000")


def test_websocket_large_messages_round_trip(served) -> None:
    """Messages over a frame (fragmented, compressed: the client offers permessage-deflate)."""
    _framework, _server, port, _workers = served
    text = "".join(f"{i:08d}☕" for i in range(40000))  # ~440 KB of UTF-8
    with contextlib.ExitStack() as stack:
        ws, welcome = ws_connect(stack, port, f"big{uuid.uuid4().hex[:6]}")
        ws.send(text)
        assert json.loads(ws.recv(timeout=IO_TIMEOUT)) == {
            "type": "message",
            "from": welcome["name"],
            "text": text,
        }
        assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")


# ------------------------------------------------------------------ reload and stop


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_hup_under_load_closes_websockets_with_1012_and_fails_no_request(
    framework: str, tmp_path: Path
) -> None:
    with running(tmp_path, FRAMEWORKS[framework]) as server, contextlib.ExitStack() as stack:
        port = server.port()
        old = server.wait_workers(2, generation=1)
        rooms = ws_on_every_worker(stack, port, old, 2, "hup")
        for pid, members in rooms.items():
            for name, _ws in members:
                server.wait_event("ws-accepted", str(pid), name)
        load = Load(port)
        try:
            wait_for(lambda: load.ok >= 20, 20, "requests served before the HUP")
            server.proc.send_signal(signal.SIGHUP)
            for members in rooms.values():
                for name, ws in members:
                    assert close_code(ws) == (1012, "server restarting"), name
            new = server.wait_workers(2, generation=2)
            assert not set(new) & set(old)
            wait_for(lambda: set(new) <= load.pids, 20, "both new workers serving the load")
            served_after = load.ok
            wait_for(lambda: load.ok >= served_after + 20, 20, "requests after the reload")
        finally:
            load.stop()
        assert load.failures == [], load.failures[:10]
        # The application saw each disconnect, with the code the client got.
        for pid, members in rooms.items():
            for name, _ws in members:
                server.wait_event("ws-disconnect", str(pid), name, "1012")
        # The retired workers ran their lifespan shutdown; the new ones their startup.
        for pid in old:
            server.wait_event("closed", str(pid))
        assert sorted(int(e[1]) for e in events_of(server, "opened")) == sorted(old + new)
        # The new workers serve WebSockets too.
        _ws, welcome = ws_connect(stack, port, "after-hup")
        assert welcome["pid"] in new
        stack.close()
        assert server.stop() == 0
    assert sorted(int(e[1]) for e in events_of(server, "closed")) == sorted(old + new)


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_term_closes_websockets_with_1001_finishes_a_stream_and_exits_0(
    framework: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with running(tmp_path / "server", FRAMEWORKS[framework]) as server:
        port = server.port()
        workers = server.wait_workers(2)
        with client(port) as http, contextlib.ExitStack() as stack:
            rooms = ws_on_every_worker(stack, port, workers, 2, "term")
            for pid, members in rooms.items():
                for name, _ws in members:
                    server.wait_event("ws-accepted", str(pid), name)
            # A streaming response in flight: it must be finished, not cut.
            response = stack.enter_context(http.stream("GET", "/gated", params={"gate": str(gate)}))
            pieces = response.iter_raw()
            received = b""
            while b"\n" not in received:
                received += next(pieces)
            assert received == b"first\n"
            stopped_at = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            for members in rooms.values():
                for name, ws in members:
                    assert close_code(ws) == (1001, "server shutting down"), name
            for pid in workers:
                wait_for(
                    lambda pid=pid: f"(pid {pid}): graceful stop" in server.log(),
                    IO_TIMEOUT,
                    f"worker {pid} to start its graceful stop",
                )
            gate.touch()
            received += b"".join(pieces)
            assert received == b"first\nsecond\n"
        status = server.wait_exit(GRACEFUL)
        assert status == 0
        assert time.monotonic() - stopped_at < GRACEFUL
    for pid, members in rooms.items():
        for name, _ws in members:
            server.wait_event("ws-disconnect", str(pid), name, "1001")
    assert sorted(int(e[1]) for e in events_of(server, "closed")) == workers
    assert "still open at graceful_timeout" not in server.log()


def test_an_endless_event_stream_is_cut_at_the_drain_bound_not_held_to_the_timeout(
    tmp_path: Path,
) -> None:
    """A draining worker gives a response of unknown length (server-sent
    events) the WebSocket's bound, drain_grace + 5 s, not the whole graceful
    timeout: the stream is cut (logged), the application's generator runs
    its cleanup (``sse-end``), the worker exits without force-closing
    anything at graceful_timeout, and the lifespan shutdown runs after."""
    with running(tmp_path, FRAMEWORKS["starlette"], "-w", "1") as server:
        port = server.port()
        [pid] = server.wait_workers(1)
        with client(port) as http, http.stream("GET", "/sse", params={"n": 100000}) as response:
            lines = response.iter_lines()
            for _ in range(4):  # one whole event: the stream is in flight
                next(lines)
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):  # (an unfinished chunked body)
                for _ in lines:
                    pass
        assert server.wait_exit(GRACEFUL + 5) == 0
    log = server.log()
    assert "draining: a response streaming for longer than the drain allows" in log, log[-3000:]
    assert "still open at graceful_timeout" not in log
    assert "Exception in ASGI application" not in log
    [(_name, ended_pid, sent)] = events_of(server, "sse-end")
    assert int(ended_pid) == pid and 1 <= int(sent) < 100000
    assert [int(e[1]) for e in events_of(server, "closed")] == [pid]  # the lifespan shutdown


def test_a_stream_still_waiting_at_the_stop_is_cancelled_so_its_cleanup_runs(
    tmp_path: Path,
) -> None:
    """A stream that sends nothing more (it waits for a gate that never
    opens) is cut at the drain bound; the worker then cancels the application
    still running, so its generator's ``finally`` runs before the lifespan
    shutdown (it used to be left pending as the worker exited)."""
    gate = tmp_path / "never"
    with running(tmp_path / "server", FRAMEWORKS["starlette"], "-w", "1") as server:
        port = server.port()
        [pid] = server.wait_workers(1)
        with client(port) as http, http.stream("GET", "/gated", params={"gate": str(gate)}) as r:
            pieces = r.iter_raw()
            assert next(pieces) == b"first\n"
            server.proc.send_signal(signal.SIGTERM)
            with pytest.raises(httpx.RemoteProtocolError):
                for _ in pieces:
                    pass
        assert server.wait_exit(GRACEFUL + 5) == 0
    assert [(int(e[1]), e[2]) for e in events_of(server, "gated-end")] == [(pid, "cancelled")]
    assert [int(e[1]) for e in events_of(server, "closed")] == [pid]
    log = server.log()
    assert "Exception in ASGI application" not in log and "still open at graceful" not in log


# ------------------------------------------------------------------ a failing startup


@pytest.mark.parametrize(
    ("app", "args"),
    [
        ("tests.apps.lifespan_fail_app:app", []),  # Starlette: lifespan.startup.failed
        pytest.param(
            "tests.apps.lifespan_fail_app:raw_app",
            ["--lifespan", "on"],  # raises without answering
        ),
    ],
    ids=["starlette-startup-failed", "raw-app-raises-lifespan-on"],
)
def test_a_failing_lifespan_startup_exits_3_with_the_message_once(
    tmp_path: Path, app: str, args: list[str]
) -> None:
    with running(tmp_path, app, *args) as server:
        assert server.wait_exit(30) == 3
        log = server.log()
    assert log.count(LIFESPAN_FAIL_MESSAGE) == 1, log
    assert events_of(server, "startup-attempt"), "the startup never ran"
    assert "listening on http://127.0.0.1:" in log


def test_a_raising_lifespan_with_lifespan_auto_is_served_without_it(tmp_path: Path) -> None:
    with running(tmp_path, "tests.apps.lifespan_fail_app:raw_app") as server:
        port = server.port()
        server.wait_workers(2)
        with client(port) as http:
            response = http.get("/")
        assert (response.status_code, response.text) == (200, "served without lifespan")
        assert "appears unsupported by the application" in server.log()
        assert server.stop() == 0


# ------------------------------------------------------------------ Django


def test_django_project_over_asgi(tmp_path: Path) -> None:
    env = {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS}
    with running(tmp_path, DJANGO_APP, env=env) as server:
        port = server.port()
        workers = server.wait_workers(2)
        # Django's handler refuses the lifespan scope: served without it (--lifespan auto).
        assert "appears unsupported by the application" in server.log()
        with client(port) as http:
            response = http.get("/json/", params=[("a", "1"), ("a", "2"), ("b", "x y")])
            assert response.status_code == 200
            assert response.headers["content-type"] == "application/json"
            body = response.json()
            assert body["pid"] in workers
            assert body == {
                "framework": "django",
                "pid": body["pid"],
                "path": "/json/",
                "path_info": "/json/",
                "script_name": "",
                "query": {"a": ["1", "2"], "b": ["x y"]},
                "absolute": f"http://127.0.0.1:{port}/json/?a=1&a=2&b=x+y",
            }
            response = http.get("/json", params={"k": "v"})  # CommonMiddleware: APPEND_SLASH
            assert response.status_code == 301
            assert response.headers["location"] == "/json/?k=v"
            response = http.post("/form/", data={"name": "Zoë", "tags": ["a", "b"]})
            assert response.status_code == 201
            assert response.json() == {
                "name": "Zoë",
                "tags": ["a", "b"],
                "content_type": "application/x-www-form-urlencoded",
            }
            assert http.get("/form/").status_code == 405
            assert http.get("/items/7/", params={"q": "z"}).json() == {"item_id": 7, "q": "z"}
            assert http.get("/async/").json() == {"async": True, "method": "GET"}
            assert http.get("/nowhere/").status_code == 404
            bad_host = http.get("/json/", headers={"Host": "evil.example"})
            assert bad_host.status_code == 400  # ALLOWED_HOSTS
        assert server.stop() == 0


def test_django_under_a_root_path_with_the_interface_detected(tmp_path: Path) -> None:
    env = {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS}
    with running(
        tmp_path, DJANGO_APP, "--interface", "auto", "--root-path", "/site", env=env
    ) as server:
        port = server.port()
        server.wait_workers(2)
        with client(port) as http:
            body = http.get("/site/json/").json()
        assert {k: body[k] for k in ("path", "path_info", "script_name", "absolute")} == {
            "path": "/site/json/",
            "path_info": "/json/",
            "script_name": "/site",
            "absolute": f"http://127.0.0.1:{port}/site/json/",
        }
        assert server.stop() == 0


def test_a_root_path_that_prefixes_a_path_as_a_string_only(tmp_path: Path) -> None:
    env = {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS}
    with running(tmp_path, DJANGO_APP, "--root-path", "/js", env=env) as server:
        port = server.port()
        server.wait_workers(2)
        with client(port) as http:
            response = http.get("/json/")  # the proxy stripped /js from /js/json/
        assert server.stop() == 0
    assert response.status_code == 200, response.text[:200]
    body = response.json()
    assert (body["path"], body["path_info"], body["script_name"]) == ("/js/json/", "/json/", "/js")
