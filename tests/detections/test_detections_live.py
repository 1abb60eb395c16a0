"""The detections table, live: `docktrail run` on the test dockerd (issue 18 items 1, 6, 7).

The service runs with auditd enabled but its log absent, as on a host where
auditd was never installed: attribution is unavailable, so nothing may be
called unattributed, while what the Engine alone shows (socket mounts,
root and privileged execs) must still alert.
"""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from listener.model.event import Event
from sinks.base import AlertFilter, EventFilter
from sinks.sqlite import SQLiteTrail
from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.test_run_live import Service

HOST = "live-detections"


class NoAuditService(Service):
    """`docktrail run` with auditd enabled and no audit log at its path."""

    def __init__(self, tmp_path: Path, daemon: Dockerd) -> None:
        super().__init__(tmp_path, daemon)
        self.config.write_text(
            f"host: {HOST}\n"
            f"trail:\n  path: {self.trail_path}\n  flush_interval_secs: 0.02\n"
            "  checkpoint_interval_secs: 1\n"
            f"docker:\n  host: {daemon.host}\n  reconnect_min_secs: 0.2\n"
            "  reconnect_max_secs: 1\n"
            f"auditd:\n  enabled: true\n  log_file: {tmp_path / 'absent' / 'audit.log'}\n"
            "  hold_secs: 0.2\n"
        )

    def alerts(self) -> list[Any]:
        with SQLiteTrail(self.trail_path) as trail:
            return list(trail.query_alerts(AlertFilter()))


@pytest.fixture
def service(tmp_path: Path, dockerd: Dockerd) -> Iterator[NoAuditService]:
    running = NoAuditService(tmp_path, dockerd)
    running.start()
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log_text()


def _container_events(service: Service, name: str) -> list[Event]:
    events = service.events(EventFilter(source="docker", type="container"))
    return [e for e in events if e.actor.name == name]


def _evaluated_through(service: Service) -> int:
    with SQLiteTrail(service.trail_path) as trail:
        return int(trail.evaluated_through() or 0)


def _alerts_of(service: NoAuditService, container: str) -> dict[str, Any]:
    return {a.rule: a for a in service.alerts() if a.container == container}


def _wait_alert(service: NoAuditService, container: str, rule: str) -> Any:
    assert wait_until(lambda: rule in _alerts_of(service, container), 20), (
        [(a.rule, a.container) for a in service.alerts()],
        service.log_text(),
    )
    return _alerts_of(service, container)[rule]


def test_no_unattributed_change_while_the_audit_log_is_absent(
    service: NoAuditService, dockerd: Dockerd
) -> None:
    dockerd.docker("create", "--name", "det-absent", BUSYBOX_REF, "true")
    dockerd.docker("rm", "det-absent")
    assert wait_until(lambda: len(_container_events(service, "det-absent")) >= 2, 20)
    for event in _container_events(service, "det-absent"):
        assert event.who.method == "unavailable", event.who
        assert event.who.reason and "audit.log" in event.who.reason
    # The create's rules have run (its image is outside the default trusted list) ...
    _wait_alert(service, "det-absent", "untrusted-image")
    # ... and the destroy's too.
    last = max(e.seq or 0 for e in _container_events(service, "det-absent"))
    assert wait_until(lambda: _evaluated_through(service) >= last, 10)
    rules = {a.rule for a in service.alerts() if a.container == "det-absent"}
    assert "unattributed-change" not in rules


def test_socket_mounts_by_directory_destination_and_socket_source(
    service: NoAuditService, dockerd: Dockerd
) -> None:
    with tempfile.TemporaryDirectory(prefix="dt-sock-") as scratch:
        odd_name = Path(scratch) / "engine-proxy"
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(odd_name))
        try:
            runs = {
                "det-run-dir": ["-v", "/run:/x"],
                "det-var-run": ["-v", "/var/run:/host-run"],
                "det-dest": ["-v", f"{scratch}:/var/run/docker.sock"],
                "det-engine": ["-v", f"{dockerd.socket_path}:/engine.sock"],
                "det-socket": ["-v", f"{odd_name}:/proxy"],
            }
            for name, options in runs.items():
                dockerd.docker("create", "--name", name, *options, BUSYBOX_REF, "true")
            for name in runs:
                found = _wait_alert(service, name, "docker-socket-mount")
                assert found.severity == "critical"
                assert found.details["mounts"], found.details
            socket_alert = _alerts_of(service, "det-socket")["docker-socket-mount"]
            assert socket_alert.details["matched"] == "a Unix socket"
        finally:
            listener.close()
            dockerd.docker("rm", "-f", *runs, check=False)


