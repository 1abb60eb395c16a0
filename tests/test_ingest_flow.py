"""Offline ingest's trail for a given input stays the one it has always been (its
digests are pinned), a write that fails stops ingest with nothing after it
stored, and running it again completes the trail with nothing lost or stored
twice."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from pathlib import Path

import pytest

from bench.docker_events_file import write_events
from config.errors import TrailError
from config.models import DocktrailConfig
from listener.ingest import ingest_files
from sinks.sqlite import SQLiteTrail
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a"
BATCH = 64  # small batches: many transactions

# Digests of the trails ingest stored for these inputs when they were pinned:
# (seq, id, body, prev_hash, hash) of every event, (id, rule, event_seq) of every
# alert. A change that alters them changes what ingest stores: say so, then re-pin.
# Re-pinned for time-ordered Docker and audit ids (listener.model.event.time_ordered_id):
# the rows were compared with the earlier ones, ids mapped, and nothing else differed.
BEFORE = {
    "correlated": ("194a5d5928b8b650", "b4d20c472b150d1d", 282, 150),
    "repeated": ("a693ff50647b22bc", "63f490e1e7db5ab5", 3000, 496),
}


def config(db: Path) -> DocktrailConfig:
    return DocktrailConfig.model_validate({"trail": {"path": str(db), "batch_size": BATCH}})


@pytest.fixture(scope="module")
def repeated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 Engine events: scenario-a's mix again and again, fresh ids and times."""
    path = tmp_path_factory.mktemp("events") / "events.jsonl"
    write_events(path, 3000, source=SCENARIO / "events.jsonl")
    return path


def inputs(name: str, repeated: Path) -> dict[str, list[Path]]:
    if name == "correlated":
        return {
            "docker_events": [SCENARIO / "events.jsonl"],
            "audit_logs": [SCENARIO / "audit.log.gz"],
        }
    return {"docker_events": [repeated]}


def digests(db: Path) -> tuple[str, str, int, int]:
    conn = sqlite3.connect(db)
    try:
        events = conn.execute(
            "SELECT seq, id, body, prev_hash, hash FROM events "
            "WHERE source != 'docktrail' ORDER BY seq"
        ).fetchall()
        alerts = conn.execute("SELECT id, rule, event_seq FROM alerts ORDER BY seq").fetchall()
    finally:
        conn.close()
    return (
        hashlib.sha256(b"".join(repr(row).encode() for row in events)).hexdigest()[:16],
        hashlib.sha256(b"".join(repr(row).encode() for row in alerts)).hexdigest()[:16],
        len(events),
        len(alerts),
    )


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_ingest_stores_the_trail_it_stored_before(
    tmp_path: Path, repeated: Path, name: str
) -> None:
    db = tmp_path / "trail.db"
    report = asyncio.run(ingest_files(config(db), host="h1", **inputs(name, repeated)))
    assert report.stats.batches > 4  # many transactions, not one
    assert digests(db) == BEFORE[name]
    with SQLiteTrail(db) as trail:
        assert trail.verify().ok


class FullDisk(SQLiteTrail):
    """A trail whose file may not grow past `max_pages` pages: SQLite's SQLITE_FULL."""

    def __init__(self, path: Path, max_pages: int) -> None:
        super().__init__(path)
        self.max_pages = max_pages

    def _setup(self, conn: sqlite3.Connection) -> None:
        super()._setup(conn)
        conn.execute(f"PRAGMA max_page_count = {self.max_pages}")


def stored(db: Path) -> tuple[list[str], set[str]]:
    """The Engine events' ids in trail order, and the alerts' ids."""
    conn = sqlite3.connect(db)
    try:
        ids = [
            r[0] for r in conn.execute("SELECT id FROM events WHERE source = 'docker' ORDER BY seq")
        ]
        alerts = {r[0] for r in conn.execute("SELECT id FROM alerts")}
    finally:
        conn.close()
    assert len(ids) == len(set(ids)), "an event stored twice"
    return ids, alerts


def page_count(db: Path) -> int:
    conn = sqlite3.connect(db)
    try:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])
    finally:
        conn.close()


def test_a_failed_write_stops_ingest_and_running_it_again_loses_nothing(
    tmp_path: Path, repeated: Path
) -> None:
    clean = tmp_path / "clean.db"
    asyncio.run(ingest_files(config(clean), docker_events=[repeated], host="h1"))
    want_events, want_alerts = stored(clean)

    db = tmp_path / "trail.db"
    full = FullDisk(db, max_pages=page_count(clean) // 2)
    with pytest.raises(TrailError, match="disk is full") as failed:
        asyncio.run(ingest_files(config(db), docker_events=[repeated], host="h1", trail=full))
    assert str(db) in str(failed.value)
    got, _ = stored(db)
    # the batches before the failed one, whole and in order; nothing after it
    assert 0 < len(got) < len(want_events)
    assert got == want_events[: len(got)]
    with SQLiteTrail(db) as trail:
        assert trail.verify().ok

    report = asyncio.run(ingest_files(config(db), docker_events=[repeated], host="h1"))
    assert report.stats.duplicates == len(got)
    assert stored(db) == (want_events, want_alerts)
    with SQLiteTrail(db) as trail:
        assert trail.verify().ok
