"""The worker thread of a trail in async use, its checkpoint timer, and the loop giving way
to it.

An SQLite connection may only be used by the thread that made it, and a write
blocks (fsync, a busy wait on another writer) where the event loop must not.
So after `SQLiteTrail.start()` the connection is opened on one thread of its
own, every operation runs there, and the loop awaits it. The timer that seals
an idle tail is started and stopped with that thread.

The thread and the loop share one GIL; the task of `_give_way`, started and
stopped with the thread, keeps the thread from starving. The thread lets go of
the GIL for SQLite's work and must take it back after each statement, while a
loop that runs Python in short slices lets go of it for a moment at every
iteration (its poll) and takes it back before a waiting thread wakes: CPython
then never asks the loop to hand the GIL over, and the thread waits for as
long as the loop stays busy (measured: a write of 50 events did not finish in
2 minutes while the loop ran Python in 2 ms slices; bench/trail_contention.py).
So while an operation is on the thread and the loop's own thread used more
than `BUSY_SHARE` of the time while the thread worked (judged over
`IDLE_LOOK_SECS` or more, on the loop thread's CPU clock), the loop naps
`GIVE_WAY_SECS` every `GIVE_WAY_EVERY_SECS`: it sleeps without the GIL, and
the waiting thread takes it. That is at most a tenth of the loop's time, only
while the thread works and the loop is busy. Otherwise the loop is looked at
every `IDLE_LOOK_SECS` only: each look takes the GIL from the thread for a
moment (a look every 5 ms cost `ingest` about 4 %). What the last look saw,
`loop_busy`, also tells the thread to insert in few statements
(`bulk.insert_rows`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from config.errors import TrailError

T = TypeVar("T")

GIVE_WAY_EVERY_SECS = 0.001
GIVE_WAY_SECS = 0.0001  # long enough for a waiting thread to wake and take the GIL
IDLE_LOOK_SECS = 0.025
BUSY_SHARE = 0.2  # of the time the thread worked, on the loop thread's CPU clock


class Worker:
    """One trail's thread, the task of its timer and the task that gives way to it."""

    def __init__(self, path: Path) -> None:
        self.path = path  # the trail's, for errors
        self._executor: ThreadPoolExecutor | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._busy = 0  # operations on the thread, awaited
        self._since = 0.0, 0.0  # wall and loop-thread CPU clocks when last judged
        self._giving_way: asyncio.Task[None] | None = None
        # The loop ran Python for more than BUSY_SHARE of the time the thread worked,
        # when last judged: the thread then asks for the GIL as seldom as it can
        # (`bulk.insert_rows`).
        self.loop_busy = False

    async def start(
        self, first: Callable[[], None], timer: Callable[[], Coroutine[Any, Any, None]]
    ) -> None:
        """Start the thread with `first` (it is stopped again when that fails), then the
        `timer()` task and the giving way; nothing when started already."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docktrail-trail")
        try:
            await self.run(first)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._ticker = asyncio.create_task(timer(), name="docktrail-trail-checkpoints")
        self._giving_way = asyncio.create_task(self._give_way(), name="docktrail-trail-gil")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the thread."""
        if self._executor is None:
            raise TrailError(f"{self.path}: trail not started")
        job = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        if not self._busy:  # the loop is judged on what it does while the thread works
            self._since = time.perf_counter(), time.thread_time()
        self._busy += 1
        try:
            return await job
        finally:
            self._busy -= 1

    async def _give_way(self) -> None:
        # Busy or not is judged over at least IDLE_LOOK_SECS while the thread works:
        # within one millisecond after a nap the thread had the GIL, and the loop would
        # look idle; and `ingest` reads while no write is under way.
        while True:
            await asyncio.sleep(GIVE_WAY_EVERY_SECS if self.loop_busy else IDLE_LOOK_SECS)
            if not self._busy:
                continue
            since_wall, since_cpu = self._since
            wall, cpu = time.perf_counter(), time.thread_time()
            if wall - since_wall >= IDLE_LOOK_SECS:
                self.loop_busy = cpu - since_cpu > BUSY_SHARE * (wall - since_wall)
                self._since = wall, cpu
            if self.loop_busy:
                _nap()

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
            await _cancel(self._giving_way)
            self._giving_way = None
            self._executor = None
            executor.shutdown(wait=True)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _nap() -> None:
    # Blocks the loop on purpose, without the GIL: see the module docstring.
    time.sleep(GIVE_WAY_SECS)
