"""Issue 11 item 2: kill -9 of the first writer of a new trail never reads as tampering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.adversary.trails import REPO, event, verify

CHILD = """
import sys
sys.path[:0] = [{repo!r}]
from pathlib import Path
from tests.adversary.trails import event
from sinks.sqlite import SQLiteTrail
trail = SQLiteTrail(Path({db!r}), checkpoint_every_events=10**9, checkpoint_interval_secs=3600)
trail.open()
for b in range(1000):
    trail.append([event(b * 10 + n) for n in range(1, 11)])
    print(b, flush=True)
"""


def crashed_first_writer(db: Path, batches: int) -> None:
    code = CHILD.format(repo=str(REPO), db=str(db))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        if int(line) == batches - 1:
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL


def test_a_killed_first_ingest_is_intact_with_a_note(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    crashed_first_writer(db, batches=3)
    verdict = verify(db)
    assert verdict.code == 0, verdict.text
    stored = int(verdict.out.split()[1])
    assert stored >= 30
    assert "1 signed checkpoints" in verdict.out  # the genesis only
    note = f"; {stored} events and 0 alerts after the last checkpoint, sealed by the writer's"
    assert note in verdict.out


def test_the_next_writer_seals_the_tail_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    crashed_first_writer(db, batches=3)
    with SQLiteTrail(db, host="configured-host") as trail:
        stored = trail.count()
        trail.append([event(100_000)])
        recovered = trail.recovered
    assert recovered is not None and recovered.seq == stored + 1
    assert recovered.host == "configured-host"  # the configured name, not the machine's
    assert (recovered.source, recovered.type, recovered.action) == (
        "docktrail",
        "trail",
        "trail-recovered",
    )
    assert recovered.attributes["unsealed_events"] == stored
    assert recovered.attributes["first_unsealed_seq"] == 1
    assert recovered.attributes["last_checkpoint_ns"] > 0  # the genesis: "since when"
    with SQLiteTrail(db) as trail:
        kinds = [e.action for e in trail.query(EventFilter(source="docktrail"))]
    assert kinds == ["trail-recovered"]
    verdict = verify(db)
    assert verdict.code == 0 and "after the last checkpoint" not in verdict.out, verdict.text


def test_a_writer_beside_a_live_one_does_not_claim_a_crash(tmp_path: Path) -> None:
    db = tmp_path / "trail.db"
    live = SQLiteTrail(db, checkpoint_interval_secs=3600)
    live.open()
    live.append([event(1)])  # unsealed by a checkpoint, but its writer is alive
    with SQLiteTrail(db) as other:
        other.append([event(2)])
        assert other.recovered is None
    live.close()


def test_ingest_checkpoints_every_n_events(tmp_path: Path) -> None:
    from tests.reliability.harness import append_capture, docktrail

    capture, db, config = tmp_path / "events.jsonl", tmp_path / "trail.db", tmp_path / "c.yaml"
    append_capture(capture, 0, 2_000)
    config.write_text(
        f"trail:\n  path: {db}\n  checkpoint_every_events: 500\n  batch_size: 100\n"
        "  checkpoint_interval_secs: 3600\n"
    )
    ingest = docktrail(config, "ingest", "--no-progress", "--docker-events", str(capture))
    assert subprocess.run(ingest, capture_output=True, cwd=REPO).returncode == 0
    with SQLiteTrail(db) as trail:
        seqs = [row[0] for row in trail._connection().execute("SELECT seq FROM checkpoints")]
    assert seqs == [0, 500, 1000, 1500, 2000]  # the genesis, every 500 events, the close
