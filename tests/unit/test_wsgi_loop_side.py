"""The loop side of a WSGI response (``_Response._on_loop``) with stand-ins
for the request and connection: what happens when the connection refuses
to finish the response (a framing error found as the held head goes out)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prefork.worker.wsgi import _Response


class _Connection:
    def __init__(self) -> None:
        self.aborted = False

    def set_close_callback(self, callback: Any) -> None:
        pass

    def abort_response(self) -> None:
        self.aborted = True


class _Request:
    uri = "/x"
    method = "GET"

    def __init__(self) -> None:
        self.connection = _Connection()
        self.finishes = 0

    def write_headers(self, *args: Any) -> None:
        pass

    def write(self, *args: Any) -> None:
        pass

    def finish(self) -> None:
        self.finishes += 1
        if self.finishes == 1:
            raise ValueError("conflicting Content-Length values 3 and 5")


def test_a_finish_that_raises_gives_the_response_up() -> None:
    """The held head failed its framing inside finish(): the response was
    marked finished first, so it was never given up and the client waited
    for ever; now the connection is closed (abort_response) and the request
    accounted (finish() again, on the closed connection)."""
    request = _Request()
    adapter = SimpleNamespace(app=None, window=1, send_timeout=1.0)
    response = _Response(adapter, request, loop=None)  # type: ignore[arg-type]
    response._on_loop(response._loop_finish, ((200, "OK", []), b"abc"))
    assert request.connection.aborted
    assert request.finishes == 2 and response.finished and response.gone
