"""The overload settings and the pure parts of prefork.worker.overload.

The accepting itself (real sockets, real workers) is tested in
tests/integration/test_overload.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from prefork import config as loader
from prefork.settings import ConfigError, make_config
from prefork.worker import overload
from prefork.worker.httpserver import HTTPServer, RequestObserver
from prefork.worker.overload import RequestTracker, resume_mark
from prefork.worker.request import HTTPRequest


def test_the_settings_default_to_off_and_refuse_negative_values() -> None:
    config = make_config()
    assert (config.max_connections, config.max_concurrency, config.request_timeout) == (0, 0, 0.0)
    config = make_config(max_connections="10", max_concurrency="4", request_timeout="2.5")
    assert (config.max_connections, config.max_concurrency, config.request_timeout) == (10, 4, 2.5)
    with pytest.raises(ConfigError, match="^--max-connections: must be >= 0"):
        make_config(max_connections=-1)
    with pytest.raises(ConfigError, match="^--request-timeout: expected a number"):
        make_config(request_timeout="soon")


def test_gunicorns_worker_connections_is_max_connections(tmp_path: Path) -> None:
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("worker_connections = 1000\n")
    loaded = loader.load({"config": str(conf)}, {})
    assert loaded.config.max_connections == 1000
    assert not [w for w in loaded.warnings if "worker_connections" in w]


@pytest.mark.parametrize(("limit", "mark"), [(1, 0), (2, 1), (10, 9), (50, 45), (1000, 900)])
def test_a_worker_accepts_again_at_90_percent(limit: int, mark: int) -> None:
    assert resume_mark(limit) == mark


def test_without_a_limit_the_server_keeps_the_loops_own_accepting() -> None:
    server = HTTPServer(lambda request: None)
    assert server._gate is None and server._tracker is None
    observer = RequestObserver()
    server.set_observer(observer)
    assert server.observer is observer


def test_with_a_limit_the_tracker_passes_every_call_on() -> None:
    calls = []

    class Inner(RequestObserver):
        def request_started(self, request: HTTPRequest) -> None:
            calls.append(("started", request.uri))

        def request_finished(self, request: HTTPRequest, status: int, size: int) -> None:
            calls.append(("finished", request.uri, status, size))

        def connections_changed(self, count: int, websockets: int) -> None:
            calls.append(("connections", count, websockets))

        def request_rejected(self, status: int) -> None:
            calls.append(("rejected", status))

    server = HTTPServer(lambda request: None, max_concurrency=3, request_timeout=5)
    tracker = server._tracker
    assert isinstance(tracker, RequestTracker) and server.observer is tracker
    assert server._gate is not None and tracker.gate is server._gate
    server.set_observer(Inner())
    assert server.observer is tracker
    request = HTTPRequest("GET", "/a")
    tracker.request_started(request)
    assert list(tracker.in_flight) == [request]
    tracker.request_finished(request, 200, 13)
    tracker.connections_changed(2, 1)
    tracker.request_rejected(400)
    assert not tracker.in_flight
    assert calls == [
        ("started", "/a"),
        ("finished", "/a", 200, 13),
        ("connections", 2, 1),
        ("rejected", 400),
    ]


def test_expired_walks_the_oldest_requests_only(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(overload, "_monotonic", lambda: now[0])
    tracker = RequestTracker()
    old, middle, young = (HTTPRequest("GET", f"/{n}") for n in ("old", "middle", "young"))
    for request, at in ((old, 100.0), (middle, 101.0), (young, 103.0)):
        now[0] = at
        tracker.request_started(request)
    now[0] = 104.5
    assert tracker.expired(3.0) == [(old, 4.5), (middle, 3.5)]
    tracker.request_finished(old, 503, 0)
    assert tracker.expired(3.0) == [(middle, 3.5)]
    assert tracker.expired(10.0) == []
