"""The worker thread of a trail in async use, its checkpoint timer, and the loop giving way
to it.

An SQLite connection may only be used by the thread that made it, and a write
blocks (fsync, a busy wait on another writer) where the event loop must not.
So after `SQLiteTrail.start()` the connection is opened on one thread of its
own, every operation runs there, and the loop awaits it. The timer that seals
an idle tail is started and stopped with that thread.

The thread and the loop share one GIL: while an operation is on the thread, the
loop gives way to it when busy (`listener.giveway`). What the loop's watcher
last saw, `loop_busy`, also tells the thread to insert in few statements
(`bulk.insert_rows`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from config.errors import TrailError
from listener.giveway import GiveWay, of_running_loop

T = TypeVar("T")


class Worker:
    """One trail's thread and the task of its timer."""

    def __init__(self, path: Path) -> None:
        self.path = path  # the trail's, for errors
        self._executor: ThreadPoolExecutor | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._giving_way: GiveWay | None = None

    @property
    def loop_busy(self) -> bool:
        """The loop was busy while threads worked, when last judged: the thread then
        asks for the GIL as seldom as it can (`bulk.insert_rows`)."""
        return self._giving_way is not None and self._giving_way.loop_busy

    async def start(
        self, first: Callable[[], None], timer: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Start the thread with `first` (it is stopped again when that fails), then the
        `timer()` task; nothing when started already."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docktrail-trail")
        self._giving_way = of_running_loop()
        try:
            await self.run(first)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._ticker = asyncio.create_task(timer(), name="docktrail-trail-checkpoints")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the thread."""
        if self._executor is None:
            raise TrailError(f"{self.path}: trail not started")
        job = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        assert self._giving_way is not None  # set with the executor
        with self._giving_way.in_flight():
            return await job

    async def stop(self, last: Callable[[], None]) -> None:
        """Cancel the timer, run `last` on the thread, end the thread; nothing when not started."""
        executor = self._executor
        if executor is None:
            return
        await _cancel(self._ticker)
        self._ticker = None
        try:
            await self.run(last)
        finally:
            self._executor = None
            executor.shutdown(wait=True)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
