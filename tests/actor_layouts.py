"""A trail as a docktrail before the actor index (migration 0014) left it: what a
read-only copy from before it still is, and is read as (`sinks.sqlite.bucketed`)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from sqlite_utils import Database

import sinks.sqlite.actors as actors
from sinks.sqlite.schema import ACTOR_TRIGGERS, MIGRATIONS, apply_migrations


def _old_indexes() -> list[str]:
    """The per-id indexes the migration drops, as migration 0002 created them."""
    with contextlib.closing(sqlite3.connect(":memory:")) as conn:
        apply_migrations(Database(conn), MIGRATIONS[:2])
        marks = ", ".join("?" * len(actors.REPLACED))
        sql = f"SELECT sql FROM sqlite_master WHERE name IN ({marks})"
        return [row[0] for row in conn.execute(sql, actors.REPLACED)]


def trail_before_the_actor_index(path: Path) -> Path:
    """The trail at `path` as a docktrail before migration 0014 left it: no actor
    tables, their triggers and bucketed indexes; the per-id indexes instead."""
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        for name in ACTOR_TRIGGERS:
            conn.execute(f"DROP TRIGGER {name}")
        for name in ("events_bucket_actor", "events_bucket_container"):
            conn.execute(f"DROP INDEX {name}")
        for table in actors.TABLES:
            conn.execute(f"DROP TABLE {table}")
        for sql in _old_indexes():
            conn.execute(sql)
        conn.execute("DELETE FROM _migrations WHERE name = ?", (actors.MIGRATION,))
        conn.execute("DELETE FROM meta WHERE key = ?", (actors.THROUGH_KEY,))
    return path


def old_plan(path: Path, query: tuple[str, list[Any]]) -> list[str]:
    """The plan of `query` on the trail at `path`, first turned into one from before
    the actor index (`trail_before_the_actor_index`; a read-only copy is read so)."""
    trail_before_the_actor_index(path)
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return [row[-1] for row in conn.execute("EXPLAIN QUERY PLAN " + query[0], query[1])]
