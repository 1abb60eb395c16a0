"""Issue 19 item 6: an emptied or replaced trail is not intact, and verify never writes."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import pytest

from config.errors import TrailError
from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import attacker, build, digest, restore_triggers, verify


def test_a_truncated_file_is_not_intact_and_verify_creates_nothing(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    db.write_bytes(b"")  # `: > docktrail.db`
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert "TAMPERED: seq 1: no genesis: the file is empty" in verdict.err
    assert db.stat().st_size == 0  # no schema, no new trail_id written


def test_every_row_deleted_with_triggers_restored_is_not_intact(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(
        db,
        "DELETE FROM alerts; DELETE FROM events; DELETE FROM checkpoints; "
        "DELETE FROM deliveries; DELETE FROM head_seal;",
    )
    restore_triggers(db)
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert "no signed checkpoint: not even the genesis checkpoint" in verdict.err


def test_verify_never_migrates_an_old_trail(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    # as a trail from before head seals: the newest migration not applied yet
    attacker(db, "DROP TABLE head_seal; DELETE FROM _migrations WHERE name = '0008_head_seal';")
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = digest(db)
    verify(db)
    assert digest(db) == before
    names = {row[0] for row in sqlite3.connect(db).execute("SELECT name FROM _migrations")}
    assert "0008_head_seal" not in names


def test_verify_prints_the_trail_id_and_key_and_pins_them(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    with SQLiteTrail(db) as trail:
        trail_id = trail.trail_id
    verdict = verify(db)
    assert verdict.code == 0, verdict.text
    assert verdict.out.startswith("intact: 41 events")  # and the deliveries queued
    match = re.search(r"key ([0-9a-f]{16}), trail ([0-9a-f]{32})", verdict.out)
    assert match is not None and match.group(2) == trail_id
    pinned_key = match.group(1)
    assert verify(db, "--trail-id", trail_id, "--key-fingerprint", pinned_key).code == 0

    # the attacker replaces both the trail and the key beside it: all consistent
    db.unlink()
    db.with_suffix(".key").unlink()
    build(db, events=40)
    replaced = verify(db)
    assert replaced.code == 0  # without a pin, nothing to compare with
    assert trail_id not in replaced.out  # but the printed trail_id changed
    pinned = verify(db, "--trail-id", trail_id)
    assert pinned.code == 1
    assert f"not the pinned trail {trail_id} (the file was replaced)" in pinned.err
    by_key = verify(db, "--key-fingerprint", pinned_key)
    assert by_key.code == 1 and f"is not the pinned key {pinned_key}" in by_key.err


def test_a_copy_of_another_trail_is_caught_by_the_pin(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    with SQLiteTrail(db) as trail:
        trail_id = trail.trail_id
    other = build(tmp_path / "other.db")
    shutil.copy(other, db)
    shutil.copy(other.with_suffix(".key"), db.with_suffix(".key"))
    assert verify(db, "--trail-id", trail_id).code == 1


def test_no_writer_builds_a_new_trail_over_an_emptied_one(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    db.write_bytes(b"")
    with pytest.raises(TrailError, match="the file is empty"):
        SQLiteTrail(db).open()
    assert db.stat().st_size == 0
