"""Compact stored bodies: null fields of the model are left out of what is stored
and hashed, and trails written before (bodies with every null) still open, verify,
query and take new events.

tests/data/trail-v1 was written by docktrail before compact bodies (three events,
one alert, signed checkpoints; its key beside it).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, Why, canonical_json, chain_hash, natural_id
from sinks.base import AlertFilter, EventFilter
from sinks.sqlite import SQLiteTrail, verify_file

OLD_TRAIL = Path(__file__).parent / "data" / "trail-v1"
T0 = 1_795_346_502_000_000_000
CID = "c0ffee" + "1" * 58
NGINX = "registry.internal/web/nginx:1.25"


@pytest.fixture
def old_trail(tmp_path: Path) -> Path:
    for name in ("trail.db", "trail.key"):
        shutil.copyfile(OLD_TRAIL / name, tmp_path / name)
        (tmp_path / name).chmod(0o600)
    return tmp_path / "trail.db"


def docker_event(n: int, **fields: object) -> Event:
    base: dict[str, object] = {
        "id": natural_id("compact", n),
        "time_ns": T0 + 10_000 + n,
        "source": "docker",
        "host": "h1",
        "type": "container",
        "action": "start",
        "actor": Actor(id=CID, name="web-1", image=NGINX),
        "who": Who(method="unavailable", reason="no audit log read"),
    }
    return Event.model_validate(base | fields)


def bodies(path: Path, table: str = "events") -> list[str]:
    with sqlite3.connect(path) as conn:
        return [row[0] for row in conn.execute(f"SELECT body FROM {table} ORDER BY seq")]


def test_stored_body_leaves_out_null_fields(tmp_path: Path) -> None:
    event = docker_event(1, attributes={"name": "web-1", "note": None})
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([event])
    (body,) = bodies(tmp_path / "t.db")
    stored = json.loads(body)
    assert stored["who"] == {"method": "unavailable", "reason": "no audit log read"}
    assert stored["why"] == {}
    assert stored["actor"] == {"id": CID, "image": NGINX, "name": "web-1"}
    assert stored["attributes"] == {"name": "web-1", "note": None}  # data keeps its nulls
    assert "null" not in body.replace('"note":null', "")
    # The hash is over the stored text, which is the canonical JSON of content().
    assert event.hash == chain_hash(event.prev_hash or "", body)
    assert body == canonical_json(event.content())


def test_compact_body_reads_back_as_the_same_event(tmp_path: Path) -> None:
    event = docker_event(2, why=Why(ticket="OPS-7"), who=Who(login="alice", uid=1000))
    expected = event.model_copy(deep=True)
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([event])
        (back,) = trail.query(EventFilter())
    expected.seq, expected.hash, expected.prev_hash = back.seq, back.hash, back.prev_hash
    assert back.to_json_object() == expected.to_json_object()
    assert json.dumps(back.to_json_object()) == json.dumps(expected.to_json_object())


def test_alert_body_leaves_out_null_fields(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        (event,) = trail.append([docker_event(3)]).stored
        alert = Alert(
            id=natural_id("alert", event.id),
            time_ns=event.time_ns,
            rule="untrusted-image",
            severity="high",
            event_seq=event.seq or 0,
            event_id=event.id,
            host="h1",
            summary="untrusted image",
            details={"kept": None},
        )
        trail.append_alerts([alert])
        (back,) = trail.query_alerts(AlertFilter(include_suppressed=True))
        assert trail.verify().ok
    (body,) = bodies(tmp_path / "t.db", "alerts")
    stored = json.loads(body)
    assert "container" not in stored and "suppressed" not in stored and "image" not in stored
    assert stored["details"] == {"kept": None}
    assert back.container is None and back.suppressed is None and back.who == Who()


def test_old_trail_verifies_as_found(old_trail: Path) -> None:
    assert '"audit_id":null' in bodies(old_trail)[0]  # the fixture is of the old layout
    report = verify_file(old_trail, old_trail.with_suffix(".key"))
    assert report.ok, report.problem
    assert (report.events, report.alerts) == (3, 1)


def test_old_trail_opens_queries_and_takes_compact_events(old_trail: Path) -> None:
    with SQLiteTrail(old_trail) as trail:
        old = list(trail.query(EventFilter(container="web-1")))
        assert [e.seq for e in old] == [1, 2]
        assert old[0].who.login == "alice" and old[0].attributes["note"] is None
        assert [e.seq for e in trail.query(EventFilter(user="bob"))] == [3]
        assert [a.rule for a in trail.query_alerts(AlertFilter(container="web-1"))] == [
            "privileged-container"
        ]
        trail.append([docker_event(4)])
        mixed = [e.seq for e in trail.query(EventFilter(container="web-1"))]
        assert mixed == [1, 2, 4]
        assert trail.verify().ok
    stored = bodies(old_trail)
    assert '"audit_id":null' in stored[0] and "null" not in stored[-1]
    report = verify_file(old_trail, old_trail.with_suffix(".key"))
    assert report.ok, report.problem
    assert report.events == 4


def test_old_row_edited_is_still_found(old_trail: Path) -> None:
    with sqlite3.connect(old_trail) as conn:
        conn.execute("DROP TRIGGER events_append_only_update")
        conn.execute(
            'UPDATE events SET body = replace(body, \'"login":"alice"\', \'"login":"eve"\') '
            "WHERE seq = 1"
        )
    report = verify_file(old_trail, old_trail.with_suffix(".key"))
    assert not report.ok and report.first_bad_seq == 1
