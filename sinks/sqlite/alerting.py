"""Alerts in the trail and the outbox's bookkeeping in the event chain: what
`SQLiteTrail.append_alerts` checks and writes, and the `delivery` events that
record each delivery's status.

Apart from `trail` because these are the alerts' own rules. An alert is stored
only pointing at the stored event it names, so verify can tie every alert to
its event. The outbox rows (`sinks.outbox`) are mutable bookkeeping; each change
of their status is also chained as a `docktrail` event of type `delivery`, so
verify can tell a delivery marked sent, or dropped, behind the trail's back.
`SQLiteTrail` owns the transactions and the head seal around these functions;
each runs inside the caller's write transaction, on its connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from config.errors import TrailError
from listener.model.alert import Alert
from listener.model.event import Actor, Event, natural_id
from sinks.chain import RULES_MARK, SealedAlert, event_ref_problem, mark_value
from sinks.sqlite.bulk import insert_rows
from sinks.sqlite.schema import ALERT_INSERT, ID_CHUNK, alert_copied_values


def check_event_refs(conn: sqlite3.Connection, alerts: Sequence[Alert]) -> None:
    """Each alert must point at the stored event it names (inside the write transaction)."""
    seqs = sorted({alert.event_seq for alert in alerts})
    stored: dict[int, str] = {}
    for start in range(0, len(seqs), ID_CHUNK):
        chunk = seqs[start : start + ID_CHUNK]
        sql = f"SELECT seq, id FROM events WHERE seq IN ({', '.join('?' * len(chunk))})"
        stored.update(conn.execute(sql, chunk).fetchall())
    for alert in alerts:
        problem = event_ref_problem(
            f"alert {alert.id}", alert.event_seq, alert.event_id, stored.get(alert.event_seq)
        )
        if problem is not None:
            raise TrailError(problem)


def insert_alerts(
    conn: sqlite3.Connection, sealed: Sequence[SealedAlert], *, few_statements: bool = False
) -> None:
    """Store alerts sealed into the chain (`sinks.chain.seal_alerts`), with their copied columns
    (`few_statements`: see `bulk.insert_rows`)."""
    insert_rows(
        conn,
        ALERT_INSERT,
        [
            (
                stored.seq,
                *alert_copied_values(content),
                body,
                stored.prev_hash,
                stored.hash,
            )
            for stored, content, body in sealed
        ],
        few_statements=few_statements,
    )


def evaluation_mark(conn: sqlite3.Connection) -> int:
    """The stored rules evaluation mark (`RULES_MARK`): every event up to it was evaluated."""
    row = conn.execute("SELECT value FROM source_state WHERE name = ?", (RULES_MARK,)).fetchone()
    return mark_value(None if row is None else row[0])


def queued_deliveries(
    conn: sqlite3.Connection, first_seq: int, last_seq: int
) -> dict[tuple[str, str], list[int]]:
    """The deliveries just queued for alerts `first_seq`..`last_seq`, by destination and
    action (`queued`, or `deduplicated`: never to be sent), each group's ids in order."""
    rows = conn.execute(
        "SELECT destination, status, id FROM deliveries WHERE alert_seq BETWEEN ? AND ? "
        "ORDER BY destination, status, id",
        (first_seq, last_seq),
    )
    groups: dict[tuple[str, str], list[int]] = {}
    for destination, status, number in rows:
        action = "queued" if status == "pending" else status
        groups.setdefault((destination, action), []).append(number)
    return groups


def delivery_event(
    trail_id: str,
    host: str,
    destination: str,
    action: str,
    ids: Sequence[int],
    attempt_id: int | None,
) -> Event:
    """The `delivery` event that chains a status of deliveries `ids` to `destination`."""
    now = time.time_ns()
    return Event(
        id=natural_id("docktrail", "delivery", trail_id, attempt_id, action, ids[0]),
        time_ns=now,
        source="docktrail",
        host=host,
        type="delivery",
        action=action,
        actor=Actor(id=destination, name=destination),
        attributes={"attempt": attempt_id, "deliveries": sorted(ids)},
    )
