"""Source state: stored in the same transaction as the events it produced.

A source checkpoints its read position (the audit log's device, inode, offset
and serial; the Docker stream's last timeNano) with the batch it read, so a
restart neither loses nor repeats events. Both trails, the same semantics.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.errors import TrailError
from listener.model.event import Event, natural_id
from sinks.memory import MemoryTrail
from sinks.sqlite import SQLiteTrail

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
T0 = 1_795_346_502_000_000_000

Trail = SQLiteTrail | MemoryTrail
AUDIT = {"device": 2049, "inode": 131_075, "offset": 8_192, "serial": 4_711, "rotated": False}


def make_event(n: int, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": natural_id("state-test", n),
        "time_ns": T0 + n,
        "source": "auditd",
        "host": "h1",
        "type": "container",
        "action": "start",
    }
    return Event(**(base | fields))


@pytest.fixture(params=["sqlite", "memory"])
def trail(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Trail]:
    instance: Trail
    instance = SQLiteTrail(tmp_path / "t.db") if request.param == "sqlite" else MemoryTrail()
    with instance:
        yield instance


def test_state_is_stored_with_the_batch(trail: Trail) -> None:
    assert trail.load_source_state("auditd") is None
    assert trail.source_states() == {}
    result = trail.append([make_event(1), make_event(2)], source_state={"auditd": AUDIT})
    assert len(result.stored) == 2
    assert trail.load_source_state("auditd") == AUDIT
    moved = AUDIT | {"offset": 9_000, "serial": 4_712, "files": ["audit.log", "audit.log.1"]}
    trail.append([make_event(3)], source_state={"auditd": moved, "docker": {"since_ns": T0 + 3}})
    assert trail.load_source_state("auditd") == moved  # replaced, not merged
    assert trail.source_states() == {"auditd": moved, "docker": {"since_ns": T0 + 3}}
    assert trail.count() == 3


def test_state_without_new_events(trail: Trail) -> None:
    # an empty batch: the source moved past lines that produced no event
    assert trail.append([], source_state={"auditd": AUDIT}).stored == []
    assert trail.load_source_state("auditd") == AUDIT
    trail.append([make_event(1)])
    # all duplicates: re-read after a crash, the position still advances
    again = trail.append([make_event(1)], source_state={"auditd": AUDIT | {"offset": 1}})
    assert (again.stored, again.duplicates) == ([], 1)
    assert trail.load_source_state("auditd") == AUDIT | {"offset": 1}
    assert trail.count() == 1


def test_returned_state_is_a_copy(trail: Trail) -> None:
    state: dict[str, Any] = {"files": ["a"]}
    trail.append([], source_state={"auditd": state})
    state["files"].append("b")
    loaded = trail.load_source_state("auditd")
    assert loaded == {"files": ["a"]}
    loaded["files"].append("c")
    assert trail.load_source_state("auditd") == {"files": ["a"]}


def test_a_failing_batch_stores_neither_events_nor_state(trail: Trail) -> None:
    trail.append([make_event(1)], source_state={"auditd": AUDIT})
    with pytest.raises(TrailError, match="cannot be stored"):
        trail.append(
            [make_event(2), make_event(3, attributes={"x": object()})],
            source_state={"auditd": AUDIT | {"offset": 99_999}},
        )
    assert trail.count() == 1
    assert trail.load_source_state("auditd") == AUDIT


@pytest.mark.parametrize(
    ("state", "message"),
    [
        ({"auditd": {"handle": object()}}, "cannot be stored as JSON"),
        ({"auditd": {"name": "\ud800"}}, "not valid Unicode"),
        ({"auditd": [1, 2]}, "must be a mapping"),
        ({"": {}}, "not a name a source may use"),
        ({"docktrail.rules": {"evaluated_through": 10**6}}, "not a name a source may use"),
    ],
    ids=["not-json", "surrogate", "not-mapping", "empty-name", "reserved-name"],
)
def test_bad_state_fails_its_batch(trail: Trail, state: Any, message: str) -> None:
    with pytest.raises(TrailError, match=message):
        trail.append([make_event(1)], source_state=state)
    assert trail.count() == 0
    assert trail.source_states() == {}


def test_state_is_bookkeeping_outside_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append([make_event(1)], source_state={"auditd": AUDIT})
    conn = sqlite3.connect(path)
    with conn:  # no append-only trigger: an operator may reset a source's position
        conn.execute("UPDATE source_state SET value = '{\"offset\":0}' WHERE name = 'auditd'")
    conn.close()
    with SQLiteTrail(path) as trail:
        assert trail.load_source_state("auditd") == {"offset": 0}
        assert trail.verify().ok
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE source_state SET value = '{oops' WHERE name = 'auditd'")
    conn.close()
    with SQLiteTrail(path) as trail, pytest.raises(TrailError, match="not a JSON object"):
        trail.load_source_state("auditd")


async def test_async_write_with_state(tmp_path: Path) -> None:
    for trail in (SQLiteTrail(tmp_path / "t.db"), MemoryTrail()):
        async with trail:
            state = {"since_ns": T0 + 1}
            result = await trail.write([make_event(1)], source_state={"docker": state})
            state["since_ns"] = -1  # too late to matter: the write has its own copy
            assert len(result.stored) == 1
            assert await trail.call(lambda t: t.load_source_state("docker")) == {"since_ns": T0 + 1}
            await trail.write([], source_state={"docker": {"since_ns": T0 + 2}})
            states = await trail.call(lambda t: t.source_states())
            assert states == {"docker": {"since_ns": T0 + 2}}


def test_state_and_mark_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    with SQLiteTrail(path) as trail:
        trail.append([make_event(1)], source_state={"auditd": AUDIT})
        trail.append_alerts([], evaluated_through=1)
    with SQLiteTrail(path) as trail:
        assert trail.load_source_state("auditd") == AUDIT
        assert trail.evaluated_through() == 1
        assert set(trail.source_states()) == {"auditd", "docktrail.rules"}


# -- crash atomicity: state and events commit together -------------------------------

CRASH_BATCHES = 30
CRASH_BATCH_SIZE = 500

CHILD = """
import sys
sys.path[:0] = [{tests!r}, {repo!r}]
from pathlib import Path
from test_trail_state import CRASH_BATCHES, crash_batch
from sinks.sqlite import SQLiteTrail
trail = SQLiteTrail(Path({db!r}), durability="full")
trail.open()
for b in range(CRASH_BATCHES):
    trail.append(crash_batch(b), source_state={{"auditd": {{"batches": b + 1}}}})
    print(b, flush=True)
