"""Look-ups behind `SQLiteTrail`'s read API: rows by seq or id, the sources' state,
the last event of some types.

Apart from `trail` because they only read: none takes a lock, writes, or needs
the writer's state, so the trail calls them on its connection and translates
their errors. Ids and seqs are looked up `ID_CHUNK` at a time (SQLite's old
limit on `?` parameters). Filters as SQL are `sinks.sqlite.queries`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Literal

from listener.model.alert import Alert
from listener.model.event import Event
from sinks.chain import decode_state
from sinks.sqlite.queries import alert_from_row, event_from_row
from sinks.sqlite.schema import ID_CHUNK


def event_at(conn: sqlite3.Connection, seq: int) -> Event | None:
    """The event stored at `seq`, or None."""
    row = conn.execute(
        "SELECT seq, body, prev_hash, hash FROM events WHERE seq = ?", (seq,)
    ).fetchone()
    return None if row is None else event_from_row(*row)


def seqs_by_id(
    conn: sqlite3.Connection, ids: Sequence[str], table: Literal["events", "alerts"]
) -> dict[str, int]:
    """id -> seq of the rows of `table` among `ids`."""
    found: dict[str, int] = {}
    unique = sorted(set(ids))
    for start in range(0, len(unique), ID_CHUNK):
        chunk = unique[start : start + ID_CHUNK]
        sql = f"SELECT id, seq FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})"
        found.update(conn.execute(sql, chunk).fetchall())
    return found


def alerts_by_seq(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, Alert]:
    """The stored alerts of these seqs (missing ones are left out)."""
    found: dict[int, Alert] = {}
    unique = sorted(set(seqs))
    for start in range(0, len(unique), ID_CHUNK):
        chunk = unique[start : start + ID_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT seq, body, prev_hash, hash FROM alerts WHERE seq IN ({marks})", chunk
        )
        found.update((row[0], alert_from_row(*row)) for row in rows)
    return found


def source_state(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """The state last stored for source `name`, or None."""
    row = conn.execute("SELECT value FROM source_state WHERE name = ?", (name,)).fetchone()
    return None if row is None else decode_state(row[0])


def source_states(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Every stored state by name."""
    rows = conn.execute("SELECT name, value FROM source_state ORDER BY name")
    return {name: decode_state(value) for name, value in rows}


def last_time_of(conn: sqlite3.Connection, types: frozenset[str], through: int) -> int | None:
    """`time_ns` of the last event up to seq `through` of one of `types` that a source
    observed (not docktrail's own records), or None when there is none."""
    wanted = sorted(types)
    sql = (
        f"SELECT time_ns FROM events WHERE seq <= ? AND source != 'docktrail' "
        f"AND type IN ({', '.join('?' * len(wanted))}) ORDER BY seq DESC LIMIT 1"
    )
    row = conn.execute(sql, (through, *wanted)).fetchone()
    return None if row is None else int(row[0])
