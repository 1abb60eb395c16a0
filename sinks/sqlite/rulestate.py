"""The rule-state table: a saved copy of what the rules remember, to start without
reading the whole trail.

Derived data, replaced in place (no append-only trigger, no chain): one row per
name, ``rule_state(name, through_seq, body, mac, updated_ns)``. The rules side
(`listener.rules.snapshot`) says what the body holds and authenticates it with
a MAC keyed from the trail's signing key; this module only stores and reads
rows. Nothing here is trusted by itself: a row whose MAC does not match is
ignored and the state rebuilt from the trail.
"""

from __future__ import annotations

import sqlite3
import time
from typing import NamedTuple

from sqlite_utils import Database


class SavedState(NamedTuple):
    through_seq: int
    body: bytes
    mac: str


def migrate(db: Database) -> None:
    """Migration 0009: the rule-state table."""
    db.execute(
        "CREATE TABLE rule_state (name TEXT PRIMARY KEY, through_seq INTEGER NOT NULL, "
        "body BLOB NOT NULL, mac TEXT NOT NULL, updated_ns INTEGER NOT NULL)"
    )


def store(conn: sqlite3.Connection, name: str, saved: SavedState) -> None:
    conn.execute(
        "INSERT INTO rule_state (name, through_seq, body, mac, updated_ns) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET through_seq = excluded.through_seq, "
        "body = excluded.body, mac = excluded.mac, updated_ns = excluded.updated_ns",
        (name, saved.through_seq, saved.body, saved.mac, time.time_ns()),
    )


def load(conn: sqlite3.Connection, name: str) -> SavedState | None:
    """The row saved under `name`; None when there is none or it is not even well-formed."""
    try:
        row = conn.execute(
            "SELECT through_seq, body, mac FROM rule_state WHERE name = ?", (name,)
        ).fetchone()
    except sqlite3.OperationalError:
        return None  # a read-only copy of a trail from before the table
    if row is None:
        return None
    through, body, mac = row
    if not isinstance(through, int) or not isinstance(mac, str):
        return None
    if isinstance(body, str):
        body = body.encode()
    if not isinstance(body, bytes):
        return None
    return SavedState(through, body, mac)
