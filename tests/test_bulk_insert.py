"""A batch inserted in one statement (`sinks.sqlite.bulk`) stores exactly the rows,
values and types `executemany` stores, whatever the text holds."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from sinks.sqlite.bulk import insert_rows, json_insert_sql

INSERT = "INSERT INTO t (seq, name, n, body) VALUES (?, ?, ?, ?)"
AWKWARD_TEXT = [
    "plain",
    "ünïcödé and 表",
    "emoji 🐳 outside the BMP",
    'quotes " and \\ backslash',
    "tab\tnewline\ncr\r",
    "control \x01\x1f",
    "",
    "nul \x00 inside",
    "[1, 2]",
    "null",
]
AWKWARD_NUMBERS: list[Any] = [0, -1, 2**63 - 1, -(2**63), None, True, 1_795_000_000_000_000_000]


def table() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, name TEXT, n INTEGER, body)")
    return conn


def rows_of(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT seq, name, typeof(name), n, typeof(n), body, typeof(body) FROM t ORDER BY seq"
    ).fetchall()


def awkward_rows() -> list[tuple[Any, ...]]:
    return [
        (seq + 1, text, AWKWARD_NUMBERS[seq % len(AWKWARD_NUMBERS)], text[::-1] or None)
        for seq, text in enumerate(AWKWARD_TEXT * 3)
    ]


def test_one_statement_stores_what_executemany_stores() -> None:
    rows = awkward_rows()
    one, many = table(), table()
    insert_rows(one, INSERT, rows)
    many.executemany(INSERT, rows)
    assert rows_of(one) == rows_of(many)
    assert len(rows_of(one)) == len(rows)


@pytest.mark.parametrize("value", [1.5, 2**64, b"bytes"], ids=["float", "beyond-int64", "blob"])
def test_values_json_cannot_carry_exactly_are_bound_directly(value: Any) -> None:
    rows = [(1, "a", 1, value), (2, "b", 2, "text")]
    one, many = table(), table()
    if isinstance(value, int):  # sqlite3 itself refuses it: the same error either way
        with pytest.raises(OverflowError):
            insert_rows(one, INSERT, rows)
        return
    insert_rows(one, INSERT, rows)
    many.executemany(INSERT, rows)
    assert rows_of(one) == rows_of(many)


def test_a_constraint_failure_stores_no_row_of_the_batch() -> None:
    conn = table()
    conn.execute("INSERT INTO t VALUES (3, 'x', 0, 'x')")
    with pytest.raises(sqlite3.IntegrityError):
        insert_rows(conn, INSERT, [(1, "a", 1, "a"), (2, "b", 2, "b"), (3, "c", 3, "c")])
    assert [row[0] for row in rows_of(conn)] == [3]


def test_the_statement_lists_every_column_of_the_insert() -> None:
    sql = json_insert_sql(INSERT)
    assert sql.startswith("INSERT INTO t (seq, name, n, body) SELECT ")
    assert "value ->> 3" in sql and "value ->> 4" not in sql
