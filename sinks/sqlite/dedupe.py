"""What a write finds already stored, and whether it may believe what it found.

A write skips an event or alert whose id is already in the trail (re-read input,
the Engine's replay, rules evaluating an event again). The look-up reads the
`id` column, which is a copy: whoever can write the file could edit an old
row's copy to the id of an event still to come (an audit serial and its
millisecond can be guessed), and the write would drop that event as a
duplicate, silently, until the next `verify`. So every row a write is about to
skip is checked first, as verify would check it: its body names the same id,
its hash is the hash of its body, and the next row chains to it (the last row
is vouched for by the writer's sealed heads, checked earlier in the same
transaction). A row that fails stops the write with a `TamperError`: loud,
where the edit meant it to be silent. Only found rows cost this, so a write of
new events pays nothing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

import orjson

import sinks.sqlite.legacy_ids as legacy_ids
from config.errors import TamperError
from listener.model.event import chain_hash
from sinks.sqlite.schema import ID_CHUNK


def known_ids(
    conn: sqlite3.Connection,
    chain: legacy_ids.Chain,
    keyed: Sequence[legacy_ids.Keyed],
    legacy_until: int | None,
) -> set[str]:
    """The ids of `keyed` already in `chain`'s table, under them or an older docktrail's
    (`legacy_ids`), each found row checked (module docstring)."""
    found = stored_ids(conn, chain.table, [row_id for row_id, _, _ in keyed])
    unknown = (row for row in keyed if row[0] not in found)
    found.update(legacy_ids.stored_under_old_id(conn, unknown, legacy_until, chain))
    confirm(conn, chain.table, found.values())
    return set(found)


def stored_ids(conn: sqlite3.Connection, table: str, ids: list[str]) -> dict[str, int]:
    """Each of `ids` stored in `table`, with its row's seq (by the `id` column alone)."""
    found: dict[str, int] = {}
    for start in range(0, len(ids), ID_CHUNK):
        chunk = ids[start : start + ID_CHUNK]
        sql = f"SELECT id, seq FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})"
        found.update(conn.execute(sql, chunk).fetchall())
    return found


def confirm(conn: sqlite3.Connection, table: str, seqs: Iterable[int]) -> None:
    """`TamperError` unless each row at `seqs` is the row docktrail wrote there."""
    wanted = sorted(set(seqs))
    if not wanted:
        return
    last = conn.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]
    half = ID_CHUNK // 2  # each row and the one after it
    for start in range(0, len(wanted), half):
        chunk = wanted[start : start + half]
        rows = _rows(conn, table, [*chunk, *(seq + 1 for seq in chunk)])
        for seq in chunk:
            after = rows.get(seq + 1)
            problem = _problem(rows[seq], None if after is None else after[1], seq == last)
            if problem is not None:
                raise TamperError(
                    f"{table} seq {seq}: {problem}; a write would have taken it for a stored "
                    "copy of a new row and dropped that row (run `docktrail verify`)",
                    seq=seq,
                )


Row = tuple[str, str, str, str]  # id, prev_hash, body, hash


def _rows(conn: sqlite3.Connection, table: str, seqs: list[int]) -> dict[int, Row]:
    sql = (
        f"SELECT seq, id, prev_hash, body, hash FROM {table} "
        f"WHERE seq IN ({', '.join('?' * len(seqs))})"
    )
    return {seq: (row_id, prev, body, digest) for seq, row_id, prev, body, digest in
            conn.execute(sql, seqs)}  # fmt: skip


def _problem(row: Row, next_prev_hash: str | None, is_last: bool) -> str | None:
    row_id, prev_hash, body, digest = row
    try:
        named = orjson.loads(body).get("id")
    except (orjson.JSONDecodeError, AttributeError):
        return "its body is not a JSON object"
    if named != row_id:
        return f"its id column says {row_id} but its body {named} (the column was edited)"
    if chain_hash(prev_hash, body) != digest:
        return "its hash is not the hash of its body (the body was edited)"
    if not is_last and next_prev_hash != digest:
        return "the next row does not chain to it (rewritten)"
    return None
