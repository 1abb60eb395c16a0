"""The actor index: where each actor's events are, without an index keyed by its random
id on every event (migration `0014_actor_index`, docs/trail-index-cost.md).

Container ids are random, so an index keyed by them gives each new container a random
leaf, in every such index, at every commit: what made ingest into a big trail slower
than into an empty one. Instead:

- `actors (actor_id, via, bucket, first_seq)`: every id an event names, through which
  column (`via`: `actor_id`, the event's actor, or `container`, the container a
  network event names), in which bucket of seqs, with the seq of its first event
  there. An actor's lowest `first_seq` through `actor_id` is its first event, by
  which the label index names actors;
- `actor_names (name, type, actor_id)`: every (name, type) an actor was seen under;
- the events are indexed by `(seq >> BUCKET_BITS, actor_id)` and `(seq >> BUCKET_BITS,
  container)`: a commit's entries land in the newest bucket's small subtree. An
  actor's events are found with one index search in each bucket it has a row for
  (a container's life is a bucket or two; a long-lived one, each it was seen in).

Derived from the hashed bodies, never the other way round, and kept by the writer in
the same transaction as the rows (`ActorWriter`). A row too many costs a look-up,
never a wrong answer; a row missing or a first seq too late would hide events, a first
seq too early would misname an actor in the label index, so `verify` checks every
event against them and every first seq.

`meta.actors_through_seq` is the last seq whose events are in the tables. A docktrail
from before this migration, still running when a newer one migrated the trail, stores
events without them: the next newer writer adds those first, and until then queries
read the rows past it directly (`sinks.sqlite.bucketed`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

TABLES = ("actors", "actor_names")
MIGRATION = "0014_actor_index"
BUCKET_BITS = 13  # 8,192 seqs: a bucket's subtree is about as small as an empty trail's index
BUCKET = f"(seq >> {BUCKET_BITS})"
THROUGH_KEY = "actors_through_seq"
REMEMBERED = 10_000  # ids and names a writer remembers as stored; then forgotten

CREATE = (
    "CREATE TABLE actors (actor_id TEXT NOT NULL, via TEXT NOT NULL, bucket INTEGER NOT NULL, "
    "first_seq INTEGER NOT NULL, PRIMARY KEY (actor_id, via, bucket)) WITHOUT ROWID",
    "CREATE TABLE actor_names (name TEXT NOT NULL, type TEXT NOT NULL, actor_id TEXT NOT NULL, "
    "PRIMARY KEY (name, type, actor_id)) WITHOUT ROWID",
)
INDEXES = (
    f"CREATE INDEX events_bucket_actor ON events ({BUCKET}, actor_id)",
    f"CREATE INDEX events_bucket_container ON events ({BUCKET}, container) "
    "WHERE container IS NOT NULL",
)
REPLACED = ("events_actor_id", "events_container", "events_actor_name")
"""Today's per-container indexes, which the migration drops."""

VIAS = ("actor_id", "container")  # the events' columns that name an actor
_ADD_ACTOR = "INSERT OR IGNORE INTO actors (actor_id, via, bucket, first_seq) VALUES (?, ?, ?, ?)"
_ADD_NAME = "INSERT OR IGNORE INTO actor_names (name, type, actor_id) VALUES (?, ?, ?)"
# The definition of the tables, from the rows (`seq > ?`: those not in them yet; with OR
# IGNORE, a bucket's row already there keeps its first seq, which is earlier).
_FILL_FROM = (
    f"INSERT OR IGNORE INTO actors (actor_id, via, bucket, first_seq) SELECT actor_id, "
    f"'actor_id', {BUCKET}, min(seq) FROM events WHERE seq > ?1 GROUP BY actor_id, {BUCKET}",
    f"INSERT OR IGNORE INTO actors (actor_id, via, bucket, first_seq) SELECT container, "
    f"'container', {BUCKET}, min(seq) FROM events WHERE seq > ?1 AND container IS NOT NULL "
    f"GROUP BY container, {BUCKET}",
    # NOT INDEXED: the rows in seq order (a range of them for a writer), not a name
    # index walk with a row look-up per event (random reads of a cold 10M trail).
    "INSERT OR IGNORE INTO actor_names (name, type, actor_id) SELECT DISTINCT actor_name, "
    "type, actor_id FROM events NOT INDEXED WHERE seq > ?1 AND actor_name IS NOT NULL",
)
_THROUGH = f"SELECT value FROM meta WHERE key = '{THROUGH_KEY}'"
_SET_THROUGH = f"INSERT OR REPLACE INTO meta (key, value) VALUES ('{THROUGH_KEY}', ?)"

