"""Issue 19 item 9: a delivery marked sent without an attempt is detected."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import attacker, build, verify


def test_pending_deliveries_marked_sent_by_hand_are_found(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(db, "UPDATE deliveries SET status = 'sent', done_ns = 1;", drop_triggers=False)
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert verdict.err.startswith(
        "TAMPERED: alert seq 1: delivery 1 of alert seq 1 to chat is sent, but the trail "
        "recorded no such state for it (outbox edited)"
    )


def test_real_attempts_are_chained_and_verify(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    with SQLiteTrail(db) as trail:
        outbox = trail.outbox
        ids = [d.id for d in outbox.due("chat", time.time_ns(), force=True)]
        now = time.time_ns()
        outbox.record_attempt(
            "chat", ids[:2], status="200", ok=True, elapsed_ms=1.0, error=None,
            next_ns=now, now_ns=now,
        )  # fmt: skip
        outbox.record_attempt(
            "chat", ids[2:], status="500", ok=False, elapsed_ms=1.0, error="boom",
            next_ns=now, now_ns=now, expired=ids[3:],
        )  # fmt: skip
    rows = sqlite3.connect(db).execute(
        "SELECT action, body FROM events WHERE type = 'delivery' ORDER BY seq"
    )
    recorded = [(action, json.loads(body)["attributes"]["deliveries"]) for action, body in rows]
    assert recorded == [
        ("queued", ids),
        ("sent", ids[:2]),
        ("retry", ids[2:3]),
        ("failed", ids[3:]),
    ]
    verdict = verify(db)
    assert verdict.code == 0, verdict.text
    # a retried delivery flipped to sent by hand is still caught
    attacker(db, f"UPDATE deliveries SET status = 'sent' WHERE id = {ids[2]};", drop_triggers=False)
    assert verify(db).code == 1


def test_a_queued_delivery_deleted_or_marked_deduplicated_is_found(tmp_path: Path) -> None:
    db = build(tmp_path / "trail.db")
    attacker(db, "UPDATE deliveries SET status = 'deduplicated' WHERE id = 2;", drop_triggers=False)
    verdict = verify(db)
    assert verdict.code == 1 and "delivery 2 of alert seq 2 to chat is deduplicated" in verdict.err

    db = build(tmp_path / "other.db")
    attacker(db, "DELETE FROM deliveries WHERE id = 3;", drop_triggers=False)
    verdict = verify(db)
    assert verdict.code == 1, verdict.text
    assert "delivery 3 was queued but is gone from the outbox (deleted)" in verdict.err
