"""Dedupe across the change to time-ordered event ids (`listener.model.event.time_ordered_id`).

Docker and audit events used to be stored under `natural_id(*parts)`; they are now
stored under `time_prefix(time_ns) + natural_id(*parts)[:24]`. An event stored
before the upgrade and read again after it (the Engine replays the events since
the last stored time; an audit log is re-read from its checkpoint; a capture is
ingested twice) would otherwise be stored a second time under its new id.

Migration 0012 records the newest event time of a trail that already held events
(`LEGACY_UNTIL_KEY` in `meta`): only events at or before it can have an old id in
the trail, so only they cost a look-up (the old id's first 24 digits, a range of
the unique id index). A trail created since has no such row and no look-ups.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from sqlite_utils import Database

from listener.model.event import Event, legacy_id_prefix

LEGACY_UNTIL_KEY = "legacy_ids_until_ns"
_TWIN = "SELECT 1 FROM events WHERE id >= ? AND id < ? AND time_ns = ? AND source = ? LIMIT 1"
# The sources whose ids became time-ordered: their newest events, newest first.
_RECENT = (
    "SELECT id, time_ns FROM events WHERE source IN ('docker', 'auditd') ORDER BY seq DESC LIMIT ?"
)
_RECENT_ROWS = 1000


def migrate(db: Database) -> None:
    # max() alone reads one entry of events_time; a count(*) would read the whole table.
    db.execute(
        "INSERT INTO meta (key, value) SELECT ?, CAST(newest AS TEXT) "
        "FROM (SELECT max(time_ns) AS newest FROM events) WHERE newest IS NOT NULL",
        [LEGACY_UNTIL_KEY],
    )


def legacy_until(conn: sqlite3.Connection) -> int | None:
    """The newest event time that an old-format id may have, None when there are none.

    An older docktrail still running when a newer command first opened the trail (a
    package upgraded, `intent declare` run before the service restarts) goes on
    storing old ids after the recorded time: the newest `_RECENT_ROWS` events are
    looked at too, and the time of the newest old id among them counts as well.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (LEGACY_UNTIL_KEY,)).fetchone()
    if row is None:
        return None
    try:
        recorded = int(row[0])
    except (TypeError, ValueError):  # an edited meta row: look up every event, to be safe
        return 2**63 - 1
    recent = conn.execute(_RECENT, (_RECENT_ROWS,))
    later = [int(time_ns) for event_id, time_ns in recent if _old_format(event_id, time_ns)]
    return max([recorded, *later])


def _old_format(event_id: object, time_ns: object) -> bool:
    if not isinstance(event_id, str) or not isinstance(time_ns, int):
        return False
    return legacy_id_prefix(event_id, time_ns) is None


def stored_under_old_id(
    conn: sqlite3.Connection, events: Iterable[Event], until_ns: int | None
) -> set[str]:
    """The ids of those `events` whose old-format id is stored (the same source and time)."""
    if until_ns is None:
        return set()
    found: set[str] = set()
    for event in events:
        if event.time_ns > until_ns:
            continue
        prefix = legacy_id_prefix(event.id, event.time_ns)
        if prefix is None:
            continue
        args = (prefix, prefix + "g", event.time_ns, event.source)  # "g" sorts after hex
        if conn.execute(_TWIN, args).fetchone() is not None:
            found.add(event.id)
    return found
