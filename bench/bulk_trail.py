"""Build a large trail fast and honestly: the trail's own writer stores every row, but the
secondary indexes of `events` and `alerts` are created once at the end instead of grown
one random insert at a time.

    with_secondary_indexes_deferred(path, key, fill)

1. the trail is created by `SQLiteTrail` (genesis checkpoint, migrations, triggers);
2. the definitions of its secondary indexes are read from `sqlite_schema` and the
   indexes dropped; the UNIQUE id indexes (`events_id`, `alerts_id`) stay, since every
   append looks its ids up in them to skip duplicates (without them each batch would
   scan the whole table). The actor index's tables (`sinks.sqlite.actors`) are tables,
   kept by the writer as it stores the rows; the label index reads first seqs there;
3. `fill()` writes the events (and alerts, rule states) through the trail's own code:
   hash chain, copied columns, checkpoints and alerts are the service's;
4. the indexes are created again with the exact SQL that `sqlite_schema` held, and
5. the file must pass `verify_file` (chain, signatures, copied columns,
   `PRAGMA integrity_check`, the schema and trigger checks), or the build fails.

An index built in one pass from sorted keys is packed fuller than one grown by inserts
in random order, so a bulk-built trail is slightly smaller and its index lookups touch
slightly fewer pages than a trail grown by the service: figures measured on it are
slightly flattering (bench/growth.py and bench/trail_scale.py use it only for 10M).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from sqlite_utils import Database

from sinks.sqlite import SQLiteTrail, apply_migrations, verify_file

INDEXED_TABLES = ("events", "alerts")
KEPT_DURING_LOAD = frozenset({"events_id", "alerts_id"})  # dedupe reads them on every append
INDEX_CACHE_KIB = 256 * 1024  # sort memory for CREATE INDEX (the service's is 16 MiB)


class BulkBuildError(RuntimeError):
    """The bulk-built trail does not verify, or its indexes are not the trail's own."""


def index_definitions(conn: sqlite3.Connection) -> dict[str, str]:
    """name -> SQL of every explicit index on the indexed tables (not the automatic ones)."""
    marks = ", ".join("?" * len(INDEXED_TABLES))
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL "
        f"AND tbl_name IN ({marks}) ORDER BY name",
        INDEXED_TABLES,
    )
    return {name: sql for name, sql in rows}


def _connect(path: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(path, isolation_level=None))


def drop_secondary_indexes(path: Path) -> dict[str, str]:
    """Drop the indexes the load does not need; return their exact definitions."""
    with _connect(path) as conn:
        deferred = {
            name: sql
            for name, sql in index_definitions(conn).items()
            if name not in KEPT_DURING_LOAD
        }
        conn.execute("BEGIN IMMEDIATE")
        for name in deferred:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("COMMIT")
    return deferred


def create_indexes(path: Path, definitions: dict[str, str]) -> None:
    """Create the indexes again with their saved SQL, in one transaction.

    A rollback journal while they are built: with WAL every new index page would be
    written twice (WAL, then the file); the trail's writer switches back to WAL.
    """
    with _connect(path) as conn:
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute(f"PRAGMA cache_size = -{INDEX_CACHE_KIB}")
        conn.execute("BEGIN IMMEDIATE")
        for sql in definitions.values():
            conn.execute(sql)
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")


def check_verifies(path: Path, key: Path) -> None:
    report = verify_file(path, key)
    if not report.ok:
        raise BulkBuildError(f"bulk-built trail {path} does not verify: {report.problem}")


def build(path: Path, key: Path, fill: Callable[[], None]) -> float:
    """Create the trail at `path`, `fill()` it with secondary indexes deferred, re-create
    them, verify; return the seconds taken (creation to verified)."""
    started = time.perf_counter()
    with SQLiteTrail(path, signing_key=key):
        pass  # created: genesis checkpoint, migrations, triggers, key
    expected = _all_indexes(path)
    deferred = drop_secondary_indexes(path)
    fill()
    index_started = time.perf_counter()
    create_indexes(path, deferred)
    if _all_indexes(path) != expected:
        raise BulkBuildError(f"{path}: the index definitions differ from the trail's own")
    verify_started = time.perf_counter()
    check_verifies(path, key)
    done = time.perf_counter()
    print(
        f"# bulk build of {path.name}: load {index_started - started:.0f}s, "
        f"indexes {verify_started - index_started:.0f}s, verify {done - verify_started:.0f}s",
        flush=True,
    )
    return done - started


def up_to_date(path: Path) -> Path:
    """A cached trail with the schema migrations it lacks applied (a new index, say),
    once and before anything is measured: a measure must not include that one-off step."""
    with _connect(path) as conn:
        applied = apply_migrations(Database(conn, execute_plugins=False))
    if applied:
        print(f"# brought {path.name} up to date first: {', '.join(applied)}", flush=True)
    return path


def _all_indexes(path: Path) -> dict[str, str]:
    with _connect(path) as conn:
        return index_definitions(conn)
