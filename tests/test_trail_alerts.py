"""Alerts in the trail: chain, dedupe, the evaluation mark, filters, checkpoints.

Every behaviour test runs against both trails (SQLite file and memory), so
the SQL and the Python definition of each filter cannot drift apart.
"""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

import sinks.sqlite.schema as sqlite_schema
from config.errors import TrailError
from listener.model.alert import Alert, alert_id
from listener.model.event import (
    GENESIS_HASH,
    Actor,
    Event,
    Who,
    canonical_json,
    chain_hash,
    natural_id,
)
from sinks.base import SEVERITY_RANK, AlertFilter, severities_at_least
from sinks.chain import seal
from sinks.filtering import alert_matches
from sinks.memory import MemoryTrail
from sinks.signing import checkpoint_payload, fingerprint, load_or_create_key, sign
from sinks.sqlite import MIGRATIONS, SQLiteTrail, apply_migrations, build_alert_query
from tests.actor_layouts import old_plan

T0 = 1_795_346_502_000_000_000
CID_WEB = "aaa111" + "0" * 58
CID_API = "bbb222" + "0" * 58
NGINX = "registry.internal/web/nginx:1.25"
REDIS = "docker.io/library/redis:7"

Trail = SQLiteTrail | MemoryTrail


def make_event(n: int, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": natural_id("alerts-test", n),
        "time_ns": T0 + n * 1000,
        "source": "docker",
        "host": "h1",
        "type": "container",
        "action": "create",
        "actor": Actor(id=CID_WEB, name="web-1", image=NGINX),
        "who": Who(login="alice", user="root"),
    }
    return Event(**(base | fields))


EVENTS = [
    make_event(1),
    make_event(2, action="exec_start: sh", who=Who(login="bob", user="bob")),
    make_event(3, actor=Actor(id=CID_API, name="api-1", image=REDIS), host="h2"),
    make_event(
        4,
        type="network",
        action="connect",
        actor=Actor(id="net1", name="bridge"),
        attributes={"container": CID_API},
        who=Who(),
    ),
    make_event(5, type="image", action="pull", actor=Actor(id=REDIS, name=REDIS)),
]


def alert_on(event: Event, rule: str, severity: str, index: int = 0, **fields: Any) -> Alert:
    """What `Alert.from_finding` would make for `event` (which must be stored)."""
    assert event.seq is not None
    base: dict[str, Any] = {
        "id": alert_id(event, rule, index),
        "time_ns": event.time_ns,
        "rule": rule,
        "severity": severity,
        "event_seq": event.seq,
        "event_id": event.id,
        "host": event.host,
        "container": event.actor.name if event.type == "container" else None,
        "image": event.actor.image or (event.actor.name if event.type == "image" else None),
        "who": event.who,
        "summary": f"{rule} on {event.actor.name}",
        "details": {"index": index},
    }
    return Alert(**(base | fields))


def corpus_alerts(events: list[Event]) -> list[Alert]:
    """Alert seq -> (event seq): 1->1, 2->1, 3->2, 4->3, 5->4, 6->5."""
    e1, e2, e3, e4, e5 = events
    return [
        alert_on(e1, "privileged-container", "critical"),
        alert_on(e1, "runs-as-root", "low", suppressed="base images run as root"),
        alert_on(e2, "exec-in-container", "high"),
        alert_on(e3, "no-resource-limits", "medium"),
        alert_on(e4, "host-namespace", "high"),  # no container of its own: via the event
        alert_on(e5, "untrusted-image", "info"),
    ]


@pytest.fixture(params=["sqlite", "memory"])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Trail]:
    instance: Trail
    instance = SQLiteTrail(tmp_path / "t.db") if request.param == "sqlite" else MemoryTrail()
    with instance:
        yield instance


@pytest.fixture
def filled(trail: Trail) -> Trail:
    stored = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    trail.append_alerts(corpus_alerts(stored), evaluated_through=5)
    return trail


def assert_alert_chain(alerts: list[Alert]) -> None:
    prev = GENESIS_HASH
    for n, alert in enumerate(alerts, start=1):
        assert (alert.seq, alert.prev_hash) == (n, prev)
        assert alert.hash == chain_hash(prev, canonical_json(alert.content()))
        prev = alert.hash


# -- append: chain, dedupe, event references ------------------------------------------


