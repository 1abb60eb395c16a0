"""`CheckpointedTrail`: the trail as the tail sees it, each batch with its checkpoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from listener.model.event import Event
from sinks.base import AppendResult, AsyncLifecycle


class StatefulTrail(Protocol):
    """What `CheckpointedTrail` needs from a trail sink: state committed with the batch."""

    async def write(
        self, batch: Sequence[Event], *, source_state: Mapping[str, Mapping[str, Any]] | None = None
    ) -> AppendResult: ...


class CheckpointSource(Protocol):
    name: str

    def state_for(self, batch: Sequence[Event]) -> dict[str, Any] | None: ...


class CheckpointedTrail(AsyncLifecycle):
    """A TrailSink wrapper: every write also commits the sources' checkpoints for that batch.

    The checkpoints go into the same transaction as the events (the trail's
    `write(batch, source_state=…)`), so after a crash a source resumes exactly
    where the stored events end.
    """

    def __init__(self, trail: StatefulTrail, sources: Sequence[CheckpointSource]) -> None:
        self.trail = trail
        self.sources = list(sources)

    async def write(self, batch: Sequence[Event]) -> AppendResult:
        state = {}
        for source in self.sources:
            checkpoint = source.state_for(batch)
            if checkpoint is not None:
                state[source.name] = checkpoint
        if state:
            return await self.trail.write(batch, source_state=state)
        return await self.trail.write(batch)

    async def start(self) -> None:
        start = getattr(self.trail, "start", None)
        if start is not None:
            await start()

    async def aclose(self) -> None:
        close = getattr(self.trail, "aclose", None)
        if close is not None:
            await close()
