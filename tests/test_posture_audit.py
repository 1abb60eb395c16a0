"""Audit-rule posture (CIS 1.1.x) against the kernel's real audit rules.

The private auditd fixture loads a watch on a stand-in for /etc/docker; the
check reads the loaded rules with `auditctl -l` and names what is missing. A
watch removed while docktrail runs is an alert, not a silent blind spot.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from config.models import RulesConfig
from config.posture import PostureConfig
from listener.event import Event
from listener.posture.audit import audit_rule_checks, read_loaded_rules
from listener.posture.events import PostureMemory
from listener.posture.runner import PostureRunner
from listener.rules.engine import RuleEngine
from sinks.memory import MemoryTrail
from tests import test_audit_live
from tests.test_audit_live import PrivateAuditd

audit_daemon = test_audit_live.audit_daemon  # holds the machine-wide "live-audit" lock

HOST = "posture-audit-test"
MISSING = "/etc/docker/not-watched-by-anyone"


def test_loaded_watches_pass_and_a_missing_one_fails(audit_daemon: PrivateAuditd) -> None:
    text, origin = read_loaded_rules(Path("/nonexistent.rules"))
    assert origin == "auditctl -l" and text is not None
    (ok,) = audit_rule_checks([str(audit_daemon.watched)], text, origin)
    assert ok.status == "pass"
    (bad,) = audit_rule_checks([str(audit_daemon.watched), MISSING], text, origin)
    assert (bad.status, bad.cis, bad.items) == ("fail", "1.1.x", (MISSING,))
    assert MISSING in bad.detail


def test_without_auditctl_the_rules_file_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = tmp_path / "docktrail.rules"
    rules.write_text("# docktrail\n-w /etc/docker -p wa -k docker\n")
    monkeypatch.setenv("PATH", str(tmp_path))  # no auditctl to be found
    text, origin = read_loaded_rules(rules)
    (check,) = audit_rule_checks(["/etc/docker", "/usr/bin/runc"], text, origin)
    assert check.items == ("/usr/bin/runc",) and str(rules) in check.detail
    (none,) = audit_rule_checks(["/etc/docker"], *read_loaded_rules(tmp_path / "absent"))
    assert none.status == "fail"


def _audit_rules(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "audit-rules"]


def test_a_watch_removed_while_running_is_alerted(audit_daemon: PrivateAuditd) -> None:
    watched = str(audit_daemon.watched)
    posture = PostureConfig(required_watches=[watched])
    runner = PostureRunner(posture, HOST, PostureMemory())
    first = _audit_rules(asyncio.run(runner.audit_rules("start")))
    assert [e.attributes["status"] for e in first] == ["pass"]
    subprocess.run(["auditctl", "-W", watched, "-p", "wa", "-k", "docker"], check=True)
    try:
        second = _audit_rules(asyncio.run(runner.audit_rules("periodic")))
    finally:
        subprocess.run(["auditctl", "-w", watched, "-p", "wa", "-k", "docker"], check=True)
    assert [e.attributes["status"] for e in second] == ["fail"]
    stored = MemoryTrail().append([*first, *second]).stored
    alerts = RuleEngine(RulesConfig()).alerts_for(stored)
    (alert,) = [a for a in alerts if a.rule == "audit-rule-posture"]
    assert watched in alert.summary and "pass → fail" in alert.summary
