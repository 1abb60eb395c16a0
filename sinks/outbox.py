"""The durable outbox: alert deliveries kept in the trail database.

An alert that a destination should receive gets one `deliveries` row, written
in the transaction that stores the alert (`SQLiteTrail.append_alerts(...,
route=...)`), so a crash can lose neither. The notifier worker
(`notifiers.worker`) sends what is due, records every attempt in
`delivery_attempts`, and moves rows through their states:

    pending ──sent──> sent
       │  └─retry──> pending (attempts + 1, next_ns later)
       └─too old───> failed
    deduplicated     (at enqueue: identical to a recent one; never sent)

The rows are mutable bookkeeping, but every state change is also recorded
in the events chain, in its own transaction: a `docktrail` event of type
`delivery`, action `queued` or `deduplicated` (with the alerts) and `sent`,
`retry` or `failed` (per attempt, `Recorder`), naming the destination and the
delivery ids. `verify` checks every delivery's status against those events
and that no queued delivery is gone, so `UPDATE deliveries SET status =
'sent'` or a deleted row cannot silence an alert unnoticed. Deliveries of alerts past
the writer's head seal (rows someone else appended, `sinks.headseal`) are
never due: a forged alert is never sent.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sqlite_utils import Database

if TYPE_CHECKING:
    from listener.model.alert import Alert

Status = Literal["pending", "sent", "failed", "deduplicated"]
STATUSES: tuple[Status, ...] = ("pending", "sent", "failed", "deduplicated")


@dataclass(slots=True, frozen=True)
class Route:
    """One destination an alert goes to, with the keys that merge its messages."""

    destination: str
    group_key: str  # alerts sharing it may go out in one message (rule and host)
    dedup_key: str  # identical alerts share it (rule, host, subject, login)
    dedup_window_ns: int = 0  # 0: no dedup


Router = Callable[["Alert"], Sequence[Route]]
"""Names the routes of one new alert; `SQLiteTrail.append_alerts(route=...)` calls it."""


@dataclass(slots=True, frozen=True)
class Delivery:
    id: int
    alert_seq: int
    alert_id: str
    alert_ns: int
    destination: str
    group_key: str
    status: Status
    created_ns: int
    next_ns: int
    attempts: int
    last_error: str | None
    done_ns: int | None
    duplicate_of: int | None


@dataclass(slots=True, frozen=True)
class Attempt:
    id: int
    destination: str
    time_ns: int
    status: str
    ok: bool
    elapsed_ms: float
    error: str | None
    deliveries: int


_DELIVERY_COLUMNS = (
    "id, alert_seq, alert_id, alert_ns, destination, group_key, status, created_ns, "
    "next_ns, attempts, last_error, done_ns, duplicate_of"
)


def migrate(db: Database) -> None:
    """Migration 0007: the outbox tables (no append-only triggers: rows change state)."""
    db.execute(
        "CREATE TABLE deliveries (id INTEGER PRIMARY KEY, alert_seq INTEGER NOT NULL, "
        "alert_id TEXT NOT NULL, alert_ns INTEGER NOT NULL, destination TEXT NOT NULL, "
        "group_key TEXT NOT NULL, dedup_key TEXT NOT NULL, status TEXT NOT NULL, "
        "created_ns INTEGER NOT NULL, next_ns INTEGER NOT NULL, "
        "attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, done_ns INTEGER, "
        "attempt_id INTEGER, duplicate_of INTEGER, lease_ns INTEGER NOT NULL DEFAULT 0)"
    )
    db.execute("CREATE UNIQUE INDEX deliveries_alert ON deliveries (alert_id, destination)")
    db.execute(
        "CREATE INDEX deliveries_pending ON deliveries (destination, next_ns) "
        "WHERE status = 'pending'"
    )
    db.execute("CREATE INDEX deliveries_dedup ON deliveries (destination, dedup_key, alert_ns)")
    db.execute(
        "CREATE INDEX deliveries_group_sent ON deliveries (destination, group_key, done_ns) "
        "WHERE status = 'sent'"
    )
    db.execute("CREATE INDEX deliveries_status ON deliveries (status, destination)")
    db.execute(
        "CREATE TABLE delivery_attempts (id INTEGER PRIMARY KEY, destination TEXT NOT NULL, "
        "time_ns INTEGER NOT NULL, status TEXT NOT NULL, ok INTEGER NOT NULL, "
        "elapsed_ms REAL NOT NULL, error TEXT, deliveries INTEGER NOT NULL)"
    )
    db.execute("CREATE INDEX delivery_attempts_time ON delivery_attempts (destination, time_ns)")


def enqueue(
    conn: sqlite3.Connection,
    routed: Iterable[tuple[int, str, int, Sequence[Route]]],
    now_ns: int | None = None,
) -> None:
    """Insert deliveries for (alert seq, alert id, alert time, routes); inside the caller's txn.

    An alert identical (same dedup key) to one still queued for the same
    destination within the window before it is stored as `deduplicated`,
    pointing at that one: it is never sent, and counted in that message. The
    first identical alert after such a message went out is queued, held until
    that message's window ends, and the ones after it are counted in it: a
    repeat is never only in `notify status`, and a subject costs at most one
    message per window.
    """
    now = time.time_ns() if now_ns is None else now_ns
    for alert_seq, alert_id, alert_ns, routes in routed:
        for route in routes:
            original, held_ns = _duplicate_of(conn, route, alert_ns, now)
            status: Status = "pending" if original is None else "deduplicated"
            conn.execute(
                "INSERT OR IGNORE INTO deliveries (alert_seq, alert_id, alert_ns, destination, "
                "group_key, dedup_key, status, created_ns, next_ns, duplicate_of) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    alert_seq,
                    alert_id,
                    alert_ns,
                    route.destination,
                    route.group_key,
                    route.dedup_key,
                    status,
                    now,
                    now + held_ns,
                    original,
                ),
            )


def _duplicate_of(
    conn: sqlite3.Connection, route: Route, alert_ns: int, now_ns: int
) -> tuple[int | None, int]:
    """(the queued delivery this alert is counted in, or None; how long a new one is held).

    A queued identical delivery takes the count. Past one already sent, or being
    sent (claimed: its message is written), the new delivery waits for the rest
    of that message's window (in alert time)."""
    if route.dedup_window_ns <= 0:
        return None, 0
    row = conn.execute(
        "SELECT id, status = 'pending' AND lease_ns <= ? AS open, alert_ns FROM deliveries "
        "WHERE destination = ? AND dedup_key = ? AND alert_ns BETWEEN ? AND ? "
        "AND status IN ('pending', 'sent') ORDER BY open DESC, id LIMIT 1",
        (now_ns, route.destination, route.dedup_key, alert_ns - route.dedup_window_ns, alert_ns),
    ).fetchone()
    if row is None:
        return None, 0
    if row[1]:
        return int(row[0]), 0
    return None, max(0, int(row[2]) + route.dedup_window_ns - alert_ns)


