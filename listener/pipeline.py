"""The pipeline every mode shares: events in, batches to the trail.

`run` (live), `ingest` (captured files) and `replay` differ only in their
sources; they all `put` events here. Events are written in batches: a batch is
closed when it reaches `batch_size` or when its oldest event has waited
`flush_interval_secs`, whichever comes first, so a burst is written in few
transactions and a lone event is still stored within a few tens of
milliseconds. With `write_when_idle` (the live service) a batch is written as
soon as the write before it is done: what arrives during a write joins the
next batch (group commit), so the delay to commit is about one write, not
the flush interval, and batches still grow with the load. With
`write_behind` (`ingest`, which reads as fast as it can) a full batch is
written while the caller reads the next one, one batch at a time: the write
runs on the trail's thread, so reading and writing overlap on two cores
(bench/ingest_rate.py). Batches are still written in order, and a write's
error is raised by the next `put`, `flush` or `aclose`, and by every one after.

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
        write_behind: bool = False,
    ) -> None:
        self._trail = trail
        self._stages = list(stages)
        self._batch_size = batch_size
        self._flush_interval = flush_interval_secs
        self._write_when_idle = write_when_idle
        self._buffer: list[Event] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self._write_behind = write_behind
        self._writing: asyncio.Task[None] | None = None
        self.stats = PipelineStats()

    async def put(self, event: Event) -> None:
        self.stats.received += 1
        self._buffer.append(event)
        if len(self._buffer) >= self._batch_size:
            if self._write_behind:
                await self._write_full_batch()
            else:
                await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    @property
    def pending(self) -> int:
        """Events put but not yet written."""
        return len(self._buffer)

    async def _write_full_batch(self) -> None:
        """Write-behind: the full batch goes to the trail while the caller reads the next.

        At most one batch is on its way: the one before is waited for (and its error,
        if any, raised here) first. The write itself runs on the trail's thread, so the
        turn of the loop given to it starts the write and the caller goes on."""
        await self._written()
        self._send()
        await asyncio.sleep(0)

    def _send(self) -> None:
        batch, self._buffer = self._buffer, []
        if batch:
            self._writing = asyncio.create_task(self._flush_batch(batch))

    def _send_if_free(self) -> None:
        """Write-behind's timer: the partial batch leaves, unless a write is on its way
        (it then leaves with the next) or failed (the caller's next call raises that)."""
        writing = self._writing
        if writing is None or (
            writing.done() and not writing.cancelled() and writing.exception() is None
        ):
            self._send()

    async def _written(self) -> None:
        """Wait until no batch is on its way (write-behind), raising what a write raised.

        The timer may send the partial batch in the turn of the loop in which the
        write awaited here ends: that one is waited for too."""
        while (writing := self._writing) is not None:
            await writing  # a failed write stays: every later put and flush raises it again
            if self._writing is writing:
                self._writing = None

    async def flush(self) -> None:
        # The partial batch goes with this flush: the timer must not send it on its own
        # while the flush waits for the write before (aclose would return before it).
        self._cancel_timer()
        await self._written()
        async with self._lock:
            self._cancel_timer()
            batch, self._buffer = self._buffer, []
            await self._write_locked(batch)

    async def _flush_batch(self, batch: list[Event]) -> None:
        async with self._lock:
            await self._write_locked(batch)

    async def _write_locked(self, batch: list[Event]) -> None:
        if not batch:
            return
        for stage in self._stages:
            batch = await stage.before_write(batch)
        result = await self._trail.write(batch)
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
        if self._write_behind:
            self._send_if_free()  # its write's error belongs to the caller, not this task
        else:
            await self.flush()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
