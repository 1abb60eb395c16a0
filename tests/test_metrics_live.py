"""`/metrics` and `/healthz` of `docktrail run`, scraped over HTTP while a real dockerd
produces events: the counters move as the events arrive."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.notify_servers import WebhookServer
from tests.test_run_live import Service

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class MetricsService(Service):
    """`docktrail run` with `metrics.enabled` on a free port; optionally without a Docker Engine."""

    def __init__(
        self, tmp_path: Path, daemon: object, extra_yaml: str = "", audit_log: Path | None = None
    ) -> None:
        super().__init__(tmp_path, daemon)  # type: ignore[arg-type]  # only `.host` is read
        text = self.config.read_text()
        if audit_log is not None:
            auditd = f"auditd:\n  enabled: true\n  log_file: {audit_log}\n  start_at: start\n"
            text = text.replace("auditd:\n  enabled: false\n", auditd)
        self.config.write_text(text + "metrics:\n  enabled: true\n  port: 0\n" + extra_yaml)
        self.base = ""

    def start_serving(self, *, wait_connected: bool = True) -> MetricsService:
        if wait_connected:
            self.start()
        else:  # Service.start waits for the Engine; here there is none
            original = self.wait_for_log
            self.wait_for_log = lambda predicate, timeout=20: {}  # type: ignore[method-assign]
            self.start()
            self.wait_for_log = original  # type: ignore[method-assign]
        line = self.wait_for_log(lambda r: r["message"] == "serving /metrics and /healthz")
        assert line["address"] == "127.0.0.1"  # the default keeps it on this host
        self.base = f"http://127.0.0.1:{line['port']}"
        return self

    def get(self, path: str) -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(self.base + path, timeout=10) as response:
                body = response.read().decode()
                return response.status, response.headers["Content-Type"], body
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read().decode()

    def scrape(self) -> Samples:
        status, content_type, text = self.get("/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@dataclass
class Running:
    service: MetricsService
    hook: WebhookServer


@pytest.fixture
def running(dockerd: Dockerd, tmp_path: Path, webhook_server: WebhookServer) -> Iterator[Running]:
    destinations = (
        "notifications:\n  retry_initial_secs: 30\n  destinations:\n"
        f"    - name: hook\n      url: {webhook_server.json_url()}\n      min_severity: high\n"
        # nothing listens on port 1: its deliveries stay pending, retried
        "    - name: down\n      url: json://127.0.0.1:1/hook\n      min_severity: high\n"
    )
    service = MetricsService(tmp_path, dockerd, destinations)
    service.start_serving()
    yield Running(service, webhook_server)
    assert service.stop() == 0, service.log_text()


def wait_for(service: MetricsService, check: Callable[[Samples], bool]) -> Samples:
    last: list[Samples] = [{}]

    def moved() -> bool:
        last[0] = service.scrape()
        return check(last[0])

    if not wait_until(moved, 30):
        shown = "\n".join(
            f"{name}{dict(labels)} = {number}"
            for (name, labels), number in sorted(last[0].items(), key=str)
            if name.startswith("docktrail") and not name.endswith("_created")
        )
        raise AssertionError("the scrape did not move as expected; the last one:\n" + shown)
    return last[0]


def test_counters_move_as_engine_events_arrive(dockerd: Dockerd, running: Running) -> None:
    service = running.service
    before = service.scrape()
    stored_before = value(before, "docktrail_events_stored_total", source="docker")
    critical = {"rule": "privileged-container", "severity": "critical", "suppressed": "false"}
    assert value(before, "docktrail_alerts_total", **critical) == 0

    dockerd.docker("create", "--name", "metrics-priv", "--privileged", BUSYBOX_REF, "true")
    # Removed once judged: removed before the service's inspect, a create has no
    # configuration to judge (tests/test_run_live.py covers that case).
    wait_for(service, lambda s: value(s, "docktrail_alerts_total", **critical) >= 1)
    dockerd.docker("rm", "metrics-priv")

    after = wait_for(
        service,
        lambda s: (
            value(s, "docktrail_events_stored_total", source="docker") >= stored_before + 2
            and value(s, "docktrail_alerts_total", **critical) >= 1
            and value(s, "docktrail_deliveries", status="sent") >= 1
            and value(s, "docktrail_deliveries", status="pending") >= 1
        ),
    )
    read = value(after, "docktrail_events_read_total", source="docker")
    assert read >= value(after, "docktrail_events_stored_total", source="docker")
    assert value(after, "docktrail_source_lag_seconds", source="docker") >= 0
    assert ("docktrail_source_lag_seconds", frozenset({("source", "docker")})) in after
    assert value(after, "docktrail_trail_size_bytes") > 0
    assert value(after, "docktrail_checkpoint_age_seconds") < 60
    for queue in ("pipeline", "docker"):
        assert ("docktrail_queue_depth", frozenset({("queue", queue)})) in after
    assert ("docktrail_malformed_records", frozenset({("source", "docker")})) in after
    assert value(after, "docktrail_gaps_total", type="daemon") == 0
    assert value(after, "docktrail_up") == 1
    assert any(b"metrics-priv" in m.body for m in running.hook.received)


def test_healthz_ok_with_the_engine_and_404_elsewhere(running: Running) -> None:
    service = running.service
    # the connect is logged just before the source marks itself connected
    assert wait_until(lambda: service.get("/healthz")[0] == 200, 10)
    status, content_type, body = service.get("/healthz")
    assert (status, content_type) == (200, "application/json")
    health = json.loads(body)
    assert health["status"] == "ok" and health["docker_connected"] is True
    assert health["audit_log_readable"] is None  # no audit source configured
    assert service.get("/")[0] == 404
    assert service.get("/trail.db")[0] == 404


def test_healthz_unhealthy_without_the_engine(tmp_path: Path) -> None:
    @dataclass
    class NoEngine:
        host: str

    service = MetricsService(tmp_path, NoEngine(f"unix://{tmp_path}/absent.sock"))
    try:
        service.start_serving(wait_connected=False)
        status, _, body = service.get("/healthz")
        assert status == 503
        assert json.loads(body)["docker_connected"] is False
        assert value(service.scrape(), "docktrail_up") == 0
    finally:
        assert service.stop() == 0, service.log_text()


def test_off_by_default_and_not_on_the_help_path() -> None:
    from config.models import DocktrailConfig

    assert DocktrailConfig().metrics.enabled is False
    assert DocktrailConfig().metrics.address == "127.0.0.1"
    probe = (
        "import sys, listener.cli, listener.app\n"
        "assert 'prometheus_client' not in sys.modules, 'imported on the help path'"
    )
    subprocess.run([sys.executable, "-c", probe], check=True, cwd=Path(__file__).parents[1])


def test_audit_log_malformed_lines_and_gaps_are_counted(dockerd: Dockerd, tmp_path: Path) -> None:
    audit_log = tmp_path / "audit.log"
    audit_log.write_text("")
    service = MetricsService(tmp_path, dockerd, audit_log=audit_log).start_serving()
    try:
        assert json.loads(service.get("/healthz")[2])["audit_log_readable"] is True
        before = service.scrape()
        assert ("docktrail_queue_depth", frozenset({("queue", "auditd")})) in before
        assert value(before, "docktrail_malformed_records", source="auditd") == 0
        with audit_log.open("a") as log:
            log.write("this is not an audit record\n" * 3)
        wait_for(service, lambda s: value(s, "docktrail_malformed_records", source="auditd") == 3)
        audit_log.write_text("")  # truncated under the reader: records may have been lost
        after = wait_for(service, lambda s: value(s, "docktrail_gaps_total", type="audit-log") == 1)
        assert value(after, "docktrail_events_stored_total", source="docktrail") >= 1
    finally:
        assert service.stop() == 0, service.log_text()