def test_append_alerts_chains_in_place(trail: Trail) -> None:
    events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    assert trail.alerts_head() == (0, GENESIS_HASH) and trail.count_alerts() == 0
    alerts = corpus_alerts(events)
    first = trail.append_alerts(alerts[:2])
    second = trail.append_alerts(alerts[2:])
    stored = first + second
    assert all(a is b for a, b in zip(stored, alerts, strict=True))  # sealed in place
    assert_alert_chain(stored)
    assert trail.alerts_head() == (6, stored[-1].hash)
    assert trail.count_alerts() == 6
    assert list(trail.query_alerts(AlertFilter())) == stored
    assert trail.head()[0] == 5  # the events chain is untouched
    assert trail.verify().ok  # SQLite: the head seal vouches for the unsigned tail


def test_dedupe_by_alert_id(filled: Trail) -> None:
    stored = list(filled.query_alerts(AlertFilter()))
    again = [a.model_copy(update={"seq": None, "hash": None, "prev_hash": None}) for a in stored]
    assert filled.append_alerts(again) == []
    stored_event = filled.get(5)
    assert stored_event is not None
    new = alert_on(stored_event, "untrusted-image", "info", index=1)
    replay = alert_on(stored_event, "untrusted-image", "info", summary="same id, other text")
    result = filled.append_alerts([new, replay, new])
    assert [a.seq for a in result] == [7]
    assert filled.count_alerts() == 7
    assert_alert_chain(list(filled.query_alerts(AlertFilter())))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"event_seq": 99}, "points at event seq 99, which is not stored"),
        ({"event_seq": 0}, "points at event seq 0, which is not stored"),
        ({"event_id": "f" * 32}, f"event seq 2 is event {EVENTS[1].id}, not event {'f' * 32}"),
    ],
)
def test_an_alert_must_point_at_its_stored_event(
    trail: Trail, change: dict[str, Any], message: str
) -> None:
    events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    good = alert_on(events[0], "privileged-container", "critical")
    bad = alert_on(events[1], "exec-in-container", "high").model_copy(update=change)
    with pytest.raises(TrailError, match=message):
        trail.append_alerts([good, bad], evaluated_through=2)
    # nothing of the batch: neither the good alert nor the mark
    assert (trail.count_alerts(), trail.evaluated_through()) == (0, 0)
    assert [a.seq for a in trail.append_alerts([good])] == [1]


def test_a_bad_alert_stores_nothing_of_its_batch(trail: Trail) -> None:
    events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    good = alert_on(events[0], "privileged-container", "critical")
    bad = alert_on(events[1], "exec-in-container", "high", details={"x": "\ud800"})
    with pytest.raises(TrailError, match="not valid Unicode"):
        trail.append_alerts([good, bad], evaluated_through=2)
    assert (trail.count_alerts(), trail.evaluated_through()) == (0, 0)


# -- the rules evaluation mark --------------------------------------------------------


def test_evaluation_mark(trail: Trail) -> None:
    assert trail.evaluated_through() == 0
    events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    assert trail.append_alerts([], evaluated_through=2) == []  # events without findings
    assert trail.evaluated_through() == 2
    trail.append_alerts([alert_on(events[3], "host-namespace", "high")], evaluated_through=4)
    assert trail.evaluated_through() == 4
    trail.append_alerts([], evaluated_through=3)  # a late, lower mark: never backwards
    assert trail.evaluated_through() == 4
    with pytest.raises(TrailError, match="evaluated_through=6: the trail holds events 1 to 5"):
        trail.append_alerts([], evaluated_through=6)
    with pytest.raises(TrailError, match="evaluated_through=-1"):
        trail.append_alerts([], evaluated_through=-1)
    assert trail.evaluated_through() == 4
    assert trail.source_states() == {"docktrail.rules": {"evaluated_through": 4}}


def test_crash_between_events_and_alerts_is_repaired(tmp_path: Path) -> None:
    """The mark tells a restarted service which events still need the rules."""
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
        trail.append_alerts(corpus_alerts(events)[:3], evaluated_through=2)
        # crash: events 3-5 are stored, their alerts are not
    with SQLiteTrail(path) as trail:
        through = trail.evaluated_through()
        assert through == 2
        pending = [e for e in (trail.get(seq) for seq in range(1, 6)) if e is not None]
        # re-evaluation produces every alert again (same ids); only the missing ones stay
        stored = trail.append_alerts(corpus_alerts(pending), evaluated_through=5)
        assert [a.seq for a in stored] == [4, 5, 6]
        assert trail.evaluated_through() == 5
    with SQLiteTrail(path) as trail:
        report = trail.verify()
        assert (report.ok, report.alerts, report.unsealed_alerts) == (True, 6, 0)


# -- queries --------------------------------------------------------------------------

