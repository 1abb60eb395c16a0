"""verify runs PRAGMA integrity_check on a second read-only connection while it walks
the chains: a damaged index is still found, through either way in (the CLI's
read-only `verify_file` and a trail's own `verify`), and the check never outlives
the verdict, even when a tampered row ends the walk early.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from listener.model.event import Actor, Event, Who, natural_id
from sinks.sqlite import SQLiteTrail, verify_file

T0 = 1_795_346_502_000_000_000


def build(path: Path, count: int = 400) -> Path:
    events = [
        Event(
            id=natural_id("concurrent", n),
            time_ns=T0 + n,
            source="docker",
            host="h1",
            type="container",
            action="start",
            actor=Actor(id=f"{n:064x}", name=f"web-{n}", image="nginx:1.25"),
            who=Who(login="alice"),
        )
        for n in range(count)
    ]
    with SQLiteTrail(path) as trail:
        trail.append(events)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def damage_index(path: Path) -> None:
    """Rename one event's image in the image index only: the table no longer agrees.
    (`events_actor_image`: the name index is gone since migration 0014.)"""
    with sqlite3.connect(path) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        page = conn.execute(
            "SELECT pageno FROM dbstat WHERE name = 'events_actor_image' AND pagetype = 'leaf' "
            "LIMIT 1"
        ).fetchone()[0]
    data = bytearray(path.read_bytes())
    start = (page - 1) * page_size
    at = data.index(b"nginx:", start + 100, start + page_size)
    data[at : at + 6] = b"NGINX:"
    path.write_bytes(bytes(data))


def integrity_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "docktrail-verify-integrity"]


def test_a_damaged_index_is_found_by_the_read_only_verify(tmp_path: Path) -> None:
    path = build(tmp_path / "t.db")
    damage_index(path)
    report = verify_file(path, path.with_suffix(".key"))
    assert not report.ok
    assert report.problem is not None and "PRAGMA integrity_check" in report.problem
    assert integrity_threads() == []


def test_a_damaged_index_is_found_by_the_trails_own_verify(tmp_path: Path) -> None:
    path = build(tmp_path / "t.db")
    damage_index(path)
    with SQLiteTrail(path) as trail:
        report = trail.verify()
    assert not report.ok
    assert report.problem is not None and "PRAGMA integrity_check" in report.problem
    assert integrity_threads() == []


def test_an_early_finding_stops_the_check(tmp_path: Path) -> None:
    path = build(tmp_path / "t.db", count=2000)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TRIGGER events_append_only_update")
        conn.execute("UPDATE events SET body = replace(body, 'alice', 'mallory') WHERE seq = 3")
    report = verify_file(path, path.with_suffix(".key"))
    assert not report.ok and report.first_bad_seq == 3
    assert integrity_threads() == []
    intact = build(tmp_path / "intact.db")
    assert verify_file(intact, intact.with_suffix(".key")).ok
    assert integrity_threads() == []
