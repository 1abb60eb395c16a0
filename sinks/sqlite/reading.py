"""`SQLiteTrail`'s read API (`TrailReader`, its base) and the look-ups behind it:
events and alerts by filter, rows by seq or id, the sources' state, the last
event of some types, query plans.

Apart from `trail` because they only read: none takes a lock, writes, or needs
the writer's state, so they run on the trail's connection and translate their
errors as every trail operation does. Ids and seqs are looked up `ID_CHUNK` at
a time (SQLite's old limit on `?` parameters). Filters as SQL are
`sinks.sqlite.queries`.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sinks.sqlite.actors as actors
import sinks.sqlite.bucketed as bucketed
import sinks.sqlite.dedupe as dedupe
import sinks.sqlite.labels as labels
from config.errors import TrailError
from listener.model.alert import Alert
from listener.model.event import Event
from sinks.base import AlertFilter, EventFilter
from sinks.chain import decode_state
from sinks.sqlite.bucketed import ActorIndex
from sinks.sqlite.errors import trail_error
from sinks.sqlite.labels import LabelPlan
from sinks.sqlite.queries import alert_from_row, build_alert_query, build_query, event_from_row
from sinks.sqlite.schema import ID_CHUNK

# NOT INDEXED: for max() the planner prefers walking the time index from the top,
# which for a host without such events is every entry (0.5 s at 10M events).
NEWEST_ENGINE_TIME = (
    "SELECT max(time_ns) FROM events NOT INDEXED WHERE seq > ? AND source = 'docker' AND host = ?"
)


class TrailReader:
    """The read API of a trail file: `SQLiteTrail` is one, and adds the writing.

    It reads through `_connection()` (the trail's, opened by the trail) and turns
    SQLite's errors into `TrailError`s naming the file and what was being done.
    """

    path: Path
    _conn: sqlite3.Connection | None
    _label_index: bool | None  # whether the file has the label index (`_has_label_index`)
    # Whether the file has the actor index, and the connection that said so: a trail
    # reopened (perhaps migrated meanwhile) is asked again (`_actor_index`).
    _actor_layout: tuple[sqlite3.Connection, bool] | None = None

    def query(self, f: EventFilter) -> Iterator[Event]:
        """Events selected by `f`, in seq order, read lazily."""
        conn = self._connection()
        with self._errors("query"):
            plan, actor_index = self._label_plan(conn, f)
            cursor = conn.execute(*build_query(f, labels=plan, actor_index=actor_index))
        if plan is None or plan.head is None:
            return self._events(cursor)
        return self._then_the_rest(conn, f, plan, self._events(cursor))

    def _then_the_rest(
        self, conn: sqlite3.Connection, f: EventFilter, split: LabelPlan, first: Iterator[Event]
    ) -> Iterator[Event]:
        """A page read in two steps (`labels.LabelPlan.head`): the first step's events,
        then the rest's only when they leave the page short."""
        read = 0
        for event in first:
            read += 1
            yield event
        if f.limit is not None and read >= f.limit:
            return
        with self._errors("query"):
            actor_index = self._actor_index(conn)
            later = dataclasses.replace(f, limit=None if f.limit is None else f.limit - read)
            plan = labels.rest(conn, split, actor_index)
            cursor = conn.execute(*build_query(later, labels=plan, actor_index=actor_index))
        yield from self._events(cursor)

    def _label_plan(
        self, conn: sqlite3.Connection, f: EventFilter
    ) -> tuple[LabelPlan | None, ActorIndex | None]:
        """Where the label index says `f`'s labels can be (None: no labels, or no index);
        a page may be read in two steps."""
        actor_index = self._actor_index(conn)
        if not (f.labels and self._has_label_index(conn)):
            return None, actor_index
        return labels.plan(conn, f.labels, actor_index, split=f.limit is not None), actor_index

    def _has_label_index(self, conn: sqlite3.Connection) -> bool:
        if self._label_index is None:
            self._label_index = labels.present(conn)
        return self._label_index

    def _actor_index(self, conn: sqlite3.Connection) -> ActorIndex | None:
        """The file's actor index as a query reads it, None when it has none.
        `through_seq` moves with every write, so it is read each time; a write between
        this read and the query's only makes the query read more rows directly."""
        if self._actor_layout is None or self._actor_layout[0] is not conn:
            self._actor_layout = (conn, actors.present(conn))
        return bucketed.index_of(conn) if self._actor_layout[1] else None

    def _events(self, cursor: sqlite3.Cursor) -> Iterator[Event]:
        with self._errors("query"):
            for seq, body, prev_hash, digest in cursor:
                yield event_from_row(seq, body, prev_hash, digest)

    def query_plan(self, f: EventFilter) -> list[str]:
        """SQLite's EXPLAIN QUERY PLAN lines for `query(f)` (a page read in two steps:
        the second's after a `then, if the page is not full:` line)."""
        conn = self._connection()
        with self._errors("explain"):
            plan, actor_index = self._label_plan(conn, f)
            lines = self._explain(*build_query(f, labels=plan, actor_index=actor_index))
            if plan is None or plan.head is None:
                return lines
            later = labels.rest(conn, plan, actor_index)
        second = self._explain(*build_query(f, labels=later, actor_index=actor_index))
        return [*lines, "then, if the page is not full:", *second]

    def _explain(self, sql: str, params: list[Any]) -> list[str]:
        with self._errors("explain"):
            rows = self._connection().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return [row[-1] for row in rows]

    def count(self) -> int:
        return self._count("events", "count")

    def newest_engine_time_ns(self, host: str, after_seq: int) -> int | None:
        """The latest `time_ns` of `host`'s Engine events stored after `after_seq`:
        reads only the rows after it, in seq order."""
        with self._errors("newest Engine event"):
            row = self._connection().execute(NEWEST_ENGINE_TIME, (after_seq, host)).fetchone()
        return None if row[0] is None else int(row[0])

    def _count(self, table: str, doing: str) -> int:
        with self._errors(doing):
            return int(self._connection().execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def get(self, seq: int) -> Event | None:
        with self._errors("get"):
            return _event_at(self._connection(), seq)

    def seqs_by_id(
        self, ids: Sequence[str], table: Literal["events", "alerts"] = "events"
    ) -> dict[str, int]:
        """id -> seq of the stored rows among `ids` (the central trail's dedupe and lookups)."""
        with self._errors("look up ids"):
            return _seqs_by_id(self._connection(), ids, table)

    def load_source_state(self, name: str) -> dict[str, Any] | None:
        """The state last stored for source `name`, or None."""
        with self._errors("load source state"):
            return _source_state(self._connection(), name)

    def source_states(self) -> dict[str, dict[str, Any]]:
        """Every stored state by name, the rules evaluation mark (`RULES_MARK`) included."""
        with self._errors("load source state"):
            return _source_states(self._connection())

    def last_time_of(self, types: frozenset[str], through: int) -> int | None:
        """`time_ns` of the last event up to seq `through` of one of `types` that a
        source observed (not docktrail's own records), or None when there is none."""
        with self._errors("find the last event of a type"):
            return _last_time_of(self._connection(), types, through)

    def query_alerts(self, f: AlertFilter) -> Iterator[Alert]:
        """Alerts selected by `f`, in alert seq order, read lazily."""
        conn = self._connection()
        with self._errors("query alerts"):
            cursor = conn.execute(*self._build_alert_query(conn, f))
        return self._alerts(cursor)

    def _build_alert_query(self, conn: sqlite3.Connection, f: AlertFilter) -> tuple[str, list[Any]]:
        return build_alert_query(f, actor_index=self._actor_index(conn))

    def _alerts(self, cursor: sqlite3.Cursor) -> Iterator[Alert]:
        with self._errors("query alerts"):
            for row in cursor:
                yield alert_from_row(*row)

    def alerts_by_seq(self, seqs: Sequence[int]) -> dict[int, Alert]:
        """The stored alerts of these seqs (missing ones are left out)."""
        with self._errors("read alerts"):
            return _alerts_by_seq(self._connection(), seqs)

    def alerts_for_event(self, seq: int) -> list[Alert]:
        """The alerts raised on the event at `seq`, in alert seq order."""
        return list(self.query_alerts(AlertFilter(event_seq=seq)))

    def alerts_query_plan(self, f: AlertFilter) -> list[str]:
        """SQLite's EXPLAIN QUERY PLAN lines for `query_alerts(f)`."""
        conn = self._connection()
        with self._errors("explain"):
            query = self._build_alert_query(conn, f)
        return self._explain(*query)

    def count_alerts(self) -> int:
        return self._count("alerts", "count alerts")

    # -- helpers --------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise TrailError(f"{self.path}: trail is not open")
        return self._conn

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise trail_error(self.path, doing, exc) from exc


def _event_at(conn: sqlite3.Connection, seq: int) -> Event | None:
    """The event stored at `seq`, or None."""
    row = conn.execute(
        "SELECT seq, body, prev_hash, hash FROM events WHERE seq = ?", (seq,)
    ).fetchone()
    return None if row is None else event_from_row(*row)


def _seqs_by_id(
    conn: sqlite3.Connection, ids: Sequence[str], table: Literal["events", "alerts"]
) -> dict[str, int]:
    """id -> seq of the rows of `table` among `ids`, each found row checked
    (`dedupe.confirm`: the central trail skips what it finds as received before)."""
    found = dedupe.stored_ids(conn, table, sorted(set(ids)))
    dedupe.confirm(conn, table, found.values())
    return found


def _alerts_by_seq(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, Alert]:
    """The stored alerts of these seqs (missing ones are left out)."""
    found: dict[int, Alert] = {}
    unique = sorted(set(seqs))
    for start in range(0, len(unique), ID_CHUNK):
        chunk = unique[start : start + ID_CHUNK]
        marks = ", ".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT seq, body, prev_hash, hash FROM alerts WHERE seq IN ({marks})", chunk
        )
        found.update((row[0], alert_from_row(*row)) for row in rows)
    return found


def _source_state(conn: sqlite3.Connection, name: str) -> dict[str, Any] | None:
    """The state last stored for source `name`, or None."""
    row = conn.execute("SELECT value FROM source_state WHERE name = ?", (name,)).fetchone()
    return None if row is None else decode_state(row[0])


def _source_states(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    """Every stored state by name."""
    rows = conn.execute("SELECT name, value FROM source_state ORDER BY name")
    return {name: decode_state(value) for name, value in rows}


def _last_time_of(conn: sqlite3.Connection, types: frozenset[str], through: int) -> int | None:
    """`time_ns` of the last event up to seq `through` of one of `types` that a source
    observed (not docktrail's own records), or None when there is none."""
    wanted = sorted(types)
    sql = (
        f"SELECT time_ns FROM events WHERE seq <= ? AND source != 'docktrail' "
        f"AND type IN ({', '.join('?' * len(wanted))}) ORDER BY seq DESC LIMIT 1"
    )
    row = conn.execute(sql, (through, *wanted)).fetchone()
    return None if row is None else int(row[0])
