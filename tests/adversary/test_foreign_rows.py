"""Issue 19 item 7: rows appended by someone else are reported and never signed or sent."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.errors import TamperError
from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import (
    attacker,
    build,
    event,
    forged_alert_rows,
    forged_event_rows,
    verify,
)


def test_an_event_appended_by_hand_is_foreign_and_never_signed(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(
        db, forged_event_rows(db, [900]), drop_triggers=False
    )  # INSERT needs no trigger change
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert verdict.err.startswith("FOREIGN ROWS: seq 42: ")  # 40 events, 1 delivery record
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="foreign rows"):
        trail.append([event(42)])  # the next ingest refuses to chain on and sign
    with SQLiteTrail(db) as trail, pytest.raises(TamperError, match="foreign rows"):
        trail.checkpoint()
    checkpoints = sqlite3.connect(db).execute("SELECT max(seq) FROM checkpoints").fetchone()[0]
    assert checkpoints == 41  # nothing signed the forged row
    assert verify(db).code == 1


def test_a_forged_alert_with_a_pending_delivery_is_never_due(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    forged = forged_alert_rows(db, 99, event_seq=3)
    attacker(
        db,
        forged + "INSERT INTO deliveries (alert_seq, alert_id, alert_ns, destination, group_key, "
        "dedup_key, status, created_ns, next_ns) SELECT seq, id, time_ns, 'chat', 'g', 'd', "
        "'pending', 0, 0 FROM alerts WHERE seq = 5;",
        drop_triggers=False,
    )
    with SQLiteTrail(db) as trail:
        due = trail.outbox.due("chat", time.time_ns(), force=True)
    assert sorted(d.alert_seq for d in due) == [1, 2, 3, 4]  # the genuine ones only
    verdict = verify(db)
    assert verdict.code == 1 and verdict.err.startswith("FOREIGN ROWS: alert seq 5: "), verdict.text


def test_verify_reports_events_and_alerts_after_the_last_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    trail = SQLiteTrail(db)
    trail.open()
    stored = trail.append([event(n) for n in range(1, 6)]).stored
    from tests.adversary.trails import alert_on

    trail.append_alerts([alert_on(stored[0], 1)])
    verdict = verify(db)  # while the writer is still open: nothing checkpointed since genesis
    assert verdict.code == 0, verdict.text
    assert (
        "; 5 events and 1 alerts after the last checkpoint, sealed by the writer's head seal"
        in verdict.out
    )
    trail.close()


def test_ingest_stops_at_foreign_rows_and_says_so(tmp_path: Path) -> None:
    from tests.adversary.trails import REPO
    from tests.reliability.harness import append_capture

    db, capture = build(tmp_path / "trail.db"), tmp_path / "events.jsonl"
    attacker(db, forged_event_rows(db, [900]), drop_triggers=False)
    append_capture(capture, 0, 10)
    command = ["-m", "listener", "--db", str(db), "ingest", "--docker-events", str(capture)]
    done = subprocess.run([sys.executable, *command], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "seq 42: foreign rows: " in done.stderr and "Traceback" not in done.stderr
    assert len(sqlite3.connect(db).execute("SELECT seq FROM events").fetchall()) == 42
