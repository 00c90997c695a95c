"""The ASGI lifespan protocol (lifespan spec 2.0): ``startup`` before a
worker serves, ``shutdown`` after its drain.

The worker runner drives it through the adapter (``ASGIAdapter.startup``
and ``shutdown``): a startup that fails or hangs is a failed boot, which the
master's readiness gate and boot timeout see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["Lifespan", "LifespanFailure"]

error_log = logging.getLogger("prefork.error")

Message = MutableMapping[str, Any]
ASGIApp = Callable[..., Awaitable[Any]]

#: the lifespan scope's own spec (lifespan 2.0: the startup/shutdown ``failed`` answers)
_ASGI_LIFESPAN = {"version": "3.0", "spec_version": "2.0"}


class LifespanFailure(Exception):
    """The application's lifespan startup failed; ``str()`` is its message."""


class Lifespan:
    """The ASGI lifespan protocol: ``startup`` before serving, ``shutdown`` after.

    ``mode``: ``on`` (a failure is fatal), ``off`` (never run), ``auto`` (an
    application that raises or returns before answering ``startup`` does not
    support lifespan: logged once, served anyway).  A ``lifespan.startup.failed``
    answer is fatal in both ``on`` and ``auto``.
    """

    def __init__(self, app: ASGIApp, mode: str, state: dict[str, Any]) -> None:
        self.app = app
        self.mode = mode
        self.state = state
        self.started = False
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._outbox: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    async def startup(self) -> None:
        """Run the application's startup; raise LifespanFailure if it failed."""
        if self.mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._next_answer()
        if answer is None:  # the app ended without answering
            error = self._error
            why = f"{type(error).__name__}: {error}" if error is not None else "it returned"
            if self.mode == "on":
                raise LifespanFailure(f"lifespan startup did not complete ({why})") from error
            error_log.info(
                "ASGI 'lifespan' protocol appears unsupported by the application (%s); "
                "serving without it",
                why,
            )
            return
        if answer.get("type") == "lifespan.startup.failed":
            raise LifespanFailure(str(answer.get("message") or "lifespan startup failed"))
        if answer.get("type") != "lifespan.startup.complete":
            raise LifespanFailure(f"unexpected lifespan message {answer.get('type')!r}")
        self.started = True

    async def shutdown(self) -> None:
        """Run the application's shutdown (a failure is logged, nothing more)."""
        if not self.started:
            return
        self.started = False
        await self._inbox.put({"type": "lifespan.shutdown"})
        answer = await self._next_answer()
        if answer is None:
            if self._error is not None:
                error_log.error(
                    "Exception in ASGI lifespan shutdown",
                    exc_info=(type(self._error), self._error, self._error.__traceback__),
                )
        elif answer.get("type") == "lifespan.shutdown.failed":
            error_log.error("ASGI lifespan shutdown failed: %s", answer.get("message", ""))

    async def _next_answer(self) -> Message | None:
        """The app's next lifespan message, or None once its task has ended."""
        task = self._task
        assert task is not None
        if not self._outbox.empty():
            return self._outbox.get_nowait()
        if task.done():
            return None
        getter = asyncio.ensure_future(self._outbox.get())
        await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter.done():
            return getter.result()
        getter.cancel()
        return None if self._outbox.empty() else self._outbox.get_nowait()

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": _ASGI_LIFESPAN, "state": self.state}
        outbox = self._outbox

        async def send(message: Message) -> None:
            await outbox.put(dict(message))

        try:
            await self.app(scope, self._inbox.get, send)
        except Exception as exc:  # reported by startup()/shutdown()
            self._error = exc
