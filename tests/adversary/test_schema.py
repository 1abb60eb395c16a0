"""Issue 19 item 8: verify compares the whole schema with docktrail's and checks the file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.adversary.trails import attacker, build, verify


def test_a_planted_trigger_that_marks_deliveries_sent_is_found(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(
        db,
        "CREATE TRIGGER silence AFTER INSERT ON deliveries BEGIN "
        "UPDATE deliveries SET status = 'deduplicated' WHERE id = new.id; END;",
        drop_triggers=False,
    )
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert "schema: trigger silence is not docktrail's (planted)" in verdict.err


def test_an_index_rebuilt_as_a_partial_index_is_found(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(
        db,
        "DROP INDEX alerts_rule; "
        "CREATE INDEX alerts_rule ON alerts (rule) WHERE rule != 'privileged-container';",
        drop_triggers=False,
    )
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert "schema: index alerts_rule differs from docktrail's (altered)" in verdict.err


def test_a_planted_view_is_found(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(db, "CREATE VIEW innocent AS SELECT * FROM events WHERE 0;", drop_triggers=False)
    assert "schema: view innocent is not docktrail's (planted)" in verify(db).err


def test_a_damaged_index_page_fails_the_integrity_check(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db", events=400)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page = conn.execute(
        "SELECT pageno FROM dbstat WHERE name = 'events_actor_image' AND pagetype = 'leaf' LIMIT 1"
    ).fetchone()[0]
    conn.close()
    data = bytearray(db.read_bytes())
    start = (page - 1) * page_size
    at = data.index(b"registry.", start + 100, start + page_size)
    data[at : at + 9] = b"REGISTRY."  # the index now names images the table does not hold
    db.write_bytes(bytes(data))
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert "the database file is damaged (PRAGMA integrity_check:" in verdict.err
