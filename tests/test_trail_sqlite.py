"""SQLiteTrail: append, dedupe, chain, queries, checkpoints, async API, crash safety.

The filter tests run against both trails (SQLite and memory), so the SQL and the
Python definition of each filter cannot drift apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

import sinks.sqlite as sqlite_module
import sinks.sqlite.opening as sqlite_opening_module
from config.errors import SigningKeyError, TrailBusyError, TrailError
from config.models import TrailConfig
from listener.model.event import (
    GENESIS_HASH,
    Actor,
    Event,
    Who,
    Why,
    canonical_json,
    chain_hash,
    natural_id,
)
from sinks.base import EventFilter
from sinks.chain import seal
from sinks.filtering import container_ids_named, matches
from sinks.memory import MemoryTrail
from sinks.signing import export_public_key, fingerprint, load_or_create_key
from sinks.sqlite import MIGRATIONS, SQLiteTrail, apply_migrations, build_query
from sinks.sqlite.schema import ACTOR_TRIGGERS, LABEL_TRIGGERS
from tests.actor_layouts import old_plan

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
T0 = 1_795_346_502_000_000_000
CID_WEB = "aaa111" + "0" * 58
CID_API = "bbb222" + "0" * 58
NGINX = "registry.internal/web/nginx:1.25"
REDIS = "docker.io/library/redis:7"


def make_event(n: int, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": natural_id("test", n),
        "time_ns": T0 + n * 1000,
        "source": "docker",
        "host": "h1",
        "type": "container",
        "action": "start",
    }
    return Event(**(base | fields))


# -- the filter corpus: seq -> event, and what each filter must select --------

CORPUS = [
    make_event(
        1,
        action="create",
        actor=Actor(id=CID_WEB, name="web-1", image=NGINX),
        attributes={"labels": {"com.docker.compose.project": "shop", "tier": "front"}},
        who=Who(login="alice", user="root"),
    ),
    make_event(2, actor=Actor(id=CID_WEB, name="web-1", image=NGINX), who=Who(login="alice")),
    make_event(
        3,
        host="h2",
        action="exec_start: sh -c ls",
        actor=Actor(id=CID_WEB, name="web-1", image=NGINX),
        who=Who(login="bob", user="bob"),
    ),
    make_event(
        4,
        type="network",
        action="connect",
        actor=Actor(id="net1", name="bridge"),
        attributes={"container": CID_WEB, "name": "bridge"},
    ),
    make_event(
        5, type="image", action="pull", actor=Actor(id=REDIS, name=REDIS), who=Who(login="carol")
    ),
    make_event(
        6,
        action="create",
        actor=Actor(id=CID_API, name="api-1", image=REDIS),
        attributes={"labels": {"tier": "back"}},
    ),
    make_event(
        7, source="auditd", type="daemon", action="config", who=Who(login="alice", user="root")
    ),
    make_event(
        8,
        action="destroy",
        actor=Actor(id=CID_WEB, name="web-1", image=NGINX),
        attributes={"labels": {"tier": 1}},
    ),
]

FILTER_CASES: list[tuple[EventFilter, list[int]]] = [
    (EventFilter(), [1, 2, 3, 4, 5, 6, 7, 8]),
    (EventFilter(type="container"), [1, 2, 3, 6, 8]),
    (EventFilter(action="create"), [1, 6]),
    (EventFilter(source="auditd"), [7]),
    (EventFilter(host="h2"), [3]),
    (EventFilter(container="web-1"), [1, 2, 3, 4, 8]),  # the network event by its id
    (EventFilter(container="aaa1"), [1, 2, 3, 4, 8]),  # id prefix, network attribute too
    (EventFilter(container=CID_API), [6]),
    (EventFilter(container="bridge"), []),  # a network's name is not a container
    (EventFilter(container="web"), []),  # names match exactly
    (EventFilter(image=NGINX), [1, 2, 3, 8]),
    (EventFilter(image=REDIS), [5, 6]),  # image events by name, containers by image
    (EventFilter(image="docker.io/library/*"), [5, 6]),
    (EventFilter(image="*nginx*"), [1, 2, 3, 8]),
    (EventFilter(image="*:1.2?"), [1, 2, 3, 8]),
    (EventFilter(image="docker.io/library/"), []),  # without a * it is not a glob
    (EventFilter(user="alice"), [1, 2, 7]),
    (EventFilter(user="root"), [1, 7]),
    (EventFilter(user="bob"), [3]),
    (EventFilter(labels={"tier": "front"}), [1]),
    (EventFilter(labels={"tier": "back"}), [6]),
    (EventFilter(labels={"tier": "1"}), []),  # label values are strings
    (EventFilter(labels={"com.docker.compose.project": "shop", "tier": "front"}), [1]),
    (EventFilter(labels={"tier": "front", "missing": "x"}), []),
    (EventFilter(since_ns=T0 + 2000, until_ns=T0 + 5000), [2, 3, 4]),
    (EventFilter(since_ns=T0 + 8000), [8]),
    (EventFilter(until_ns=T0 + 1000), []),
    (EventFilter(after_seq=6), [7, 8]),
    (EventFilter(limit=2), [1, 2]),
    (EventFilter(limit=0), []),
    (EventFilter(type="container", limit=3), [1, 2, 3]),
    (EventFilter(after_seq=2, limit=2), [3, 4]),
    (EventFilter(type="container", user="alice", since_ns=T0 + 1500), [2]),
    (EventFilter(container="web-1", action="destroy"), [8]),
]


@pytest.fixture(params=["sqlite", "memory"])
def filled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteTrail | MemoryTrail]:
    trail: SQLiteTrail | MemoryTrail
    trail = SQLiteTrail(tmp_path / "t.db") if request.param == "sqlite" else MemoryTrail()
    with trail:
        trail.append(CORPUS)
        yield trail


@pytest.mark.parametrize(("f", "expected"), FILTER_CASES, ids=lambda v: repr(v)[:60])
def test_query_filters(
    filled: SQLiteTrail | MemoryTrail, f: EventFilter, expected: list[int]
) -> None:
    assert [event.seq for event in filled.query(f)] == expected


def varied_events(count: int, seed: int = 7) -> list[Event]:
    """Events drawn from small pools, so that random filters select something."""
    rng = random.Random(seed)
    names = ["web-1", "web-2", "api-1", "db"]
    ids = [hashlib.sha256(name.encode()).hexdigest() for name in names]
    images = [NGINX, REDIS, "docker.io/library/postgres:16", None]
    out = []
    for n in range(count):
        k = rng.randrange(len(names))
        kind = rng.choice(["container", "container", "image", "network", "volume"])
        actor = Actor(id=ids[k], name=names[k], image=rng.choice(images))
        attributes: dict[str, Any] = {"labels": {"tier": rng.choice(["front", "back", 1])}}
        if kind == "network":
            actor = Actor(id="net", name="bridge")
            attributes = {"container": ids[k]}
        elif kind == "image":
            actor = Actor(id="sha256:x", name=rng.choice(images[:3]))
        who = Who(login=rng.choice(["alice", "bob", None]), user=rng.choice(["root", "bob", None]))
        out.append(
            make_event(
                n,
                type=kind,
                action=rng.choice(["create", "start", "pull"]),
                host=rng.choice(["h1", "h2"]),
                source=rng.choice(["docker", "auditd"]),
                time_ns=T0 + rng.randrange(10_000),
                actor=actor,
                attributes=attributes,
                who=who,
            )
        )
    return out


def random_filters(count: int, seed: int = 11) -> list[EventFilter]:
    rng = random.Random(seed)
    values: dict[str, list[Any]] = {
        "type": ["container", "image", "network"],
        "action": ["create", "start"],
        "container": ["web-1", "db", hashlib.sha256(b"api-1").hexdigest()[:5], "nope"],
        "image": [NGINX, "docker.io/*", "*:16", "*"],
        "user": ["alice", "bob", "root"],
        "source": ["docker", "auditd"],
        "host": ["h1", "h2"],
        "labels": [{"tier": "front"}, {"tier": "back"}],
        "since_ns": [T0 + 2000, T0 + 5000],
        "until_ns": [T0 + 4000, T0 + 9000],
        "after_seq": [10, 100],
        "limit": [5, 50],
    }
    filters = []
    for _ in range(count):
        keys = rng.sample(sorted(values), rng.randint(1, 3))
        filters.append(EventFilter(**{key: rng.choice(values[key]) for key in keys}))
    return filters


def test_sql_filters_agree_with_python_semantics(tmp_path: Path) -> None:
    corpus = varied_events(300)
    with SQLiteTrail(tmp_path / "t.db") as trail:
        stored = trail.append(corpus).stored
        for f in random_filters(150):
            after = f.after_seq or 0
            named = container_ids_named(stored, f.container)
            expected = [e.seq for e in stored if matches(e, f, named) and (e.seq or 0) > after]
            expected = expected[: f.limit] if f.limit is not None else expected
            assert [e.seq for e in trail.query(f)] == expected, f


# -- append, dedupe, chain ------------------------------------------------------


def assert_chain(events: list[Event]) -> None:
    prev = GENESIS_HASH
    for n, event in enumerate(events, start=1):
        assert event.seq == n
        assert event.prev_hash == prev
        assert event.hash == chain_hash(prev, canonical_json(event.content()))
        prev = event.hash


def test_append_assigns_seq_and_chain(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        assert trail.head() == (0, GENESIS_HASH)
        assert trail.count() == 0
        assert trail.get(1) is None
        first = trail.append(CORPUS[:5])
        second = trail.append(CORPUS[5:])
        stored = first.stored + second.stored
        assert_chain(stored)
        # The stored events are the caller's, sealed in place (no copy on the hot path).
        assert all(a is b for a, b in zip(stored, CORPUS, strict=True))
        assert trail.head() == (8, stored[-1].hash)
        assert trail.count() == 8
        assert list(trail.query(EventFilter())) == stored
        assert trail.get(3) == stored[2]


def test_dedupe_across_and_within_batches(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        assert trail.append(CORPUS).duplicates == 0
        again = trail.append(CORPUS)
        assert (len(again.stored), again.duplicates) == (0, 8)
        a, b, c = make_event(100), make_event(101), make_event(102)
        altered = a.model_copy(update={"action": "different"})  # same id: still a duplicate
        result = trail.append([a, b, altered, c, b])
        assert [e.id for e in result.stored] == [a.id, b.id, c.id]
        assert result.duplicates == 2
        assert [e.seq for e in result.stored] == [9, 10, 11]
        assert trail.append([]).duplicates == 0
        assert_chain(list(trail.query(EventFilter())))


def test_same_hashes_as_memory_trail_and_reference_encoding(tmp_path: Path) -> None:
    """The fast encoding path must give the reference bytes, also for awkward content."""

    class Nested(Who):
        pass

    tricky = [
        make_event(
            1,
            attributes={
                "é": "ünïcödé ✓ 中文",
                "ctl": 'a\nb\t\x00\x1f"\\',
                "n": [1, 2.5, True, None],
            },
        ),
        make_event(
            2, config={"big": 2**70, "neg": -1, "float": 1e-7, "nested": {"z": {}, "a": []}}
        ),
        make_event(3, who=Who(login="ø", auid=4294967295), why=Why(reason="\u2019quote\u2019")),
        make_event(4, attributes={"model": Nested(login="x")}),  # takes the reference path
    ]
    with SQLiteTrail(tmp_path / "t.db") as trail:
        stored = trail.append(tricky).stored
        assert_chain(stored)
        assert_chain(list(trail.query(EventFilter())))  # 4 reads back as a dict: same JSON
    memory = MemoryTrail()
    assert [e.hash for e in memory.append(tricky).stored] == [e.hash for e in stored]


def test_sealing_sets_the_chain_fields_as_assignment_does() -> None:
    """`seal` writes seq, hash and prev_hash past pydantic's assignment for a plain
    Event: the model must come out as if they had been assigned."""

    class Subclassed(Event):
        pass

    plain, subclassed = make_event(1), Subclassed.model_validate(make_event(2).model_dump())
    expected = []
    for event in (plain, subclassed):
        copy = event.model_copy(deep=True)
        copy.seq, copy.hash, copy.prev_hash = 7, "h" * 64, "p" * 64
        expected.append((copy.model_dump(), copy.model_fields_set))
    seal([plain], 6, "p" * 64)
    seal([subclassed], 6, "p" * 64)
    for event, (dumped, fields) in zip((plain, subclassed), expected, strict=True):
        assert event.seq == 7 and event.prev_hash == "p" * 64
        assert event.model_dump() == {**dumped, "hash": event.hash}
        assert event.model_fields_set == fields
        assert "seq" in event.model_dump(exclude_unset=True)


@pytest.mark.parametrize(
    "bad",
    [{"x": object()}, {"x": "\ud800"}],
    ids=["not-json", "surrogate"],
)
def test_a_bad_event_stores_nothing_of_its_batch(tmp_path: Path, bad: dict[str, Any]) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([make_event(1)])
        with pytest.raises(TrailError, match=r"cannot be stored|not valid Unicode"):
            trail.append([make_event(2), make_event(3, attributes=bad), make_event(4)])
        assert trail.count() == 1
        assert trail.append([make_event(2)]).stored[0].seq == 2


# -- schema: triggers, migrations, indexes ------------------------------------------


def test_triggers_refuse_update_and_delete(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(CORPUS)
        trail.checkpoint()
    conn = sqlite3.connect(path)
    for sql in (
        "UPDATE events SET action = 'x' WHERE seq = 2",
        "DELETE FROM events WHERE seq = 8",
        "UPDATE checkpoints SET seq = 1",
        "DELETE FROM checkpoints",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="docktrail trail is append-only"):
            conn.execute(sql)
    conn.close()


def test_open_applies_only_missing_migrations(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert apply_migrations(Database(conn), MIGRATIONS[:1]) == ["0001_tables"]
    trail_id = conn.execute("SELECT value FROM meta WHERE key = 'trail_id'").fetchone()[0]
    conn.close()
    trail = SQLiteTrail(path)
    with trail:
        assert trail.applied_migrations == [m.name for m in MIGRATIONS[1:]]
        assert trail.trail_id == trail_id
        trail.append(CORPUS)
    with trail:
        assert trail.applied_migrations == []
        assert trail.verify().ok
    db = Database(path)
    assert {"events_id", "events_time"} <= {index.name for index in db.table("events").indexes}
    assert set(db.triggers_dict) == set(sqlite_module.TRIGGERS) | set(LABEL_TRIGGERS) | set(
        ACTOR_TRIGGERS
    )


def test_refuses_schema_from_a_newer_version(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    SQLiteTrail(path).open()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _migrations VALUES ('9999_future', 0)")
    conn.commit()
    conn.close()
    with pytest.raises(TrailError, match=r"newer docktrail.*9999_future"):
        SQLiteTrail(path).open()


def test_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    path.write_text("hello, I am not SQLite" * 100)
    with pytest.raises(TrailError, match="not a docktrail trail"):
        SQLiteTrail(path).open()


# The actor index (migration 0014): ids and names from its tables, events bucket by bucket.
BUCKETED = {"events_bucket_actor", "events_bucket_container", "actors", "actor_names"}


@pytest.mark.parametrize(
    ("f", "indexes", "old_indexes"),
    [
        (
            EventFilter(container="web-1"),
            BUCKETED,
            {"events_actor_name", "events_actor_id", "events_container"},
        ),
        (EventFilter(since_ns=T0, until_ns=T0 + 10), {"events_time"}, {"events_time"}),
        (
            EventFilter(container="web-1", type="container", since_ns=T0),
            BUCKETED,
            {"events_actor_name"},
        ),
        (
            EventFilter(image="docker.io/*"),
            {"events_actor_image", "events_bucket_actor", "actor_names"},
            {"events_actor_image", "events_actor_name"},
        ),
        (
            EventFilter(user="alice"),
            {"events_who_login", "events_who_user"},
            {"events_who_login", "events_who_user"},
        ),
        (
            EventFilter(type="container", action="create"),
            {"events_type_action"},
            {"events_type_action"},
        ),
    ],
)
def test_filters_use_indexes(
    tmp_path: Path, f: EventFilter, indexes: set[str], old_indexes: set[str]
) -> None:
    """On a trail with the actor index, and with today's SQL on one from before it (a
    read-only copy keeps its per-id indexes)."""
    with SQLiteTrail(tmp_path / "t.db") as trail:
        plan = trail.query_plan(f)
    assert not [line for line in plan if line.startswith("SCAN events")], plan
    for index in indexes:
        assert any(_uses(line, index) for line in plan), (index, plan)
    before = old_plan(tmp_path / "t.db", build_query(f))
    assert not [line for line in before if line.startswith("SCAN events")], before
    for index in old_indexes:
        assert any(_uses(line, index) for line in before), (index, before)


def _uses(line: str, index: str) -> bool:
    """A plan line searching with `index` (or the table of that name by its key)."""
    return line.startswith(f"SEARCH {index} USING") or f" INDEX {index} " in line


# -- checkpoints and verify ---------------------------------------------------------


def test_close_seals_and_verify_passes(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    trail = SQLiteTrail(path)
    with trail:
        trail.append(CORPUS[:4])
        report = trail.verify()  # the genesis checkpoint and the head seal vouch for them
        assert (report.ok, report.checkpoints, report.unsealed) == (True, 1, 4)
    with trail:
        report = trail.verify()
        assert (report.ok, report.events, report.checkpoints, report.unsealed) == (True, 4, 2, 0)
        assert report.key_fingerprint == fingerprint(
            load_or_create_key(path.with_suffix(".key")).public_key()
        )
        trail.append(CORPUS[4:])
        report = trail.verify()
        assert (report.ok, report.unsealed) == (True, 4)  # a tail after the last checkpoint is fine
    with trail:
        assert trail.verify().checkpoints == 3
    with trail:  # a reader never signs
        assert trail.verify().checkpoints == 3


def test_checkpoint_records_the_head(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(CORPUS)
        first = trail.checkpoint()
        assert (first.number, first.seq, first.hash) == (2, 8, trail.head()[1])  # after genesis
        assert first.trail_id == trail.trail_id
        assert trail.checkpoint().number == 3


def test_periodic_checkpoints_while_appending(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db", checkpoint_interval_secs=0.0) as trail:
        for event in CORPUS[:3]:
            trail.append([event])
        assert trail.verify().checkpoints == 1 + 3  # the genesis, then one per append


def test_auditor_public_key(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(CORPUS)
    public = tmp_path / "auditor.pem"
    public.write_text(export_public_key(path.with_suffix(".key")))
    other = tmp_path / "other.pem"
    other.write_text(export_public_key_of_new_key(tmp_path / "other.key"))
    path.with_suffix(".key").unlink()  # the auditor has no private key
    with SQLiteTrail(path) as trail:
        assert trail.verify(public_key=public).ok
        report = trail.verify(public_key=other)
        assert not report.ok
        assert f"signature invalid for key {report.key_fingerprint}" in (report.problem or "")
        with pytest.raises(SigningKeyError, match="no key to check"):
            trail.verify()


def export_public_key_of_new_key(path: Path) -> str:
    load_or_create_key(path)
    return export_public_key(path)


def test_signing_key_file_and_safety(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    key = tmp_path / "keys" / "trail.key"
    with SQLiteTrail(path, signing_key=key) as trail:
        trail.append(CORPUS[:2])
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    key.unlink()
    with (
        SQLiteTrail(path, signing_key=key) as trail,
        pytest.raises(SigningKeyError, match="restore"),
    ):
        trail.checkpoint()
    load_or_create_key(key)  # a different key now
    with (
        SQLiteTrail(path, signing_key=key) as trail,
        pytest.raises(SigningKeyError, match="is not key"),
    ):
        trail.checkpoint()
    key.write_text("not a key")
    with pytest.raises(SigningKeyError, match=str(key)):
        load_or_create_key(key)


def test_from_config(tmp_path: Path) -> None:
    config = TrailConfig(path=tmp_path / "x.db", durability="normal", checkpoint_interval_secs=5)
    trail = SQLiteTrail.from_config(config)
    assert (trail.durability, trail.signing_key) == ("normal", tmp_path / "x.key")
    with pytest.raises(TrailError, match="durability"):
        SQLiteTrail(tmp_path / "y.db", durability="sometimes")  # type: ignore[arg-type]


def test_locked_trail_is_busy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.db"
    monkeypatch.setattr(sqlite_opening_module, "BUSY_TIMEOUT_SECS", 0.05)
    with SQLiteTrail(path) as trail:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(TrailBusyError, match="locked"):
            trail.append(CORPUS)
        other.execute("ROLLBACK")
        other.close()
        assert len(trail.append(CORPUS).stored) == 8


def test_concurrent_writers_serialize(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    events = [make_event(n) for n in range(400)]
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            with SQLiteTrail(path) as trail:
                for start in range(offset, 400, 20):  # overlapping batches: dedupe under races
                    trail.append(events[start : start + 40])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(offset,)) for offset in (0, 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with SQLiteTrail(path) as trail:
        stored = list(trail.query(EventFilter()))
        assert sorted(e.id for e in stored) == sorted(e.id for e in events)
        assert_chain(stored)
        assert trail.verify().ok


# -- async API --------------------------------------------------------------------


async def test_async_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    async with SQLiteTrail(path) as trail:
        result = await trail.write(CORPUS[:5])
        assert [e.seq for e in result.stored] == [1, 2, 3, 4, 5]
        assert (await trail.write(CORPUS)).duplicates == 5
        assert await trail.call(lambda t: t.count()) == 8
        worker = await trail.call(lambda t: threading.current_thread().name)
        assert worker.startswith("docktrail-trail")
        assert worker != threading.current_thread().name
        with pytest.raises(TrailError, match="another thread"):
            trail.count()  # the connection belongs to the worker thread
        loop_alive = asyncio.create_task(asyncio.sleep(0))
        await loop_alive
    with SQLiteTrail(path) as trail:
        report = trail.verify()
        assert (report.ok, report.events, report.checkpoints) == (True, 8, 2)


async def test_async_ticker_seals_idle_tail(tmp_path: Path) -> None:
    async with SQLiteTrail(tmp_path / "t.db", checkpoint_interval_secs=0.05) as trail:
        await trail.write(CORPUS)
        for _ in range(100):
            await asyncio.sleep(0.02)
            report = await trail.call(lambda t: t.verify())
            if report.checkpoints > 1:  # more than the genesis
                break
        assert report.ok and report.unsealed == 0


async def test_start_fails_on_missing_key(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(CORPUS)
    path.with_suffix(".key").unlink()
    with pytest.raises(SigningKeyError):
        await SQLiteTrail(path).start()


# -- crash safety ---------------------------------------------------------------------

CRASH_BATCHES = 24
CRASH_BATCH_SIZE = 1000


def generated_batch(b: int) -> list[Event]:
    """Batch `b` of the crash test's deterministic event stream."""
    return [
        Event.model_construct(
            id=natural_id("crash", b, i),
            time_ns=T0 + b * CRASH_BATCH_SIZE + i,
            source="docker",
            host="h1",
            type="container",
            action=("create", "start", "die", "destroy")[i % 4],
            actor=Actor(id=f"{b:04d}{i:060d}", name=f"c-{b}-{i}", image=NGINX),
            attributes={"labels": {"batch": str(b)}},
            who=Who(login="alice"),
            why=Why(),
            config={"privileged": i % 10 == 0},
            seq=None,
            hash=None,
            prev_hash=None,
        )
        for i in range(CRASH_BATCH_SIZE)
    ]