def test_root_privileged_and_interactive_execs_from_the_engine_alone(
    service: NoAuditService, dockerd: Dockerd
) -> None:
    dockerd.docker("run", "-d", "--name", "det-exec", "--user", "1000", BUSYBOX_REF, "sleep", "60")
    try:
        dockerd.docker("exec", "det-exec", "true")
        dockerd.docker("exec", "-u", "0", "det-exec", "sh", "-c", "echo hi")
        # The kernel here may refuse a privileged exec's start; the Engine still says it began.
        dockerd.docker("exec", "--privileged", "det-exec", "true", check=False)
        _interactive_exec(dockerd, "det-exec", ["cat"])

        def execs() -> list[Any]:
            return [
                a for a in service.alerts()
                if a.rule == "exec-in-container" and a.container == "det-exec"
            ]  # fmt: skip

        assert wait_until(lambda: len(execs()) == 4, 20), service.log_text()
        by_command = {a.details["command"]: a for a in execs()}
        root = by_command["sh -c echo hi"]
        assert root.severity == "high" and "as root" in root.details["risks"]
        assert root.details["user"] == "0"
        risky = [a for a in execs() if a.details.get("privileged")]
        assert len(risky) == 1 and risky[0].severity == "high"
        calm = [a for a in execs() if not a.details["risks"]]
        assert len(calm) == 1 and calm[0].severity == "medium"
        assert calm[0].details["user"] == "1000"  # the Engine says whom it runs as
        interactive = by_command["cat"]
        assert interactive.severity == "high"
        assert interactive.details["risks"] == ["interactive terminal"]
    finally:
        dockerd.docker("rm", "-f", "det-exec", check=False)


def _interactive_exec(dockerd: Dockerd, container: str, command: list[str]) -> None:
    """`docker exec -it`, through the API (the test has no terminal)."""
    import docker

    client = docker.APIClient(base_url=dockerd.host, version="auto")
    try:
        created = client.exec_create(container, command, stdin=True, tty=True)
        client.exec_start(created["Id"], detach=True, tty=True)
    finally:
        client.close()


def test_health_checks_are_not_execs_but_a_real_exec_still_is(
    service: NoAuditService, dockerd: Dockerd
) -> None:
    dockerd.docker(
        "run", "-d", "--name", "det-health", "--health-cmd", "true", "--health-interval", "1s",
        BUSYBOX_REF, "sleep", "60",
    )  # fmt: skip
    try:

        def health_execs() -> list[Event]:
            return [
                e for e in _container_events(service, "det-health")
                if e.action == "exec_start" and "true" in str(e.attributes.get("action_detail"))
            ]  # fmt: skip

        assert wait_until(lambda: len(health_execs()) >= 2, 20), service.log_text()
        dockerd.docker("exec", "det-health", "id")
        alert = _wait_alert(service, "det-health", "exec-in-container")
        assert alert.details["command"] == "id"
        execs = [a for a in service.alerts() if a.rule == "exec-in-container"
                 and a.container == "det-health"]  # fmt: skip
        assert len(execs) == 1, [a.summary for a in execs]
    finally:
        dockerd.docker("rm", "-f", "det-health", check=False)


def test_without_an_audit_source_events_say_why_who_is_missing(
    tmp_path: Path, dockerd: Dockerd
) -> None:
    plain = Service(tmp_path, dockerd)  # auditd.enabled: false
    plain.start()
    try:
        dockerd.docker("create", "--name", "det-noaudit", BUSYBOX_REF, "true")
        assert wait_until(lambda: bool(_container_events(plain, "det-noaudit")), 20)
        (create,) = _container_events(plain, "det-noaudit")
        assert create.who.method == "unavailable"
        assert "auditd source disabled" in (create.who.reason or "")
    finally:
        dockerd.docker("rm", "-f", "det-noaudit", check=False)
        assert plain.stop() == 0, plain.log_text()
