"""What the reliability tests share: kill counts, captures, and what a kill must not break.

CI runs the bounded form (`KILLS` kill -9 per command). The long form is
`DOCKTRAIL_RELIABILITY_KILLS=100 pytest tests/reliability`; the random points
come from `DOCKTRAIL_RELIABILITY_SEED` (printed, so a failure can be replayed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from sinks.sqlite import Pins, VerifyReport, verify_file

REPO = Path(__file__).resolve().parents[2]
KILLS = int(os.environ.get("DOCKTRAIL_RELIABILITY_KILLS", "20"))
T0 = 1_795_000_000_000_000_000
_TEMPLATE = {
    "Type": "container",
    "Action": "create",
    "Actor": {"ID": "", "Attributes": {"image": "registry.internal/web/nginx:1.25", "name": ""}},
    "scope": "local",
    "time": 0,
    "timeNano": 0,
}


def rng(name: str) -> random.Random:
    seed = int(os.environ.get("DOCKTRAIL_RELIABILITY_SEED", str(time.time_ns() % 1_000_000)))
    print(f"{name}: DOCKTRAIL_RELIABILITY_SEED={seed}")
    return random.Random(seed)


def append_capture(path: Path, start: int, count: int) -> None:
    """Docker `/events` lines for containers start … start+count-1."""
    with path.open("a") as out:
        for n in range(start, start + count):
            line = _TEMPLATE | {"time": (T0 + n) // 10**9, "timeNano": T0 + n}
            line["Actor"] = {
                "ID": f"{n:064x}",
                "Attributes": {"name": f"web-{n}", "image": "nginx"},
            }
            out.write(json.dumps(line) + "\n")


def docktrail(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "listener", "-c", str(config), *args]


def kill_at_random(
    command: Sequence[str],
    chance: random.Random,
    low: float,
    high: float,
    writing: Callable[[], bool] | None = None,
) -> bool:
    """Start `command`, kill -9 it after a random delay; True when it was killed.

    With `writing`, the delay starts once `writing()` says the command stores
    new events, so the kill lands in the middle of its writes.
    """
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    deadline = time.monotonic() + 30
    while writing is not None and child.poll() is None and time.monotonic() < deadline:
        if writing():
            break
        time.sleep(0.03)
    try:
        child.wait(timeout=chance.uniform(low, high))
    except subprocess.TimeoutExpired:
        child.send_signal(signal.SIGKILL)
        child.wait()
        return True
    assert child.returncode == 0, child.stderr.read().decode() if child.stderr else ""
    return False


def storing_beyond(db: Path, source: str, stored: int) -> Callable[[], bool]:
    """True once more than `stored` events of `source` are committed."""

    def more() -> bool:
        if not db.exists():
            return False
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            sql = "SELECT count(*) FROM events WHERE source = ?"
            return int(conn.execute(sql, (source,)).fetchone()[0]) > stored
        except sqlite3.Error:  # not created yet
            return False
        finally:
            conn.close()

    return more


def recoveries(db: Path) -> int:
    """How many times a writer found a crashed one's unsealed tail and sealed it."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        sql = "SELECT count(*) FROM events WHERE action = 'trail-recovered'"
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def stored_ids(db: Path, source: str) -> list[str]:
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM events WHERE source = ?", (source,))]
    finally:
        conn.close()


def check_after_crash(
    db: Path, key: Path, witness: Path | None, before: set[str], source: str
) -> set[str]:
    """Nothing acknowledged lost, nothing twice, and verify intact; the ids stored now."""
    ids = stored_ids(db, source)
    now = set(ids)
    assert len(ids) == len(now), "an event was stored twice"
    assert before <= now, f"{len(before - now)} acknowledged events lost"
    if db.exists():
        report: VerifyReport = verify_file(db, key, Pins(witness=witness))
        assert report.ok, f"{report.finding}: {report.problem}"
    return now