CHILD = """
import sys
sys.path[:0] = [{tests!r}, {repo!r}]
from pathlib import Path
from test_trail_sqlite import CRASH_BATCHES, generated_batch
from sinks.sqlite import SQLiteTrail
trail = SQLiteTrail(Path({db!r}), durability="full")
trail.open()
for b in range(CRASH_BATCHES):
    trail.append(generated_batch(b))
    print(b, flush=True)
print("finished", flush=True)
"""


def test_sigkill_mid_append_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    code = CHILD.format(tests=str(TESTS), repo=str(REPO), db=str(db))
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "2":  # three batches committed, the fourth in flight
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"

    with SQLiteTrail(db) as trail:
        before = trail.count()
        assert before % CRASH_BATCH_SIZE == 0 and before >= 3 * CRASH_BATCH_SIZE
        duplicates = sum(trail.append(generated_batch(b)).duplicates for b in range(CRASH_BATCHES))
        assert duplicates == before
        # the first write sealed the crashed writer's tail and said so in the trail
        assert trail.recovered is not None
        assert trail.recovered.attributes["unsealed_events"] == before
        assert trail.count() == CRASH_BATCHES * CRASH_BATCH_SIZE + 1
    with SQLiteTrail(db) as trail:
        expected = {e.id for b in range(CRASH_BATCHES) for e in generated_batch(b)}
        stored = [e.id for e in trail.query(EventFilter(source="docker"))]
        assert len(stored) == len(expected) and set(stored) == expected
        report = trail.verify()
        assert report.ok, report.problem
        assert (report.events, report.unsealed) == (CRASH_BATCHES * CRASH_BATCH_SIZE + 1, 0)


def test_verify_while_a_query_is_being_read(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(CORPUS)
        rows = trail.query(EventFilter())
        first = next(rows)
        trail.checkpoint()
        assert trail.verify().ok
        assert [first.seq, *(e.seq for e in rows)] == list(range(1, 9))
