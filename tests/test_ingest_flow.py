"""Offline ingest writes batch N while it reads batch N+1: the trail it leaves is
the one it left when it did one after the other, a write that fails stops it
before any later batch is stored, and running it again completes the trail with
nothing lost or stored twice."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.docker_events_file import write_events
from config.errors import TrailError
from config.models import DocktrailConfig
from listener.ingest import ingest_files
from listener.model.event import Event, natural_id
from listener.pipeline import Pipeline
from sinks.base import AppendResult
from sinks.sqlite import SQLiteTrail
from sinks.sqlite.checkpoints import BACKSTOP_FACTOR
from sinks.sqlite.schema import WAL_AUTOCHECKPOINT_PAGES
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a"
BATCH = 64  # small batches: many of them in flight one after the other

# Digests of the trails the sequential pipeline (before writes overlapped) left for
# these inputs: (seq, id, body, prev_hash, hash) of every event, (id, rule,
# event_seq) of every alert.
BEFORE = {
    "correlated": ("0dfd87dc5c96336c", "e4d6744f3dd6860a", 282, 150),
    "repeated": ("1ca51b856226fe73", "6420942debe2fa49", 3000, 496),
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


@pytest.mark.parametrize("overlap", [True, False], ids=["overlapped", "sequential"])
@pytest.mark.parametrize("name", sorted(BEFORE))
def test_ingest_stores_the_trail_it_stored_before(
    tmp_path: Path, repeated: Path, name: str, overlap: bool
) -> None:
    db = tmp_path / "trail.db"
    report = asyncio.run(
        ingest_files(config(db), host="h1", overlap_writes=overlap, **inputs(name, repeated))
    )
    assert report.stats.batches > 4  # several batches really were written one after another
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


# -- the pipeline's hand-over, on a trail whose writes take a while ------------


def make_event(n: int) -> Event:
    return Event(
        id=natural_id("ingest-flow", n),
        time_ns=1_795_000_000_000_000_000 + n,
        source="docker",
        host="h1",
        type="volume",
        action="create",
    )


class SlowTrail:
    """Writes take `secs`; the `fail_at`-th write (1-based) fails."""

    def __init__(self, secs: float, fail_at: int | None = None) -> None:
        self.secs, self.fail_at = secs, fail_at
        self.started: list[list[str]] = []
        self.written: list[list[str]] = []
        self.in_flight = 0
        self.most_in_flight = 0

    async def write(self, batch: Sequence[Event], *, source_state: Any = None) -> AppendResult:
        self.started.append([e.id for e in batch])
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.secs)
            if len(self.started) == self.fail_at:
                raise TrailError(f"trail.db: append: batch {self.fail_at} failed")
            self.written.append([e.id for e in batch])
            return AppendResult(stored=list(batch))
        finally:
            self.in_flight -= 1


class Judged:
    """A stage that records what it was shown after each write."""

    def __init__(self) -> None:
        self.seen: list[list[str]] = []

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        self.seen.append([e.id for e in stored])


async def test_put_returns_while_the_batch_is_written_one_at_a_time_in_order() -> None:
    trail = SlowTrail(secs=0.05)
    judged = Judged()
    pipeline = Pipeline(
        trail, stages=[judged], batch_size=10, flush_interval_secs=60, overlap_writes=True
    )  # type: ignore[arg-type]
    for n in range(10):
        await pipeline.put(make_event(n))
    assert trail.started and not trail.written  # handed over, not waited for
    assert pipeline.pending == 10
    async with pipeline:
        for n in range(10, 45):
            await pipeline.put(make_event(n))
    everything = [make_event(n).id for n in range(45)]
    assert [i for batch in trail.written for i in batch] == everything
    assert [i for batch in judged.seen for i in batch] == everything
    assert trail.most_in_flight == 1
    assert pipeline.pending == 0 and pipeline.stats.stored == 45


async def test_a_failed_write_raises_from_the_next_put_and_nothing_after_it_is_written() -> None:
    trail = SlowTrail(secs=0.01, fail_at=2)
    judged = Judged()
    pipeline = Pipeline(
        trail, stages=[judged], batch_size=10, flush_interval_secs=60, overlap_writes=True
    )  # type: ignore[arg-type]
    with pytest.raises(TrailError, match="batch 2 failed"):
        async with pipeline:
            for n in range(100):
                await pipeline.put(make_event(n))
    assert trail.written == [[make_event(n).id for n in range(10)]]
    assert len(trail.started) == 2  # the batch after the failed one never reached the trail
    assert judged.seen == trail.written


# -- WAL checkpoints on their own thread ----------------------------------------


class Watched(SQLiteTrail):
    """Keeps the background checkpointer it started, to count its checkpoints."""

    def _start_checkpointer(self, conn: sqlite3.Connection) -> None:
        super()._start_checkpointer(conn)
        self.used = self._checkpointer
        if self.used is not None:  # a small trail: checkpoint at a small WAL
            self.used.threshold_frames = 256
        self.writer_autocheckpoint = conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def test_bulk_ingest_checkpoints_the_wal_off_the_writers_thread(
    tmp_path: Path, repeated: Path
) -> None:
    db = tmp_path / "trail.db"
    trail = Watched(db)
    trail.background_checkpoints = True
    asyncio.run(ingest_files(config(db), docker_events=[repeated], host="h1", trail=trail))
    assert trail.used is not None and trail.used.checkpoints > 0
    assert trail.writer_autocheckpoint == WAL_AUTOCHECKPOINT_PAGES * BACKSTOP_FACTOR
    assert not [t for t in threading.enumerate() if t.name == "docktrail-wal-checkpoints"]
    assert not Path(f"{db}-wal").exists()  # the last connection folded the WAL in
    with SQLiteTrail(db) as check:
        assert check.verify().ok
        assert check.count() == 3000


def test_other_writers_keep_sqlites_own_checkpoints(tmp_path: Path) -> None:
    trail = Watched(tmp_path / "trail.db")
    with trail:
        trail.append([make_event(1)])
        assert trail._conn is not None
        autocheckpoint = trail._conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert autocheckpoint == WAL_AUTOCHECKPOINT_PAGES
    assert not hasattr(trail, "used")


class Logged(SlowTrail):
    """Writes and judgements in the order they happen."""

    def __init__(self) -> None:
        super().__init__(secs=0.01)
        self.log: list[str] = []

    async def write(self, batch: Sequence[Event], *, source_state: Any = None) -> AppendResult:
        self.log.append(f"write {len(self.started) + 1}")
        return await super().write(batch)

    async def before_write(self, batch: list[Event]) -> list[Event]:
        self.log.append(f"before {len(self.started) + 1}")
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        self.log.append(f"after {len(self.written)}")


async def test_the_stages_see_the_calls_of_a_sequential_pipeline_in_its_order() -> None:
    trail = Logged()
    pipeline = Pipeline(
        trail,  # type: ignore[arg-type]
        stages=[trail],
        batch_size=10,
        flush_interval_secs=60,
        overlap_writes=True,
    )
    async with pipeline:
        for n in range(30):
            await pipeline.put(make_event(n))
    # batch N is written and judged before batch N+1 reaches a stage or the trail
    assert trail.log == [
        "before 1", "write 1", "after 1",
        "before 2", "write 2", "after 2",
        "before 3", "write 3", "after 3",
    ]  # fmt: skip
