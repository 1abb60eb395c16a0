"""Deployment intents through the CLI, `ingest` and `replay` (issue 16), on a real
SQLite trail: declare / list / close / due, a create of a captured Engine events
file that matches an open intent gets its why, and the undeclared policy.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from config.errors import ConfigError
from config.models import DocktrailConfig, IntentApiConfig
from listener.cli import main
from listener.expiry import ExpiryWatch
from listener.intent_api import load_token
from listener.intents import (
    IntentBook,
    IntentSpec,
    declare_event,
    parse_expires_ns,
)
from listener.model.event import Who
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail

_NS = 1_000_000_000


def cli(tmp_path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--db", str(tmp_path / "t.db"), *args])


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def declare(tmp_path: Path, *args: str) -> str:
    result = cli(tmp_path, "intent", "declare", *args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def create_line(name: str, image: str, time_ns: int, **labels: str) -> str:
    cid = f"{abs(hash(name)):064x}"[:64]
    return json.dumps({
        "Type": "container", "Action": "create", "scope": "local",
        "Actor": {"ID": cid, "Attributes": {"image": image, "name": name, **labels}},
        "time": time_ns // _NS, "timeNano": time_ns,
    })  # fmt: skip


def ingest(tmp_path: Path, *lines: str) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in lines))
    result = cli(tmp_path, "ingest", "--docker-events", str(events), "--host", "h1")
    assert result.exit_code == 0, result.output


def creates(tmp_path: Path) -> dict[str, Any]:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        found = trail.query(EventFilter(type="container", action="create"))
        return {event.actor.name: event for event in found}


def test_ingest_gives_a_matching_create_the_intents_why(tmp_path: Path) -> None:
    intent_id = declare(
        tmp_path, "--image", "registry.internal/web/nginx", "--who", "alice",
        "--why", "release 2026.12", "--ticket", "CHG-9", "--expires", "7d",
    )  # fmt: skip
    now = time.time_ns()
    ingest(
        tmp_path,
        create_line("web-1", "registry.internal/web/nginx:1.25", now),
        create_line("db-1", "registry.internal/db/postgres:16", now + 1),
        create_line("old-1", "registry.internal/web/nginx:1.25", now - 3600 * _NS),
    )
    found = creates(tmp_path)
    web = found["web-1"]
    assert (web.why.source, web.why.reason, web.why.ticket) == (
        "intent",
        "release 2026.12",
        "CHG-9",
    )
    assert web.attributes["intent"]["id"] == intent_id
    assert web.attributes["intent"]["who"] == "alice"
    assert found["db-1"].why.source is None  # another image
    assert found["old-1"].why.source is None  # created before the intent was declared
    timeline = cli(tmp_path, "timeline", "web-1")
    assert f"intent   {intent_id} declared for alice (image registry.internal/web/nginx)" in (
        timeline.output
    )
    assert cli(tmp_path, "verify").exit_code == 0


def test_replay_with_the_undeclared_policy_flags_only_what_nothing_explains(
    tmp_path: Path,
) -> None:
    declare(tmp_path, "--name", "web-*", "--who", "alice", "--why", "rollout")
    now = time.time_ns()
    ingest(
        tmp_path,
        create_line("web-1", "registry.internal/web/nginx:1.25", now),
        create_line("db-1", "registry.internal/db/postgres:16", now + 1),
        create_line("lab-1", "registry.internal/db/postgres:16", now + 2, **{"audit.why": "lab"}),
        create_line("tool-1", "docker.io/library/busybox:1", now + 3),
    )
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  undeclared-deployment:\n    enabled: true\n    images: ['registry.internal/*']\n"
    )
    result = cli(tmp_path, "replay", "--rules", str(rules), "--format", "json")
    assert result.exit_code == 0, result.output
    flagged = [a["container"] for a in json_lines(result.stdout)
               if a["rule"] == "undeclared-deployment"]  # fmt: skip
    assert flagged == ["db-1"]  # web-1: intent; lab-1: why label; tool-1: out of scope
    # off by default: the ingest itself raised nothing
    alerts = cli(tmp_path, "alerts", "-f", "rule=undeclared-deployment", "--format", "json")
    assert alerts.stdout.strip() == ""


def test_list_close_and_due(tmp_path: Path) -> None:
    soon = declare(tmp_path, "--name", "tmp-*", "--who", "bob", "--why", "test", "--expires", "1h")
    later = declare(tmp_path, "--name", "svc-*", "--who", "bob", "--why", "svc", "--expires", "30d")
    ingest(tmp_path, create_line("tmp-1", "busybox", time.time_ns()))
    listed = json_lines(cli(tmp_path, "intent", "list", "--format", "json").stdout)
    assert [row["id"] for row in listed] == [soon, later]
    assert listed[0]["via"] == "cli" and listed[0]["who"] == "bob"
    due = json_lines(cli(tmp_path, "intent", "due", "--format", "json").stdout)
    assert [(row["id"], row["containers"]) for row in due] == [(soon, ["tmp-1"])]
    closed = cli(tmp_path, "intent", "close", later)
    assert closed.exit_code == 0, closed.output
    again = cli(tmp_path, "intent", "close", later)
    assert again.exit_code == 2 and "closed already" in again.output
    unknown = cli(tmp_path, "intent", "close", "in-nothere")
    assert unknown.exit_code == 2 and "no intent" in unknown.output
    assert [
        r["id"] for r in json_lines(cli(tmp_path, "intent", "list", "--format", "json").stdout)
    ] == [soon]
    every = json_lines(cli(tmp_path, "intent", "list", "--all", "--format", "json").stdout)
    assert {r["id"]: r["closed"] is not None for r in every} == {soon: False, later: True}
    with SQLiteTrail(tmp_path / "t.db") as trail:
        kinds = [(e.action, e.actor.id) for e in trail.query(EventFilter(type="intent"))]
    assert kinds == [("declare", soon), ("declare", later), ("close", later)]


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--who", "alice", "--why", "x"], "image or name"),
        (["--name", "a", "--who", "alice; rm", "--why", "x"], "--who"),
        (["--name", "a", "--who", "alice", "--why", "line\nforged"], "--why"),
        (["--name", "a", "--who", "alice", "--why", "x", "--expires", "2020-01-01"], "future"),
        (["--name", "a", "--who", "alice", "--why", "x", "--expires", "soon"], "cannot read"),
    ],
)
def test_bad_declarations_are_refused_and_store_nothing(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    result = cli(tmp_path, "intent", "declare", *args)
    assert result.exit_code == 2, result.output
    assert problem in result.output
    if (tmp_path / "t.db").exists():
        with SQLiteTrail(tmp_path / "t.db") as trail:
            assert list(trail.query(EventFilter(type="intent"))) == []


def test_expiry_durations_count_forward_and_times_are_absolute() -> None:
    now = 1_800_000_000 * _NS
    assert parse_expires_ns("2h", now) == now + 7200 * _NS
    assert parse_expires_ns("2027-01-15T10:00:00Z", now) == 1_800_007_200 * _NS
    assert parse_expires_ns("1800007200", now) == 1_800_007_200 * _NS


def test_book_matches_the_newest_open_intent_by_image_with_or_without_tag() -> None:
    book = IntentBook()
    now = time.time_ns()
    first = declare_event(IntentSpec(image="reg/app", who="a", why="one"), host="h",
                          declared_by=Who(), via="cli", now_ns=now)  # fmt: skip
    second = declare_event(IntentSpec(image="reg/app:2*", who="b", why="two"), host="h",
                           declared_by=Who(), via="cli", now_ns=now + 1)  # fmt: skip
    for event in (first, second):
        book.apply(event)
    probe = first.model_copy(update={"time_ns": now + 5, "type": "container", "action": "create"})
    probe.actor.image = "reg/app:2.1"
    found = book.match(probe)
    assert found is not None and found.who == "b"
    probe.actor.image = "reg/app:1.0"
    found = book.match(probe)
    assert found is not None and found.who == "a"
    probe.actor.image = "reg/application:1.0"
    assert book.match(probe) is None


def test_expiry_watch_reports_a_running_container_once_past_its_deadline() -> None:
    now = [1_800_000_000 * _NS]
    watch = ExpiryWatch("h", clock=lambda: now[0])
    listed = {
        "Id": "c1",
        "Names": ["/old-1"],
        "Image": "busybox",
        "Created": 1_800_000_000,
        "Labels": {"audit.expires": "10m"},  # from its creation
    }
    assert watch.on_running([listed]) == []
    assert watch.next_deadline(now[0]) == now[0] + 600 * _NS  # the timer now knows it
    now[0] += 601 * _NS
    expired = watch.on_running([listed])
    assert [(e.action, e.actor.name, e.attributes["expires_from"]) for e in expired] == [
        ("expired", "old-1", "label")
    ]
    assert watch.on_running([listed]) == []  # once
    unreadable = dict(listed, Id="c2", Labels={"audit.expires": "whenever"})
    assert watch.on_running([unreadable]) == []  # a label is a claim: no deadline


SCENARIO = Path(__file__).parent / "data" / "scenario-a"


def test_offline_ingest_cross_checks_the_declared_login_with_the_audit_log(
    tmp_path: Path,
) -> None:
    """Scenario a: alice runs web-1 and debug-priv; intents declared them for alice and bob."""
    before = 1_795_346_500 * _NS  # a little before the capture
    declared = [
        declare_event(IntentSpec(name="web-1", who="alice", why="hotfix"), host="h1",
                      declared_by=Who(), via="cli", now_ns=before),
        declare_event(IntentSpec(name="debug-priv", who="bob", why="debugging"), host="h1",
                      declared_by=Who(), via="cli", now_ns=before + 1),
    ]  # fmt: skip
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(declared)
    result = cli(tmp_path, "ingest", "--docker-events", str(SCENARIO / "events.jsonl"),
                 "--audit-log", str(SCENARIO / "audit.log.gz"), "--host", "h1")  # fmt: skip
    assert result.exit_code == 0, result.output
    found = creates(tmp_path)
    assert found["web-1"].why.source == "intent" and found["web-1"].who.login == "alice"
    assert found["debug-priv"].attributes["intent"]["id"] == declared[1].actor.id
    alerts = cli(tmp_path, "alerts", "-f", "rule=intent-mismatch", "--format", "json")
    rows = json_lines(alerts.stdout)
    assert [(r["container"], r["details"]["declared_who"], r["details"]["evidence_who"])
            for r in rows] == [("debug-priv", "bob", "alice")]  # fmt: skip


def test_the_endpoint_is_off_and_local_by_default() -> None:
    api = DocktrailConfig().intents.api
    assert (api.enabled, api.listen) == (False, "127.0.0.1")


def test_a_token_file_others_can_read_or_a_short_token_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    token.chmod(0o644)
    with pytest.raises(ConfigError, match="world-readable"):
        load_token(IntentApiConfig(enabled=True, token_file=token))
    token.chmod(0o600)
    assert load_token(IntentApiConfig(enabled=True, token_file=token)) == "s3cret-token-0123456789"
    token.write_text("short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_token(IntentApiConfig(enabled=True, token_file=token))
    with pytest.raises(ConfigError, match="token_file or token_env"):
        load_token(IntentApiConfig(enabled=True))


def test_run_with_the_endpoint_on_and_no_token_stops_with_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "docktrail.yaml"
    config.write_text(
        f"trail:\n  path: {tmp_path / 't.db'}\n"
        f"docker:\n  host: unix://{tmp_path / 'no.sock'}\n"
        "auditd:\n  enabled: false\n"
        "intents:\n  api:\n    enabled: true\n    token_env: DT_TEST_NO_SUCH_TOKEN\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "listener", "-c", str(config), "run"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "intents.api.token_env: $DT_TEST_NO_SUCH_TOKEN is not set" in result.stderr
