"""The pipeline every mode shares: events in, batches to the trail.

`run` (live), `ingest` (captured files) and `replay` differ only in their
sources; they all `put` events here. Events are written in batches: a batch is
closed when it reaches `batch_size` or when its oldest event has waited
`flush_interval_secs`, whichever comes first, so a burst is written in few
transactions and a lone event is still stored within a few tens of
milliseconds.

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
    ) -> None:
        self._trail = trail
        self._stages = list(stages)
        self._batch_size = batch_size
        self._flush_interval = flush_interval_secs
        self._buffer: list[Event] = []
        self._lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None
        self.stats = PipelineStats()

    async def put(self, event: Event) -> None:
        self.stats.received += 1
        self._buffer.append(event)
        if len(self._buffer) >= self._batch_size:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    @property
    def pending(self) -> int:
        """Events put but not yet written."""
        return len(self._buffer)

    async def flush(self) -> None:
        async with self._lock:
            self._cancel_timer()
            batch, self._buffer = self._buffer, []
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
        await asyncio.sleep(self._flush_interval)
        self._timer = None
        await self.flush()

    def _cancel_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
