"""The SQLite trail's schema: the columns copied out of each event and alert, the
migrations that create tables, indexes and append-only triggers, and connection
settings.
"""

from __future__ import annotations

import logging
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlite_utils import Database

import sinks.sqlite.actors as actors
import sinks.sqlite.labels as labels
import sinks.sqlite.legacy_ids as legacy_ids
import sinks.sqlite.rulestate as rulestate
from config.errors import TrailError
from listener.model.event import GENESIS_HASH
from sinks import headseal, outbox

_log = logging.getLogger(__name__)

APPEND_ONLY_MESSAGE = "docktrail trail is append-only"
BUSY_TIMEOUT_SECS = 10.0
ID_CHUNK = 500  # ids per `IN (...)` lookup, below SQLite's old 999-parameter limit
CACHE_KIB = 16 * 1024  # page cache: keeps the random-order id index hot during bulk ingest
# A commit dirties about 1.5 pages per event (measured at 500 events per commit),
# most of them random leaves of the id index. SQLite's default autocheckpoint
# (1000 pages) would copy them back into the database after nearly every commit; a
# larger WAL lets one checkpoint write each page once for many commits (measured:
# the largest single saving on the append path).
WAL_AUTOCHECKPOINT_BYTES = 32 * 1024 * 1024
# New trails only (SQLite fixes the page size when the file is created). A row with
# its body is about 1 kB: 4 KiB pages hold three or four, and the space left over
# was ~10 % of the file; 8 KiB pages leave about half of that (measured at 1M events:
# 1,453 -> 1,344 bytes per event, append and ingest rates unchanged).
PAGE_SIZE = 8192
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # truncate the WAL back to this after a checkpoint

# Copied body fields: (column, SQL expression reading the same value from the body).
# Plain columns rather than GENERATED ones: a generated column's expression lives in
# the schema text, which whoever can edit rows can rewrite as well (writable_schema),
# so verify would have to audit the schema anyway; comparing values is direct, and
# it also catches an edited index-only column (tests/test_trail_tamper.py).
_COPIED: tuple[tuple[str, str], ...] = (
    ("id", "json_extract(body, '$.id')"),
    ("time_ns", "json_extract(body, '$.time_ns')"),
    ("source", "json_extract(body, '$.source')"),
    ("host", "json_extract(body, '$.host')"),
    ("type", "json_extract(body, '$.type')"),
    ("action", "json_extract(body, '$.action')"),
    ("actor_id", "json_extract(body, '$.actor.id')"),
    ("actor_name", "json_extract(body, '$.actor.name')"),
    ("actor_image", "json_extract(body, '$.actor.image')"),
    ("who_login", "json_extract(body, '$.who.login')"),
    ("who_user", "json_extract(body, '$.who.user')"),
    (
        "container",
        "CASE json_type(body, '$.attributes.container') WHEN 'text' "
        "THEN json_extract(body, '$.attributes.container') END",
    ),
)
_ALERT_COPIED: tuple[tuple[str, str], ...] = (
    ("id", "json_extract(body, '$.id')"),
    ("time_ns", "json_extract(body, '$.time_ns')"),
    ("rule", "json_extract(body, '$.rule')"),
    ("severity", "json_extract(body, '$.severity')"),
    ("event_seq", "json_extract(body, '$.event_seq')"),
    ("host", "json_extract(body, '$.host')"),
    ("container", "json_extract(body, '$.container')"),
    ("image", "json_extract(body, '$.image')"),
    ("who_login", "json_extract(body, '$.who.login')"),
    ("who_user", "json_extract(body, '$.who.user')"),
    ("suppressed", "json_extract(body, '$.suppressed') IS NOT NULL"),
)


def _insert_sql(table: str, copied: tuple[tuple[str, str], ...]) -> str:
    names = ", ".join(name for name, _ in copied)
    marks = ", ".join("?" * (len(copied) + 4))
    return f"INSERT INTO {table} (seq, {names}, body, prev_hash, hash) VALUES ({marks})"


def _columns_match_sql(copied: tuple[tuple[str, str], ...]) -> str:
    """SQL true when a row's copied columns (and seq) equal their values in its body."""
    # json_valid first: json_extract raises on malformed JSON, which would abort the whole pass.
    return (
        "CASE WHEN json_valid(body) THEN (json_extract(body, '$.seq') IS seq AND "
        + " AND ".join(f"({expr}) IS {name}" for name, expr in copied)
        + ") ELSE 0 END"
    )


