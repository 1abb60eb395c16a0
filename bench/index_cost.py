"""Benchmark: what each index of the trail costs an ingest into a big trail.

    .venv/bin/python bench/index_cost.py [--size 1M] [--new 20000] [--repeat 3]
                                         [--cache /tmp/docktrail-growth] [--only a,b] [--pages]

On copies of bench/growth.py's cached trail of `--size` events (built there if
missing), the same `ingest` of `--new` more events (bench/growth.py's mix and
measurement: the copy synced to disk before the clock starts) with all indexes
(the baseline), then with one index dropped at a time. The unique id indexes
serve the ingest's dedupe look-ups: without one, the look-ups are left out too
(the new events are all new), so its figure is the index and its look-ups.

Variant `events_time_id`: the id index replaced by a time-ordered unique one on
(time_ns, id), the dedupe look-ups made by (time_ns, id) pairs (a layout
measured, not the trail's: look-ups by id alone would have no index).

Output: `FIGURE index_cost.<index> <seconds saved> s baseline=<secs with all>
ratio=<secs without / secs with>` (median of `--repeat`; min and max beside),
and `FIGURE index_cost.growth.<index> <x>`: bench/growth.py's figure (the rate
into the big trail / the rate into an empty one, measured in the same run) for
each variant.
Runs alternate between variants, so a noisy neighbour spreads over all of them.

With `--pages`, no timing: the WAL pages that each commit of 500 of the new
events' rows writes, with all indexes and without each (the events table and the
actor index, kept as the writer keeps it; deterministic, so one run):
`FIGURE index_pages.<index> <pages> pages ...`.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

import sinks.sqlite.actors as actors  # noqa: E402
import sinks.sqlite.dedupe as dedupe  # noqa: E402
from bench.growth import (  # noqa: E402
    NEW_FIRST_ROUND,
    cached_trail,
    copy_trail,
    ingest_secs,
    load_mix,
    parse_size,
    size_name,
)
from sinks.sqlite import SQLiteTrail  # noqa: E402
from sinks.sqlite.schema import ID_CHUNK  # noqa: E402

ALL = "all"
EMPTY = "empty"  # the same ingest into an empty trail: the growth figure's baseline
TIME_ID = "events_time_id"
"""The id index replaced by a time-ordered unique one, dedupe look-ups through it."""
BATCH = 500  # events per transaction: ingest's default `trail.batch_size`
DEDUPE_INDEXES = {"events_id": "events", "alerts_id": "alerts"}


def trail_indexes(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL "
            "AND tbl_name IN ('events', 'alerts') ORDER BY tbl_name DESC, name"
        ).fetchall()
    return [row[0] for row in rows]


def without(path: Path, index: str) -> None:
    if index == ALL:
        return
    conn = sqlite3.connect(path)
    try:
        if index == TIME_ID:
            started = time.perf_counter()
            conn.execute("DROP INDEX events_id")
            conn.execute("CREATE UNIQUE INDEX events_time_id ON events (time_ns, id)")
            print(f"# {TIME_ID}: built in {time.perf_counter() - started:.1f}s", flush=True)
        else:
            conn.execute(f"DROP INDEX {index}")
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


@contextmanager
def time_id_lookups() -> Iterator[None]:
    """The events' dedupe look-ups by (time_ns, id), as the time-ordered index serves them."""
    original = SQLiteTrail._insert_events

    def insert_events(trail: Any, conn: sqlite3.Connection, events: Any) -> Any:
        pairs = [(event.time_ns, event.id) for event in events]
        for start in range(0, len(pairs), ID_CHUNK // 2):
            chunk = pairs[start : start + ID_CHUNK // 2]
            values = ", ".join("(?, ?)" for _ in chunk)
            sql = (  # a join: SQLite scans the table for `(time_ns, id) IN (VALUES ...)`
                f"SELECT e.id FROM (VALUES {values}) AS v JOIN events AS e "
                "ON e.time_ns = v.column1 AND e.id = v.column2"
            )
            assert not conn.execute(sql, [v for pair in chunk for v in pair]).fetchall()
        with no_lookups("events_id"):
            return original(trail, conn, events)

    SQLiteTrail._insert_events = insert_events  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        SQLiteTrail._insert_events = original  # type: ignore[method-assign]


@contextmanager
def no_lookups(index: str) -> Iterator[None]:
    """Dedupe look-ups answer "nothing stored" for the table whose id index is dropped."""
    if index == TIME_ID:
        with time_id_lookups():
            yield
        return
    table = DEDUPE_INDEXES.get(index)
    if table is None:
        yield
        return
    original = dedupe.stored_ids

    def stored_ids(conn: sqlite3.Connection, of: str, ids: list[str]) -> dict[str, int]:
        return {} if of == table else original(conn, of, ids)

    dedupe.stored_ids = stored_ids
    try:
        yield
    finally:
        dedupe.stored_ids = original


def new_rows(work: Path, new_events: Path) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The events table's rows of the new events, as an ingest into an empty trail stores them."""
    path = copy_trail(None, work / "rows")
    ingest_secs(path, new_events)
    with sqlite3.connect(path) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(events)")]
        rows = conn.execute(f"SELECT {', '.join(columns)} FROM events ORDER BY seq").fetchall()
    return columns, rows


def pages_per_commit(
    cached: Path, variant: str, work: Path, columns: list[str], rows: list[tuple[Any, ...]]
) -> float:
    path = copy_trail(cached, work / "t")
    without(path, variant)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA wal_autocheckpoint = 0")  # every commit's pages stay in the WAL
        first: int = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
        frame: int = conn.execute("PRAGMA page_size").fetchone()[0] + 24
        wal = Path(f"{path}-wal")
        before = wal.stat().st_size if wal.exists() else 0
        insert = (
            f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        )
        commits = 0
        writer = actors.ActorWriter() if actors.present(conn) else None  # as the trail's
        at = [columns.index(name) for name in ("seq", "actor_id", "container", "actor_name")]
        at.append(columns.index("type"))
        for start in range(0, len(rows), BATCH):
            batch = [(first + row[0], *row[1:]) for row in rows[start : start + BATCH]]
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(insert, batch)
            if writer is not None:
                named = [tuple(row[i] for i in at) for row in batch]
                writer.stage(conn, named, batch[-1][0])  # type: ignore[arg-type]
            conn.execute("COMMIT")
            if writer is not None:
                writer.committed()
            commits += 1
        return (wal.stat().st_size - before) / frame / commits
    finally:
        conn.close()


def measure_pages(cached: Path, variants: list[str], work: Path, new_events: Path) -> None:
    columns, rows = new_rows(work, new_events)
    pages = {
        variant: pages_per_commit(cached, variant, work, columns, rows) for variant in variants
    }
    base = pages[ALL]
    for variant, value in pages.items():
        figure(f"index_pages.{variant}", value, "pages", baseline=base, ratio=value / base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1M")
    parser.add_argument("--new", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/docktrail-growth"))
    parser.add_argument("--only", default="", help="comma-separated index names")
    parser.add_argument("--pages", action="store_true", help="WAL pages per commit, no timing")
    args = parser.parse_args()
    mix = load_mix()
    args.cache.mkdir(parents=True, exist_ok=True)
    cached = cached_trail(args.cache, mix, parse_size(args.size), rebuild=False)
    chosen = [name for name in args.only.split(",") if name] or [*trail_indexes(cached), TIME_ID]
    variants = [ALL, *chosen]
    with tempfile.TemporaryDirectory(prefix="index-cost-", dir=args.cache) as tmp:
        work = Path(tmp)
        new_events = mix.write(work / "new.jsonl", NEW_FIRST_ROUND, args.new)
        if args.pages:
            measure_pages(cached, variants, work, new_events)
            return
        secs = measure_secs(cached, variants, work, new_events, args.repeat)
    report_secs(secs, f"{args.new} events into {size_name(parse_size(args.size))}")


def measure_secs(
    cached: Path, variants: list[str], work: Path, new_events: Path, repeat: int
) -> dict[str, list[float]]:
    secs: dict[str, list[float]] = {variant: [] for variant in [*variants, EMPTY]}
    for _ in range(repeat):
        secs[EMPTY].append(ingest_secs(copy_trail(None, work / "t"), new_events))
        for variant in variants:
            path = copy_trail(cached, work / "t")
            without(path, variant)
            os.sync()  # the dropped index's pages on disk before the clock starts
            with no_lookups(variant):
                secs[variant].append(ingest_secs(path, new_events))
            print(f"# {variant}: {secs[variant][-1]:.2f}s", flush=True)
    return secs


def report_secs(secs: dict[str, list[float]], what: str) -> None:
    base = statistics.median(secs[ALL])
    empty = statistics.median(secs.pop(EMPTY))
    print(f"# {what}: {base:.2f}s with all indexes, {empty:.2f}s into an empty trail")
    for variant in secs:
        growth = [empty / took for took in secs[variant]]  # rate(big) / rate(empty)
        median = statistics.median(growth)
        figure(f"index_cost.growth.{variant}", median, "x", target=">=0.8", spread=growth)
    for variant in secs:
        values = secs[variant]
        saved = base - statistics.median(values)
        ratio = statistics.median(values) / base
        figure(f"index_cost.{variant}", saved, "s", baseline=base, ratio=ratio, spread=values)


if __name__ == "__main__":
    main()
