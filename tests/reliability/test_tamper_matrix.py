"""The tamper matrix: every way to edit the trail file that the issue lists, all detected.

Each case starts from the same trail (two writer sessions, a witness, alerts
with deliveries), tampers with a copy the way someone with write access to
the file but not to the key would, and runs verify as an auditor would: with
the public key, the witness and the pinned trail_id.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from config.models import NotificationsConfig
from notifiers.routing import Routing
from sinks.sqlite import Pins, SQLiteTrail, verify_file
from tests.adversary.trails import (
    alert_on,
    attacker,
    event,
    forged_event_rows,
    restore_triggers,
)


class Scene:
    """The trail under attack, its older copy, the key, the witness and the pins."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db, self.key = root / "trail.db", root / "trail.key"
        self.witness, self.old = root / "witness.jsonl", root / "old.db"
        routing = Routing(
            NotificationsConfig.model_validate(
                {
                    "destinations": [{"name": "chat", "url": "json://127.0.0.1:9/x"}],
                    "dedup_window_secs": 0,
                }
            )
        )
        self._session(1, 60, routing)
        self._settle()
        shutil.copy(self.db, self.old)
        self._session(61, 20, routing)
        self._settle()
        with SQLiteTrail(self.db) as trail:
            self.trail_id = trail.trail_id

    def _session(self, start: int, count: int, routing: Routing) -> None:
        with SQLiteTrail(self.db, witness_path=self.witness) as trail:
            stored = trail.append([event(n) for n in range(start, start + count)]).stored
            trail.append_alerts(
                [alert_on(stored[k * 4], start + k) for k in range(3)], route=routing.routes
            )

    def _settle(self) -> None:
        conn = sqlite3.connect(self.db)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()

    def sql(self, text: str, restore: bool = False, drop: bool = True) -> None:
        attacker(self.db, text, drop_triggers=drop)
        if restore:
            restore_triggers(self.db)

    def replace_with(self, other: Path) -> None:
        for extra in ("-wal", "-shm"):
            Path(f"{self.db}{extra}").unlink(missing_ok=True)
        shutil.copy(other, self.db)

    def rewritten(self, new_key: bool) -> Path:
        fake = self.root / "fake.db"
        key = self.root / "attacker.key" if new_key else self.key
        with SQLiteTrail(fake, signing_key=key) as trail:
            trail.append([event(n, action="start") for n in range(1, 81)])
        return fake


def rollback_by_truncation(scene: Scene) -> None:
    # rows after the older copy's head go, with their checkpoint; its genuine seal comes back
    seal = sqlite3.connect(scene.old).execute("SELECT * FROM head_seal").fetchone()
    scene.sql(
        "DELETE FROM alerts WHERE seq > 3; DELETE FROM events WHERE seq > 60; "
        "DELETE FROM checkpoints WHERE n > 2; DELETE FROM deliveries WHERE alert_seq > 3; "
        f"DELETE FROM head_seal; INSERT INTO head_seal VALUES {tuple(seal)!r};",
        restore=True,
    )


def rewrite_with_a_new_key_and_trail(scene: Scene) -> None:
    fake = scene.rewritten(new_key=True)
    scene.replace_with(fake)
    shutil.copy(scene.root / "attacker.key", scene.key)  # the key beside the trail too


