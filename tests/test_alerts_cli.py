"""Rules on the real scenario-a capture: alerts, timeline, replay, rules list/test, repair."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a"
CONFIG = 'rules:\n  untrusted-image:\n    trusted: ["registry.internal/*"]\n'

# The risky steps of truth.tsv: (rule, container or image, login).
EXPECTED = {
    ("privileged-container", "debug-priv", "alice"),
    ("docker-socket-mount", "sock-mounter", "bob"),
    ("host-namespace", "hostnet", "bob"),
    ("dangerous-capability", "hostnet", "bob"),
    ("untrusted-image", "randomuser/cryptominer:latest", "bob"),  # the import's tag
    ("untrusted-image", "miner", "bob"),
    ("exec-in-container", "web-1", "alice"),
    ("container-churn", "churn", "bob"),
    ("daemon-config-change", "/etc/docker/daemon.json", "alice"),
}


def run(tmp: Path, *args: str) -> Result:
    config = tmp / "docktrail.yaml"
    if not config.exists():
        config.write_text(CONFIG)
    command = ["-c", str(config), "--db", str(tmp / "t.db"), *args]
    return CliRunner().invoke(main, command, catch_exceptions=False)


def lines(result: Result) -> list[dict[str, object]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("scenario")
    result = run(
        tmp,
        "ingest",
        "--docker-events",
        str(SCENARIO / "events.jsonl"),
        "--audit-log",
        str(SCENARIO / "audit.log.gz"),
    )
    assert result.exit_code == 0, result.output
    return tmp


def _subject(alert: dict[str, object]) -> str:
    if alert["rule"] == "container-churn":
        return "churn"
    if alert["rule"] == "daemon-config-change":
        return str(alert["details"]["path"])  # type: ignore[index]
    return str(alert["container"] or alert["image"])


def test_medium_and_above_are_exactly_the_risky_steps(trail: Path) -> None:
    alerts = lines(run(trail, "alerts", "--min-severity", "medium", "--format", "json"))
    found = {(a["rule"], _subject(a), a["who"]["login"]) for a in alerts}  # type: ignore[index]
    assert found == EXPECTED
    assert len(alerts) == len(EXPECTED)
    web = lines(run(trail, "alerts", "-f", "container=web-1", "--format", "json"))
    assert {a["rule"] for a in web} == {"exec-in-container", "no-resource-limits", "runs-as-root"}


def test_low_findings_only_where_they_apply(trail: Path) -> None:
    low = lines(run(trail, "alerts", "-f", "severity=low", "--format", "json"))
    writable = {a["container"] for a in low if a["rule"] == "writable-rootfs"}
    assert "web-1" not in writable and {"debug-priv", "miner"} <= writable
    assert all(a["rule"] in {"writable-rootfs", "runs-as-root", "no-resource-limits"} for a in low)


def test_every_alert_points_at_its_stored_event(trail: Path) -> None:
    events = {e["seq"]: e for e in lines(run(trail, "query", "--format", "json"))}
    for alert in lines(run(trail, "alerts", "--format", "json")):
        event = events[alert["event_seq"]]
        assert alert["who"] == event["who"]
        assert alert["time"] == event["time"]
    assert run(trail, "verify").exit_code == 0


def test_alert_filters_and_formats(trail: Path) -> None:
    bob = lines(
        run(trail, "alerts", "-f", "user=bob", "--min-severity", "high", "--format", "json")
    )
    assert bob and all(a["who"]["login"] == "bob" for a in bob)  # type: ignore[index]
    table = run(trail, "alerts", "-f", "rule=privileged-container").stdout.splitlines()
    assert table[0].split()[:3] == ["SEQ", "TIME", "SEVERITY"] and "debug-priv" in table[1]
    csv_lines = run(trail, "alerts", "--format", "csv").stdout.splitlines()
    assert csv_lines[0].startswith("seq,id,time,rule,severity")
    bad = CliRunner().invoke(main, ["--db", str(trail / "t.db"), "alerts", "-f", "severity=huge"])
    assert bad.exit_code == 2


def test_timeline_tells_the_containers_life(trail: Path) -> None:
    text = run(trail, "timeline", "web-1").stdout
    assert "created" in text and "alice" in text and "OPS-1234" in text
    assert "release 2024.11 hotfix" in text and "read-only" in text
    assert "exec_start" in text and "exec-in-container" in text
    assert "removed" in text
    entries = lines(run(trail, "timeline", "web-1", "--format", "json"))
    assert entries[0]["action"] == "create"
    assert any(e["alerts"] for e in entries)
    missing = CliRunner().invoke(main, ["--db", str(trail / "t.db"), "timeline", "nope"])
    assert missing.exit_code == 2 and "no container 'nope'" in missing.output


def test_replay_with_stricter_rules_lists_new_findings_and_stores_nothing(
    trail: Path, tmp_path: Path
) -> None:
    before = len(lines(run(trail, "alerts", "--format", "json", "--suppressed")))
    same = run(trail, "replay", "--format", "json")
    assert same.stdout == ""
    strict = tmp_path / "strict.yaml"
    strict.write_text(
        "rules:\n  untrusted-image:\n    trusted: ['registry.internal/web/*']\n"
        "  container-churn:\n    threshold: 5\n"
    )
    result = run(trail, "replay", "--rules", str(strict), "--notify", "none", "--format", "json")
    new = lines(result)
    rules = {a["rule"] for a in new}
    assert "untrusted-image" in rules
    assert {a["container"] for a in new if a["rule"] == "untrusted-image"} >= {"debug-priv"}
    assert len(lines(run(trail, "alerts", "--format", "json", "--suppressed"))) == before


def test_replay_rules_file_errors_name_the_line(trail: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  container-churn:\n    threshold: many\n")
    result = CliRunner().invoke(main, ["--db", str(trail / "t.db"), "replay", "--rules", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3: container-churn.threshold" in result.output


def test_rules_list_names_every_rule(tmp_path: Path) -> None:
    rows = lines(run(tmp_path, "rules", "list", "--format", "json"))
    assert len(rows) == 29 + 3  # and the fleet rules `consume` runs
    assert {"host-chain-broken", "fleet-churn", "fleet-untrusted-image"} <= {
        r["rule"] for r in rows
    }
    privileged = next(r for r in rows if r["rule"] == "privileged-container")
    assert privileged["severity"] == "critical" and privileged["cis"] == "5.5"


def test_rules_test_runs_table_driven_cases(tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        """
rules:
  privileged-container:
    exceptions: [{image: "registry.internal/tools/*", reason: exporter}]