_FOREVER = 2**63 - 1

Transaction = Callable[[sqlite3.Connection], AbstractContextManager[None]]
Recorder = Callable[[sqlite3.Connection, str, str, Sequence[int], int | None], None]
"""Chains one outcome: (connection, destination, action, delivery ids, attempt id)."""
_UNSEALED_ALERT = "alert_seq > coalesce((SELECT alerts_seq FROM head_seal WHERE id = 1), alert_seq)"


class Outbox:
    """The worker's and the CLI's view of the outbox, over the trail's connection.

    Reach it on the trail's own thread: `await trail.call(lambda t: t.outbox.due(...))`.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        transaction: Transaction,
        record: Recorder | None = None,
    ) -> None:
        self._conn = conn
        self._transaction = transaction
        self._record = record

    # -- the worker -------------------------------------------------------------

    def due(
        self, destination: str, now_ns: int, *, force: bool = False, limit: int = 1_000
    ) -> list[Delivery]:
        """Pending deliveries of `destination` due now (all with `force`), oldest first.

        Deliveries claimed by a sender (here or in another process) whose lease
        has not run out are left out either way.
        """
        due_by = _FOREVER if force else now_ns
        return self._deliveries(
            "WHERE destination = ? AND status = 'pending' AND next_ns <= ? AND lease_ns <= ? "
            f"AND NOT {_UNSEALED_ALERT} ORDER BY id LIMIT ?",
            (destination, due_by, now_ns, limit),
        )

    def claim(self, ids: Sequence[int], now_ns: int, lease_until_ns: int) -> list[int]:
        """Take the deliveries still pending and unclaimed for a send; returns those taken.

        A claim keeps a second sender (`notify flush` beside the service) off
        them; if the sender dies, the lease runs out and they are due again.
        """
        taken: list[int] = []
        with self._transaction(self._conn):
            for chunk in _chunks(ids):
                marks = ", ".join("?" * len(chunk))
                where = f"WHERE id IN ({marks}) AND status = 'pending' AND lease_ns <= ?"
                rows = self._conn.execute(f"SELECT id FROM deliveries {where}", [*chunk, now_ns])
                mine = [int(row[0]) for row in rows]
                taken.extend(mine)
                if mine:
                    taken_marks = ", ".join("?" * len(mine))
                    self._conn.execute(
                        f"UPDATE deliveries SET lease_ns = ? WHERE id IN ({taken_marks})",
                        [lease_until_ns, *mine],
                    )
        return taken

    def next_due_ns(self, destination: str, after_ns: int) -> int | None:
        """When the next pending delivery of `destination` falls due (or its claim runs out),
        among those not due at `after_ns` already."""
        return self._number(
            "SELECT min(max(next_ns, lease_ns)) FROM deliveries "
            "WHERE destination = ? AND status = 'pending' AND max(next_ns, lease_ns) > ?",
            (destination, after_ns),
        )

    def last_sent_ns(self, destination: str, group_key: str) -> int | None:
        """When a message of `group_key` last reached `destination` (wall clock)."""
        return self._number(
            "SELECT max(done_ns) FROM deliveries WHERE destination = ? AND group_key = ? "
            "AND status = 'sent'",
            (destination, group_key),
        )

    def sent_messages_since(self, destination: str, since_ns: int) -> list[int]:
        """Times of successful sends to `destination` since `since_ns` (for its rate limit)."""
        rows = self._conn.execute(
            "SELECT time_ns FROM delivery_attempts WHERE destination = ? AND time_ns >= ? "
            "AND ok = 1 ORDER BY time_ns",
            (destination, since_ns),
        )
        return [int(row[0]) for row in rows]

    def duplicates_of(self, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        marks = ", ".join("?" * len(ids))
        sql = f"SELECT count(*) FROM deliveries WHERE duplicate_of IN ({marks})"
        return self._number(sql, list(ids)) or 0

    def record_attempt(
        self,
        destination: str,
        ids: Sequence[int],
        *,
        status: str,
        ok: bool,
        elapsed_ms: float,
        error: str | None,
        next_ns: int,
        now_ns: int,
        expired: Sequence[int] = (),
    ) -> None:
        """Store one attempt and move its deliveries: sent, or retried at `next_ns`.

        After a failure, the `expired` ones among `ids` (too old to retry) are
        marked failed instead. Every delivery of the attempt loses its claim.
        """
        with self._transaction(self._conn):
            cursor = self._conn.execute(
                "INSERT INTO delivery_attempts (destination, time_ns, status, ok, elapsed_ms, "
                "error, deliveries) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (destination, now_ns, status, int(ok), elapsed_ms, error, len(ids)),
            )
            attempt_id = cursor.lastrowid
            dead = set(expired) if not ok else set()
            for give_up, group in ((False, [i for i in ids if i not in dead]), (True, [*dead])):
                sql, params = _transition(
                    ok, None if give_up else next_ns, now_ns, error, attempt_id
                )
                for chunk in _chunks(group):
                    marks = ", ".join("?" * len(chunk))
                    self._conn.execute(sql + f" WHERE id IN ({marks})", [*params, *chunk])
                if group and self._record is not None:
                    action = "sent" if ok else "failed" if give_up else "retry"
                    self._record(self._conn, destination, action, group, attempt_id)

    # -- the CLI ----------------------------------------------------------------

    def counts(self) -> dict[str, dict[str, int]]:
        """destination -> status -> number of deliveries."""
        found: dict[str, dict[str, int]] = {}
        rows = self._conn.execute(
            "SELECT destination, status, count(*) FROM deliveries GROUP BY destination, status"
        )
        for destination, status, number in rows:
            found.setdefault(destination, {s: 0 for s in STATUSES})[status] = number
        return found

    def listing(self, statuses: Sequence[Status], *, limit: int = 200) -> list[Delivery]:
        marks = ", ".join("?" * len(statuses))
        return self._deliveries(
            f"WHERE status IN ({marks}) ORDER BY id LIMIT ?", (*statuses, limit)
        )

    def attempts(self, destination: str | None = None, *, limit: int = 50) -> list[Attempt]:
        where, params = ("WHERE destination = ?", [destination]) if destination else ("", [])
        rows = self._conn.execute(
            "SELECT id, destination, time_ns, status, ok, elapsed_ms, error, deliveries "
            f"FROM delivery_attempts {where} ORDER BY id DESC LIMIT ?",
            [*params, limit],
        )
        return [
            Attempt(
                id=row[0],
                destination=row[1],
                time_ns=row[2],
                status=row[3],
                ok=bool(row[4]),
                elapsed_ms=row[5],
                error=row[6],
                deliveries=row[7],
            )
            for row in rows
        ]

    def _number(self, sql: str, params: Sequence[Any]) -> int | None:
        """The one value `sql` selects; None when it is NULL (min/max over no rows)."""
        row = self._conn.execute(sql, params).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def _deliveries(self, where: str, params: Sequence[Any]) -> list[Delivery]:
        rows = self._conn.execute(f"SELECT {_DELIVERY_COLUMNS} FROM deliveries {where}", params)
        return [Delivery(*row) for row in rows]


def _transition(
    ok: bool, next_ns: int | None, now_ns: int, error: str | None, attempt_id: int | None
) -> tuple[str, list[Any]]:
    if ok:
        return (
            "UPDATE deliveries SET status = 'sent', attempts = attempts + 1, done_ns = ?, "
            "attempt_id = ?, last_error = NULL, lease_ns = 0",
            [now_ns, attempt_id],
        )
    if next_ns is None:
        return (
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, done_ns = ?, "
            "attempt_id = ?, last_error = ?, lease_ns = 0",
            [now_ns, attempt_id, error],
        )
    return (
        "UPDATE deliveries SET attempts = attempts + 1, next_ns = ?, attempt_id = ?, "
        "last_error = ?, lease_ns = 0",
        [next_ns, attempt_id, error],
    )


def _chunks(ids: Sequence[int], size: int = 500) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