ALERT_FILTER_CASES: list[tuple[AlertFilter, list[int]]] = [
    (AlertFilter(), [1, 2, 3, 4, 5, 6]),
    (AlertFilter(rule="runs-as-root"), [2]),
    (AlertFilter(severity="high"), [3, 5]),
    (AlertFilter(min_severity="high"), [1, 3, 5]),
    (AlertFilter(min_severity="medium"), [1, 3, 4, 5]),
    (AlertFilter(min_severity="info"), [1, 2, 3, 4, 5, 6]),
    (AlertFilter(min_severity="critical", severity="high"), []),
    (AlertFilter(include_suppressed=False), [1, 3, 4, 5, 6]),
    (AlertFilter(min_severity="low", include_suppressed=False), [1, 3, 4, 5]),
    (AlertFilter(container="web-1"), [1, 2, 3]),
    (AlertFilter(container="aaa1"), [1, 2, 3]),  # id prefix, through the event
    (AlertFilter(container="bbb2"), [4, 5]),  # the network connect names api-1 by id
    (AlertFilter(container="api-1"), [4, 5]),  # a name resolves to its ids: the network event too
    (AlertFilter(container="web"), []),  # names match exactly
    (AlertFilter(image=NGINX), [1, 2, 3]),
    (AlertFilter(image="docker.io/library/*"), [4, 6]),
    (AlertFilter(image="*:1.2?"), [1, 2, 3]),
    (AlertFilter(image="docker.io/library/"), []),  # without a * it is not a glob
    (AlertFilter(user="alice"), [1, 2, 4, 6]),
    (AlertFilter(user="root"), [1, 2, 4, 6]),
    (AlertFilter(user="bob"), [3]),
    (AlertFilter(host="h2"), [4]),
    (AlertFilter(since_ns=T0 + 2000, until_ns=T0 + 4000), [3, 4]),
    (AlertFilter(since_ns=T0 + 5000), [6]),
    (AlertFilter(until_ns=T0 + 1000), []),
    (AlertFilter(event_seq=1), [1, 2]),
    (AlertFilter(event_seq=9), []),
    (AlertFilter(after_seq=4), [5, 6]),
    (AlertFilter(limit=2), [1, 2]),
    (AlertFilter(limit=0), []),
    (AlertFilter(min_severity="high", limit=2), [1, 3]),
    (AlertFilter(after_seq=1, limit=2, include_suppressed=False), [3, 4]),
    (AlertFilter(container="web-1", user="bob", min_severity="high"), [3]),
]


@pytest.mark.parametrize(("f", "expected"), ALERT_FILTER_CASES, ids=lambda v: repr(v)[:70])
def test_query_alerts_filters(filled: Trail, f: AlertFilter, expected: list[int]) -> None:
    assert [alert.seq for alert in filled.query_alerts(f)] == expected


def test_alerts_for_event(filled: Trail) -> None:
    assert [a.rule for a in filled.alerts_for_event(1)] == ["privileged-container", "runs-as-root"]
    assert filled.alerts_for_event(6) == []
    found = filled.alerts_for_event(2)
    assert len(found) == 1 and found[0].hash is not None and found[0].prev_hash is not None


def test_unknown_min_severity(filled: Trail) -> None:
    with pytest.raises(TrailError, match="unknown severity 'severe'"):
        list(filled.query_alerts(AlertFilter(min_severity="severe")))


def test_severity_rank() -> None:
    assert sorted(SEVERITY_RANK, key=SEVERITY_RANK.__getitem__) == [
        "info",
        "low",
        "medium",
        "high",
        "critical",
    ]
    assert severities_at_least("medium") == ("critical", "high", "medium")


def test_returned_alerts_do_not_alias_the_memory_trail() -> None:
    trail = MemoryTrail()
    events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    stored = trail.append_alerts(corpus_alerts(events))
    stored[0].details["index"] = "edited"
    next(trail.query_alerts(AlertFilter())).details["index"] = "edited too"
    assert trail.verify().ok


def random_alert_filters(count: int, seed: int = 5) -> list[AlertFilter]:
    rng = random.Random(seed)
    values: dict[str, list[Any]] = {
        "rule": ["r0", "r1", "r2"],
        "severity": ["critical", "high", "low"],
        "min_severity": ["critical", "high", "medium", "info"],
        "container": ["c-1", "c-2", "aaa", "bbb", "nope"],
        "image": [NGINX, REDIS, "docker.io/*", "*:1.25"],
        "user": ["alice", "bob", "root"],
        "host": ["h1", "h2"],
        "since_ns": [T0 + 20_000, T0 + 60_000],
        "until_ns": [T0 + 40_000, T0 + 90_000],
        "include_suppressed": [False],
        "event_seq": [3, 7],
        "after_seq": [10, 50],
        "limit": [3, 30],
    }
    out = []
    for _ in range(count):
        keys = rng.sample(sorted(values), rng.randint(1, 3))
        out.append(AlertFilter(**{key: rng.choice(values[key]) for key in keys}))
    return out