CASES: dict[str, Callable[[Scene], None]] = {
    "edit a body, triggers left dropped": lambda s: s.sql(
        "UPDATE events SET body = replace(body, 'web-17', 'web-99') WHERE seq = 17;"
    ),
    "edit a body, triggers restored": lambda s: s.sql(
        "UPDATE events SET body = replace(body, 'web-17', 'web-99') WHERE seq = 17;", restore=True
    ),
    "edit a copied column, triggers restored": lambda s: s.sql(
        "UPDATE events SET who_login = 'bob' WHERE seq = 23;", restore=True
    ),
    "edit an alert, triggers restored": lambda s: s.sql(
        "UPDATE alerts SET severity = 'low' WHERE seq = 2;", restore=True
    ),
    "delete an event": lambda s: s.sql("DELETE FROM events WHERE seq = 40;", restore=True),
    "delete an alert": lambda s: s.sql("DELETE FROM alerts WHERE seq = 2;", restore=True),
    "reorder two events": lambda s: s.sql(
        "UPDATE events SET seq = -30 WHERE seq = 30; UPDATE events SET seq = 30 WHERE seq = 31; "
        "UPDATE events SET seq = 31 WHERE seq = -30;",
        restore=True,
    ),
    "truncate the end, checkpoints kept": lambda s: s.sql(
        "DELETE FROM events WHERE seq > 70;", restore=True
    ),
    "truncate the end with its checkpoint": lambda s: s.sql(
        "DELETE FROM events WHERE seq > 70; DELETE FROM checkpoints WHERE n = 3;", restore=True
    ),
    "truncate to an older head, its seal put back": rollback_by_truncation,
    "delete a checkpoint": lambda s: s.sql("DELETE FROM checkpoints WHERE n = 2;", restore=True),
    "forge the head seal": lambda s: s.sql("UPDATE head_seal SET seq = 79;", drop=False),
    "append chain-correct rows": lambda s: s.sql(forged_event_rows(s.db, [500, 501]), drop=False),
    "mark deliveries sent": lambda s: s.sql("UPDATE deliveries SET status = 'sent';", drop=False),
    "delete a pending delivery": lambda s: s.sql(
        "DELETE FROM deliveries WHERE id = 2;", drop=False
    ),
    "mark a delivery deduplicated": lambda s: s.sql(
        "UPDATE deliveries SET status = 'deduplicated' WHERE id = 1;", drop=False
    ),
    "plant a trigger": lambda s: s.sql(
        "CREATE TRIGGER quiet AFTER INSERT ON deliveries BEGIN DELETE FROM deliveries; END;",
        drop=False,
    ),
    "drop the checkpoints table": lambda s: s.sql("DROP TABLE checkpoints;"),
    "drop the meta table": lambda s: s.sql("DROP TABLE meta;"),
    "downgrade: head seal table and migration removed, rows appended": lambda s: s.sql(
        "DROP TABLE head_seal; DELETE FROM _migrations WHERE name = '0008_head_seal';"
        + forged_event_rows(s.db, [600])
    ),
    "downgrade: outbox removed": lambda s: s.sql(
        "DROP TABLE deliveries; DROP TABLE delivery_attempts; "
        "DELETE FROM _migrations WHERE name = '0007_outbox';"
    ),
    "empty the file": lambda s: s.db.write_bytes(b""),
    "rewrite the whole file with a new key": lambda s: s.replace_with(s.rewritten(new_key=True)),
    "rewrite the file and replace the key": rewrite_with_a_new_key_and_trail,
    "roll back to an older copy": lambda s: s.replace_with(s.old),
}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Scene:
    return Scene(tmp_path_factory.mktemp("pristine"))


def test_the_untouched_trail_is_intact(pristine: Scene) -> None:
    report = verify_file(pristine.db, pristine.key, Pins(pristine.trail_id, None, pristine.witness))
    assert report.ok, report.problem


def test_every_tampering_is_detected(pristine: Scene, tmp_path: Path) -> None:
    auditor_key = tmp_path / "auditor.key"
    shutil.copy(pristine.key, auditor_key)  # the auditor's copy stays out of the attacker's reach
    missed: list[str] = []
    for number, (name, tamper) in enumerate(CASES.items()):
        root = tmp_path / f"case-{number}"
        shutil.copytree(pristine.root, root)
        scene = Scene.__new__(Scene)
        scene.__dict__ |= pristine.__dict__ | {
            "root": root,
            "db": root / "trail.db",
            "key": root / "trail.key",
            "witness": root / "witness.jsonl",
            "old": root / "old.db",
        }
        tamper(scene)
        public = auditor_key.with_suffix(".pem")
        if not public.exists():
            from sinks.signing import export_public_key

            public.write_text(export_public_key(auditor_key))
        report = verify_file(scene.db, public, Pins(scene.trail_id, None, scene.witness))
        if report.ok:
            missed.append(name)
        print(f"tamper: {name}: {'MISSED' if report.ok else report.finding} ({report.problem})")
    print(f"tamper matrix: {len(CASES) - len(missed)} of {len(CASES)} detected")
    assert not missed, missed
