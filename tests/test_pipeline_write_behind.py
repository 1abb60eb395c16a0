"""Write-behind (`Pipeline(write_behind=True)`, as `docktrail ingest` writes): a full
batch is written while the caller reads the next, one batch on its way at a time;
batches keep their order, none is lost or written twice, and a failed write is
raised by every later `put`, `flush` and `aclose`."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from config.errors import TrailError
from listener.model.event import Event, natural_id
from listener.pipeline import Pipeline
from sinks.base import AppendResult, EventFilter
from sinks.sqlite import SQLiteTrail

T0 = 1_795_000_000_000_000_000
FOREVER = 60.0  # a flush interval no test waits for


def make_event(n: int) -> Event:
    return Event(
        id=natural_id("write-behind", n),
        time_ns=T0 + n * 1000,
        source="docker",
        host="h1",
        type="volume",
        action="create",
    )


class GatedTrail:
    """Writes on a thread of its own, as the SQLite trail does; each write waits for
    `gate` to be set, and a write of a batch holding `fail_on` raises."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.gate = threading.Event()
        self.started: list[list[str]] = []
        self.batches: list[list[str]] = []
        self.fail_on = fail_on

    async def write(self, batch: Sequence[Event], *, source_state: Any = None) -> AppendResult:
        ids = [e.id for e in batch]
        self.started.append(ids)
        if not await asyncio.to_thread(self.gate.wait, 10):
            raise TimeoutError("the test never opened the gate")
        if self.fail_on in ids:
            raise TrailError("disk full (test)")
        self.batches.append(ids)
        return AppendResult(stored=list(batch))


def pipeline_of(trail: Any, batch_size: int = 10) -> Pipeline:
    return Pipeline(trail, batch_size=batch_size, flush_interval_secs=FOREVER, write_behind=True)


async def put_all(pipeline: Pipeline, numbers: range) -> None:
    """`put` each event; a put that waited for the gated write would time out."""
    for n in numbers:
        await asyncio.wait_for(pipeline.put(make_event(n)), timeout=5)


async def test_a_full_batch_is_written_while_the_next_is_read() -> None:
    trail = GatedTrail()
    pipeline = pipeline_of(trail)
    await put_all(pipeline, range(10))
    assert trail.started == [[make_event(n).id for n in range(10)]]  # on its way...
    assert trail.batches == []  # ...and not done: put did not wait for it
    await put_all(pipeline, range(10, 19))  # the next batch is read meanwhile
    assert pipeline.pending == 9
    trail.gate.set()
    await pipeline.aclose()
    assert trail.batches == [
        [make_event(n).id for n in range(10)],
        [make_event(n).id for n in range(10, 19)],
    ]


async def test_one_batch_at_a_time_is_on_its_way() -> None:
    trail = GatedTrail()
    pipeline = pipeline_of(trail)
    await put_all(pipeline, range(19))
    tenth = asyncio.create_task(pipeline.put(make_event(19)))  # fills the second batch
    for _ in range(20):
        await asyncio.sleep(0)
    assert not tenth.done()  # waits for the first write before sending the second
    assert len(trail.started) == 1
    trail.gate.set()
    await asyncio.wait_for(tenth, timeout=5)
    await pipeline.aclose()
    assert [len(batch) for batch in trail.batches] == [10, 10]


async def test_order_is_kept_and_nothing_is_lost_or_written_twice() -> None:
    trail = GatedTrail()
    trail.gate.set()
    pipeline = Pipeline(
        trail,  # type: ignore[arg-type]
        batch_size=50,
        flush_interval_secs=0.001,  # the timer's flushes interleave with the full batches
        write_behind=True,
    )
    events = [make_event(n) for n in range(1, 1001)]
    for n, event in enumerate(events):
        await pipeline.put(event)
        if n % 37 == 0:
            await asyncio.sleep(0.002)
    await pipeline.aclose()
    written = [event_id for batch in trail.batches for event_id in batch]
    assert written == [e.id for e in events]
    assert pipeline.stats.stored == 1000
    assert pipeline.stats.received == 1000


