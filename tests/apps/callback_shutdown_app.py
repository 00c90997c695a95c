"""A request callback object of the user's own with ``async def shutdown(self)``
(no ``timeout`` parameter): the CLI awaits it at a worker's graceful exit,
as it does ASGIAdapter's.  It writes ``shutdown <pid>`` to ``$SHUTDOWN_MARK``."""

from __future__ import annotations

import os


class App:
    def __call__(self, request) -> None:  # type: ignore[no-untyped-def]
        request.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        request.finish()

    async def shutdown(self) -> None:
        with open(os.environ["SHUTDOWN_MARK"], "a") as mark:
            mark.write(f"shutdown {os.getpid()}\n")


app = App()
