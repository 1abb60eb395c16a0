"""New trails use 8 KiB pages (less space left over around 1 kB rows); a trail made
with 4 KiB pages keeps them, appends, verifies, and checkpoints its WAL after the
same number of bytes."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from bench.trail_append import synthetic_events
from sinks.sqlite import SQLiteTrail, verify_file
from sinks.sqlite.schema import PAGE_SIZE, WAL_AUTOCHECKPOINT_BYTES


def pragma(trail: SQLiteTrail, name: str) -> int:
    return int(trail._connection().execute(f"PRAGMA {name}").fetchone()[0])


def test_a_new_trail_has_the_larger_pages(tmp_path: Path) -> None:
    with SQLiteTrail(tmp_path / "new.db", durability="normal") as trail:
        trail.append(list(synthetic_events(300)))
        assert pragma(trail, "page_size") == PAGE_SIZE == 8192
        assert pragma(trail, "wal_autocheckpoint") == WAL_AUTOCHECKPOINT_BYTES // 8192
    assert verify_file(tmp_path / "new.db", tmp_path / "new.key").ok


def test_a_trail_with_4k_pages_keeps_them_and_stays_intact(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")  # an empty file takes the page size only when written
    conn.close()
    events = list(synthetic_events(600))
    with SQLiteTrail(path, durability="normal") as trail:
        trail.append(events[:300])
    with SQLiteTrail(path, durability="normal") as trail:
        trail.append(events[300:])
        assert pragma(trail, "page_size") == 4096
        assert pragma(trail, "wal_autocheckpoint") == WAL_AUTOCHECKPOINT_BYTES // 4096
        assert trail.count() == 600
    report = verify_file(path, tmp_path / "old.key")
    assert report.ok and report.events == 600
