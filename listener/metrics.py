"""`/metrics` (Prometheus) and `/healthz` of `docktrail run`.

Counters move where events already pass: `ServiceMetrics` is the first stage
of the pipeline (it sees every batch before attribution and the stored events
after the write) and the rules stage hands it the alerts it stored. Nothing
here re-reads the trail per event. What is a state rather than a count —
source lag, queue depths, deliveries pending or failed, checkpoint age, trail
size — is read when Prometheus scrapes, on the HTTP server's thread, through a
read-only connection of its own, so a scrape never waits on the event loop.

Importing this module imports `prometheus_client`: only `run` does, and only
when `metrics.enabled` is true, so `docktrail --help` does not pay for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections import Counter as CountOf
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from config.errors import ConfigError
from config.models import MetricsConfig
from listener.model.alert import Alert
from listener.model.event import Event
from listener.rules.base import rule_failures

if TYPE_CHECKING:
    from listener.pipeline import Pipeline
    from listener.sources.auditd import AuditLogTail
    from listener.sources.docker_live import DockerSource

log = logging.getLogger("docktrail")

# /healthz answers 503 when the event loop has not ticked for this long: a
# service whose loop is stuck records nothing, whatever its process says.
HEARTBEAT_SECS = 2.0
STALE_AFTER_SECS = 15.0


@dataclass(slots=True)
class LiveParts:
    """What the scrape reads from the running service; set once it is wired.

    Each callable must be cheap and safe to call from another thread (they
    read ints and lengths that the event loop updates).
    """

    malformed: dict[str, Callable[[], int]] = field(default_factory=dict)
    queues: dict[str, Callable[[], int]] = field(default_factory=dict)
    docker_connected: Callable[[], bool] = lambda: False
    # None: no audit source; False: the log cannot be read (attribution stalls)
    audit_log_readable: Callable[[], bool | None] = lambda: None


def watch(
    metrics: ServiceMetrics,
    pipeline: Pipeline,
    docker: DockerSource,
    audit: AuditLogTail | None,
) -> None:
    """Points the scrape at the running parts of the service."""
    parts = metrics.parts
    parts.malformed["docker"] = lambda: docker.stats.malformed
    parts.queues["pipeline"] = lambda: pipeline.pending
    parts.queues["docker"] = docker.queue_depth
    parts.docker_connected = docker.connected.is_set
    if audit is not None:
        parts.malformed["auditd"] = lambda: audit.malformed
        parts.queues["auditd"] = audit.queue_depth
        parts.audit_log_readable = lambda: audit.failed is None


class ServiceMetrics:
    """Pipeline stage and Prometheus collector of one `docktrail run`."""

    def __init__(self, trail_path: Path) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.parts = LiveParts()
        self._trail_path = trail_path
        self._last_event_ns: dict[str, int] = {}
        self._heartbeat = time.monotonic()
        self._read = Counter(
            "docktrail_events_read",
            "Events that entered the pipeline, by source.",
            ["source"],
            registry=self.registry,
        )
        self._stored = Counter(
            "docktrail_events_stored",
            "Events newly appended to the trail (duplicates excluded), by source.",
            ["source"],
            registry=self.registry,
        )
        self._gaps = Counter(
            "docktrail_gaps",
            "Gap events stored: windows where records may be missing, by what lost them.",
            ["type"],
            registry=self.registry,
        )
        self._alerts = Counter(
            "docktrail_alerts",
            "Alerts stored, by rule and severity (suppressed ones included, labelled).",
            ["rule", "severity", "suppressed"],
            registry=self.registry,
        )
        self.registry.register(_ScrapeTimeCollector(self))

    # -- the pipeline stage -------------------------------------------------

    # Counted per batch, then added once per label: a labelled `inc()` takes a
    # lock and a lookup, which per event would be the stage's main cost.
    async def before_write(self, batch: list[Event]) -> list[Event]:
        last = self._last_event_ns
        read: CountOf[str] = CountOf()
        for event in batch:
            read[event.source] += 1
            if event.time_ns > last.get(event.source, 0):
                last[event.source] = event.time_ns
        for source, number in read.items():
            self._read.labels(source).inc(number)
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        sources: CountOf[str] = CountOf(event.source for event in stored)
        for source, number in sources.items():
            self._stored.labels(source).inc(number)
        for event in stored:
            if event.action == "gap":
                self._gaps.labels(event.type).inc()

    def count_alerts(self, alerts: Iterable[Alert]) -> None:
        for alert in alerts:
            suppressed = "true" if alert.suppressed else "false"
            self._alerts.labels(alert.rule, alert.severity, suppressed).inc()

    # -- health ---------------------------------------------------------------

    def beat(self) -> None:
        self._heartbeat = time.monotonic()

    def health(self) -> tuple[bool, dict[str, Any]]:
        loop_age = time.monotonic() - self._heartbeat
        docker = self.parts.docker_connected()
        healthy = loop_age < STALE_AFTER_SECS and docker
        return healthy, {
            "status": "ok" if healthy else "unhealthy",
            "event_loop_responsive": loop_age < STALE_AFTER_SECS,
            "docker_connected": docker,
            "audit_log_readable": self.parts.audit_log_readable(),
            "checkpoint_age_seconds": _round(_checkpoint_age(self._trail_path)),
        }

    # -- read at scrape time ------------------------------------------------

    def source_lag(self) -> dict[str, float]:
        now = time.time_ns()
        return {source: (now - ns) / 1e9 for source, ns in list(self._last_event_ns.items())}

    @property
    def trail_path(self) -> Path:
        return self._trail_path


class _ScrapeTimeCollector(Collector):
    def __init__(self, metrics: ServiceMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        m = self._metrics
        yield _gauge(
            "docktrail_malformed_records",
            "Malformed input records skipped so far (counted, never stored), by source.",
            "source",
            {name: read() for name, read in m.parts.malformed.items()},
        )
        yield _gauge(
            "docktrail_source_lag_seconds",
            "Now minus the time of the newest event read, by source.",
            "source",
            m.source_lag(),
        )
        yield _gauge(
            "docktrail_queue_depth",
            "Items waiting in the service's in-memory queues.",
            "queue",
            {name: read() for name, read in m.parts.queues.items()},
        )
        yield _gauge(
            "docktrail_deliveries",
            "Alert deliveries in the outbox, by status (pending, failed, sent …).",
            "status",
            _delivery_counts(m.trail_path),
        )
        age = _checkpoint_age(m.trail_path)
        yield _gauge(
            "docktrail_checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint of the trail.",
            None,
            {} if age is None else {"": age},
        )
        yield _gauge(
            "docktrail_trail_size_bytes",
            "Size of the trail file and its write-ahead log.",
            None,
            {"": _trail_size(m.trail_path)},
        )
        yield _gauge(
            "docktrail_rule_failures",
            "Events a rule (or the rules' state tracking) failed on and gave no finding for.",
            "rule",
            rule_failures(),
        )
        healthy, _ = m.health()
        yield _gauge("docktrail_up", "1 when /healthz says ok.", None, {"": int(healthy)})


def _gauge(name: str, doc: str, label: str | None, values: Mapping[str, float]) -> Metric:
    gauge = GaugeMetricFamily(name, doc, labels=[label] if label else None)
    for key, value in values.items():
        gauge.add_metric([key] if label else [], value)
    return gauge


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _trail_size(path: Path) -> int:
    total = 0
    for part in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(OSError):
            total += part.stat().st_size
    return total


def _read_only(path: Path) -> sqlite3.Connection:
    # mode=ro: a scrape never creates, migrates or locks the trail for writing.
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=1.0)


def _checkpoint_age(path: Path) -> float | None:
    try:
        with contextlib.closing(_read_only(path)) as conn:
            row = conn.execute("SELECT time_ns FROM checkpoints ORDER BY n DESC LIMIT 1").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else (time.time_ns() - row[0]) / 1e9


def _delivery_counts(path: Path) -> dict[str, float]:
    try:
        with contextlib.closing(_read_only(path)) as conn:
            rows = conn.execute("SELECT status, count(*) FROM deliveries GROUP BY status")
            found: dict[str, float] = {status: number for status, number in rows}
    except sqlite3.Error:
        return {}
    for status in ("pending", "failed"):
        found.setdefault(status, 0)
    return found


# --------------------------------------------------------------------------- HTTP


class MetricsServer:
    """A small threaded HTTP server: GET /metrics and GET /healthz, nothing else."""

    def __init__(self, config: MetricsConfig, metrics: ServiceMetrics) -> None:
        self._config = config
        self._metrics = metrics
        self._server: ThreadingHTTPServer | None = None
        self._beat: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    async def start(self) -> None:
        """Binds and serves on a daemon thread; a taken address is a configuration error."""
        await asyncio.to_thread(self._bind)
        self._beat = asyncio.create_task(_heartbeat(self._metrics), name="metrics-heartbeat")
        log.info(
            "serving /metrics and /healthz",
            extra={"fields": {"address": self._config.address, "port": self.port}},
        )

    def _bind(self) -> None:
        handler = _handler_for(self._metrics)
        try:
            server = ThreadingHTTPServer((self._config.address, self._config.port), handler)
        except OSError as exc:
            raise ConfigError(
                f"metrics.address/port: cannot listen on "
                f"{self._config.address}:{self._config.port}: {exc.strerror}"
            ) from exc
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()

    async def aclose(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
            await asyncio.gather(self._beat, return_exceptions=True)
        server, self._server = self._server, None
        if server is not None:
            await asyncio.to_thread(_shut, server)


def _shut(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


async def _heartbeat(metrics: ServiceMetrics) -> None:
    while True:
        metrics.beat()
        await asyncio.sleep(HEARTBEAT_SECS)


def _handler_for(metrics: ServiceMetrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "docktrail"
        sys_version = ""

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(metrics.registry))
            elif path == "/healthz":
                healthy, body = metrics.health()
                self._send(200 if healthy else 503, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: /metrics, /healthz\n")

        def _send(self, code: int, content_type: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # scrapes every few seconds would drown the service's own log

    return Handler
