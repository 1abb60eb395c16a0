"""The detections table, live with auditd (issue 18 item 2): reads of daemon files are
not changes, and never demote the change that follows them.

A private auditd (`tests.test_audit_live`, under its machine-wide lock) watches
stand-ins for /usr/sbin and /etc/docker the way the CIS rules do (`-w PATH -k
docker`, every permission, so reads are logged too); `docktrail run` follows
its log while a login lists, reads, then touches the files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sinks.base import AlertFilter, EventFilter
from sinks.sqlite import SQLiteTrail
from tests import test_audit_live
from tests.dockerd import Dockerd, wait_until
from tests.test_audit_live import Person, PrivateAuditd
from tests.test_run_live import Service

audit_daemon = test_audit_live.audit_daemon
engine = test_audit_live.engine
people = test_audit_live.people

HOST = "live-detections-audit"


class AuditService(Service):
    def __init__(self, tmp_path: Path, daemon: Dockerd, audit_log: Path) -> None:
        super().__init__(tmp_path, daemon)
        self.config.write_text(
            f"host: {HOST}\n"
            f"trail:\n  path: {self.trail_path}\n  flush_interval_secs: 0.02\n"
            "  checkpoint_interval_secs: 1\n"
            f"docker:\n  host: {daemon.host}\n  reconnect_min_secs: 0.2\n"
            "  reconnect_max_secs: 1\n"
            f"auditd:\n  enabled: true\n  log_file: {audit_log}\n  start_at: start\n"
        )

    def alerts(self) -> list[Any]:
        with SQLiteTrail(self.trail_path) as trail:
            return list(trail.query_alerts(AlertFilter(rule="daemon-config-change")))


@pytest.fixture
def watched(audit_daemon: PrivateAuditd) -> Iterator[tuple[Path, Path]]:
    """A daemon binary and a daemon.json under CIS-style watches of every permission."""
    binaries, config = audit_daemon.dir / "usr-sbin", audit_daemon.dir / "etc-docker-rwxa"
    binaries.mkdir()
    config.mkdir()
    (binaries / "dockerd").write_text("#!/bin/sh\n")
    (config / "daemon.json").write_text("{}\n")
    for path in (binaries, config):
        subprocess.run(["auditctl", "-w", str(path), "-k", "docker"], check=True)
    try:
        yield binaries / "dockerd", config / "daemon.json"
    finally:
        for path in (binaries, config):
            subprocess.run(["auditctl", "-W", str(path), "-k", "docker"], capture_output=True)


def as_login_shell(person: Person, script: str) -> None:
    login = f"echo {person.uid} > /proc/self/loginuid && {script}"
    subprocess.run(["sh", "-c", login], check=True, capture_output=True, timeout=30)


def test_reads_raise_nothing_and_the_touch_after_them_is_high(
    tmp_path: Path,
    audit_daemon: PrivateAuditd,
    engine: Dockerd,
    people: dict[str, Person],
    watched: tuple[Path, Path],
) -> None:
    binary, config = watched
    alice = people["dt-alice"]
    service = AuditService(tmp_path, engine, audit_daemon.log_file)
    service.start()
    try:
        as_login_shell(
            alice,
            f"ls -l {binary} >/dev/null; ls -la {config.parent} >/dev/null; "
            f"cat {config} >/dev/null; touch {config}",
        )

        def files() -> list[Any]:
            return [e for e in service.events(EventFilter(source="auditd"))
                    if e.type == "daemon-file"]  # fmt: skip

        assert wait_until(lambda: any(a.severity == "high" for a in service.alerts()), 20), (
            [(e.action, e.actor.name) for e in files()],
            service.log_text(),
        )
        assert wait_until(lambda: any(e.action == "read" for e in files()), 5)
        alerts = service.alerts()
        assert [(a.details["path"], a.severity, a.who.login) for a in alerts] == [
            (str(config), "high", alice.name)
        ], [(e.action, e.actor.name, e.attributes.get("syscall")) for e in files()]
        assert alerts[0].details.get("follow_up_of") is None
    finally:
        assert service.stop() == 0, service.log_text()
