"""At a stop, what the Docker source read is written while the audit source still runs:
an Engine event read just before SIGTERM waits for its audit records (the barrier) and
gets the verdict they give, not "audit log lags behind the Engine". The two sources are
stand-ins here; the pipeline, its stages and the stop sequence are the service's own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

from config.models import DocktrailConfig
from listener.app import _run_until_stopped
from listener.model.event import Actor, Event, natural_id
from listener.pipeline import Pipeline
from sinks.memory import MemoryTrail


class DockerStandIn:
    """Reads one event, then waits to be stopped (as `DockerSource.run`)."""

    on_sweep = None
    engine = None

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self._stopped = asyncio.Event()

    async def run(self) -> None:
        event = Event(
            id=natural_id("stop-order", 1), time_ns=1, source="docker", host="h1",
            type="container", action="create", actor=Actor(id="c1", name="raw"),
        )  # fmt: skip
        await self.pipeline.put(event)
        await self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()


class AuditStandIn:
    sessions = None

    def __init__(self) -> None:
        self.closed = False

    async def start(self) -> None:
        return None

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._nothing()

    async def _nothing(self) -> AsyncIterator[Event]:
        await asyncio.Event().wait()
        yield  # type: ignore[misc]  # never: an audit log with nothing new

    async def aclose(self) -> None:
        self.closed = True


class AuditOpenWhenWritten:
    """A stage that notes, for each batch, whether the audit source was still open."""

    def __init__(self, audit: AuditStandIn) -> None:
        self.audit = audit
        self.open_at_write: list[bool] = []

    async def before_write(self, batch: list[Event]) -> list[Event]:
        self.open_at_write.append(not self.audit.closed)
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        return None


async def test_what_was_read_is_written_before_the_audit_source_closes() -> None:
    audit = AuditStandIn()
    stage = AuditOpenWhenWritten(audit)
    # A long flush interval: the event is still in the pipeline when the stop comes.
    pipeline = Pipeline(MemoryTrail(), stages=[stage], flush_interval_secs=60)
    source = DockerStandIn(pipeline)
    stop = asyncio.Event()
    config = DocktrailConfig.model_validate({"auditd": {"enabled": False}})
    source_task = asyncio.create_task(source.run())
    running = asyncio.create_task(
        _run_until_stopped(config, source, source_task, audit, pipeline, stop)  # type: ignore[arg-type]
    )
    while pipeline.pending == 0:
        await asyncio.sleep(0.01)
    stop.set()
    await running
    assert audit.closed and stage.open_at_write == [True]
