"""The service's threads keep working while the event loop runs Python (`listener.giveway`).

A thread that let go of the GIL for a read must take it back; a loop busy in
short slices takes it back first every time unless it gives way. Measured
without giving way (`giveway._nap` a no-op): the Docker events reader handed
over about 10 lines/s of the 5,000 offered, and `to_thread` jobs finished at
under one a second (bench/loop_contention.py); each test below then fails.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.busyloop import python_in_slices
from bench.loop_contention import Feed
from listener import giveway
from listener.app import tune_threads
from listener.model.event import Event
from listener.sources.auditd.tail import AuditLogTail
from listener.sources.docker_stream import EventStream
from tests.test_auditd import append, rm_call, tail_config, write_log
from tests.test_docker_source import FakeEngine, eventually, of, running

SLICE_SECS = 0.0001


@pytest.fixture(autouse=True)
def switch_interval() -> Iterator[None]:
    """As `docktrail run` sets it."""
    interval = sys.getswitchinterval()
    tune_threads()
    yield
    sys.setswitchinterval(interval)


class BusyLoop:
    """The running loop kept busy until the block ends."""

    async def __aenter__(self) -> BusyLoop:
        self._done = asyncio.Event()
        self._task = asyncio.create_task(python_in_slices(self._done, SLICE_SECS))
        await asyncio.sleep(0.05)  # busy before the threads start waiting
        return self

    async def __aexit__(self, *_: object) -> None:
        self._done.set()
        await self._task


async def test_the_events_reader_reads_while_the_loop_runs_python() -> None:
    read: list[object] = []
    with Feed(offered=5_000) as feed:
        stream = EventStream(feed.events(), lambda: None, 0, read.append)
        async with BusyLoop():
            with giveway.of_running_loop().in_flight():
                stream.start()
                await asyncio.sleep(1.0)
                count = len(read)
        stream.close()
    assert count >= 1_000  # of ~5,000 offered; ~10 without giving way


async def test_to_thread_jobs_finish_while_the_loop_runs_python(tmp_path: Path) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"x" * 4096)

    def job() -> int:
        with path.open("rb", buffering=0) as file:
            for _ in range(100):  # each read lets go of the GIL and takes it back
                file.seek(0)
                file.read(4096)
        return 1

    async def one_after_another() -> int:  # as the audit tail's reading cycles go
        return sum([await giveway.to_thread(job) for _ in range(20)])

    async with BusyLoop():
        assert await asyncio.wait_for(one_after_another(), 10) == 20


async def test_the_docker_source_keeps_reading_the_engine_while_the_loop_runs_python() -> None:
    """`DockerSource.run` holds the loop giving way to its threads for as long as it runs."""
    engine = FakeEngine()
    async with running(engine) as (_, stored), BusyLoop():
        for n in range(2_000):
            engine.emit("volume", "create", f"v{n}", driver="local")
        await eventually(lambda: len(of(stored, action="create")) == 2_000, timeout=20)


async def test_the_audit_tail_keeps_reading_while_the_loop_runs_python(tmp_path: Path) -> None:
    """Its reading cycles run on a thread; its pump holds the loop giving way to it."""
    log = write_log(tmp_path / "audit.log", rm_call("95.000:1", "first"))
    events: list[Event] = []
    async with AuditLogTail(tail_config(log), "h1") as tail:

        async def take() -> None:
            async for event in tail:
                events.append(event)

        taker = asyncio.create_task(take())
        await eventually(lambda: len(events) == 1)
        async with BusyLoop():
            for n in range(300):  # appended as auditd writes: a cycle reads what is there
                append(log, rm_call(f"96.{n:03d}:{n + 2}", f"c{n}"))
                await asyncio.sleep(0.001)
            await eventually(lambda: len(events) == 301, timeout=10)
    await taker


async def test_one_watcher_per_loop_that_stops_when_no_thread_works() -> None:
    watcher = giveway.of_running_loop()
    assert giveway.of_running_loop() is watcher
    with watcher.in_flight():
        first = watcher._watcher
        with watcher.in_flight():
            assert watcher._watcher is first  # the naps of two threads do not add up
    assert first is not None
    await asyncio.wait_for(asyncio.shield(first), 1)  # at its next look, no thread works
    with watcher.in_flight():
        assert watcher._watcher is not first and not watcher._watcher.done()


def test_each_loop_has_its_own_watcher() -> None:
    async def watcher() -> giveway.GiveWay:
        return giveway.of_running_loop()

    assert asyncio.run(watcher()) is not asyncio.run(watcher())


async def test_a_busy_loop_is_judged_busy_only_while_a_thread_works() -> None:
    watcher = giveway.of_running_loop()
    async with BusyLoop():
        await asyncio.sleep(0.1)  # busy, but no thread works: nothing judged
        assert not watcher.loop_busy
        with watcher.in_flight():
            await asyncio.sleep(0.1)
            assert watcher.loop_busy
    with watcher.in_flight():
        await asyncio.sleep(0.1)  # idle now
        assert not watcher.loop_busy