COPIED_NAMES = tuple(name for name, _ in _COPIED)
ALERT_COPIED_NAMES = tuple(name for name, _ in _ALERT_COPIED)
EVENT_INSERT = _insert_sql("events", _COPIED)
ALERT_INSERT = _insert_sql("alerts", _ALERT_COPIED)
_VERIFY_EVENTS = (
    f"SELECT seq, prev_hash, hash, body, {_columns_match_sql(_COPIED)}, {{labels}}, {{actors}} "
    "FROM events ORDER BY seq"
)
_UNLABELLED = "NULL, NULL"
# With what the label index is checked against (`labels.Completeness`): the actor and
# its labels as JSON (none when `{}`), from the parse the columns' check has just made.
_LABELLED = (
    "actor_id, CASE WHEN json_valid(body) THEN nullif(body -> '$.attributes.labels', '{}') END"
)
# The actor index (migration 0014) holds the row's ids in its bucket, each with a first
# seq at or before it, and its name: a primary-key probe per table, keyed by the copied columns
# (checked against the body just before). Rows after ?1 (`actors.through_seq`) may be
# missing (an older docktrail stored them); a row there, present, must still be early
# enough: the writer adds every row with `through_seq` at or past its first seq.
_ID_HELD = (
    "coalesce((SELECT first_seq FROM actors WHERE actors.actor_id = events.{column} "
    f"AND actors.via = '{{column}}' AND actors.bucket = events.{actors.BUCKET[1:-1]}) <= seq, "
    "seq > ?1)"
)
_ACTOR_HELD = (
    f"{_ID_HELD.format(column='actor_id')} "
    f"AND CASE WHEN container IS NULL THEN 1 ELSE {_ID_HELD.format(column='container')} END "
    "AND CASE WHEN actor_name IS NULL OR seq > ?1 THEN 1 ELSE EXISTS (SELECT 1 FROM actor_names "
    "WHERE actor_names.name = events.actor_name AND actor_names.type = events.type "
    "AND actor_names.actor_id = events.actor_id) END"
)
# The first row the walk's probe would stop at, up to ?2 (the walk's last seq): the same
# test, run beside the walk on the integrity check's connection (`verification`).
FIRST_UNHELD = (
    f"SELECT seq FROM events WHERE seq <= ?2 AND ({_ACTOR_HELD}) IS NOT 1 ORDER BY seq LIMIT 1"
)
VERIFY_ROWS = _VERIFY_EVENTS.format(labels=_UNLABELLED, actors="1")
VERIFY_LABELLED_ROWS = _VERIFY_EVENTS.format(labels=_LABELLED, actors="1")


def verify_event_rows(labelled: bool, actor_index: bool) -> str:
    """The chain walk's SELECT of the events: seq, prev_hash, hash, body, whether the
    copied columns match the body, the actor and its labels (when `labelled`, else
    NULLs), whether the actor index holds the row (when `actor_index`, bound to
    `(actors.through_seq,)`; else 1)."""
    return _VERIFY_EVENTS.format(
        labels=_LABELLED if labelled else _UNLABELLED, actors=_ACTOR_HELD if actor_index else "1"
    )


# The last column: the alert's event exists and is the one its body names (step 6).
VERIFY_ALERT_ROWS = (
    f"SELECT seq, prev_hash, hash, body, {_columns_match_sql(_ALERT_COPIED)}, event_seq, "
    "CASE WHEN json_valid(body) THEN (SELECT id FROM events WHERE events.seq = alerts.event_seq) "
    "IS json_extract(body, '$.event_id') ELSE 0 END "
    "FROM alerts ORDER BY seq"
)
UPSERT_STATE = (
    "INSERT INTO source_state (name, value, updated_ns) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ns = excluded.updated_ns"
)


def copied_values(content: dict[str, Any]) -> tuple[Any, ...]:
    """The copied columns' values, in `_COPIED` order, from an event's content.

    Null fields may be left out of the content (`listener.model.event.compact`).
    """
    actor, who = content["actor"], content["who"]
    container = content["attributes"].get("container")
    return (
        content["id"],
        content["time_ns"],
        content["source"],
        content["host"],
        content["type"],
        content["action"],
        actor.get("id"),
        actor.get("name"),
        actor.get("image"),
        who.get("login"),
        who.get("user"),
        container if isinstance(container, str) else None,
    )


def alert_copied_values(content: dict[str, Any]) -> tuple[Any, ...]:
    """The copied columns' values, in `_ALERT_COPIED` order, from an alert's content."""
    who = content["who"]
    return (
        content["id"],
        content["time_ns"],
        content["rule"],
        content["severity"],
        content["event_seq"],
        content["host"],
        content.get("container"),
        content.get("image"),
        who.get("login"),
        who.get("user"),
        0 if content.get("suppressed") is None else 1,
    )


# -- migrations ---------------------------------------------------------------


