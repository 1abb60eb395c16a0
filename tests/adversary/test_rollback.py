"""Issue 11 item 4: a trail replaced by an older copy of itself, with the witness."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import event, verify


def grow(db: Path, witness: Path, start: int, count: int) -> None:
    with SQLiteTrail(db, witness_path=witness) as trail:
        trail.append([event(n) for n in range(start, start + count)])


def settled_copy(db: Path, to: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.copy(db, to)


def test_an_older_copy_is_rolled_back_and_a_rewritten_one_forked(tmp_path: Path) -> None:
    db, witness, old = tmp_path / "trail.db", tmp_path / "witness.jsonl", tmp_path / "old.db"
    grow(db, witness, 1, 100)
    settled_copy(db, old)
    grow(db, witness, 101, 139)  # 239 stored in all
    lines = [json.loads(line) for line in witness.read_text().splitlines()]
    assert [line["n"] for line in lines] == [1, 2, 3]  # genesis, then one per close
    assert verify(db, "--witness", str(witness)).code == 0

    shutil.copy(old, db)  # the attacker puts the older copy back
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    plain = verify(db)
    assert plain.code == 0 and plain.out.startswith("intact: 100 events")  # alone, it is intact
    rolled = verify(db, "--witness", str(witness))
    assert rolled.code == 1, rolled.text
    assert rolled.err.startswith(
        "ROLLED BACK: seq 101: the witness (" + str(witness) + ":3) holds checkpoint 3 at seq 239, "
        "but this trail's checkpoints end at checkpoint 2 (seq 100)"
    )

    grow(db, witness, 500, 5)  # the service writes on into the old copy
    forked = verify(db, "--witness", str(witness))
    assert forked.code == 1, forked.text
    assert forked.err.startswith("FORKED: seq 101: checkpoint 3 differs from the witness")


def test_witness_lines_not_signed_by_the_key_are_ignored(tmp_path: Path) -> None:
    db, witness = tmp_path / "trail.db", tmp_path / "witness.jsonl"
    grow(db, witness, 1, 10)
    forged = json.loads(witness.read_text().splitlines()[-1]) | {"n": 9, "seq": 900}
    with witness.open("a") as out:
        out.write(json.dumps(forged) + "\nnot json\n")
    verdict = verify(db, "--witness", str(witness))
    assert verdict.code == 0, verdict.text
    assert "witness: 2 checkpoints agree (2 lines not signed by this key ignored)" in verdict.out


def test_a_witness_of_another_trail_means_the_file_was_replaced(tmp_path: Path) -> None:
    db, witness = tmp_path / "trail.db", tmp_path / "witness.jsonl"
    grow(db, witness, 1, 10)
    other = tmp_path / "other.db"
    with SQLiteTrail(other, signing_key=db.with_suffix(".key")) as trail:
        trail.append([event(1)])
    shutil.copy(other, db)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    verdict = verify(db, "--witness", str(witness))
    assert verdict.code == 1 and verdict.err.startswith(
        "FORKED: the witness holds no checkpoint of trail"
    )
