"""Hands `api-call` events to the pipeline without ever making a client wait on the trail.

Fail-safe: when the trail cannot take events (the pipeline raised, or the
queue is full because it stalled), `failing` is set and said loudly; the
proxy then forwards anyway or refuses, as `proxy.on_trail_failure` says. An
event is never dropped without an error line naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from listener.model.event import Event

log = logging.getLogger("docktrail.proxy")

QUEUE_EVENTS = 10_000


class Recorder:
    def __init__(self, put: Callable[[Event], Awaitable[None]], capacity: int = QUEUE_EVENTS):
        self._put = put
        self._queue: asyncio.Queue[Event] = asyncio.Queue(maxsize=capacity)
        self._task: asyncio.Task[None] | None = None
        self.failing = False
        self.recorded = 0
        self.lost = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._pump(), name="proxy-recorder")

    def record(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._lose(event, "the trail is not keeping up")

    async def aclose(self) -> None:
        """Hands on what is queued, then stops."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

    async def _pump(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._put(event)
                self.recorded += 1
                if self.failing:
                    self.failing = False
                    log.warning("proxy: the trail takes api-call events again")
            except Exception as exc:
                self._lose(event, f"{type(exc).__name__}: {exc}")
            finally:
                self._queue.task_done()

    def _lose(self, event: Event, why: str) -> None:
        self.lost += 1
        self.failing = True
        log.error(
            "proxy: api-call NOT RECORDED in the trail",
            extra={
                "fields": {
                    "why": why,
                    "event": event.id,
                    "action": event.action,
                    "path": event.attributes.get("path"),
                    "login": event.who.login,
                    "pid": event.who.pid,
                }
            },
        )
