"""`LiveReader`: one read cycle of the live audit tail, on a worker thread.

A cycle reads the new lines, holds the last event's lines back until it is complete,
assembles and converts the events closed, and says where a restart must begin (the
checkpoint) and how far the log has been read (the watermark). `AuditLogTail`
(`tail.py`) runs the cycles and hands their results on.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from config.errors import InputError
from config.models import AuditdConfig
from listener.bounds import active_limits
from listener.sources.auditd.barrier import AuditBarriers
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
from listener.sources.auditparse import (
    AuditAssembler,
    AuditEvent,
    parse_time_ns,
)


class LiveReader:
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