print("finished", flush=True)
"""


def crash_batch(b: int) -> list[Event]:
    return [
        make_event(b * CRASH_BATCH_SIZE + i, attributes={"batch": b})
        for i in range(CRASH_BATCH_SIZE)
    ]


def test_sigkill_mid_append_keeps_state_and_events_together(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    code = CHILD.format(tests=str(TESTS), repo=str(REPO), db=str(db))
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=REPO
    )
    assert child.stdout is not None
    for line in child.stdout:
        if line.strip() == "2":  # three batches committed, the fourth in flight
            os.kill(child.pid, signal.SIGKILL)
            break
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL, "the child finished before it was killed"

    with SQLiteTrail(db) as trail:
        state = trail.load_source_state("auditd")
        assert state is not None
        # the stored position names exactly the batches whose events are stored
        assert trail.count() == state["batches"] * CRASH_BATCH_SIZE >= 3 * CRASH_BATCH_SIZE
        # resuming from the position repeats nothing and loses nothing
        for b in range(state["batches"], CRASH_BATCHES):
            result = trail.append(crash_batch(b), source_state={"auditd": {"batches": b + 1}})
            assert result.duplicates == 0
        assert trail.count() == CRASH_BATCHES * CRASH_BATCH_SIZE + 1  # and trail-recovered
        assert trail.load_source_state("auditd") == {"batches": CRASH_BATCHES}
