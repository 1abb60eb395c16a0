"""`docktrail run`: the live service's wiring and lifecycle.

It reads where to resume from the trail file as it is, connects to the Docker
Engine at once (its events are read into a queue while it opens the trail,
whose upgrade can take a minute on a big trail, and loads what the trail knows
about this host), and follows the Engine
(`listener.sources.docker_live.DockerSource`) through the pipeline into the
trail until SIGTERM or SIGINT; then it hands on what was
read, flushes, signs a checkpoint (the trail's `aclose()`) and exits 0. While
running, the trail signs its head every `trail.checkpoint_interval_secs`.

An unreachable Engine never stops the service: the source says so (socket,
error) and keeps retrying. A missing audit log is reported with how to fix
it, and checked again every 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import TrailError
from config.models import DocktrailConfig
from listener import redact
from listener.bounds import configure_limits
from listener.correlate import Attribution, Correlator
from listener.coverage import CoverageStage, FixedCoverage, LiveCoverage
from listener.intent_service import IntentService
from listener.pipeline import Pipeline, Stage
from listener.posture.wiring import SweepOnDaemonChange, posture_runner, posture_tasks
from listener.proxy.service import ProxyService
from listener.publish import Publishing
from listener.rules.engine import RuleEngine, RulesStage
from listener.sessions.service import ExecSessions
from listener.sources.auditd import AuditLogTail, CheckpointedTrail
from listener.sources.docker_live import DockerSource
from listener.sources.docker_state import KnownState
from listener.sources.known_saved import restore_known, resume_point
from notifiers.routing import Routing
from notifiers.worker import DeliveryWorker
from sinks.base import TrailSink
from sinks.sqlite import SQLiteTrail

if TYPE_CHECKING:
    from listener.metrics import MetricsServer, ServiceMetrics

log = logging.getLogger("docktrail")

RECHECK_SECS = 30.0


@dataclass(slots=True, frozen=True)
class Problem:
    what: str
    fix: str


def audit_log_problem(config: DocktrailConfig) -> Problem | None:
    if not config.auditd.enabled:
        return None
    path: Path = config.auditd.log_file
    if os.access(path, os.R_OK):
        return None
    reason = "does not exist" if not path.exists() else "is not readable by this user"
    return Problem(
        what=f"audit log {path} {reason}: changes cannot be tied to logins",
        fix="install auditd and load deploy/audit/docktrail.rules, run docktrail as root, "
        "or set auditd.enabled: false",
    )


def report_problems(config: DocktrailConfig, known: set[str]) -> set[str]:
    """Log each problem once when it appears and once when it is gone."""
    found = {p.what: p for p in (audit_log_problem(config),) if p}
    for what, problem in found.items():
        if what not in known:
            log.warning(what, extra={"fields": {"fix": problem.fix}})
    for what in known - found.keys():
        log.info("resolved: " + what)
    return set(found)


# The service allocates many short-lived objects per record (parsed fields,
# pydantic models) and almost none of them form cycles: refcounting frees them.
# CPython's default gen-0 threshold (700) runs the cyclic collector hundreds of
# times a second under load, each time walking every young object; measured at
# 1000 docker CLI calls/s this cut the live audit tail's CPU by about 15 %.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Freeze what start-up allocated (modules, configuration) and collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def settle_after_start() -> None:
    """After the saved states are restored: freeze them too (the collector then never
    walks a big host's hundreds of thousands of state objects again), and hand back to
    the system what decoding them freed (glibc keeps freed heap pages until trimmed:
    30 MB at 170,000 known containers)."""
    tune_gc()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


# A thread coming back from SQLite (which it runs without the GIL) waits for the
# GIL until the thread holding it gives it up, at the latest after the switch
# interval: 5 ms by default, paid per statement the trail's writer runs while the
# event loop runs Python (sinks/sqlite/worker.py and bulk.py). A shorter interval
# costs the threads that both run Python a switch more often (a few microseconds).
SWITCH_INTERVAL_SECS = 0.0005


def tune_threads() -> None:
    """Hand the GIL over sooner to a thread that waits for it (the trail's writer)."""
    sys.setswitchinterval(SWITCH_INTERVAL_SECS)


@contextlib.contextmanager
def tuned_runtime() -> Iterator[None]:
    """`tune_gc` and `tune_threads` for one piece of work (`ingest`), then both as they were."""
    thresholds, interval = gc.get_threshold(), sys.getswitchinterval()
    tune_gc()
    tune_threads()
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.set_threshold(*thresholds)
        gc.unfreeze()


async def run_service(config: DocktrailConfig) -> int:
    tune_gc()
    tune_threads()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = config.host_name()
    configure_limits(config.input)
    redact.configure(redact.Redactor.from_config(config))
    trail = SQLiteTrail.from_config(config.trail, host)
    # The Engine first: it keeps only its last 256 events for a reader that comes late,
    # and opening the trail can take a minute (an upgrade's migrations on a big trail),
    # restoring what it knows a second or more. Where to resume is read from the file
    # as it is; one that cannot be read so (a new trail) is opened first.
    early = await asyncio.to_thread(_resume_as_is, config, host)
    source = DockerSource(config.docker, host, _not_wired)
    reading = None if early is None else _read_from(source, early.horizon)
    try:
        async with trail:
            try:
                horizon = None if early is None else early.horizon
                if reading is None:
                    horizon = await trail.call(lambda t: resume_point(t, host))
                    reading = _read_from(source, horizon)
                await _serve(config, trail, host, horizon, source, reading, stop)
            finally:
                await _ended(reading)  # before the trail closes
    finally:
        await _ended(reading)  # opening the trail failed
    log.info("stopped")
    return 0


@dataclass(frozen=True)
class _Resume:
    horizon: int | None  # the last stored Engine event's time (None: none stored)


def _resume_as_is(config: DocktrailConfig, host: str) -> _Resume | None:
    """Where the live source resumes, read from the trail file as it is (not migrated);
    None when it cannot be read so: the trail is then opened first, as for a new one."""
    peek = SQLiteTrail.from_config(config.trail, host)
    try:
        peek.open_as_is()
        return _Resume(resume_point(peek, host))
    except TrailError as exc:
        log.debug("resume point not read before opening the trail: %s", exc)
        return None
    finally:
        peek.close()


def _read_from(source: DockerSource, horizon: int | None) -> asyncio.Task[None]:
    """Start reading the Engine from `horizon` into the source's queue (wired later)."""
    source.wire_later(horizon)
    return asyncio.create_task(source.run(), name="docker-source")


async def _ended(reading: asyncio.Task[None] | None) -> None:
    if reading is not None:
        reading.cancel()  # a no-op once it ended; ends it when the wiring failed
        await asyncio.gather(reading, return_exceptions=True)


async def _not_wired(event: object) -> None:
    raise AssertionError("the Docker source handed on an event before it was wired")


async def _serve(
    config: DocktrailConfig,
    trail: SQLiteTrail,
    host: str,
    horizon: int | None,
    source: DockerSource,
    source_task: asyncio.Task[None],
    stop: asyncio.Event,
) -> None:
    """Restores what the trail knows, wires the stages, and runs until `stop`.

    `horizon`: the last stored Engine event's time, where `source` resumes."""
    seq, _ = await trail.call(lambda t: t.head())
    known, known_fold = await trail.call(lambda t: restore_known(t, host, horizon))
    metrics = _service_metrics(config)
    wiring = await _wire(config, trail, host, metrics)
    proxy = ProxyService(config.proxy, host) if config.proxy.enabled else None
    if proxy is not None:  # after auditd attribution: peer credentials name the client
        wiring.stages.insert(1, proxy.stage)
    settle_after_start()
    sweeper = SweepOnDaemonChange()  # a daemon file changed or reloaded: sweep now
    wiring.stages += [sweeper, known_fold]
    pipeline = Pipeline(
        wiring.sink,
        stages=wiring.stages,
        batch_size=config.trail.batch_size,
        flush_interval_secs=config.trail.flush_interval_secs,
        write_when_idle=True,  # live: commit delay of one write, not a timer
    )
    intents = wiring.intents
    source.wired(
        pipeline.put, known, on_running=intents.expiry.on_running,
        on_sweep=await posture_runner(config, trail, host),
    )  # fmt: skip
    sweeper.want = source.want_sweep
    log.info("docktrail running", extra={"fields": _start_fields(config, host, seq, known)})
    worker = wiring.worker
    server = await _serve_metrics(config, metrics, pipeline, source, wiring.audit)
    if worker is not None:
        await worker.start()
    publishing = await Publishing.start(config, trail, host)  # None without `kafka:`
    try:
        if proxy is not None:
            await proxy.start(pipeline.put)
        async with intents.serving(config, host, pipeline, source):
            await _run_until_stopped(config, source, source_task, wiring.audit, pipeline, stop)
    except BaseException:
        with contextlib.suppress(Exception):
            await pipeline.aclose()  # keep what can still be kept
        if publishing is not None:
            await publishing.abort()
        raise
    finally:
        if proxy is not None:
            await proxy.aclose()
        if worker is not None:
            await worker.aclose()  # what is unsent stays in the outbox for the next start
        if server is not None:
            await server.aclose()
    await pipeline.aclose()
    await wiring.rules.save_state()  # the next start reads only what comes after
    await known_fold.save()
    if publishing is not None:
        await publishing.finish()  # seals the trail and publishes up to the seal
    log.info(
        "stopping: flushed the trail, signing a checkpoint",
        extra={"fields": {**asdict(source.stats), "stored": pipeline.stats.stored}},
    )


@dataclass(slots=True)
class Wiring:
    sink: TrailSink
    stages: list[Stage]
    audit: AuditLogTail | None
    worker: DeliveryWorker | None
    intents: IntentService
    rules: RulesStage


async def _wire(
    config: DocktrailConfig, trail: SQLiteTrail, host: str, metrics: ServiceMetrics | None = None
) -> Wiring:
    """Stages in order: attribution fills `who` before the write; rules judge after it."""
    stages: list[Stage] = [] if metrics is None else [metrics]  # first: sees every event read
    audit = None
    sink: TrailSink = trail
    if config.auditd.enabled:
        correlator = Correlator.from_config(config.auditd)
        checkpoint = await trail.call(lambda t: t.load_source_state(AuditLogTail.name))
        coverage = LiveCoverage(str(config.auditd.log_file))
        wanted = config.exec_sessions.enabled
        sessions = ExecSessions(config.exec_sessions, host) if wanted else None
        audit = AuditLogTail(
            config.auditd, host, correlator=correlator, checkpoint=checkpoint, coverage=coverage,
            sessions=sessions,
        )  # fmt: skip
        stages.append(Attribution(correlator, hold_secs=config.auditd.hold_secs, coverage=coverage))
        if sessions is not None:  # after attribution: a session's owner is its exec's login
            stages.append(sessions)
        sink = CheckpointedTrail(trail, [audit])
    else:
        stages.append(CoverageStage(FixedCoverage("auditd source disabled (auditd.enabled)")))
    intents = await IntentService.load(trail, host)
    stages.append(intents.stage)  # after attribution: `intent-mismatch` needs the evidence
    engine = RuleEngine(
        config.rules, attribution_available=config.auditd.enabled, docker_host=config.docker.host
    )
    worker = routing = None
    if config.notifications.destinations:
        # channels are built here so that a bad apprise URL stops the start, clearly
        worker = DeliveryWorker(trail, config.notifications, host=host)
        routing = Routing(config.notifications)
    rules = RulesStage(
        trail,
        engine,
        routing=routing,
        on_queued=worker.wake if worker is not None else None,
        on_alerts=metrics.count_alerts if metrics is not None else None,
    )
    await rules.start()
    stages.append(rules)
    return Wiring(sink, stages, audit, worker, intents, rules)


def _service_metrics(config: DocktrailConfig) -> ServiceMetrics | None:
    if not config.metrics.enabled:
        return None
    from listener.metrics import ServiceMetrics  # prometheus_client only when asked for

    return ServiceMetrics(config.trail.path)


async def _serve_metrics(
    config: DocktrailConfig,
    metrics: ServiceMetrics | None,
    pipeline: Pipeline,
    source: DockerSource,
    audit: AuditLogTail | None,
) -> MetricsServer | None:
    if metrics is None:
        return None
    from listener.metrics import MetricsServer, watch

    watch(metrics, pipeline, source, audit)
    server = MetricsServer(config.metrics, metrics)
    await server.start()
    return server


async def _run_until_stopped(
    config: DocktrailConfig,
    source: DockerSource,
    source_task: asyncio.Task[None],
    audit: AuditLogTail | None,
    pipeline: Pipeline,
    stop: asyncio.Event,
) -> None:
    """Runs the sources and the problem reports until `stop`; a failed source raises.

    `source_task` runs `source.run()`; it was started before the wiring."""
    tasks = [asyncio.create_task(_report_problems_forever(config), name="problems")]
    tasks += [asyncio.create_task(job) for job in posture_tasks(source.on_sweep, source.engine)]
    if audit is not None:
        await audit.start()  # a missing or unreadable log is retried, never raises
        tasks.append(asyncio.create_task(_pump(audit, pipeline), name="auditd-source"))
        if audit.sessions is not None:
            tasks.append(asyncio.create_task(audit.sessions.pump(pipeline.put), name="sessions"))
    stopped = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({source_task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        source.stop()
        await source_task  # hands on what was read; raises what made the source fail
        # Written while the audit source still runs: what was read just before the stop
        # gets the audit records of its call, not "no audit coverage".
        await pipeline.flush()
    finally:
        for task in (*tasks, stopped, source_task):
            task.cancel()
        await asyncio.gather(*tasks, stopped, source_task, return_exceptions=True)
        if audit is not None:
            await audit.aclose()


async def _pump(audit: AuditLogTail, pipeline: Pipeline) -> None:
    """Every audit event goes into the pipeline in order, or its checkpoint stalls."""
    async for event in audit:
        await pipeline.put(event)


async def _report_problems_forever(config: DocktrailConfig) -> None:
    known: set[str] = set()
    while True:
        known = await asyncio.to_thread(report_problems, config, known)
        await asyncio.sleep(RECHECK_SECS)


def _start_fields(
    config: DocktrailConfig, host: str, seq: int, known: KnownState
) -> dict[str, object]:
    return {
        "trail": str(config.trail.path),
        "events": seq,
        "host": host,
        "docker_host": config.docker.host,
        "known_containers": len(known.containers),
    }