cases:
  - name: privileged run fires
    event: {action: create, actor: {name: dbg, image: busybox},
            config: {origin: argv, privileged: true}, who: {login: alice, method: auditd-cli}}
    fires: [privileged-container]
    not: [docker-socket-mount]
  - name: exporter is suppressed
    event: {action: create, actor: {name: exp, image: registry.internal/tools/exp:1},
            config: {origin: inspect, privileged: true}}
    suppressed: [privileged-container]
  - name: a wrong expectation
    event: {action: create, actor: {name: ok}, config: {origin: argv, read_only_rootfs: true}}
    fires: [writable-rootfs]
"""
    )
    result = run(tmp_path, "rules", "test", str(cases))
    assert result.exit_code == 1
    assert "ok   privileged run fires" in result.stdout
    assert "ok   exporter is suppressed" in result.stdout
    assert "FAIL a wrong expectation: writable-rootfs did not fire" in result.stdout
    assert "2 passed, 1 failed" in result.stdout


def test_events_stored_without_evaluation_are_evaluated_on_restart(tmp_path: Path) -> None:
    """A crash between storing events and storing their alerts is repaired."""
    from listener.sources.docker import read_events_file
    from sinks.sqlite import SQLiteTrail

    events = [e for e in read_events_file(SCENARIO / "events.jsonl", "h1") if not isinstance(
        e, Exception)]  # fmt: skip
    with SQLiteTrail(tmp_path / "t.db", signing_key=tmp_path / "t.key") as raw_trail:
        raw_trail.append(events)  # stored, never evaluated: the crash
    assert run(tmp_path, "alerts", "--format", "json").stdout == ""
    result = run(tmp_path, "ingest", "--docker-events", str(SCENARIO / "events.jsonl"))
    assert "stored 0" in result.stdout
    repaired = lines(run(tmp_path, "alerts", "--format", "json"))
    # Without an audit log or inspect there is no config: the exec is what must be judged.
    assert ("exec-in-container", "web-1") in {(a["rule"], a["container"]) for a in repaired}
    again = run(tmp_path, "ingest", "--docker-events", str(SCENARIO / "events.jsonl"))
    assert again.exit_code == 0
    assert len(lines(run(tmp_path, "alerts", "--format", "json"))) == len(repaired)
    db = sqlite3.connect(tmp_path / "t.db")
    assert db.execute("SELECT count(*) FROM alerts").fetchone()[0] >= len(repaired)