def test_sql_alert_filters_agree_with_python_semantics(tmp_path: Path) -> None:
    rng = random.Random(3)
    events = []
    for n in range(100):
        cid = rng.choice(["aaa", "bbb"]) + f"{n:061d}"
        events.append(
            make_event(
                n,
                time_ns=T0 + rng.randrange(100_000),
                host=rng.choice(["h1", "h2"]),
                actor=Actor(id=cid, name=f"c-{n % 3}", image=rng.choice([NGINX, REDIS, None])),
                who=Who(login=rng.choice(["alice", "bob", None]), user=rng.choice(["root", None])),
            )
        )
    with SQLiteTrail(tmp_path / "t.db") as trail:
        stored = trail.append(events).stored
        alerts = [
            alert_on(
                event,
                f"r{rng.randrange(3)}",
                rng.choice(list(SEVERITY_RANK)),
                index=i,
                container=rng.choice([event.actor.name, None, "c-2"]),
                suppressed=rng.choice([None, None, "excepted"]),
            )
            for event in stored
            for i in range(rng.randrange(3))
        ]
        trail.append_alerts(alerts)
        by_seq = {e.seq: e for e in stored}
        for f in random_alert_filters(150):
            after = f.after_seq or 0
            expected = [
                a.seq
                for a in alerts
                if alert_matches(a, f, by_seq[a.event_seq]) and (a.seq or 0) > after
            ]
            expected = expected[: f.limit] if f.limit is not None else expected
            assert [a.seq for a in trail.query_alerts(f)] == expected, f


@pytest.mark.parametrize(
    ("f", "indexes"),
    [
        (AlertFilter(rule="privileged-container"), {"alerts_rule"}),
        (AlertFilter(min_severity="high"), {"alerts_severity"}),
        (AlertFilter(event_seq=3), {"alerts_event_seq"}),
        (AlertFilter(since_ns=T0, until_ns=T0 + 10), {"alerts_time_ns"}),
        (AlertFilter(user="alice"), {"alerts_who_login", "alerts_who_user"}),
        (AlertFilter(image="docker.io/*"), {"alerts_image"}),
        (
            AlertFilter(container="web-1"),
            {
                "alerts_container",
                "alerts_event_seq",
                "events_bucket_actor",
                "events_bucket_container",
            },
        ),
    ],
)
def test_alert_filters_use_indexes(tmp_path: Path, f: AlertFilter, indexes: set[str]) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        plan = " ".join(trail.alerts_query_plan(f))
    assert "SCAN alerts" not in plan and "SCAN events" not in plan
    for index in indexes:
        assert f" INDEX {index} " in plan


def test_alerts_by_container_on_a_trail_from_before_the_actor_index(tmp_path: Path) -> None:
    """A read-only copy from before migration 0014 keeps the per-id indexes: today's SQL."""
    with SQLiteTrail(tmp_path / "t.db"):
        pass
    plan = " ".join(old_plan(tmp_path / "t.db", build_alert_query(AlertFilter(container="web-1"))))
    assert "SCAN alerts" not in plan and "SCAN events" not in plan
    for index in ("alerts_container", "alerts_event_seq", "events_actor_name", "events_actor_id"):
        assert f"USING INDEX {index}" in plan


# -- checkpoints, verify, schema ------------------------------------------------------