ActorRow = tuple[int, str, "str | None", "str | None", str]
"""seq, actor id, the container it names, actor name, type."""


def migrate(conn: sqlite3.Connection) -> None:
    """The tables from the stored events (through today's indexes), the bucketed indexes,
    today's per-container indexes dropped."""
    for sql in CREATE:
        conn.execute(sql)
    fill_from(conn, 0)
    for sql in INDEXES:
        conn.execute(sql)
    for name in REPLACED:
        conn.execute(f"DROP INDEX IF EXISTS {name}")


def fill_from(conn: sqlite3.Connection, after_seq: int) -> None:
    """Add the ids and names of the events after `after_seq`; they are then all in."""
    for sql in _FILL_FROM:
        conn.execute(sql, (after_seq,))
    conn.execute(_SET_THROUGH, (str(last_event_seq(conn)),))


def last_event_seq(conn: sqlite3.Connection) -> int:
    """The seq of the trail's last event (0: none)."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])


def present(conn: sqlite3.Connection) -> bool:
    """Whether this trail has the index (a trail on read-only storage may lack it)."""
    sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)"
    return bool(conn.execute(sql, TABLES).fetchone()[0] == len(TABLES))


def through_seq(conn: sqlite3.Connection) -> int:
    """The last seq whose events are in the tables (0 when the row is missing or edited:
    then every row is read directly, which is slower, never wrong)."""
    row = conn.execute(_THROUGH).fetchone()
    try:
        return max(int(row[0]), 0) if row is not None else 0
    except (TypeError, ValueError):
        return 0


def content_row(content: Mapping[str, Any]) -> ActorRow:
    """An event content's `ActorRow` (as `schema.copied_values` reads the same fields)."""
    actor = content["actor"]
    container = content["attributes"].get("container")
    return (
        content["seq"],
        actor.get("id"),
        container if isinstance(container, str) else None,
        actor.get("name"),
        content["type"],
    )


class ActorWriter:
    """Adds a commit's ids and names to the tables, in its transaction.

    It remembers what it stored (up to `REMEMBERED`, then forgets and lets `INSERT OR
    IGNORE` decide again): a container's events all name it, so most events cost a set
    look-up. What it learns counts only once committed (`committed`): a rolled-back
    batch's rows were not stored, and its retry must store them."""

    def __init__(self) -> None:
        self.ids: set[tuple[str, str, int]] = set()  # (id, via, bucket)
        self.names: set[tuple[str, str, str]] = set()
        self._staged_ids: set[tuple[str, str, int]] = set()
        self._staged_names: set[tuple[str, str, str]] = set()

    def stage(self, conn: sqlite3.Connection, rows: Iterable[ActorRow], head: int) -> None:
        """Index the rows just inserted (seq order), the last at `head`."""
        self.discard()
        behind = through_seq(conn)
        ids: dict[tuple[str, str, int], int] = {}
        names: set[tuple[str, str, str]] = set()
        known_ids, known_names = self.ids, self.names  # locals: read for every event
        first = None
        for seq, actor, container, name, kind in rows:
            first = seq if first is None else first
            bucket = seq >> BUCKET_BITS
            # Spelled out for the two: a loop over them cost a tuple per event.
            if actor is not None and (key := (actor, "actor_id", bucket)) not in known_ids:
                ids.setdefault(key, seq)
            if container is not None and (key := (container, "container", bucket)) not in known_ids:
                ids.setdefault(key, seq)
            if name is not None and (name, kind, actor) not in known_names:
                names.add((name, kind, actor))
        if first is not None and behind < first - 1:  # an older writer's rows: theirs first
            fill_from(conn, behind)
        conn.executemany(_ADD_ACTOR, sorted((*key, seq) for key, seq in ids.items()))
        conn.executemany(_ADD_NAME, sorted(names))
        conn.execute(_SET_THROUGH, (str(head),))
        self._staged_ids, self._staged_names = set(ids), names

    def committed(self) -> None:
        """The transaction of the last `stage` committed: remember what it stored."""
        if len(self.ids) > REMEMBERED:
            self.ids.clear()
            self.names.clear()
        self.ids |= self._staged_ids
        self.names |= self._staged_names
        self.discard()

    def discard(self) -> None:
        """Forget what the last `stage` did (its transaction rolled back, or none)."""
        self._staged_ids, self._staged_names = set(), set()
