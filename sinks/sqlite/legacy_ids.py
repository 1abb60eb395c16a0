"""Dedupe across the change to time-ordered ids (`listener.model.event.time_ordered_id`).

Docker and audit events used to be stored under `natural_id(*parts)`; they are now
stored under `time_prefix(time_ns) + natural_id(*parts)[:24]`. An event stored
before the upgrade and read again after it (the Engine replays the events since
the last stored time; an audit log is re-read from its checkpoint; a capture is
ingested twice) would otherwise be stored a second time under its new id.
Alert ids followed (migration 0013, `listener.model.alert.alert_id`): the rules
evaluate again what a crash or a writer without rules left unevaluated, and an
alert already stored by an older docktrail must not be stored twice.

Each migration records its chain's newest time in `meta` (`Chain.until_key`):
only rows at or before it can have an old id in the trail, so only they cost a
look-up (the old id's first 24 digits, a range of the unique id index). A trail
created since has no such row and no look-ups.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import NamedTuple

from sqlite_utils import Database

from listener.model.event import legacy_id_prefix

# (id, time_ns, kind): an event's source, an alert's rule (`Chain.kind_column`).
Keyed = tuple[str, int, str]

LEGACY_UNTIL_KEY = "legacy_ids_until_ns"
LEGACY_ALERTS_UNTIL_KEY = "legacy_alert_ids_until_ns"
_RECENT_ROWS = 1000


_EVERY = 2**63 - 1  # every row may have an old id: look each one up


class Chain(NamedTuple):
    """Where one chain's ids changed format: its table, the column an old id's row must
    agree on besides the time, the `meta` row of the time up to which old ids may be,
    and the migration that records it."""

    table: str
    kind_column: str
    until_key: str
    migration: str
    # Its newest rows that may hold old ids, newest first (`legacy_until`).
    recent: str


EVENTS = Chain(
    "events",
    "source",
    LEGACY_UNTIL_KEY,
    "0012_time_ordered_ids",
    # The sources whose ids became time-ordered.
    "SELECT id, time_ns FROM events WHERE source IN ('docker', 'auditd') ORDER BY seq DESC LIMIT ?",
)
ALERTS = Chain(
    "alerts",
    "rule",
    LEGACY_ALERTS_UNTIL_KEY,
    "0013_time_ordered_alert_ids",
    "SELECT id, time_ns FROM alerts ORDER BY seq DESC LIMIT ?",
)


def migrate(db: Database) -> None:
    """0012: the events'."""
    _record_newest(db, EVENTS)


def migrate_alerts(db: Database) -> None:
    """0013: the alerts' (`listener.model.alert.alert_id`)."""
    _record_newest(db, ALERTS)


def _record_newest(db: Database, chain: Chain) -> None:
    # max() alone reads one entry of the time index; a count(*) would read the whole table.
    db.execute(
        "INSERT INTO meta (key, value) SELECT ?, CAST(newest AS TEXT) "
        f"FROM (SELECT max(time_ns) AS newest FROM {chain.table}) WHERE newest IS NOT NULL",
        [chain.until_key],
    )


def legacy_until(conn: sqlite3.Connection, chain: Chain = EVENTS) -> int | None:
    """The newest time that an old-format id of `chain` may have, None when there are none.

    An older docktrail still running when a newer command first opened the trail (a
    package upgraded, `intent declare` run before the service restarts) goes on
    storing old ids after the recorded time: the newest `_RECENT_ROWS` rows are
    looked at too, and the time of the newest old id among them counts as well.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (chain.until_key,)).fetchone()
    if row is None:
        # Not migrated (a trail on read-only storage is read without its index-only
        # migrations): all its ids are old ones.
        return None if _migrated(conn, chain) else _EVERY
    try:
        recorded = int(row[0])
    except (TypeError, ValueError):  # an edited meta row: look up every row, to be safe
        return _EVERY
    recent = conn.execute(chain.recent, (_RECENT_ROWS,))
    later = [int(time_ns) for row_id, time_ns in recent if _old_format(row_id, time_ns)]
    return max([recorded, *later])


def _migrated(conn: sqlite3.Connection, chain: Chain) -> bool:
    found = conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (chain.migration,))
    return found.fetchone() is not None


def _old_format(row_id: object, time_ns: object) -> bool:
    if not isinstance(row_id, str) or not isinstance(time_ns, int):
        return False
    return legacy_id_prefix(row_id, time_ns) is None


def stored_under_old_id(
    conn: sqlite3.Connection,
    rows: Iterable[Keyed],
    until_ns: int | None,
    chain: Chain = EVENTS,
) -> dict[str, int]:
    """Those of `rows` whose old-format id is stored in `chain`'s table with the same
    time and kind: each id with the seq of the row found."""
    if until_ns is None:
        return {}
    twin = (
        f"SELECT seq FROM {chain.table} WHERE id >= ? AND id < ? AND time_ns = ? "
        f"AND {chain.kind_column} = ? LIMIT 1"
    )
    found: dict[str, int] = {}
    for row_id, time_ns, kind in rows:
        if time_ns > until_ns:
            continue
        prefix = legacy_id_prefix(row_id, time_ns)
        if prefix is None:
            continue
        # "g" sorts after every hex digit: the range is the ids that begin with `prefix`.
        twin_row = conn.execute(twin, (prefix, prefix + "g", time_ns, kind)).fetchone()
        if twin_row is not None:
            found[row_id] = twin_row[0]
    return found
