"""A batch of rows inserted by one SQL statement instead of one per row.

`executemany` steps SQLite once per row and takes the GIL back after each
step; while another thread runs Python (offline ingest parses the next batch
meanwhile) every one of those hand-overs waits for that thread to let go,
so a 500-row batch waits 500 times. Passing the rows as one JSON array and
inserting `SELECT … FROM json_each(?)` steps once per batch: SQLite unpacks
and inserts every row without the GIL, and the rows stored are the same
(integers, text and NULL come out of JSON as they went in).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

# Escaped NUL in the JSON: a text value holding NUL is bound directly instead
# (SQLite's JSON functions and bound text need not agree on it).
_NUL = b"\\u0000"


@functools.cache
def json_insert_sql(insert_sql: str) -> str:
    """`INSERT INTO t (a, b, …) VALUES (?, ?, …)` as the same insert from a JSON array of rows."""
    head, _values = insert_sql.split(" VALUES ", 1)
    width = head[head.index("(") + 1 : head.rindex(")")].count(",") + 1
    fields = ", ".join(f"value ->> {i}" for i in range(width))
    return f"{head} SELECT {fields} FROM json_each(?) ORDER BY key"


def insert_rows(conn: sqlite3.Connection, insert_sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """`conn.executemany(insert_sql, rows)`, in one step where the rows allow it."""
    packed = _packed(rows)
    if packed is None:
        conn.executemany(insert_sql, rows)
    else:
        conn.execute(json_insert_sql(insert_sql), (packed,))


def _packed(rows: Sequence[tuple[Any, ...]]) -> str | None:
    """The rows as one JSON array, or None when JSON would not carry them exactly."""
    if len(rows) < 2:
        return None
    try:
        data = orjson.dumps(rows)
    except (orjson.JSONEncodeError, TypeError):  # a value JSON has no exact form for
        return None
    if _NUL in data or (b"." in data and _has_float(rows)):
        return None
    return data.decode()


def _has_float(rows: Sequence[tuple[Any, ...]]) -> bool:
    return any(isinstance(value, float) for row in rows for value in row)
