"""Offline ingest: captured files through the same pipeline as the live service.

With `--audit-log` files beside `--docker-events`, the two are separate
captures of the same time span, and ingest correlates them: it walks the
Engine events in their order and, before each one, reads the audit log on
until it has passed that event's time (`AuditLogFiles.watermark_ns`), so the
CLI call that caused the event is known when it is attributed. Audit events go
into the pipeline as they are read; the Correlator keeps only the CLI calls
still inside their window, so memory stays flat however long the audit log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import InputError
from config.models import DocktrailConfig, InputConfig
from listener import redact
from listener.bounds import KeptErrors, configure_limits
from listener.correlate import CorrelationStats, Correlator
from listener.coverage import FixedCoverage, mark_build_step, mark_uncovered
from listener.intents import IntentBook, IntentStage
from listener.model.event import Event
from listener.pipeline import Pipeline, PipelineStats
from listener.rules.engine import RuleEngine, RulesStage
from listener.sessions.service import ExecSessions
from listener.sources.auditd import AuditConverter, AuditCounters, AuditLogFiles, Converted
from listener.sources.docker import read_events_file
from notifiers.routing import Routing
from notifiers.worker import WorkerStats, deliver_now

if TYPE_CHECKING:
    from sinks.base import TrailSink

Progress = Callable[[int], None]

# An audit record may be written after records of later events (its syscall ran
# long): read this much past an Engine event before attributing it.
_MERGE_SLACK_NS = 1_000_000_000
# Once the Engine events are all read, no owner is still to come: the audit log's
# rest hands the sessions' due commands on this often, not only at its end (a long
# log after the last Engine event would otherwise hold every command in memory).
_DUE_EVERY_PROCESSES = 4096


@dataclass(slots=True)
class IngestReport:
    stats: PipelineStats = field(default_factory=PipelineStats)
    malformed: KeptErrors = field(default_factory=KeptErrors)  # counted; the first kept
    audit: AuditCounters | None = None
    audit_records: int = 0
    attribution: CorrelationStats | None = None
    docker_events: int = 0
    alerts: int = 0
    notified: WorkerStats | None = None
    published: int | None = None  # records sent to Kafka (with `kafka:` configured)
    publish_error: str | None = None

    @property
    def read(self) -> int:
        return self.stats.received + len(self.malformed)

    def summary(self) -> str:
        text = (
            f"read {self.read}, stored {self.stats.stored}, "
            f"duplicates {self.stats.duplicates}, malformed {len(self.malformed)}"
        )
        if self.audit is not None:
            audit = self.audit
            text += (
                f"; audit log: {self.audit_records} records in {audit.events} events, "
                f"{audit.kept} kept ({audit.calls} docker CLI calls), "
                f"{audit.housekeeping} daemon housekeeping dropped"
            )
        if self.attribution is not None and self.docker_events:
            found = self.attribution
            text += (
                f"; attributed {found.attributed} of {self.docker_events} Docker events "
                f"({found.ambiguous} ambiguous)"
            )
        text += f"; alerts {self.alerts}"
        if self.notified is not None:
            text += "; notifications: " + self.notified.summary()
        if self.published is not None:
            text += f"; published {self.published} records to kafka"
        if self.publish_error is not None:
            text += (
                f"; kafka publish failed (kept in the trail for the next run): {self.publish_error}"
            )
        return text


async def ingest_files(
    config: DocktrailConfig,
    *,
    docker_events: Sequence[Path] = (),
    audit_logs: Sequence[Path] = (),
    host: str,
    on_progress: Progress | None = None,
    trail: TrailSink | None = None,
    notify: bool = False,
) -> IngestReport:
    """Store the files' events in the trail (`config.trail`, unless `trail` is given).

    Historical files notify nobody unless `notify`: then the new alerts'
    deliveries go into the outbox and are flushed once before returning.
    """
    report = IngestReport()
    custom_trail = trail is not None
    configure_limits(config.input)
    if trail is None:
        from sinks.sqlite import SQLiteTrail

        redact.configure(redact.Redactor.from_config(config))
        trail = SQLiteTrail.from_config(config.trail, host)
    async with trail:
        # Rules need attribution to judge `unattributed-change`: only with an audit log.
        engine = RuleEngine(
            config.rules, attribution_available=bool(audit_logs), docker_host=config.docker.host
        )
        routing = Routing(config.notifications) if notify else None
        rules = RulesStage(trail, engine, routing=routing)
        await rules.start()
        pipeline = Pipeline(
            trail,
            stages=[IntentStage(trail, IntentBook()), rules],
            batch_size=config.trail.batch_size,
            flush_interval_secs=config.trail.flush_interval_secs,
            write_behind=True,
        )
        report.stats = pipeline.stats
        async with pipeline:
            docker = _docker_items(docker_events, host, on_progress, report, config.input)
            if audit_logs:
                await _correlated(config, docker, audit_logs, host, pipeline, report)
            else:
                no_audit = FixedCoverage("no audit log read")
                for event in docker:
                    mark_uncovered(event, no_audit)
                    await pipeline.put(event)
        await rules.save_state()  # the next start reads only what comes after
        if routing:
            report.notified = await deliver_now(trail, config.notifications, host=host)
    report.alerts = rules.alerts_stored
    if config.kafka is not None and not custom_trail:
        await _publish(config, report)
    return report


async def _publish(config: DocktrailConfig, report: IngestReport) -> None:
    """Publish what the trail holds and Kafka has not; a failure leaves it for the next run."""
    from config.errors import SinkError
    from listener.publish import publish_trail

    try:
        report.published = await publish_trail(config)
    except SinkError as exc:
        report.publish_error = str(exc)


def _docker_items(
    paths: Sequence[Path],
    host: str,
    on_progress: Progress | None,
    report: IngestReport,
    limits: InputConfig,
) -> Iterator[Event]:
    for path in paths:
        for item in read_events_file(path, host, on_progress=on_progress, limits=limits):
            if isinstance(item, InputError):
                report.malformed.append(item)
            else:
                report.docker_events += 1
                yield item


async def _correlated(
    config: DocktrailConfig,
    docker: Iterator[Event],
    audit_logs: Sequence[Path],
    host: str,
    pipeline: Pipeline,
    report: IngestReport,
) -> None:
    converter = AuditConverter(config.auditd, host, limits=config.input)
    audit = AuditLogFiles(
        audit_logs,
        converter,
        window_secs=config.auditd.event_timeout_secs,
        max_line=config.input.max_line_bytes,
    )
    correlator = Correlator.from_config(config.auditd)
    sessions = ExecSessions(config.exec_sessions, host) if config.exec_sessions.enabled else None
    merge = _AuditMerge(audit, correlator, pipeline, sessions)
    for event in docker:
        await merge.read_past(event.time_ns)
        correlator.attribute(event)
        mark_build_step(event, correlator)
        mark_uncovered(event, audit.span)
        await pipeline.put(event)
        await merge.observe(event)
    await merge.read_past(None)
    await merge.finish()
    report.malformed.merge(audit.malformed)
    report.audit, report.audit_records = converter.counters, audit.records
    report.attribution = correlator.stats


class _AuditMerge:
    """Reads the audit log just far enough ahead of the Engine events."""

    def __init__(
        self,
        audit: AuditLogFiles,
        correlator: Correlator,
        pipeline: Pipeline,
        sessions: ExecSessions | None = None,
    ) -> None:
        self.audit = audit
        self.correlator = correlator
        self.pipeline = pipeline
        self.sessions = sessions
        self._items: Iterator[Converted] = iter(audit)
        self._done = False
        self._processes = 0  # process records handed to the sessions

    async def read_past(self, time_ns: int | None) -> None:
        """Until the audit log is read past `time_ns` (None: to its end)."""
        while not self._done and (
            time_ns is None or self.audit.watermark_ns <= time_ns + _MERGE_SLACK_NS
        ):
            item = next(self._items, None)
            if item is None:
                self._done = True
                self.correlator.close()
                break
            if item.call is not None:
                self.correlator.add_call(item.call)
            if item.process is not None and self.sessions is not None:
                self.sessions.add(item.process)
                self._processes += 1
                if time_ns is None and not self._processes % _DUE_EVERY_PROCESSES:
                    await self._put_due(self.audit.watermark_ns)
            if item.event is not None:
                await self.pipeline.put(item.event)
        if time_ns is not None:
            self.correlator.evict(time_ns)

    async def observe(self, event: Event) -> None:
        """An Engine event may open a session; commands due by the log's time are stored."""
        if self.sessions is None:
            return
        self.sessions.observe(event)
        # Owners come from Engine events, exits from the audit log: "now" is the
        # earlier of the two, or a gap in the audit log (a quiet minute) would let
        # commands go out before the exec event naming their owner is read.
        await self._put_due(min(self.audit.watermark_ns, event.time_ns))

    async def _put_due(self, now_ns: int) -> None:
        if self.sessions is None:
            return
        for command in self.sessions.due(now_ns):
            await self.pipeline.put(command)

    async def finish(self) -> None:
        if self.sessions is None:
            return
        for command in self.sessions.flush():
            await self.pipeline.put(command)
