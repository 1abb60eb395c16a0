"""The event loop giving way to the threads it waits on.

The service reads and writes on threads: the trail's writer, the Docker events
stream's reader, the audit log's reader, the Engine API's pool. They share one
GIL with the event loop. Each lets go of it for its blocking work (a read, an
SQLite statement) and must take it back to go on. A loop that runs Python in
short slices lets go of the GIL for a moment at every iteration (its poll) and
takes it back before a waiting thread wakes: CPython then never asks the loop
to hand the GIL over, and the thread waits for as long as the loop stays busy.
Measured on the 2-core machine: a write of 50 events did not finish in 2
minutes while the loop ran Python in 2 ms slices (bench/trail_contention.py);
a thread reading lines from a socket, as the Docker events reader does, read 10
to 37 lines/s instead of 9,300 while the loop ran Python in 0.1 ms slices
(bench/loop_contention.py). dockerd drops the events of a reader that does not
keep up, and says nothing.

So while some thread works for the loop (`in_flight`) and the loop's own
thread used more than `BUSY_SHARE` of the time (judged over `IDLE_LOOK_SECS` or
more, on the loop thread's CPU clock), the loop naps `GIVE_WAY_SECS` every
`GIVE_WAY_EVERY_SECS`: it sleeps without the GIL, and a waiting thread takes
it. That is at most a tenth of the loop's time, only while a thread works and
the loop is busy. Otherwise the loop is looked at every `IDLE_LOOK_SECS` only:
each look takes the GIL from the threads for a moment (a look every 5 ms cost
`ingest` about 4 %), and not at all while no thread works. One watcher per
loop serves every thread, so the naps do not add up.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

GIVE_WAY_EVERY_SECS = 0.001
GIVE_WAY_SECS = 0.0001  # long enough for a waiting thread to wake and take the GIL
IDLE_LOOK_SECS = 0.025
BUSY_SHARE = 0.2  # of the time threads worked, on the loop thread's CPU clock


class GiveWay:
    """The watcher of one event loop: `in_flight` while a thread works for it."""

    def __init__(self) -> None:
        self._working = 0  # threads at work for the loop
        self._since = 0.0, 0.0  # wall and loop-thread CPU clocks when last judged
        self._watcher: asyncio.Task[None] | None = None
        # The loop ran Python for more than BUSY_SHARE of the time while threads
        # worked, when last judged: a thread then asks for the GIL as seldom as it
        # can (`sinks.sqlite.bulk.insert_rows`).
        self.loop_busy = False

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """While a thread works for the loop; enter and leave on the loop's thread. The
        watcher stops at its next look once no thread works."""
        if not self._working:  # the loop is judged on what it does while threads work
            self._since = time.perf_counter(), time.thread_time()
        self._working += 1
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="docktrail-give-way"
            )
        try:
            yield
        finally:
            self._working -= 1

    async def _watch(self) -> None:
        # Judged over at least IDLE_LOOK_SECS while threads work: within one
        # millisecond after a nap a thread had the GIL, and the loop would look idle;
        # and `ingest` reads while no write is under way.
        while self._working:
            await asyncio.sleep(GIVE_WAY_EVERY_SECS if self.loop_busy else IDLE_LOOK_SECS)
            if not self._working:
                return
            since_wall, since_cpu = self._since
            wall, cpu = time.perf_counter(), time.thread_time()
            if wall - since_wall >= IDLE_LOOK_SECS:
                self.loop_busy = cpu - since_cpu > BUSY_SHARE * (wall - since_wall)
                self._since = wall, cpu
            if self.loop_busy:
                _nap()


_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GiveWay] = (
    weakref.WeakKeyDictionary()
)


def of_running_loop() -> GiveWay:
    """The running loop's watcher (one per loop)."""
    loop = asyncio.get_running_loop()
    watcher = _watchers.get(loop)
    if watcher is None:
        watcher = _watchers[loop] = GiveWay()
    return watcher


async def to_thread(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`asyncio.to_thread`, the loop giving way to that thread while it works."""
    with of_running_loop().in_flight():
        return await asyncio.to_thread(fn, *args, **kwargs)


def _nap() -> None:
    # Blocks the loop on purpose, without the GIL: see the module docstring.
    time.sleep(GIVE_WAY_SECS)
