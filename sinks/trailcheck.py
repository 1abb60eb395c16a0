"""Verify's checks beyond the rows: the whole schema, the file, the head seal, the outbox.

Each returns None or a `Finding`: what is wrong, the first seq (or alert seq)
that can no longer be trusted, and the kind of finding (which decides the
first word of `docktrail verify`'s message).
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlite_utils import Database

from sinks import headseal


@dataclass(frozen=True, slots=True)
class Finding:
    problem: str
    seq: int | None = None
    alert_seq: int | None = None
    kind: str = "tampered"


SchemaItem = tuple[str, str, str, str]  # type, name, table, squashed SQL
Migrate = tuple[str, Callable[[Database], None], bool, str]  # name, apply, index only, note


def _squash(sql: str | None) -> str:
    return re.sub(r"\s+", " ", sql or "").strip()


def applied_migrations(conn: sqlite3.Connection) -> list[str] | None:
    """Names in `_migrations`, or None when the file has no docktrail schema at all."""
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
    ).fetchone()
    if found is None:
        return None
    return [row[0] for row in conn.execute("SELECT name FROM _migrations")]


def _schema(conn: sqlite3.Connection) -> set[SchemaItem]:
    rows = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' "
        "ESCAPE '\\'"
    )
    return {(kind, name, table, _squash(sql)) for kind, name, table, sql in rows}


def expected_schema(migrations: Sequence[Migrate], applied: Sequence[str]) -> set[SchemaItem]:
    """The schema that the `applied` migrations produce on an empty database."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)"
        )
        for name, apply, _, _ in migrations:
            if name in applied:
                apply(db)
        return _schema(conn)
    finally:
        conn.close()


def downgrade_problem(
    conn: sqlite3.Connection, applied: Sequence[str], required: Sequence[str]
) -> Finding | None:
    """A trail created with its genesis had every `required` migration from its first day.

    Without this, removing a migration's name (and its table) would make
    verify skip what that migration protects, as for a trail from before it.
    """
    if not headseal.has_genesis(conn):
        return None
    missing = [name for name in required if name not in applied]
    if not missing:
        return None
    return Finding(
        f"schema: migration {missing[0]} is missing from a trail created with it (downgraded)"
    )


def missing_tables(conn: sqlite3.Connection, expected: set[SchemaItem]) -> Finding | None:
    """Tables the rows' checks read (checked first, so the checks can run at all)."""
    present = {(kind, name) for kind, name, _, _ in _schema(conn)}
    for kind, name, _, _ in sorted(expected):
        if kind == "table" and (kind, name) not in present:
            return Finding(f"schema: table {name} is missing (dropped)")
    return None


def schema_problem(conn: sqlite3.Connection, expected: set[SchemaItem]) -> Finding | None:
    """Every table, index, trigger and view must be the one docktrail's migrations create."""
    actual = _schema(conn)
    expected_by_name = {(kind, name): item for item in expected for kind, name in [item[:2]]}
    actual_by_name = {(kind, name): item for item in actual for kind, name in [item[:2]]}
    for key in sorted(actual_by_name.keys() - expected_by_name.keys()):
        return Finding(f"schema: {key[0]} {key[1]} is not docktrail's (planted)")
    for key in sorted(expected_by_name.keys() - actual_by_name.keys()):
        return Finding(f"schema: {key[0]} {key[1]} is missing (dropped)")
    for key in sorted(expected_by_name):
        if expected_by_name[key] != actual_by_name[key]:
            return Finding(f"schema: {key[0]} {key[1]} differs from docktrail's (altered)")
    return None


def integrity_problem(conn: sqlite3.Connection) -> Finding | None:
    try:
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check(10)")]
    except sqlite3.OperationalError as exc:
        # An index on an expression of the body (the exec-id index) cannot be checked
        # when a body was made unreadable behind SQLite's back: a finding, not a crash.
        return Finding(f"the database file is damaged (PRAGMA integrity_check failed: {exc})")
    if rows == ["ok"]:
        return None
    return Finding(f"the database file is damaged (PRAGMA integrity_check: {'; '.join(rows)})")


