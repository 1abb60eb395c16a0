"""Insert many rows in few statements: `insert_rows`, what `executemany` does, in
multi-row ``INSERT … VALUES (…), (…), …`` statements.

Why not always `executemany`: CPython's sqlite3 module lets go of the GIL
around every `sqlite3_step` and `sqlite3_reset`, twice per row, and must take
it back each time. While another thread runs Python (the event loop of
`docktrail run`), taking it back waits until that thread gives it up
(`sinks.sqlite.worker` says why that can take for ever, and how the loop gives
way). In statements of up to `MAX_ROWS` rows the writer waits once per
statement instead of twice per row: with the loop busy, about 10,000 events/s
written against 6,000 by `executemany` (bench/trail_contention.py,
docs/PERFORMANCE.md).
With the loop idle `executemany` is the cheaper (below).
"""

from __future__ import annotations

import itertools
import sqlite3
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

MAX_ROWS = 128  # rows per statement: 16 columns x 128 = 2,048 parameters (SQLite allows 32,766)
_VALUES = " VALUES "


def insert_rows(
    conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]], *, few_statements: bool
) -> None:
    """`conn.executemany(sql, rows)`; with `few_statements`, in multi-row statements.

    Multi-row statements cost the writer more CPU (10 % of an append of 2,000
    events: SQLite copies each row's values once more), so they are for when a
    busy loop makes every wait for the GIL count (`worker.Worker.loop_busy`).
    Rows go in order (the same rowids, the same constraint checks row by row);
    statements hold a power of two of rows, at most `MAX_ROWS`, so that a handful
    of texts serve every batch size (and stay in the connection's statement cache).
    """
    if not few_statements:
        _multi_row(sql, 1)  # the same check of the statement's form
        conn.executemany(sql, rows)
        return
    done, total = 0, len(rows)
    while done < total:
        count = _statement_rows(total - done)
        chunk = rows[done : done + count]
        conn.execute(_multi_row(sql, count), list(itertools.chain.from_iterable(chunk)))
        done += count


def _statement_rows(left: int) -> int:
    """The largest power of two not above `left`, at most `MAX_ROWS`."""
    return min(MAX_ROWS, 1 << (left.bit_length() - 1))


@lru_cache(maxsize=64)
def _multi_row(sql: str, count: int) -> str:
    head, found, values = sql.partition(_VALUES)
    if not found or not (values.startswith("(") and values.endswith(")")) or "(" in values[1:]:
        raise ValueError(f"not a single-row INSERT … VALUES (…): {sql!r}")
    return head + _VALUES + ", ".join([values] * count)
