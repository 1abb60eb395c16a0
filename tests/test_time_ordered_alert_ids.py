"""Alert ids begin with their event's time, as Docker and audit event ids do, so a
commit's alerts are neighbours in the unique id index; alerts an older docktrail
stored under the earlier ids are still found when the same event is evaluated
again (`sinks.sqlite.legacy_ids.ALERTS`)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

import listener.model.alert as alert_model
from config.models import DocktrailConfig
from listener.ingest import ingest_files
from listener.model.alert import Alert, alert_id
from listener.model.event import Actor, Event, legacy_id_prefix, natural_id, time_ordered_id
from listener.model.finding import Finding
from listener.rules.engine import replay_trail
from sinks.sqlite import SQLiteTrail, verify_file
from sinks.sqlite.legacy_ids import ALERTS, EVENTS, LEGACY_ALERTS_UNTIL_KEY, legacy_until
from tests.shared_data import DATA

T0 = 1_733_400_000_123_456_789
SCENARIO_EVENTS = DATA / "scenario-a" / "events.jsonl"
HOUR = 3_600_000_000_000


def _event(n: int, at_ns: int) -> Event:
    return Event(
        id=time_ordered_id(at_ns, "test", n),
        time_ns=at_ns,
        source="docker",
        host="h1",
        type="container",
        action="create",
        actor=Actor(id=f"{n:064x}", name=f"c{n}", image="busybox"),
    )


def _finding(rule: str) -> Finding:
    return Finding(rule=rule, severity="high", summary=f"{rule} fired", container="c1")


def _old_alert_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """What docktrail stored as alert ids before time-ordered ones."""

    def old(event: Event, rule: str, index: int) -> str:
        return natural_id("alert", event.id, rule, index)

    monkeypatch.setattr(alert_model, "alert_id", old)


def _as_an_older_docktrail_left_it(db: Path) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM _migrations WHERE name = '0013_time_ordered_alert_ids'")
        conn.execute("DELETE FROM meta WHERE key = ?", (LEGACY_ALERTS_UNTIL_KEY,))


def _alert_rows(db: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT id, rule, event_seq FROM alerts ORDER BY seq")
        return [(str(i), str(r), int(s)) for i, r, s in rows]


def _stored_with_alert(db: Path, event: Event, rule: str) -> Event:
    with SQLiteTrail(db) as trail:
        (stored,) = trail.append([event]).stored
        trail.append_alerts([Alert.from_finding(_finding(rule), stored)])
    return stored


def test_an_alert_id_is_its_events_time_then_the_older_ids_first_digits() -> None:
    event = _event(1, T0).model_copy(update={"seq": 1})
    made = Alert.from_finding(_finding("privileged-container"), event, 2).id
    assert made == alert_id(event, "privileged-container", 2)
    assert len(made) == 32 and made[:8] == f"{T0 >> 32:08x}"
    older = natural_id("alert", event.id, "privileged-container", 2)
    assert legacy_id_prefix(made, T0) == older[:24]
    ids = [
        alert_id(_event(n, T0 + n * HOUR).model_copy(update={"seq": n}), "r", 0)
        for n in range(1, 40)
    ]
    assert ids == sorted(ids)


def test_an_alert_stored_under_its_old_id_is_not_stored_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "trail.db"
    with monkeypatch.context() as patched:
        _old_alert_ids(patched)
        stored = _stored_with_alert(db, _event(1, T0), "privileged-container")
    _as_an_older_docktrail_left_it(db)
    before = _alert_rows(db)
    assert legacy_id_prefix(before[0][0], T0) is None  # really the old format

    with SQLiteTrail(db) as trail:  # the same event evaluated again, by the newer code
        again = Alert.from_finding(_finding("privileged-container"), stored)
        other_rule = Alert.from_finding(_finding("dangerous-mount"), stored)
        written = trail.append_alerts([again, other_rule])

    assert [a.id for a in written] == [other_rule.id]
    assert _alert_rows(db) == [*before, (other_rule.id, "dangerous-mount", stored.seq or 0)]
    with contextlib.closing(sqlite3.connect(db)) as conn:
        until = conn.execute("SELECT value FROM meta WHERE key = ?", (LEGACY_ALERTS_UNTIL_KEY,))
        assert int(until.fetchone()[0]) == T0
    assert verify_file(db, db.with_suffix(".key")).ok


def test_old_alert_ids_an_older_service_kept_storing_are_still_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newer command opens the trail first (migration 0013 records T0) while the older
    service, still running, stores an alert of a later event under its old id."""
    db = tmp_path / "trail.db"
    with monkeypatch.context() as patched:
        _old_alert_ids(patched)
        _stored_with_alert(db, _event(1, T0), "r")
    _as_an_older_docktrail_left_it(db)
    with SQLiteTrail(db):
        pass
    with monkeypatch.context() as patched:
        _old_alert_ids(patched)
        later = _stored_with_alert(db, _event(2, T0 + HOUR), "r")
    with SQLiteTrail(db) as trail:
        written = trail.append_alerts([Alert.from_finding(_finding("r"), later)])
    assert written == []
    assert len(_alert_rows(db)) == 2


def test_alerts_of_events_after_the_cut_off_cost_no_look_up(tmp_path: Path) -> None:
    """A trail made by this docktrail records no cut-off: its alerts are never looked up."""
    db = tmp_path / "trail.db"
    _stored_with_alert(db, _event(1, T0), "r")
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (LEGACY_ALERTS_UNTIL_KEY,))
        assert row.fetchone() is None
    rows = _alert_rows(db)
    assert legacy_id_prefix(rows[0][0], T0) is not None


def test_replay_reports_nothing_new_on_a_trail_of_older_alert_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`docktrail replay` lists the alerts the trail does not hold: an older docktrail's
    alerts, stored under their old ids, are held."""
    db = tmp_path / "trail.db"
    config = DocktrailConfig.model_validate({"trail": {"path": str(db)}})
    with monkeypatch.context() as patched:
        _old_alert_ids(patched)
        first = asyncio.run(ingest_files(config, host="h1", docker_events=[SCENARIO_EVENTS]))
    assert first.alerts > 10
    _as_an_older_docktrail_left_it(db)
    with SQLiteTrail(db) as trail:
        assert replay_trail(trail, config.rules) == []


def test_an_unmigrated_trail_read_only_has_every_alert_id_looked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trail on read-only storage is read without its index-only migrations: all its
    alert ids are old ones, whatever their time."""
    db = tmp_path / "trail.db"
    with monkeypatch.context() as patched:
        _old_alert_ids(patched)
        _stored_with_alert(db, _event(1, T0), "r")
    _as_an_older_docktrail_left_it(db)
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        assert legacy_until(conn, ALERTS) == 2**63 - 1
        assert legacy_until(conn, EVENTS) is None  # that one was applied
