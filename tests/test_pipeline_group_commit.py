"""Group commit (`Pipeline(write_when_idle=True)`, as `docktrail run` writes): a batch
goes to the trail as soon as the write before it is done, not after the flush
timer; events keep their order, none is lost or written twice, and batches grow
with the load."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from listener.model.event import Event, natural_id
from listener.pipeline import Pipeline
from sinks.base import AppendResult, EventFilter
from sinks.sqlite import SQLiteTrail

T0 = 1_795_000_000_000_000_000
FOREVER = 60.0  # a flush interval no test waits for


def make_event(n: int) -> Event:
    return Event(
        id=natural_id("group-commit", n),
        time_ns=T0 + n * 1000,
        source="docker",
        host="h1",
        type="volume",
        action="create",
    )


class SlowTrail:
    """Keeps the batches it is given; each write takes `secs` (a busy disk)."""

    def __init__(self, secs: float = 0.0) -> None:
        self.secs = secs
        self.batches: list[list[str]] = []
        self.wrote = asyncio.Event()

    async def write(self, batch: Sequence[Event], *, source_state: Any = None) -> AppendResult:
        await asyncio.sleep(self.secs)
        self.batches.append([e.id for e in batch])
        self.wrote.set()
        return AppendResult(stored=list(batch))


async def test_a_lone_event_is_written_without_waiting_for_the_flush_timer() -> None:
    trail = SlowTrail()
    pipeline = Pipeline(trail, flush_interval_secs=FOREVER, write_when_idle=True)  # type: ignore[arg-type]
    await pipeline.put(make_event(1))
    # the timer (60 s) would fail this; group commit writes on the next turns of the loop
    await asyncio.wait_for(trail.wrote.wait(), timeout=5)
    assert trail.batches == [[make_event(1).id]]
    assert pipeline.pending == 0


async def test_without_it_the_timer_still_decides() -> None:
    trail = SlowTrail()
    pipeline = Pipeline(trail, flush_interval_secs=FOREVER)  # type: ignore[arg-type]
    await pipeline.put(make_event(1))
    for _ in range(20):
        await asyncio.sleep(0)
    assert trail.batches == []  # ingest and proxy keep batching by the timer
    await pipeline.aclose()
    assert trail.batches == [[make_event(1).id]]


async def test_under_load_order_is_kept_nothing_lost_and_batches_grow() -> None:
    trail = SlowTrail(secs=0.01)
    pipeline = Pipeline(
        trail,  # type: ignore[arg-type]
        batch_size=50,
        flush_interval_secs=FOREVER,
        write_when_idle=True,
    )
    events = [make_event(n) for n in range(1, 1001)]
    for n, event in enumerate(events):
        await pipeline.put(event)
        if n % 7 == 0:
            await asyncio.sleep(0.001)  # a source handing on what it read, bit by bit
    await pipeline.aclose()
    written = [event_id for batch in trail.batches for event_id in batch]
    assert written == [e.id for e in events]  # each once, in the order put
    assert max(len(batch) for batch in trail.batches) <= 50
    # events arriving during a write went together into the next one
    assert len(trail.batches) < len(events) / 5
    assert pipeline.stats.stored == len(events)


async def test_sqlite_trail_stores_every_event_in_order(tmp_path: Path) -> None:
    events = [make_event(n) for n in range(1, 301)]
    async with SQLiteTrail(tmp_path / "t.db") as trail:
        pipeline = Pipeline(trail, flush_interval_secs=FOREVER, write_when_idle=True)
        for n, event in enumerate(events):
            await pipeline.put(event)
            if n % 10 == 0:
                await asyncio.sleep(0)
        await pipeline.aclose()
        stored = await trail.call(lambda t: [e.id for e in t.query(EventFilter())])
    assert stored == [e.id for e in events]
    assert pipeline.stats.batches > 1
