"""Docker and audit event ids begin with their time, so a commit's id-index entries are
neighbours; a trail stored with the older ids still dedupes the same events after
the upgrade (`sinks.sqlite.legacy_ids`)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

import listener.sources.auditd.convert as audit_convert
import listener.sources.docker as docker_source
from config.models import DocktrailConfig
from listener.ingest import IngestReport, ingest_files
from listener.model.event import legacy_id_prefix, natural_id, time_ordered_id
from listener.sources.docker import normalize_engine_event
from sinks.sqlite import SQLiteTrail, verify_file
from sinks.sqlite.legacy_ids import LEGACY_UNTIL_KEY
from tests.shared_data import DATA

SCENARIO = DATA / "scenario-a"
T0 = 1_733_400_000_123_456_789


def _engine(n: int, at_ns: int) -> dict[str, object]:
    return {
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": f"{n:064x}", "Attributes": {"image": "busybox", "name": f"c{n}"}},
        "scope": "local",
        "time": at_ns // 1_000_000_000,
        "timeNano": at_ns,
    }


def test_a_time_ordered_id_is_its_time_then_the_natural_ids_first_digits() -> None:
    made = time_ordered_id(T0, "docker", T0, "container", "start", "abc")
    assert len(made) == 32 and int(made, 16) >= 0
    assert made[:8] == f"{T0 >> 32:08x}"
    assert made[8:] == natural_id("docker", T0, "container", "start", "abc")[:24]
    assert made == time_ordered_id(T0, "docker", T0, "container", "start", "abc")
    assert legacy_id_prefix(made, T0) == made[8:]
    assert legacy_id_prefix(natural_id("drift", 1), T0) is None  # not time-ordered


def test_engine_event_ids_sort_in_time_order() -> None:
    times = [T0 + minutes * 60_000_000_000 for minutes in range(0, 600, 7)]
    ids = [normalize_engine_event(_engine(n, at), "h1").id for n, at in enumerate(times)]
    assert ids == sorted(ids)
    again = normalize_engine_event(_engine(3, times[3]), "h1").id
    key = ("docker", times[3], "container", "start", f"{3:064x}")
    assert again == ids[3] == time_ordered_id(times[3], *key)


def _ingest(db: Path) -> IngestReport:
    config = DocktrailConfig.model_validate({"trail": {"path": str(db), "batch_size": 64}})
    return asyncio.run(
        ingest_files(
            config,
            host="h1",
            docker_events=[SCENARIO / "events.jsonl"],
            audit_logs=[SCENARIO / "audit.log.gz"],
        )
    )


def _old_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """What docktrail stored as ids before time-ordered ones."""

    def docker_id(time_ns: int, type_: str, raw_action: str, actor_id: str) -> str:
        return natural_id("docker", time_ns, type_, raw_action, actor_id)

    monkeypatch.setattr(docker_source, "_docker_id", docker_id)
    monkeypatch.setattr(audit_convert, "time_ordered_id", lambda _time, *key: natural_id(*key))


def _trail_of_old_ids(db: Path, monkeypatch: pytest.MonkeyPatch, at_ns: int) -> None:
    """A trail as an older docktrail left it: one Engine event under its old id."""
    with monkeypatch.context() as patched:
        _old_ids(patched)
        with SQLiteTrail(db) as trail:
            trail.append([normalize_engine_event(_engine(1, at_ns), "h1")])
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("DELETE FROM _migrations WHERE name = '0012_time_ordered_ids'")


def _ids(db: Path) -> list[tuple[str, str, int]]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT id, source, time_ns FROM events WHERE source != 'docktrail' ORDER BY seq"
        )
        return [(str(i), str(s), int(t)) for i, s, t in rows]


def test_an_upgraded_trail_stores_nothing_twice_of_what_it_stored_under_old_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "trail.db"
    with monkeypatch.context() as patched:
        _old_ids(patched)
        first = _ingest(db)
    old = _ids(db)
    assert first.stats.stored > 200 and {s for _, s, _ in old} == {"docker", "auditd"}
    assert all(legacy_id_prefix(i, t) is None for i, _, t in old)  # really the old format
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:  # as the older docktrail left it
        conn.execute("DELETE FROM _migrations WHERE name = '0012_time_ordered_ids'")
        conn.execute("DELETE FROM meta WHERE key = ?", (LEGACY_UNTIL_KEY,))

    again = _ingest(db)

    assert again.stats.stored == 0
    assert again.stats.duplicates == first.stats.received
    assert _ids(db) == old
    with contextlib.closing(sqlite3.connect(db)) as conn:
        until = conn.execute("SELECT value FROM meta WHERE key = ?", (LEGACY_UNTIL_KEY,))
        assert int(until.fetchone()[0]) == max(t for _, _, t in old)
    assert verify_file(db, db.with_suffix(".key")).ok


def test_after_the_upgrade_new_events_get_new_ids_and_old_times_are_still_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "trail.db"
    early, late = T0, T0 + 3_600_000_000_000
    _trail_of_old_ids(db, monkeypatch, early)
    with SQLiteTrail(db) as trail:
        replayed = normalize_engine_event(_engine(1, early), "h1")
        unseen_then = normalize_engine_event(_engine(2, early), "h1")  # never stored before
        later = normalize_engine_event(_engine(3, late), "h1")
        result = trail.append([replayed, unseen_then, later])
        assert result.duplicates == 1
        assert [e.id for e in result.stored] == [unseen_then.id, later.id]
        assert all(legacy_id_prefix(e.id, e.time_ns) for e in result.stored)


def test_a_new_trail_has_no_old_ids_to_look_for(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    with SQLiteTrail(db) as trail:
        trail.append([normalize_engine_event(_engine(1, T0), "h1")])
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (LEGACY_UNTIL_KEY,))
        assert row.fetchone() is None


def test_an_edited_cut_off_only_costs_look_ups(tmp_path: Path) -> None:
    """Whoever can write the file could make the old-id look-ups wrong; not crash the append."""
    db = tmp_path / "trail.db"
    with SQLiteTrail(db) as trail:
        trail.append([normalize_engine_event(_engine(1, T0), "h1")])
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, 'soon')", (LEGACY_UNTIL_KEY,))
    with SQLiteTrail(db) as trail:
        result = trail.append([normalize_engine_event(_engine(2, T0 + 1), "h1")])
        assert len(result.stored) == 1


def test_old_ids_an_older_service_kept_storing_after_the_upgrade_are_still_deduped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The package is upgraded and `intent declare` opens the trail (migration 0012) while
    the older `run` still stores Engine events under old ids, until it is restarted."""
    db = tmp_path / "trail.db"
    early, after = T0, T0 + 600_000_000_000
    _trail_of_old_ids(db, monkeypatch, early)
    with SQLiteTrail(db):  # the newer command: records `early`
        pass
    with monkeypatch.context() as patched:
        _old_ids(patched)
        with SQLiteTrail(db) as trail:  # the older service, still running, stores on
            trail.append([normalize_engine_event(_engine(2, after), "h1")])
    with SQLiteTrail(db) as trail:  # the newer service; the Engine replays its last events
        replayed = [
            normalize_engine_event(_engine(n, at), "h1") for n, at in ((1, early), (2, after))
        ]
        result = trail.append(replayed)
        assert result.stored == [] and result.duplicates == 2
