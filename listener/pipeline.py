"""The pipeline every mode shares: events in, batches to the trail.

`run` (live), `ingest` (captured files) and `replay` differ only in their
sources; they all `put` events here. Events are written in batches: a batch is
closed when it reaches `batch_size` or when its oldest event has waited
`flush_interval_secs`, whichever comes first, so a burst is written in few
transactions and a lone event is still stored within a few tens of
milliseconds. With `write_when_idle` (the live service) a batch is written as
soon as the write before it is done: what arrives during a write joins the
next batch (group commit), so the delay to commit is about one write, not
the flush interval, and batches still grow with the load.

With `overlap_writes` (offline ingest) a full batch is handed to the trail's
thread and `put` returns at once: the next batch is read and parsed while
SQLite (which releases the GIL) appends this one. When that next batch is
full, this one's write is awaited and its stages run (rules, alerts) before
the next is handed over. At most one batch is in flight and batches are
written strictly in order, so the trail is the one a sequential pipeline
writes; a failed write raises from the next `put` or `flush`, before any
later batch is written.

Stages (correlation, enrichment, rules) plug in as `Stage`s: each gets the
batch before it is written (`before_write`) or the stored events after
(`after_write`), so an alert always points at a stored event.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from listener.model.event import Event
from sinks.base import AppendResult, AsyncLifecycle, TrailSink


class Stage(Protocol):
    async def before_write(self, batch: list[Event]) -> list[Event]: ...

    async def after_write(self, stored: Sequence[Event]) -> None: ...


@dataclass(slots=True)
class PipelineStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    batches: int = 0

    def add(self, result: AppendResult) -> None:
        self.stored += len(result.stored)
        self.duplicates += result.duplicates
        self.batches += 1


class Pipeline(AsyncLifecycle):
    def __init__(
        self,
        trail: TrailSink,
        *,
        stages: Sequence[Stage] = (),
        batch_size: int = 500,
        flush_interval_secs: float = 0.05,
        write_when_idle: bool = False,
        overlap_writes: bool = False,
    ) -> None:
        self._trail = trail
        self._stages = list(stages)
        self._batch_size = batch_size
        self._flush_interval = flush_interval_secs
        self._write_when_idle = write_when_idle
        self._overlap = overlap_writes
        self._in_flight: InFlight | None = None
        self._buffer: list[Event] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self.stats = PipelineStats()

    async def put(self, event: Event) -> None:
        self.stats.received += 1
        self._buffer.append(event)
        if len(self._buffer) >= self._batch_size:
            await self._flush(settle=not self._overlap)
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    @property
    def pending(self) -> int:
        """Events put but not yet written."""
        in_flight = self._in_flight.size if self._in_flight is not None else 0
        return len(self._buffer) + in_flight

    async def flush(self) -> None:
        """Write every event put so far, and wait for it."""
        await self._flush(settle=True)

    async def _flush(self, *, settle: bool) -> None:
        async with self._lock:
            self._cancel_timer()
            batch, self._buffer = self._buffer, []
            # The batch before this one is stored and judged before this one starts:
            # the stages see the calls a sequential pipeline makes, in its order, and
            # a failure stops here with nothing after it written.
            previous = await self._settle()
            if previous is not None:
                await self._stored(previous)
            for stage in self._stages if batch else ():
                batch = await stage.before_write(batch)
            if batch:
                self._in_flight = InFlight.start(self._trail, batch)
                if not settle:
                    await asyncio.sleep(0)  # one turn: the task hands the batch to the thread
            if settle:
                written = await self._settle()
                if written is not None:
                    await self._stored(written)

    async def _settle(self) -> AppendResult | None:
        """The result of the write in flight (None: none); raises what it raised."""
        in_flight, self._in_flight = self._in_flight, None
        return await in_flight.task if in_flight is not None else None

    async def _stored(self, result: AppendResult) -> None:
        self.stats.add(result)
        for stage in self._stages:
            await stage.after_write(result.stored)

    async def aclose(self) -> None:
        await self.flush()

    async def _flush_later(self) -> None:
        # Group commit: one turn of the loop lets what is already on its way join the
        # batch; a write in progress then holds the lock while more arrive.
        await asyncio.sleep(0 if self._write_when_idle else self._flush_interval)
        self._timer = None
        await self._flush(settle=not self._overlap)

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()


@dataclass(slots=True)
class InFlight:
    """A batch being appended on the trail's thread."""

    task: asyncio.Task[AppendResult]
    size: int

    @classmethod
    def start(cls, trail: TrailSink, batch: list[Event]) -> InFlight:
        return cls(asyncio.create_task(trail.write(batch)), len(batch))
