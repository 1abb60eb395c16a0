"""`query -f session=` (and `docktrail session`) find an exec's events through the
exec-id index instead of reading every body: 10.7 s on a 10M-event trail before it.
The index comes with migration 0010; a trail from before gets it when opened, and
one on read-only storage (an evidence copy) is read without it rather than refused."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from listener.model.event import Actor, Event, natural_id
from sinks.base import EventFilter
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail, verify_file
from sinks.sqlite.schema import MIGRATIONS, apply_migrations
from sinks.trailcheck import integrity_problem

T0 = 1_767_000_000_000_000_000
EXEC_A = "3c1f2a9e7b10" + "a" * 52
EXEC_B = "3c1f2a9e7b11" + "b" * 52


def _event(n: int, action: str, exec_id: object = None, **fields: Any) -> Event:
    attributes = {} if exec_id is None else {"execID": exec_id}
    return Event(
        id=natural_id("session-index", n),
        time_ns=T0 + n,
        source="docker",
        host="h1",
        type="container",
        action=action,
        actor=Actor(id="c" * 64, name="web-1"),
        attributes=attributes,
        **fields,
    )


EVENTS = [
    _event(1, "create"),
    _event(2, "exec_create", EXEC_A),
    _event(3, "exec_start", EXEC_A),
    _event(4, "exec_create", EXEC_B),
    _event(5, "exec_die", EXEC_A),
    _event(6, "exec_start", 42),  # not a string: never a session
    _event(7, "exec_die", EXEC_B),
    _event(8, "start", EXEC_A),  # not an exec event: whatever its attributes say
]
CASES = {
    EXEC_A: [2, 3, 5],
    "3c1f2a9e7b10": [2, 3, 5],
    "3c1f2a9e7b1": [2, 3, 4, 5, 7],
    "3c1f2a9e7b12": [],
    "42": [],
}


def test_a_session_query_reads_the_exec_id_index_and_matches_as_the_memory_trail(
    tmp_path: Path,
) -> None:
    memory = MemoryTrail()
    memory.append(EVENTS)
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append(EVENTS)
        for wanted, seqs in CASES.items():
            f = EventFilter(session=wanted)
            assert [e.seq for e in trail.query(f)] == seqs, wanted
            assert [e.seq for e in memory.query(f)] == seqs, wanted
            plan = " | ".join(trail.query_plan(f))
            assert "USING INDEX events_exec_id" in plan, plan
        both = EventFilter(session=("3c1f2a9e7b10", "3c1f2a9e7b11"), action="exec_die")
        assert [e.seq for e in trail.query(both)] == [5, 7]


def trail_before_the_index(path: Path) -> Path:
    """A trail of EVENTS at `path` as a docktrail before migration 0010 left it."""
    with SQLiteTrail(path) as trail:
        trail.append(EVENTS)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP INDEX events_exec_id")
        conn.execute("DELETE FROM _migrations WHERE name = '0010_exec_id_index'")
    return path


def test_a_trail_from_before_the_index_gets_it_when_opened_and_still_verifies(
    tmp_path: Path,
) -> None:
    path = trail_before_the_index(tmp_path / "t.db")
    with SQLiteTrail(path) as trail:
        assert trail.applied_migrations == ["0010_exec_id_index"]
        assert [e.seq for e in trail.query(EventFilter(session=EXEC_B))] == [4, 7]
    report = verify_file(path, path.with_suffix(".key"))
    assert report.ok, report


def test_only_a_missing_index_is_left_missing_on_a_file_that_cannot_be_written(
    tmp_path: Path,
) -> None:
    path = trail_before_the_index(tmp_path / "t.db")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        db = Database(conn)
        assert apply_migrations(db, read_only=True) == []  # nothing written, no error
        rows = conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE name = 'events_exec_id'"
        ).fetchone()
        assert rows == (0,)
    assert [m.name for m in MIGRATIONS if m.index_only] == [
        "0010_exec_id_index",
        "0011_label_index",
        "0012_time_ordered_ids",  # a meta row only an append reads
        "0013_time_ordered_alert_ids",  # the same, for alerts
        "0014_actor_index",  # read with the per-container indexes the file has
    ]


def test_an_index_that_cannot_be_recomputed_is_a_finding_not_a_crash() -> None:
    """A body made unreadable behind SQLite's back (a page edited) fails the exec-id
    index's expression inside `PRAGMA integrity_check`: verify says the file is damaged."""
    broken = False

    def key_of(value: object) -> object:
        if broken:
            raise ValueError("unreadable body")
        return value

    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        conn.create_function("key_of", 1, key_of, deterministic=True)
        conn.execute("CREATE TABLE t (x)")
        conn.execute("CREATE INDEX t_key ON t (key_of(x))")
        conn.execute("INSERT INTO t VALUES (1)")
        assert integrity_problem(conn) is None
        broken = True
        finding = integrity_problem(conn)
    assert finding is not None
    assert "damaged (PRAGMA integrity_check failed" in finding.problem