async def test_a_failed_write_is_raised_by_every_later_call() -> None:
    trail = GatedTrail(fail_on=make_event(0).id)
    trail.gate.set()
    pipeline = pipeline_of(trail)
    for n in range(10):
        await pipeline.put(make_event(n))  # the failing batch leaves
    for n in range(10, 19):
        await pipeline.put(make_event(n))
    with pytest.raises(TrailError, match="disk full"):
        await pipeline.put(make_event(19))  # the next full batch finds it
    with pytest.raises(TrailError, match="disk full"):
        await pipeline.flush()
    with pytest.raises(TrailError, match="disk full"):
        await pipeline.aclose()
    assert trail.batches == []  # nothing after the failed batch was written


async def test_the_sqlite_trail_stores_the_same_chain_either_way(tmp_path: Path) -> None:
    chains = []
    for write_behind in (False, True):
        async with SQLiteTrail(tmp_path / f"trail-{write_behind}.db") as trail:
            pipeline = Pipeline(
                trail, batch_size=64, flush_interval_secs=FOREVER, write_behind=write_behind
            )
            async with pipeline:
                for n in range(1000):
                    await pipeline.put(make_event(n))
            chains.append(
                await trail.call(lambda t: [(e.seq, e.id, e.hash) for e in t.query(EventFilter())])
            )
    assert len(chains[1]) == 1000
    assert chains[1] == chains[0]


async def test_the_timer_sends_a_partial_batch_and_leaves_its_error_to_the_caller() -> None:
    unretrieved: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unretrieved.append(context))
    trail = GatedTrail(fail_on=make_event(0).id)
    trail.gate.set()
    pipeline = Pipeline(
        trail,  # type: ignore[arg-type]
        batch_size=10,
        flush_interval_secs=0.001,
        write_behind=True,
    )
    await pipeline.put(make_event(0))
    for _ in range(200):  # the timer sends the lone event; its write fails
        await asyncio.sleep(0.001)
        if trail.started:
            break
    assert trail.started == [[make_event(0).id]]
    await pipeline.put(make_event(1))  # the failed write is not done for: 1 waits
    await asyncio.sleep(0.05)  # the timer fires again and sends nothing after a failure
    assert trail.started == [[make_event(0).id]]
    with pytest.raises(TrailError, match="disk full"):
        await pipeline.aclose()
    gc.collect()  # a task whose exception nobody retrieved is reported when collected
    await asyncio.sleep(0)
    assert not unretrieved


class HoldFirstBatch:
    """A stage that holds the first stored batch in `after_write` until `release`, and
    takes a while before each later write (as the intent stage reads the trail)."""

    def __init__(self) -> None:
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def before_write(self, batch: list[Event]) -> list[Event]:
        if self.release.is_set():
            await asyncio.sleep(0.05)
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        if not self.release.is_set():
            self.holding.set()
            await self.release.wait()


async def test_aclose_waits_for_the_partial_batch_the_timer_sent_as_the_write_before_ended(
    tmp_path: Path,
) -> None:
    """The last batch of an ingest was lost now and then: aclose waited for the write
    before it, and the flush timer, due in the same turn of the loop as that write's
    end, sent the partial batch on its own; aclose returned without it and the trail
    closed under its write. Here the loop stands still until both are due, the end
    of the write first."""
    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: unretrieved.append(context))
    stage = HoldFirstBatch()
    events = [make_event(n) for n in range(74)]
    async with SQLiteTrail(tmp_path / "trail.db") as trail:
        pipeline = Pipeline(
            trail, stages=[stage], batch_size=64, flush_interval_secs=0.2, write_behind=True
        )
        for event in events:  # 64 leave at once; the last 10 start the flush timer
            await pipeline.put(event)
        closing = asyncio.create_task(pipeline.aclose())
        await asyncio.wait_for(stage.holding.wait(), timeout=10)
        loop.call_later(0.1, stage.release.set)  # before the timer, due 0.2 s after the puts
        time.sleep(0.3)  # the loop stands still: at its next turn both are due
        await asyncio.wait_for(closing, timeout=10)
    with SQLiteTrail(tmp_path / "trail.db") as trail:
        stored = [event.id for event in trail.query(EventFilter())]
    assert stored == [event.id for event in events]
    gc.collect()
    await asyncio.sleep(0)
    assert not unretrieved