def test_checkpoint_covers_the_alerts_head(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
        first = trail.checkpoint()
        assert (first.alerts_seq, first.alerts_hash) == (0, GENESIS_HASH)
        trail.append_alerts(corpus_alerts(events)[:4])
        report = trail.verify()
        assert (report.ok, report.alerts, report.unsealed_alerts) == (True, 4, 4)
    # close() sealed the alerts appended after the last checkpoint
    with SQLiteTrail(path) as trail:
        report = trail.verify()
        assert (report.ok, report.checkpoints, report.unsealed, report.unsealed_alerts) == (
            True,
            3,
            0,
            0,
        )
        second = trail.checkpoint()
        assert (second.seq, second.alerts_seq, second.alerts_hash) == (5, 4, trail.alerts_head()[1])


def test_checkpoint_payload_versions() -> None:
    # v1 bytes are pinned: checkpoints signed before alerts existed must keep verifying
    assert checkpoint_payload("t", 1, "h", 2) == (
        b'docktrail-checkpoint-v1\n{"hash":"h","seq":1,"time_ns":2,"trail_id":"t"}'
    )
    assert checkpoint_payload("t", 1, "h", 2, 0, GENESIS_HASH) == checkpoint_payload("t", 1, "h", 2)
    assert checkpoint_payload("t", 1, "h", 2, 3, "a") == (
        b'docktrail-checkpoint-v2\n{"alerts_hash":"a","alerts_seq":3,"hash":"h","seq":1,'
        b'"time_ns":2,"trail_id":"t"}'
    )


def test_trail_from_before_alerts_migrates_and_verifies(tmp_path: Path) -> None:
    """A trail made by the first three migrations, with a v1 checkpoint, stays intact."""
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path, isolation_level=None)
    apply_migrations(Database(conn), MIGRATIONS[:3])
    trail_id = conn.execute("SELECT value FROM meta WHERE key = 'trail_id'").fetchone()[0]
    # events as the old code stored them, and a checkpoint signed the old way
    sealed = seal([e.model_copy(deep=True) for e in EVENTS], 0, GENESIS_HASH)
    conn.executemany(
        sqlite_schema.EVENT_INSERT,
        [(e.seq, *sqlite_schema.copied_values(c), b, e.prev_hash, e.hash) for e, c, b in sealed],
    )
    events = [stored for stored, _, _ in sealed]
    key = load_or_create_key(path.with_suffix(".key"))
    head = events[-1].hash or ""
    conn.execute(
        "INSERT INTO checkpoints VALUES (1, ?, 5, ?, ?, ?, ?)",  # the seven original columns
        (
            trail_id,
            head,
            T0,
            fingerprint(key.public_key()),
            sign(key, checkpoint_payload(trail_id, 5, head, T0)),
        ),
    )
    conn.close()
    with SQLiteTrail(path) as trail:
        assert trail.verify().ok
        trail.append_alerts(corpus_alerts(events))
    with SQLiteTrail(path) as trail:
        report = trail.verify()
        assert (report.ok, report.checkpoints, report.alerts, report.unsealed_alerts) == (
            True,
            2,
            6,
            0,
        )


def test_alert_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
        trail.append_alerts(corpus_alerts(events))
    conn = sqlite3.connect(path)
    for sql in ("UPDATE alerts SET severity = 'info' WHERE seq = 1", "DELETE FROM alerts"):
        with pytest.raises(sqlite3.IntegrityError, match="docktrail trail is append-only"):
            conn.execute(sql)
    conn.close()


def test_memory_verify_names_alert_edits() -> None:
    trail = MemoryTrail()
    events = trail.append([e.model_copy(deep=True) for e in EVENTS]).stored
    trail.append_alerts(corpus_alerts(events))
    saved = list(trail._alerts)
    trail._alerts[2] = saved[2].model_copy(update={"severity": "low"})
    report = trail.verify()
    assert (report.ok, report.first_bad_seq, report.first_bad_alert_seq) == (False, None, 3)
    assert report.problem == "alert seq 3: hash does not match its content (row edited)"
    trail._alerts = [*saved[:3], *saved[4:]]
    assert trail.verify().problem == "alert seq 4: missing (alert seq jumps from 3 to 5)"
    trail._alerts = [saved[1], saved[0], *saved[2:]]
    assert trail.verify().problem == "alert seq 1: missing (trail starts at alert seq 2)"
    trail._alerts = saved
    trail._events[0] = events[1]  # the alerts' event changed under them (and the chain broke)
    assert trail.verify().first_bad_seq == 1


# -- async ----------------------------------------------------------------------------


async def test_async_write_alerts(tmp_path: Path) -> None:
    for trail in (SQLiteTrail(tmp_path / "t.db"), MemoryTrail()):
        async with trail:
            result = await trail.write([e.model_copy(deep=True) for e in EVENTS])
            stored = await trail.write_alerts(corpus_alerts(result.stored), evaluated_through=5)
            assert [a.seq for a in stored] == [1, 2, 3, 4, 5, 6]
            assert await trail.write_alerts(corpus_alerts(result.stored)) == []
            assert await trail.call(lambda t: t.evaluated_through()) == 5
            found = await trail.call(
                lambda t: list(t.query_alerts(AlertFilter(rule="runs-as-root")))
            )
            assert [a.seq for a in found] == [2]