def seal_problem(
    conn: sqlite3.Connection,
    trail_id: str,
    public: Ed25519PublicKey | None,
    checkpointed: headseal.Heads,
) -> tuple[Finding | None, headseal.Heads | None]:
    """Check the head seal against the stored heads; also returns the heads it vouches for.

    `checkpointed`: the heads of the last valid checkpoint. Rows past both are
    foreign; a seal behind the last checkpoint was replaced by an older one.
    """
    seal = headseal.read(conn)
    if seal is None:
        if headseal.has_genesis(conn):
            return Finding("the head seal is missing (deleted)"), None
        return None, None  # a trail from before head seals
    if public is None or not headseal.signed(seal, trail_id, public):
        return Finding("the head seal's signature is invalid (forged or another key)"), None
    sealed, stored = seal.heads, headseal.current(conn)
    if sealed.seq < checkpointed.seq or sealed.alerts_seq < checkpointed.alerts_seq:
        return Finding(
            f"the head seal ({sealed.describe()}) is behind the last checkpoint "
            f"({checkpointed.describe()}): replaced by an older one",
            checkpointed.seq + 1,
        ), None
    if sealed.seq > stored.seq or sealed.alerts_seq > stored.alerts_seq:
        return Finding(
            f"the head seal is at {sealed.describe()}, the trail ends at {stored.describe()} "
            "(rows deleted at the end)",
            stored.seq + 1 if sealed.seq > stored.seq else None,
            stored.alerts_seq + 1 if sealed.seq <= stored.seq else None,
        ), None
    for table, seq, digest in (("events", sealed.seq, sealed.hash), ("alerts", *sealed[2:])):
        row = conn.execute(f"SELECT hash FROM {table} WHERE seq = ?", (seq,)).fetchone()
        if seq and (row is None or row[0] != digest):
            return Finding(f"the head seal does not match {table} row {seq} (rows rewritten)"), None
    if stored != sealed:
        bad_seq, bad_alert, message = headseal.foreign_problem(stored, sealed)
        return Finding(message, bad_seq, bad_alert, "foreign-rows"), None
    return None, sealed


def delivery_problem(conn: sqlite3.Connection) -> Finding | None:
    """Every delivery's state must be one the chain recorded, and every recorded one must exist.

    The chained `delivery` events say which deliveries were queued (or
    deduplicated) with their alert and what each attempt did (sent, retry,
    failed). Only for trails made with a genesis checkpoint: older trails'
    deliveries were queued and sent before that was recorded.
    """
    if not headseal.has_genesis(conn):
        return None
    recorded: dict[int, set[str]] = {}
    rows = conn.execute(
        "SELECT action, json_extract(body, '$.attributes.deliveries') FROM events "
        "WHERE source = 'docktrail' AND type = 'delivery'"
    )
    for action, ids in rows:
        for number in _ids(ids):
            recorded.setdefault(number, set()).add(action)
    present = conn.execute("SELECT id, status, alert_seq, destination FROM deliveries ORDER BY id")
    for number, status, alert_seq, destination in present:
        actions = recorded.pop(number, set())
        if not actions & _RECORDS_OF[status]:
            return Finding(
                f"delivery {number} of alert seq {alert_seq} to {destination} is {status}, "
                "but the trail recorded no such state for it (outbox edited)",
                alert_seq=alert_seq,
            )
    if recorded:
        number = min(recorded)
        return Finding(f"delivery {number} was queued but is gone from the outbox (deleted)")
    return None


# The chained actions that can leave a delivery in each status.
_RECORDS_OF: dict[str, set[str]] = {
    "pending": {"queued", "retry"},
    "sent": {"sent"},
    "failed": {"failed"},
    "deduplicated": {"deduplicated"},
}


def _ids(text: Any) -> list[int]:
    import json

    try:
        value = json.loads(text) if isinstance(text, str) else []
    except ValueError:
        return []
    return [item for item in value if isinstance(item, int)] if isinstance(value, list) else []
