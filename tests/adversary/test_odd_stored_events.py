"""An event read back from the trail is whatever the file holds: a body in a shape
our writer never produces (here container configs whose mounts are strings, as
an older or foreign writer might leave them) must not stop `ingest`/`run` from
starting, nor `replay`; the rule that cannot judge it says so in the log, and
the other rules still judge it."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from bench.docker_events_file import write_events
from bench.trail_append import synthetic_events
from config.models import DocktrailConfig, RulesConfig
from listener.ingest import ingest_files
from listener.model.event import Actor, Event, natural_id
from listener.rules.base import rule_failures as failure_counts
from listener.rules.engine import RuleEngine, replay_trail
from sinks.sqlite import SQLiteTrail
from tests.shared_data import DATA

STORED = 200  # 8 container lifecycles: creates with odd mounts, some privileged


def odd_trail(path: Path) -> list[int]:
    """A trail of synthetic events whose create configs hold mounts as strings; their seqs."""
    events = list(synthetic_events(STORED))
    first_create = next(e for e in events if "mounts" in e.config)
    first_create.config["user"] = 1000  # a string in the contract
    with SQLiteTrail(path, durability="normal") as trail:
        stored = trail.append(events).stored
    creates = [e.seq or 0 for e in stored if "mounts" in e.config]
    assert creates and all(
        isinstance(mount, str) for e in stored for mount in e.config.get("mounts", [])
    )
    return creates


def rule_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed on event" in r.getMessage()]


def test_ingest_starts_on_a_trail_with_odd_bodies_and_says_which(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "trail.db"
    creates = odd_trail(db)
    events = tmp_path / "events.jsonl"
    write_events(events, 100, source=DATA / "scenario-a" / "events.jsonl")
    config = DocktrailConfig.model_validate({"trail": {"path": str(db)}})
    caplog.set_level(logging.ERROR)

    report = asyncio.run(ingest_files(config, docker_events=[events], host="h1"))

    assert report.stats.stored == 100
    failures = rule_failures(caplog)
    assert failures, "the rule that could not judge the odd configs says nothing"
    assert {line.split()[1] for line in failures} == {
        "docker-socket-mount",
        "sensitive-mount",
        "runs-as-root",
        "track_container",
    }
    assert any(f"(seq {creates[0]}, container create)" in line for line in failures)
    conn = sqlite3.connect(db)
    try:
        judged = {
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT rule FROM alerts WHERE event_seq <= ?", (STORED,)
            )
        }
        mark = conn.execute(
            "SELECT value FROM source_state WHERE name = 'docktrail.rules'"
        ).fetchone()
    finally:
        conn.close()
    # The odd events were still judged by every other rule (some are privileged).
    assert "privileged-container" in judged
    assert mark is not None and '"evaluated_through"' in mark[0]


def test_replay_of_odd_bodies_completes(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    creates = odd_trail(db)
    before = failure_counts()
    with SQLiteTrail(db, durability="normal") as trail:
        alerts = replay_trail(trail, RulesConfig())
    assert {alert.rule for alert in alerts} >= {"privileged-container"}
    after = failure_counts()
    for rule in ("docker-socket-mount", "sensitive-mount"):
        assert after[rule] - before.get(rule, 0) == len(creates)
    for what in ("runs-as-root", "track_container"):
        assert after[what] - before.get(what, 0) == 1


def test_a_config_too_odd_to_fingerprint_does_not_stop_the_other_events_rules(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An integer beyond 64 bits (the standard library's JSON stores it) cannot be
    fingerprinted: the check of whether the configuration was judged before says so and
    counts it unjudged, so its findings are alerted, and the batch's other events are
    still judged."""

    def container(n: int, action: str, config: dict[str, object]) -> Event:
        return Event(
            seq=n,
            id=natural_id("odd-fingerprint", n),
            time_ns=1_795_000_000_000_000_000 + n,
            source="docker",
            host="h1",
            type="container",
            action=action,
            actor=Actor(id="c" * 64, name="odd", image="docker.io/library/redis:7"),
            config=config,
        )

    engine = RuleEngine(RulesConfig())
    engine.alerts_for([container(1, "create", {"privileged": True})])
    caplog.set_level(logging.ERROR)
    odd = container(2, "observed", {"privileged": True, "cap_add": ["NET_ADMIN", 2**70]})
    other = container(3, "create", {"privileged": True})
    other.actor = Actor(id="d" * 64, name="other", image="docker.io/library/redis:7")

    alerts = engine.alerts_for([odd, other])

    assert {(a.event_id, a.rule) for a in alerts} >= {
        (odd.id, "privileged-container"),
        (other.id, "privileged-container"),
    }
    assert any("already_judged failed on event" in m for m in rule_failures(caplog))
