"""The trail's writer thread gets its work done while the event loop runs Python.

The writer lets go of the GIL for SQLite's work and must take it back; a loop
busy in short slices takes it back first every time unless it gives way
(`sinks.sqlite.worker`). Multi-row inserts (`sinks.sqlite.bulk`) make the
writer ask far less often, and store exactly what `executemany` stored.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from bench.busyloop import python_in_slices
from bench.trail_append import synthetic_events
from listener import giveway
from listener.app import SWITCH_INTERVAL_SECS, tune_threads, tuned_runtime
from listener.model.event import Event
from sinks.sqlite import SQLiteTrail
from sinks.sqlite.bulk import MAX_ROWS, insert_rows
from sinks.sqlite.verification import verify_file

INSERT = "INSERT INTO t (a, b, c) VALUES (?, ?, ?)"


def _table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (n INTEGER PRIMARY KEY, a, b TEXT UNIQUE, c)")
    return conn


@pytest.mark.parametrize("count", [0, 1, 2, 3, MAX_ROWS - 1, MAX_ROWS, MAX_ROWS + 1, 1000])
def test_insert_rows_stores_what_executemany_stores(count: int) -> None:
    rows = [(n, f"b{n}", None if n % 3 else "x" * n) for n in range(count)]
    few, many, theirs = _table(), _table(), _table()
    insert_rows(few, INSERT, rows, few_statements=True)
    insert_rows(many, INSERT, rows, few_statements=False)
    theirs.executemany(INSERT, rows)
    select = "SELECT n, a, b, c FROM t ORDER BY n"
    stored = theirs.execute(select).fetchall()
    assert few.execute(select).fetchall() == stored
    assert many.execute(select).fetchall() == stored
    assert len(stored) == count


def test_insert_rows_runs_few_statements() -> None:
    conn = _table()
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    insert_rows(conn, INSERT, [(n, f"b{n}", n) for n in range(2000)], few_statements=True)
    # 2000 = 15 x 128 + 64 + 16: one statement for each
    assert len(statements) == 17


def test_insert_rows_fails_as_a_whole_row_check_does() -> None:
    conn = _table()
    conn.execute("BEGIN")
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        insert_rows(conn, INSERT, [(1, "same", 1), (2, "same", 2)], few_statements=True)
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0


@pytest.mark.parametrize("few", [True, False])
@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO t (a) SELECT 1",
        "INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO UPDATE SET a = excluded.a",
        "INSERT INTO t (a) VALUES (?), (?)",
    ],
)
def test_insert_rows_takes_only_a_single_row_insert(sql: str, few: bool) -> None:
    with pytest.raises(ValueError, match="single-row INSERT"):
        insert_rows(_table(), sql, [(1,)], few_statements=few)


def _events(count: int) -> list[Event]:
    return list(synthetic_events(count))


async def _write(path: Path, events: list[Event], timeout: float, busy: bool) -> tuple[int, bool]:
    """Events stored, and whether the loop was judged busy while the worker was kept at
    work for two looks at the end (a quick write may end before the first look)."""
    sink = SQLiteTrail(path, durability="normal", signing_key=path.with_suffix(".key"))
    await sink.start()
    done = asyncio.Event()
    loop_work = (
        asyncio.create_task(python_in_slices(done, SWITCH_INTERVAL_SECS / 5)) if busy else None
    )
    try:
        stored = 0
        for start in range(0, len(events), 100):
            result = await asyncio.wait_for(sink.write(events[start : start + 100]), timeout)
            stored += len(result.stored)
        await sink.call(lambda _: time.sleep(2 * giveway.IDLE_LOOK_SECS))
        return stored, sink._worker.loop_busy
    finally:
        done.set()
        if loop_work is not None:
            await loop_work
        await sink.aclose()


def test_the_writer_stores_while_the_loop_runs_python(tmp_path: Path) -> None:
    """Each write of 100 events takes milliseconds; without the loop giving way
    (`giveway._nap` a no-op) about 13 s on the 2-core machine, the writer winning the
    GIL back only now and then, and `wait_for` gives up on it after 5 s."""
    interval = sys.getswitchinterval()
    tune_threads()
    try:
        stored, seen_busy = asyncio.run(_write(tmp_path / "t.db", _events(1000), 5, busy=True))
    finally:
        sys.setswitchinterval(interval)
    assert stored == 1000
    assert seen_busy  # the writer's cue for multi-row statements
    assert verify_file(tmp_path / "t.db", tmp_path / "t.key").ok


def test_an_idle_loop_is_seen_idle(tmp_path: Path) -> None:
    stored, seen_busy = asyncio.run(_write(tmp_path / "t.db", _events(3000), 60, busy=False))
    assert stored == 3000
    assert not seen_busy


def test_ingest_tunes_thread_switching_and_gives_it_back() -> None:
    interval = sys.getswitchinterval()
    with tuned_runtime():
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECS)
    assert sys.getswitchinterval() == interval
