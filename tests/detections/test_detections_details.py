"""What the detections say beside whether they fire: why `who` is missing, claims,
and the subject keys the channel dedups on (issue 18 items 1 and 5, issue 19 item 2)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from config.models import AuditdConfig
from listener.coverage import LiveCoverage
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who
from listener.rules.base import RuleContext
from listener.rules.registry import evaluate
from listener.sources.auditd import AuditLogTail
from listener.sources.docker_inspect import exec_config_from_inspect
from listener.timeline import _who
from notifiers.render.views import _who_text
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.detections.harness import Scenario, run_offline
from tests.detections.scenarios import SCENARIOS

NS = 1_000_000_000
T_NS = 1_795_000_000 * NS


def _scenario(prefix: str) -> Scenario:
    return next(s for s in SCENARIOS if s.name.startswith(prefix))


def test_events_outside_the_audit_span_say_why_who_is_missing(tmp_path: Path) -> None:
    outcome = run_offline(_scenario("i18.1 audit log of another year"), tmp_path)
    docker = [e for e in outcome.events if e.source == "docker"]
    assert docker and all(e.who.method == "unavailable" for e in docker)
    assert all("outside the audit records read" in (e.who.reason or "") for e in docker)


def test_events_without_an_audit_log_say_so(tmp_path: Path) -> None:
    outcome = run_offline(_scenario("i18.1 no audit log"), tmp_path)
    assert {(e.who.method, e.who.reason) for e in outcome.events} == {
        ("unavailable", "no audit log read")
    }


def test_live_coverage_follows_the_tail(tmp_path: Path) -> None:
    """The real tail on a real file: absent, then present and read through."""
    log = tmp_path / "audit.log"
    coverage = LiveCoverage(str(log))
    config = AuditdConfig(log_file=log, poll_interval_secs=0.01)
    event = Event(id="e", time_ns=0, source="docker", host="h", type="container", action="create")

    async def scenario() -> None:
        tail = AuditLogTail(config, "h", coverage=coverage)
        await tail.start()
        try:
            await asyncio.sleep(0.1)
            event.time_ns = _now()
            assert "does not exist" in (coverage.missing(event) or "")
            log.write_text("")
            await _until(lambda: coverage.open_since_ns is not None)
            event.time_ns = _now()
            await _until(lambda: coverage.missing(event) is None)
            event.time_ns = (coverage.open_since_ns or 0) - NS
            assert "before the audit log was read" in (coverage.missing(event) or "")
            event.time_ns = _now() + 60 * NS
            assert "lags" in (coverage.missing(event) or "")
        finally:
            await tail.aclose()

    asyncio.run(scenario())


def _now() -> int:
    return time.time_ns()


async def _until(predicate: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


def test_a_claim_is_not_a_login_in_queries_or_messages(tmp_path: Path) -> None:
    outcome = run_offline(_scenario("i19.2 a label claiming alice does not"), tmp_path)
    (create,) = [e for e in outcome.events if e.action == "create"]
    assert (create.who.login, create.who.claimed, create.who.method) == (None, "alice", "unknown")
    with SQLiteTrail(tmp_path / "trail.db") as trail:
        assert list(trail.query(EventFilter(user="alice"))) == []
    (alert,) = outcome.loud()
    assert alert.details["claimed"] == "alice" and "claims alice" in alert.summary
    assert _who_text(alert.who, "en") == "unknown (claims alice)"
    assert _who(create) == "unknown (claims alice)"


def test_a_mismatch_names_the_claim_and_the_evidence(tmp_path: Path) -> None:
    outcome = run_offline(_scenario("i19.2 a label claiming alice on bob"), tmp_path)
    (alert,) = outcome.loud()
    assert (alert.details["claimed"], alert.details["login"]) == ("alice", "bob")
    assert _who_text(alert.who, "en") == "bob (claims alice)"


def test_exec_inspect_gives_the_execs_user_privilege_and_terminal() -> None:
    config = exec_config_from_inspect(
        {
            "OpenStdin": True,
            "ProcessConfig": {
                "entrypoint": "sh",
                "arguments": ["-c", "id"],
                "privileged": True,
                "user": "0",
                "tty": True,
            },
        }
    )
    assert (config["user"], config["privileged"], config["tty"], config["interactive"]) == (
        "0",
        True,
        True,
        True,
    )
    assert config["command"] == ["sh", "-c", "id"]
    unnamed = exec_config_from_inspect({"ProcessConfig": {"entrypoint": "true", "user": ""}})
    assert unnamed["user"] is None  # runs as the container's user


def _alerts(event: Event, ctx: RuleContext) -> list[Alert]:
    return [Alert.from_finding(f, event, i) for i, f in enumerate(evaluate(event, ctx))]


def test_every_alert_names_its_subject_in_stable_keys() -> None:
    ctx = RuleContext(attribution_available=True)
    base = {"source": "docker", "host": "h", "type": "container", "seq": 1}
    create = Event(
        id="c",
        time_ns=T_NS,
        action="create",
        actor=Actor(id="c1", name="box", image="ci/localapp:1"),
        config={
            "origin": "inspect",
            "cap_add": ["SYS_ADMIN"],
            "mounts": [{"type": "bind", "source": "/run", "destination": "/x"}],
        },
        who=Who(login="alice", method="auditd-cli"),
        **base,
    )
    by_rule = {a.rule: a for a in _alerts(create, ctx)}
    assert by_rule["docker-socket-mount"].details["mounts"] == ["/run:/x"]
    assert by_rule["dangerous-capability"].details["capabilities"] == ["SYS_ADMIN"]
    assert by_rule["untrusted-image"].image == "ci/localapp:1"
    assert by_rule["untrusted-image"].summary == "untrusted image ci/localapp:1 (create)"
    exec_start = Event(
        id="x",
        time_ns=T_NS + NS,
        action="exec_start",
        actor=Actor(id="c1", name="box"),
        attributes={"action_detail": "sh -c id", "execID": "e1"},
        config={"origin": "inspect", "kind": "exec", "user": "0", "privileged": True},
        who=Who(login="alice", method="auditd-cli"),
        **base,
    )
    (exec_alert,) = _alerts(exec_start, ctx)
    assert (exec_alert.details["user"], exec_alert.details["privileged"]) == ("0", True)
    daemon_file = Event(
        id="f",
        time_ns=T_NS,
        source="auditd",
        host="h",
        type="daemon-file",
        action="write",
        actor=Actor(id="/etc/docker/daemon.json", name="/etc/docker/daemon.json"),
        seq=3,
    )
    (file_alert,) = _alerts(daemon_file, ctx)
    assert file_alert.details["path"] == "/etc/docker/daemon.json"


def test_thirty_runs_of_one_image_alert_with_one_subject() -> None:
    """The channel folds them (one message with the count): they must share their subject."""
    ctx = RuleContext(attribution_available=True)
    alerts = []
    for i in range(30):
        event = Event(
            id=f"r{i}",
            seq=i + 1,
            time_ns=T_NS + i * NS,
            source="docker",
            host="h",
            type="container",
            action="create",
            actor=Actor(id=f"c{i}", name=f"job-{i}", image="ci/localapp:1"),
            who=Who(login="bob", method="auditd-cli"),
        )
        alerts += [a for a in _alerts(event, ctx) if a.rule == "untrusted-image"]
    assert len(alerts) == 30
    assert {(a.image, a.details["reference"], a.who.login) for a in alerts} == {
        ("ci/localapp:1", "ci/localapp:1", "bob")
    }


def test_a_short_image_id_is_not_a_trusted_docker_hub_repository() -> None:
    """`docker run 3f4a9c0b1d2e` would read as docker.io/library/3f4a9c0b1d2e (trusted)."""
    ctx = RuleContext()
    full = "sha256:3f4a9c0b1d2e" + "0" * 52
    event = Event(
        id="s",
        seq=1,
        time_ns=T_NS,
        source="docker",
        host="h",
        type="container",
        action="create",
        actor=Actor(id="c", name="short", image="3f4a9c0b1d2e"),
        config={"origin": "inspect", "image": "3f4a9c0b1d2e", "image_digest": full},
    )
    (alert,) = [a for a in _alerts(event, ctx) if a.rule == "untrusted-image"]
    assert alert.details["reason"] == "referenced by image id: no registry to trust"
    trusted_tag = Event(
        id="t",
        seq=2,
        time_ns=T_NS,
        source="docker",
        host="h",
        type="image",
        action="tag",
        actor=Actor(id=full, name="docker.io/library/alpine:3.20"),
    )
    _alerts(trusted_tag, ctx)
    event.id, event.seq = "s2", 3
    assert [a for a in _alerts(event, ctx) if a.rule == "untrusted-image"] == []


DAEMON_END = (
    "type=DAEMON_END msg=audit({t:.3f}:{n}): op=terminate auid=0 uid=0 ses=4 pid=1 "
    "subj=unconfined res=success"
)
DAEMON_START = (
    "type=DAEMON_START msg=audit({t:.3f}:{n}): op=start ver=3.0.9 format=enriched "
    "kernel=6.1.0 auid=4294967295 pid=77 uid=0 ses=4294967295 subj=unconfined res=success"
)
RULE_REMOVED = (
    "type=CONFIG_CHANGE msg=audit({t:.3f}:{n}): auid=0 ses=4 subj=unconfined op=remove_rule "
    'key="docker-cli" list=4 res=1'
)


def test_coverage_ends_when_the_log_says_auditd_stopped(tmp_path: Path) -> None:
    """A log that stays but is no longer written does not cover what follows."""
    log = tmp_path / "audit.log"
    log.write_text("")
    coverage = LiveCoverage(str(log))
    config = AuditdConfig(log_file=log, poll_interval_secs=0.01, start_at="start")
    event = Event(id="e", time_ns=0, source="docker", host="h", type="container", action="create")

    async def scenario() -> None:
        tail = AuditLogTail(config, "h", coverage=coverage)
        await tail.start()
        try:
            await _until(lambda: coverage.open_since_ns is not None)
            for n, line in enumerate((DAEMON_END, DAEMON_START, RULE_REMOVED)):
                with log.open("a") as f:
                    f.write(line.format(t=time.time(), n=100 + n) + "\n")
                await asyncio.sleep(0.3)
                event.time_ns = _now()
                reason = coverage.missing(event)
                if line is DAEMON_START:
                    await _until(lambda: coverage.missing(event) is None)
                else:
                    assert reason is not None and "auditd stopped" in reason, reason
        finally:
            await tail.aclose()

    asyncio.run(scenario())


def test_a_lost_checkpointed_log_covers_only_from_now(tmp_path: Path) -> None:
    """The checkpointed file is gone (records between may be lost): not covered before."""
    log = tmp_path / "audit.log"
    log.write_text("")
    coverage = LiveCoverage(str(log))
    config = AuditdConfig(log_file=log, poll_interval_secs=0.01)
    an_hour_ago = _now() - 3600 * NS
    gone = {"dev": 1, "ino": 999_999_999, "offset": 10, "line": 1, "time_ns": an_hour_ago}
    event = Event(
        id="e", time_ns=an_hour_ago + NS, source="docker", host="h", type="container",
        action="create",
    )  # fmt: skip

    async def scenario() -> None:
        tail = AuditLogTail(config, "h", coverage=coverage, checkpoint=gone)
        await tail.start()
        try:
            await _until(lambda: coverage.open_since_ns is not None)
            assert "before the audit log was read" in (coverage.missing(event) or "")
        finally:
            await tail.aclose()

    asyncio.run(scenario())