class Migration(NamedTuple):
    name: str
    apply: Callable[[Database], None]
    # An index and nothing else, or tables derived from the bodies as an index is, or a
    # row that only appends read: every read is right without it, only slower. A trail
    # on read-only storage (an evidence copy) is read without it rather than refused.
    index_only: bool = False
    # Said before a migration that takes long on a big trail (a one-off wait at the upgrade).
    note: str = ""


def _m0001_tables(db: Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key", not_null={"value"})
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('trail_id', ?), ('created_ns', ?)",
        [secrets.token_hex(16), str(time.time_ns())],
    )
    # Spelled out, not derived from _COPIED: an applied migration must never change.
    columns: dict[str, Any] = {"seq": int, "id": str, "time_ns": int}
    for name in ("source", "host", "type", "action", "actor_id", "actor_name", "actor_image"):
        columns[name] = str
    for name in ("who_login", "who_user", "container", "body", "prev_hash", "hash"):
        columns[name] = str
    nullable = {"actor_name", "actor_image", "who_login", "who_user", "container"}
    db.table("events").create(columns, pk="seq", not_null=set(columns) - nullable)
    checkpoint_columns: dict[str, Any] = {
        "n": int,
        "trail_id": str,
        "seq": int,
        "hash": str,
        "time_ns": int,
        "key_fingerprint": str,
        "signature": str,
    }
    db.table("checkpoints").create(checkpoint_columns, pk="n", not_null=set(checkpoint_columns))


def _m0002_indexes(db: Database) -> None:
    events = db.table("events")
    events.create_index(["id"], index_name="events_id", unique=True)  # dedupe
    events.create_index(["time_ns"], index_name="events_time")
    events.create_index(["actor_id"], index_name="events_actor_id")
    events.create_index(["type", "action"], index_name="events_type_action")
    # Partial indexes (sqlite-utils cannot express WHERE): many events have no
    # image, login or attached container, and skipping them keeps appends cheap.
    for column in ("actor_name", "actor_image", "who_login", "who_user", "container"):
        db.execute(f"CREATE INDEX events_{column} ON events ({column}) WHERE {column} IS NOT NULL")


def _append_only_triggers(*tables: str) -> dict[str, str]:
    return {
        f"{table}_append_only_{op.lower()}": (
            f"CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
        )
        for table in tables
        for op in ("UPDATE", "DELETE")
    }


TRIGGERS: dict[str, str] = _append_only_triggers("events", "checkpoints", "alerts")
"""Every chain's append-only trigger with its text; verify checks that each is intact."""
LABEL_TRIGGERS: dict[str, str] = _append_only_triggers(*labels.TABLES)
"""The label index's (migration 0011; verify's schema check compares them)."""
ACTOR_TRIGGERS: dict[str, str] = _append_only_triggers(*actors.TABLES)
"""The actor index's (migration 0014; verify's schema check compares them)."""


def _m0003_append_only(db: Database) -> None:
    for sql in _append_only_triggers("events", "checkpoints").values():
        db.execute(sql)


def _m0004_source_state(db: Database) -> None:
    # Bookkeeping, deliberately without append-only triggers: rows are replaced.
    db.execute(
        "CREATE TABLE source_state (name TEXT PRIMARY KEY, value TEXT NOT NULL, "
        "updated_ns INTEGER NOT NULL)"
    )


def _m0005_alerts(db: Database) -> None:
    db.execute(
        "CREATE TABLE alerts (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, "
        "time_ns INTEGER NOT NULL, rule TEXT NOT NULL, severity TEXT NOT NULL, "
        "event_seq INTEGER NOT NULL, host TEXT NOT NULL, container TEXT, image TEXT, "
        "who_login TEXT, who_user TEXT, suppressed INTEGER NOT NULL, body TEXT NOT NULL, "
        "prev_hash TEXT NOT NULL, hash TEXT NOT NULL)"
    )
    db.execute("CREATE UNIQUE INDEX alerts_id ON alerts (id)")  # dedupe
    for column in ("time_ns", "rule", "severity", "event_seq", "host"):
        db.execute(f"CREATE INDEX alerts_{column} ON alerts ({column})")
    for column in ("container", "image", "who_login", "who_user"):
        db.execute(f"CREATE INDEX alerts_{column} ON alerts ({column}) WHERE {column} IS NOT NULL")
    for sql in _append_only_triggers("alerts").values():
        db.execute(sql)


def _m0006_checkpoint_alerts_head(db: Database) -> None:
    # Older checkpoints get the head of an empty alerts chain, for which the
    # signed payload is the original one (sinks.signing): they verify unchanged.
    db.execute("ALTER TABLE checkpoints ADD COLUMN alerts_seq INTEGER NOT NULL DEFAULT 0")
    db.execute(
        f"ALTER TABLE checkpoints ADD COLUMN alerts_hash TEXT NOT NULL DEFAULT '{GENESIS_HASH}'"
    )


