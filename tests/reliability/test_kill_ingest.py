"""kill -9 of `docktrail ingest` at random points: nothing acknowledged lost or doubled."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.reliability.harness import (
    KILLS,
    REPO,
    append_capture,
    check_after_crash,
    docktrail,
    kill_at_random,
    recoveries,
    rng,
    stored_ids,
    storing_beyond,
)

GROWTH = 1_500  # new events in the capture before each round, so every round has work


def test_kill_9_ingest_at_random_points(tmp_path: Path) -> None:
    chance = rng("ingest")
    capture, db = tmp_path / "events.jsonl", tmp_path / "trail.db"
    key, witness = tmp_path / "trail.key", tmp_path / "witness.jsonl"
    config = tmp_path / "docktrail.yaml"
    # checkpoints rarely, so that most kills leave an unsealed tail for the next run to seal
    config.write_text(
        f"trail:\n  path: {db}\n  witness_path: {witness}\n  checkpoint_every_events: 50000\n"
        "  checkpoint_interval_secs: 3600\n"
    )
    ingest = docktrail(config, "ingest", "--no-progress", "--docker-events", str(capture))
    written, killed, rounds, acknowledged = 0, 0, 0, set[str]()
    while killed < KILLS:
        append_capture(capture, written, GROWTH)
        written += GROWTH
        if rounds % 2:  # anywhere: start-up, reading, deduplicating, writing
            killed += kill_at_random(ingest, chance, 0.2, 1.0)
        else:  # while it writes this round's new events
            writing = storing_beyond(db, "docker", len(acknowledged))
            killed += kill_at_random(ingest, chance, 0.0, 0.3, writing)
        rounds += 1
        acknowledged = check_after_crash(db, key, witness, acknowledged, "docker")
        assert rounds < 3 * KILLS, "ingest keeps finishing before it is killed"
    done = subprocess.run(ingest, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    final = stored_ids(db, "docker")
    assert len(final) == len(set(final)) == written  # 0 lost, 0 duplicated
    verify = subprocess.run(
        docktrail(config, "verify", "--witness", str(witness)),
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert verify.returncode == 0, verify.stderr
    print(
        f"ingest: {killed} kill -9 survived in {rounds} rounds; {written} events checked; "
        f"{recoveries(db)} unsealed tails sealed (trail-recovered); verify intact after every kill"
    )
