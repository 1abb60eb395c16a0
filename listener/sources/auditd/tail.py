"""`AuditLogTail`: the live audit source, across rotations, with its checkpoint in the
same transaction as its events.

The reading itself runs in a worker thread, one cycle at a time (`reader.py`): here
the cycles are scheduled and their events, checkpoints and watermarks handed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from config.models import AuditdConfig
from listener import giveway
from listener.correlate import Correlator
from listener.coverage import LiveCoverage
from listener.model.event import Event, natural_id
from listener.sessions.service import ExecSessions
from listener.sources.auditd.barrier import FAST_POLL_SECS, AuditBarriers
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditd.fields import NS
from listener.sources.auditd.follow import Cycle
from listener.sources.auditd.names import IdNames
from listener.sources.auditd.reader import LiveReader
from sinks.base import AsyncLifecycle

log = logging.getLogger(__name__)


_END = object()
_RETRY_SECS = 5.0


class AuditLogTail(AsyncLifecycle):
    """Live source: follows the audit log, yields kept events, feeds the correlator.

    ``async with AuditLogTail(config, host, correlator=c, checkpoint=cp) as tail:
    async for event in tail: await pipeline.put(event)``. Every event handed out
    must be put into the pipeline, in order: the checkpoint of a written batch
    (`state_for`) is only as far as the events it contains. With `auditd.barrier`
    the tail hooks the correlator (`on_wait`): an event waiting for the log gets
    an audit barrier (`barriers`, or one made here).
    """

    name = "auditd"

    def __init__(
        self,
        config: AuditdConfig,
        host: str,
        *,
        correlator: Correlator | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        names: IdNames | None = None,
        coverage: LiveCoverage | None = None,
        sessions: ExecSessions | None = None,
        barriers: AuditBarriers | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.correlator = correlator
        self.sessions = sessions  # exec sessions follow the process records
        self.coverage = coverage
        self.converter = AuditConverter(config, host, names)
        self._checkpoint = dict(checkpoint) if checkpoint else None
        if barriers is None and config.barrier and correlator is not None:
            barriers = AuditBarriers()
        self.barriers = barriers if config.barrier else None
        self._reader = LiveReader(config, self.converter, self.barriers)
        self._wake = asyncio.Event()  # an Engine event waits: read (and send a barrier) now
        if self.barriers is not None and correlator is not None:
            correlator.on_wait = self._barrier_wanted
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100_000)
        self._task: asyncio.Task[None] | None = None
        self._handed: deque[tuple[str | None, dict[str, Any] | None]] = deque()
        self.malformed = 0
        self.failed: BaseException | None = None

    def queue_depth(self) -> int:
        """Audit events read and not yet handed on."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Opens the log (a missing or unreadable one is retried: it never stops `run`)."""
        if self._task is not None:
            return
        try:
            await asyncio.to_thread(
                self._reader.follower.open, self._checkpoint, self.config.start_at
            )
        except OSError as exc:
            self._failing(exc)
        self._task = asyncio.create_task(self._pump(), name="auditd-tail")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._reader.close)
        if self.barriers is not None:
            self.barriers.close()
        if self.correlator is not None:
            self.correlator.close()
        while self._queue.full():  # not handed out, not checkpointed: read again next time
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        handed, queue = self._handed, self._queue
        while True:
            # queue.get() without a coroutine per event when one is waiting (the same)
            item = await queue.get() if queue.empty() else queue.get_nowait()
            if item is _END:
                self._queue.put_nowait(_END)  # for other iterators
                return
            event, checkpoint = item
            if event is None:
                if handed and handed[-1][0] is None:
                    handed.pop()  # consecutive checkpoints: the newer one says it all
                handed.append((None, checkpoint))
                continue
            handed.append((event.id, None))
            yield event

    def state_for(self, batch: Sequence[Event]) -> dict[str, Any] | None:
        """The checkpoint to commit with `batch`: as far as every handed-out event is in it.

        Every event counts, the tail's own `gap` records (source `docktrail`) too:
        counting only audit events held the checkpoint at the first gap for good,
        and the handed-out list grew with every event after it.
        """
        ids = {e.id for e in batch}
        handed, state = self._handed, None
        while handed:
            event_id, checkpoint = handed[0]
            if event_id is not None and event_id not in ids:
                break
            handed.popleft()
            if checkpoint is not None:
                state = checkpoint
        return state

    async def _pump(self) -> None:
        # The reading cycles run on a thread: a busy loop gives way to it. Held for the
        # pump's life, not per cycle: cycles come hundreds of times a second.
        with giveway.of_running_loop().in_flight():
            await self._cycles(self.config.poll_interval_secs)

    async def _cycles(self, poll: float) -> None:
        while True:
            if self.barriers is not None:
                self.barriers.step()
            try:
                cycle = await asyncio.to_thread(self._reader.cycle)
            except Exception as exc:  # must not stop the service, nor hold Docker events
                self._failing(exc)
                await asyncio.sleep(_RETRY_SECS)
                continue
            self.failed = None
            await self._deliver(cycle)
            if cycle.idle:
                await self._pause(poll)

    async def _pause(self, poll: float) -> None:
        """A poll interval; a few ms while a barrier is on its way; woken by a waiting event."""
        barriers = self.barriers
        delay = FAST_POLL_SECS if barriers is not None and barriers.outstanding else poll
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()
        self._wake.clear()

    def _barrier_wanted(self, time_ns: int) -> None:
        """The correlator's hook: an Engine event of `time_ns` waits for the log."""
        assert self.barriers is not None
        self.barriers.want(time_ns)
        self._wake.set()

    def _failing(self, exc: Exception) -> None:
        if repr(exc) != repr(self.failed):
            log.error("cannot read the audit log %s: %s", self.config.log_file, exc)
        self.failed = exc
        if self.coverage is not None:
            self.coverage.lost(f"cannot read the audit log {self.config.log_file}: {exc}")
        if self.correlator is not None:  # nothing comes until the retry: do not make events wait
            self.correlator.advance(time.time_ns() + round((_RETRY_SECS + 1) * NS))

    async def _deliver(self, cycle: Cycle) -> None:
        for error in cycle.malformed:
            self.malformed += 1
            log.warning("skipped: %s", error)
        queue = self._queue
        if cycle.gap is not None:
            await queue.put((self._gap_event(cycle.gap), None))
        for item in cycle.converted:
            if item.call is not None and self.correlator is not None:
                self.correlator.add_call(item.call)
            if item.process is not None and self.sessions is not None:
                self.sessions.add(item.process)
            if item.event is not None:
                # queue.put() without a coroutine per event while there is room (the same)
                if queue.full():
                    await queue.put((item.event, None))
                else:
                    queue.put_nowait((item.event, None))
        if cycle.checkpoint is not None:
            await queue.put((None, cycle.checkpoint))
        if self.correlator is not None:
            self.correlator.advance(cycle.watermark_ns)
        self._cover(cycle)

    def _cover(self, cycle: Cycle) -> None:
        coverage = self.coverage
        if coverage is None:
            return
        if not cycle.open:
            coverage.lost(f"audit log {self.config.log_file} does not exist or is not readable")
            return
        if cycle.auditing == "stopped":
            coverage.halt("auditd stopped, or its docker CLI rule was removed (its log says so)")
        elif cycle.auditing == "started":
            coverage.resume()
        # A first open resumes at the checkpoint: records from its time on are read again.
        first = coverage.read_through_ns < 0
        resumed = self._checkpoint.get("time_ns") if self._checkpoint and first else None
        since = resumed if isinstance(resumed, int) and resumed > 0 else None
        coverage.reading(since_ns=since, read_through_ns=cycle.watermark_ns)
        if cycle.gap is not None:
            coverage.broken()  # records may be missing up to here

    def _gap_event(self, reason: str) -> Event:
        log.warning("audit records may be missing: %s", reason)
        now = time.time_ns()
        return Event(
            id=natural_id("docktrail", "audit-log", "gap", self.host, now),
            time_ns=now,
            source="docktrail",
            host=self.host,
            type="audit-log",
            action="gap",
            attributes={"reason": reason, "log_file": str(self.config.log_file)},
        )
