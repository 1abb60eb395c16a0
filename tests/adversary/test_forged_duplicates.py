"""An old row's `id` column edited to the id of an event still to come must not make a
write drop that event as a duplicate (`sinks.sqlite.dedupe`): the write stops, loudly."""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from pathlib import Path

import pytest

from config.errors import TamperError
from listener.model.event import time_ordered_id
from sinks.sqlite import SQLiteTrail
from sinks.sqlite.legacy_ids import LEGACY_UNTIL_KEY
from tests.adversary.trails import alert_on, attacker, build, event, quote, restore_triggers


def _row(db: Path, table: str, seq: int) -> tuple[str, str, str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute(f"SELECT prev_hash, body, id FROM {table} WHERE seq = ?", (seq,))
        prev_hash, body, row_id = row.fetchone()
    return str(prev_hash), str(body), str(row_id)


def _forge(db: Path, sql: str) -> None:
    """Edit rows, then put the append-only triggers back as they were."""
    attacker(db, sql)
    restore_triggers(db)


def _edit_id_column(db: Path, table: str, seq: int, new_id: str) -> None:
    _forge(db, f"UPDATE {table} SET id = {quote(new_id)} WHERE seq = {seq};")


def test_an_id_column_edited_to_a_coming_events_id_stops_the_write(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    coming = event(100)
    _edit_id_column(db, "events", 10, coming.id)
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="events seq 10: its id col"):
        trail.append([coming])
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 41  # nothing added


def test_a_rewritten_body_and_hash_do_not_pass_either(tmp_path: Path) -> None:
    """The body's id edited too, and the row's own hash recomputed (sha256 needs no key):
    the next row no longer chains to it."""
    db = build(tmp_path / "trail.db")
    coming = event(100)
    prev_hash, body, old_id = _row(db, "events", 10)
    forged = body.replace(old_id, coming.id)
    digest = hashlib.sha256((prev_hash + forged).encode()).hexdigest()
    _forge(
        db,
        f"UPDATE events SET id = {quote(coming.id)}, body = {quote(forged)}, "
        f"hash = {quote(digest)} WHERE seq = 10;",
    )
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="next row does not chain"):
        trail.append([coming])


def test_an_alert_id_column_edited_to_a_coming_alerts_id_stops_the_write(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    with SQLiteTrail(db) as trail:
        (stored,) = trail.append([event(100)]).stored
    coming = alert_on(stored, 7)
    _edit_id_column(db, "alerts", 2, coming.id)
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="alerts seq 2: its id col"):
        trail.append_alerts([coming])


def test_an_edit_aimed_at_the_old_id_look_up_stops_the_write(tmp_path: Path) -> None:
    """The look-up of an older docktrail's ids reads the id, time and source columns."""
    db = build(tmp_path / "trail.db")
    at = event(100).time_ns
    coming = event(100).model_copy(update={"id": time_ordered_id(at, "adversary", 100)})
    _forge(
        db,
        f"UPDATE events SET id = {quote(coming.id[8:] + '00000000')}, time_ns = {at} "
        f"WHERE seq = 10; INSERT INTO meta (key, value) VALUES ({quote(LEGACY_UNTIL_KEY)}, "
        f"{quote(str(at))});",
    )
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="events seq 10: its id col"):
        trail.append([coming])


def test_a_true_duplicate_is_still_dropped_quietly(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    with SQLiteTrail(db) as trail:
        again = trail.append([event(3), event(40), event(41)])
        assert again.duplicates == 2 and [e.id for e in again.stored] == [event(41).id]
        last = trail.append([event(41)])  # the last row: its seal vouches for it
        assert last.duplicates == 1 and last.stored == []


def test_the_central_trails_look_up_by_id_checks_what_it_finds(tmp_path: Path) -> None:
    """`consume` skips a record whose central id is found (`seqs_by_id`): the same edit."""
    db = build(tmp_path / "trail.db")
    coming = event(100)
    with SQLiteTrail(db) as trail:
        assert trail.seqs_by_id([event(3).id]) == {event(3).id: 3}
    _edit_id_column(db, "events", 10, coming.id)
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="events seq 10"):
        trail.seqs_by_id([coming.id])