def _m0010_exec_id_index(db: Database) -> None:
    # `query -f session=` (sinks.sqlite.queries, whose terms must match these).
    # An index on an expression of the hashed body, not a copied column: nothing to
    # copy, so nothing to check, and `integrity_check` recomputes every entry. Only
    # exec events are in it, chosen by a plain column: `integrity_check` reads only
    # their bodies (measured at 1M events with health-check execs, 23 % of them:
    # +0.4 s, against +1.1 s for a body-based condition).
    db.execute(
        "CREATE INDEX events_exec_id ON events (json_extract(body, '$.attributes.execID')) "
        "WHERE action GLOB 'exec*'"
    )


LABEL_MIGRATION = "0011_label_index"  # verify checks the index's content once applied


def _m0011_label_index(db: Database) -> None:
    # `query -f label=` (sinks.sqlite.labels): derived from the bodies, like an index,
    # so a trail on read-only storage is read without it; verify checks its content.
    labels.migrate(db.conn)
    for sql in LABEL_TRIGGERS.values():
        db.execute(sql)


def _m0014_actor_index(db: Database) -> None:
    # Derived from the bodies, like an index (`sinks.sqlite.actors`): a trail on read-only
    # storage is read with the per-container indexes it has; verify checks the tables.
    actors.migrate(db.conn)
    for sql in ACTOR_TRIGGERS.values():
        db.execute(sql)


MIGRATIONS: list[Migration] = [
    Migration("0001_tables", _m0001_tables),
    Migration("0002_indexes", _m0002_indexes),
    Migration("0003_append_only_triggers", _m0003_append_only),
    Migration("0004_source_state", _m0004_source_state),
    Migration("0005_alerts", _m0005_alerts),
    Migration("0006_checkpoint_alerts_head", _m0006_checkpoint_alerts_head),
    Migration("0007_outbox", outbox.migrate),
    Migration("0008_head_seal", headseal.migrate),
    Migration("0009_rule_state", rulestate.migrate),
    Migration("0010_exec_id_index", _m0010_exec_id_index, index_only=True),
    Migration(LABEL_MIGRATION, _m0011_label_index, index_only=True),
    Migration(legacy_ids.EVENTS.migration, legacy_ids.migrate, index_only=True),
    Migration(legacy_ids.ALERTS.migration, legacy_ids.migrate_alerts, index_only=True),
    Migration(
        actors.MIGRATION,
        _m0014_actor_index,
        index_only=True,
        note="building the actor index (once; a few seconds per 1M events)",
    ),
]
"""Schema history, oldest first. Append new ones; never edit an applied one."""
GENESIS_MIGRATIONS = [m.name for m in MIGRATIONS[:8]]
"""Applied in every trail created with a genesis checkpoint, from its creation on."""


def apply_migrations(
    db: Database, migrations: Sequence[Migration] = MIGRATIONS, *, read_only: bool = False
) -> list[str]:
    """Apply the missing `migrations` in one transaction; return the names applied.

    `read_only`: the file cannot be written (read-only storage); missing indexes
    (`index_only`) are left missing, and any other missing migration is attempted
    (and fails: the caller says what to do)."""
    pending = _pending(db, migrations)
    if not pending or (read_only and all(m.index_only for m in pending)):
        return []  # the common case takes no write lock (read-only copies open too)
    conn = db.conn
    with immediate(conn):
        db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)"
        )
        pending = _pending(db, migrations)  # again, now under the lock: others may have won
        for migration in pending:
            if migration.note and _holds_events(db):  # a new trail: nothing to wait for
                _log.warning("upgrading the trail's schema: %s", migration.note)
            migration.apply(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", [migration.name, time.time_ns()])
    return [m.name for m in pending]


def _holds_events(db: Database) -> bool:
    return "events" in db.table_names() and bool(
        db.execute("SELECT EXISTS (SELECT 1 FROM events)").fetchone()[0]
    )


def _pending(db: Database, migrations: Sequence[Migration]) -> list[Migration]:
    if "_migrations" not in db.table_names():
        return list(migrations)
    done = {row[0] for row in db.execute("SELECT name FROM _migrations")}
    unknown = done - {m.name for m in MIGRATIONS}
    if unknown:
        names = ", ".join(sorted(unknown))
        raise TrailError(f"schema written by a newer docktrail (unknown migrations: {names})")
    return [m for m in migrations if m.name not in done]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken up front, so concurrent writers queue instead of failing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
