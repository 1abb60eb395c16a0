"""A full disk under `ingest`: a clear error, nothing stored lost, a rerun completes exactly."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from sinks.sqlite import Pins, verify_file
from tests.reliability.harness import REPO, append_capture, docktrail, stored_ids
from tests.shared_data import missing_component

EVENTS = 6_000  # about 6 MB of trail: far more than the small file system holds


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        missing_component("mounting a small tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        missing_component(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_then_space_returns(small_disk: Path, tmp_path: Path) -> None:
    capture, db = tmp_path / "events.jsonl", small_disk / "trail.db"
    append_capture(capture, 0, EVENTS)
    # Batches small enough that several commit before the 2 MB file system is full.
    (tmp_path / "docktrail.yaml").write_text("trail:\n  durability: full\n  batch_size: 500\n")
    ingest = docktrail(
        tmp_path / "docktrail.yaml",
        "--db",
        str(db),
        "ingest",
        "--no-progress",
        "--docker-events",
        str(capture),
    )
    full = subprocess.run(ingest, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert full.returncode == 2, full.stdout + full.stderr
    assert "the disk is full; everything stored before this write is kept" in full.stderr
    assert "Traceback" not in full.stderr
    kept = stored_ids(db, "docker")
    assert 0 < len(kept) < EVENTS
    report = verify_file(db, db.with_suffix(".key"), Pins())
    assert report.ok, report.problem

    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = subprocess.run(ingest, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"stored {EVENTS - len(kept)}, duplicates {len(kept)}" in again.stdout
    final = stored_ids(db, "docker")
    assert len(final) == len(set(final)) == EVENTS and set(kept) <= set(final)
    assert verify_file(db, db.with_suffix(".key"), Pins()).ok
    print(
        f"disk full: failed cleanly after {len(kept)} of {EVENTS} events; the rerun stored the rest"
    )
