"""`AuditLogTail`: the live audit source, across rotations, with its checkpoint in the
same transaction as its events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from config.errors import InputError
from config.models import AuditdConfig
from listener import giveway
from listener.bounds import active_limits
from listener.correlate import Correlator
from listener.coverage import LiveCoverage
from listener.model.event import Event, natural_id
from listener.sessions.service import ExecSessions
from listener.sources.auditd.barrier import FAST_POLL_SECS, AuditBarriers
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditd.fields import NS, malformed_error
from listener.sources.auditd.follow import (
    Cycle,
    FedSpan,
    FileId,
    Follower,
    Span,
    _Batch,
    stamp_of,
)
from listener.sources.auditd.names import IdNames
from listener.sources.auditparse import (
    AuditAssembler,
    AuditEvent,
    parse_time_ns,
)
from sinks.base import AsyncLifecycle

log = logging.getLogger(__name__)


class _LiveReader:
    """One read cycle of the live tail (runs in a worker thread)."""

    def __init__(
        self, config: AuditdConfig, converter: AuditConverter, barriers: AuditBarriers | None = None
    ) -> None:
        # A cancelled asyncio.to_thread does not stop its thread: close() waits for
        # the cycle in progress before the file descriptor goes away.
        self._lock = threading.Lock()
        self.follower = Follower(config.log_file)
        self.converter = converter
        self.assembler = AuditAssembler(
            str(config.log_file),
            config.event_timeout_secs,
            active_limits().max_line_bytes,
        )
        self.lag_ns = round(config.audit_lag_secs * NS)
        self.barriers = barriers
        # Reads come every few ms while a barrier is on its way: then "quiet for a poll
        # interval" is counted in time (less the sleep's slack), not in empty reads.
        self.quiet_ns = round(config.poll_interval_secs * NS * 0.9)
        self._quiet_since = 0
        self._hurried = False  # a read of this quiet stretch came early, for a barrier
        self._empty_reads = 0
        self.busy_grace_ns = 200_000_000  # interleaved records of one event come within this
        self._held: list[Span] = []  # the last event's lines, not fed yet
        self._fed: deque[FedSpan] = deque()  # fed since the oldest open event began
        self._global = 0  # lines fed so far: the assembler's line numbers
        self._serial = 0
        self._time_ns = 0

    def cycle(self) -> Cycle:
        with self._lock:
            return self._cycle()

    def _cycle(self) -> Cycle:
        started = time.time_ns()
        quiet_now = time.monotonic_ns()
        hurried = self.barriers is not None and self.barriers.outstanding
        batch, at_eof = self.follower.read()
        closed: list[AuditEvent] = []
        ours_only = False  # our barriers alone: the log is as quiet as an empty read says
        if batch is not None:
            if self.barriers is not None:
                batch.marks = self.barriers.seen_in(batch.lines)
                ours_only = len(batch.marks) == len(batch.lines)
            if not ours_only:
                # A read that reached the end counts as the first quiet look: the
                # cycle sleeps a poll interval instead of reading again at once (an
                # empty read costs a whole cycle), and an event held back is still
                # fed after one quiet interval, as before.
                self._empty_reads = 1 if at_eof else 0
                self._quiet_since, self._hurried = quiet_now, hurried
            pending = [*self._held, (batch, 0, len(batch.lines))]
            # A barrier as the last line releases the event before it; itself is never fed.
            ready, held = _hold_last_event(pending)
            self._held = [] if _only_marks(held) else held
            closed += self._feed(ready)
            closed += self.assembler.flush(self.assembler.newest_ns - self.busy_grace_ns)
        if (batch is None or (ours_only and at_eof)) and self._quiet_after(quiet_now, hurried):
            # Quiet for a whole poll interval (two empty reads in a row): whatever is
            # open or held back is complete, auditd writes an event's records at once.
            closed += self._feed(self._held)
            self._held = []
            closed += self.assembler.flush_all()
        result = Cycle(idle=at_eof, gap=self.follower.gap, open=self.follower.fd is not None)
        self.follower.gap = None
        result.malformed = self._malformed()
        convert, converted = self.converter.convert_bounded, result.converted
        result.auditing = _auditing_change(closed, self.converter.config.cli_key)
        for event in closed:
            try:
                item = convert(event)
            except InputError as exc:
                result.malformed.append(exc)
                continue
            if item is not None:
                converted.append(item)
        if closed:
            self._serial, self._time_ns = closed[-1].serial, closed[-1].time_ns
        result.checkpoint = self._checkpoint()
        result.watermark_ns = self._watermark(started, result.idle)
        return result

    def _quiet_after(self, now_ns: int, hurried: bool) -> bool:
        """An empty read: whether the log has now been quiet for a poll interval."""
        self._empty_reads += 1
        if self._empty_reads == 1:
            self._quiet_since, self._hurried = now_ns, hurried
        self._hurried |= hurried
        if self._empty_reads < 2:
            return False
        return not self._hurried or now_ns - self._quiet_since >= self.quiet_ns

    def _feed(self, spans: list[Span]) -> list[AuditEvent]:
        closed: list[AuditEvent] = []
        feed_lines, fed = self.assembler.feed_lines, self._fed
        for batch, first, last in spans:
            for lo, hi in _unmarked(batch, first, last):
                fed.append((self._global + 1, batch, lo, hi))
                closed += feed_lines(batch.lines[lo:hi], self._global + 1)
                self._global += hi - lo
        return closed

    def _malformed(self) -> list[InputError]:
        if not self.assembler.malformed:
            return []
        errors = []
        for bad in self.assembler.drain_malformed():
            for first, batch, lo, hi in self._fed:
                if first <= bad.line < first + hi - lo:
                    number = batch.number + lo + bad.line - first
                    errors.append(malformed_error(bad, batch.file.path, number))
                    break
            else:
                errors.append(malformed_error(bad))
        self.converter.counters.malformed += len(errors)
        return errors

    def _checkpoint(self) -> dict[str, Any] | None:
        """Where a restart must begin so that no event is lost: the oldest incomplete one."""
        oldest = self.assembler.oldest_open_line
        fed = self._fed
        if oldest is not None:
            while fed and fed[0][0] + fed[0][3] - fed[0][2] <= oldest:
                fed.popleft()  # every line of it is before the oldest open event
            if fed:
                first, batch, lo, hi = fed[0]
                if first < oldest:
                    lo, first = lo + oldest - first, oldest
                    fed[0] = (first, batch, lo, hi)
                return self._position(batch.file, batch.offset(lo), batch.number + lo - 1)
        fed.clear()
        if self._held:
            batch, lo, _ = self._held[0]
            return self._position(batch.file, batch.offset(lo), batch.number + lo - 1)
        follower = self.follower
        if follower.file is None:
            return None
        return self._position(follower.file, follower.offset, follower.line)

    def _position(self, file: FileId, offset: int, line: int) -> dict[str, Any]:
        return {
            "dev": file.dev,
            "ino": file.ino,
            "offset": offset,
            "line": line,
            "before": self.follower.fingerprint(file, offset),
            "path": file.path,
            "serial": self._serial,
            "time_ns": self._time_ns,
        }

    def _watermark(self, started_ns: int, idle: bool) -> int:
        """Audit time before which every record has been read and its event emitted.

        Read to the end after `started_ns`: auditd has written what the kernel queued
        until `audit_lag_secs` before; read past our barrier sent at S: everything
        queued before S. Events still open or held back bound both.
        """
        floor = started_ns - self.lag_ns
        if self.barriers is not None:
            floor = max(floor, self.barriers.passed_ns)
        if idle and not self._held and self.assembler.open_events == 0:
            return floor
        bounds = [floor]
        oldest = self.assembler.oldest_open_ns
        if oldest is not None:
            bounds.append(oldest - 1)
        if self._held:
            batch, lo, _ = self._held[0]
            held = _stamp_time(batch.lines[lo])
            if held is not None:
                bounds.append(held - 1)
        return min(bounds)

    def close(self) -> None:
        with self._lock:
            self.follower.close()


def _auditing_change(events: Sequence[AuditEvent], cli_key: str) -> str | None:
    """ "stopped" when auditd's log says it stopped or was disabled, or that the docker CLI
    rule was removed (nothing more is recorded); "started" when it says the opposite."""
    change = None
    for event in events:
        kind = event.records[0].type
        if kind in ("DAEMON_END", "DAEMON_ABORT"):
            change = "stopped"
        elif kind in ("DAEMON_START", "DAEMON_RESUME"):
            change = "started"
        elif kind == "CONFIG_CHANGE":
            change = _config_change(event.records[0].fields, cli_key) or change
    return change


def _config_change(fields: Mapping[str, str], cli_key: str) -> str | None:
    enabled = fields.get("audit_enabled")
    if enabled is not None:
        return "stopped" if enabled == "0" else "started"
    if fields.get("key") == cli_key:
        return {"remove_rule": "stopped", "add_rule": "started"}.get(fields.get("op", ""))
    return None


def _hold_last_event(spans: list[Span]) -> tuple[list[Span], list[Span]]:
    """Split off the trailing run of lines of the last record's event: ``(ready, held)``.

    Those lines are held back until more data or an idle poll: the rest of
    their event may still be on its way (not after its EOE: nothing is).
    """
    batch, lo, hi = spans[-1]
    stamp = stamp_of(batch.lines[hi - 1]) if hi > lo else None
    if stamp is None or _ends_event(batch.lines[hi - 1]):
        return spans, []
    for index in range(len(spans) - 1, -1, -1):
        batch, lo, hi = spans[index]
        lines, cut = batch.lines, hi
        while cut > lo and stamp_of(lines[cut - 1]) == stamp:
            cut -= 1
        if cut > lo or index == 0:  # the run starts in this span
            ready = [*spans[:index], (batch, lo, cut)]
            held = [(batch, cut, hi)] if cut < hi else []
            return ready, held + spans[index + 1 :]
    raise AssertionError("unreachable")


def _ends_event(line: str) -> bool:
    """EOE: nothing of its event comes after it. (PROCTITLE is not taken as an end:
    closing events there lost records of busybox subshells' commands.)"""
    if line.startswith("node="):
        line = line[line.find(" ") + 1 :]
    return line.startswith("type=EOE ")


def _unmarked(batch: _Batch, lo: int, hi: int) -> list[tuple[int, int]]:
    """Ranges of lines lo..hi-1 without our barrier lines."""
    if not batch.marks:
        return [(lo, hi)] if lo < hi else []
    ranges, start = [], lo
    for index in sorted(m for m in batch.marks if lo <= m < hi):
        if start < index:
            ranges.append((start, index))
        start = index + 1
    if start < hi:
        ranges.append((start, hi))
    return ranges


def _only_marks(spans: list[Span]) -> bool:
    """Held back lines that are our barrier alone (its event is complete, and not fed)."""
    return bool(spans) and all(not _unmarked(batch, lo, hi) for batch, lo, hi in spans)


def _stamp_time(text: str) -> int | None:
    stamp = stamp_of(text)
    return parse_time_ns(stamp.partition(":")[0]) if stamp else None


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
        self._reader = _LiveReader(config, self.converter, self.barriers)
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
        handed = self._handed
        while True:
            item = await self._queue.get()
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
        if cycle.gap is not None:
            await self._queue.put((self._gap_event(cycle.gap), None))
        for item in cycle.converted:
            if item.call is not None and self.correlator is not None:
                self.correlator.add_call(item.call)
            if item.process is not None and self.sessions is not None:
                self.sessions.add(item.process)
            if item.event is not None:
                await self._queue.put((item.event, None))
        if cycle.checkpoint is not None:
            await self._queue.put((None, cycle.checkpoint))
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
