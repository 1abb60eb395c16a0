"""The actor index (migration 0014, `sinks.sqlite.actors`): the writer keeps it exactly
as the migration defines it from the rows, through rolled-back batches, forgetting,
an older docktrail writing after the upgrade, and the upgrade itself."""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import sinks.sqlite.actors as actors
import sinks.sqlite.labels as labels
from listener.model.event import Actor, Event, natural_id
from sinks.sqlite import SQLiteTrail, verify_file
from tests.actor_layouts import trail_before_the_actor_index

T0 = 1_767_000_000_000_000_000
# The index's definition, from the rows (what `actors.migrate` computes).
DEFINED_ACTORS = (
    "SELECT actor_id, 'actor_id', seq >> 13, min(seq) FROM events GROUP BY 1, 3 UNION ALL "
    "SELECT container, 'container', seq >> 13, min(seq) FROM events "
    "WHERE container IS NOT NULL GROUP BY 1, 3 ORDER BY 1, 2, 3"
)
DEFINED_NAMES = (
    "SELECT DISTINCT actor_name, type, actor_id FROM events WHERE actor_name IS NOT NULL "
    "ORDER BY 1, 2, 3"
)


def _container(number: int) -> str:
    return f"{number:04x}" * 16


def _event(n: int, actor: str, **fields: Any) -> Event:
    return Event(
        id=natural_id("actor-index", n),
        time_ns=T0 + n,
        source="docker",
        host="h1",
        type=fields.pop("type", "container"),
        action=fields.pop("action", "start"),
        actor=Actor(id=actor, name=fields.pop("name", f"c-{actor[:4]}")),
        **fields,
    )


def _batch(first: int, containers: range) -> list[Event]:
    """Each container's own event and a network event naming it (some named by the
    network first, as when docktrail starts after the container did), one renamed."""
    events: list[Event] = []
    for number in containers:
        container = _container(number)
        connect = _event(
            first + len(events),
            "net1" * 16,
            type="network",
            action="connect",
            name="bridge",
            attributes={"container": container},
        )
        own = _event(first + len(events) + 1, container, name=f"web-{number}")
        events += [connect, own] if number % 2 else [own, connect]
    renamed = _event(first + len(events), _container(containers[0]), name="renamed")
    return [*events, renamed]


def _assert_index_as_defined(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT * FROM actors ORDER BY 1, 2, 3").fetchall() == (
            conn.execute(DEFINED_ACTORS).fetchall()
        )
        assert conn.execute("SELECT * FROM actor_names ORDER BY 1, 2, 3").fetchall() == (
            conn.execute(DEFINED_NAMES).fetchall()
        )
        head = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        assert actors.through_seq(conn) == head


def _append_batches(trail: SQLiteTrail, batches: list[list[Event]]) -> None:
    for batch in batches:
        trail.append(batch)


BATCHES = [_batch(1, range(0, 6)), _batch(100, range(3, 10)), _batch(200, range(8, 12))]


def test_the_writer_keeps_the_index_as_defined(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        _append_batches(trail, BATCHES)
    _assert_index_as_defined(tmp_path / "t.db")
    assert verify_file(tmp_path / "t.db", tmp_path / "t.key").ok


def test_forgetting_only_costs_look_ups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(actors, "REMEMBERED", 2)
    with SQLiteTrail(tmp_path / "t.db") as trail:
        _append_batches(trail, BATCHES)
    _assert_index_as_defined(tmp_path / "t.db")


def test_a_rolled_back_batch_is_indexed_when_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = labels.LabelWriter.stage
    failures = iter([False, True])  # the second batch fails once

    def failing_once(writer: labels.LabelWriter, *args: Any) -> None:
        if next(failures, False):  # after the actor index staged this batch's rows
            raise sqlite3.OperationalError("disk I/O error")
        stage(writer, *args)

    monkeypatch.setattr(labels.LabelWriter, "stage", failing_once)
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(BATCHES[0])
        with pytest.raises(Exception, match="disk I/O error"):
            trail.append(BATCHES[1])
        trail.append(BATCHES[1])
        trail.append(BATCHES[2])
    _assert_index_as_defined(tmp_path / "t.db")


def test_an_older_writers_rows_are_added_by_the_next_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append(BATCHES[0])
        with monkeypatch.context() as older:  # a docktrail from before the index
            older.setattr(actors.ActorWriter, "stage", lambda *args: None)
            trail.append(BATCHES[1])
        with sqlite3.connect(path) as conn:
            assert actors.through_seq(conn) == len(BATCHES[0])
            assert conn.execute("SELECT count(*) FROM actors").fetchone()[0] < (
                len(conn.execute(DEFINED_ACTORS).fetchall())
            )
        trail.append(BATCHES[2])
    _assert_index_as_defined(path)
    assert verify_file(path, tmp_path / "t.key").ok


def test_the_upgrade_builds_the_index_and_drops_the_old_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        _append_batches(trail, BATCHES)
    trail_before_the_actor_index(path)
    assert not verify_file(path, tmp_path / "t.key").problem  # an old trail verifies as such
    with SQLiteTrail(path) as trail:
        assert trail.applied_migrations == [actors.MIGRATION]
    assert "upgrading the trail's schema: building the actor index (once" in caplog.text
    _assert_index_as_defined(path)
    with sqlite3.connect(path) as conn:
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert not indexes & {"events_actor_id", "events_actor_name", "events_container"}
    assert {"events_bucket_actor", "events_bucket_container"} <= indexes
    assert verify_file(path, tmp_path / "t.key").ok


def test_a_vacuum_gives_back_the_pages_of_the_indexes_the_upgrade_dropped(
    tmp_path: Path,
) -> None:
    """docs/operators.md: an upgraded trail keeps the dropped indexes' pages free until a
    `VACUUM` (the service stopped), after which it verifies and is written as before."""
    path, key = tmp_path / "t.db", tmp_path / "t.key"
    with SQLiteTrail(path) as trail:
        _append_batches(trail, [_batch(1 + 100 * n, range(n * 40, n * 40 + 40)) for n in range(8)])
    trail_before_the_actor_index(path)
    with SQLiteTrail(path) as trail:
        assert trail.applied_migrations == [actors.MIGRATION]
    upgraded = path.stat().st_size
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] > 0
        conn.execute("VACUUM")
        assert conn.execute("PRAGMA freelist_count").fetchone()[0] == 0
    assert path.stat().st_size < upgraded
    assert verify_file(path, key).ok
    with SQLiteTrail(path) as trail:
        trail.append(_batch(10_000, range(500, 510)))
    _assert_index_as_defined(path)
    assert verify_file(path, key).ok


def test_a_new_trail_has_nothing_to_upgrade(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(BATCHES[0])
    assert "upgrading" not in caplog.text


def test_the_label_index_names_an_actor_by_its_own_first_event(tmp_path: Path) -> None:
    """Not by a network event that named it first: the label index reads the actor's id
    at that seq."""
    container = _container(7)
    connect = _event(
        1, "net1" * 16, type="network", action="connect", attributes={"container": container}
    )
    own = _event(2, container, attributes={"labels": {"project": "shop"}})
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([connect, own])
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("SELECT actor_seq FROM label_actors").fetchall() == [(2,)]


def test_a_copy_keeps_working(tmp_path: Path) -> None:
    """The tables are plain tables: a file copy (an evidence copy) carries them."""
    with SQLiteTrail(tmp_path / "t.db") as trail:
        _append_batches(trail, BATCHES)
    shutil.copyfile(tmp_path / "t.db", tmp_path / "copy.db")
    _assert_index_as_defined(tmp_path / "copy.db")
