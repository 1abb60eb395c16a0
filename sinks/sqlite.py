"""The default trail: an append-only, hash-chained SQLite file with signed checkpoints.

Two chains live in one file: the events, and the alerts the rules raised on
them. Both are append-only and hash-chained the same way; every signed
checkpoint names the head of both.

Schema
------
``meta(key TEXT PRIMARY KEY, value TEXT)``
    ``trail_id``: 32 random hex digits made when the database is created. It
    is part of every signed checkpoint, so checkpoints of one trail cannot be
    replayed into another. ``created_ns``: creation time.

``events`` (one row per event, never updated or deleted)
    ``seq INTEGER PRIMARY KEY``: 1, 2, 3 … without gaps.
    ``body TEXT``: the canonical JSON of the event content, ``seq`` included
    (``listener.model.event.canonical_json``). This is what is hashed, and what
    queries return.
    ``prev_hash``, ``hash``: ``hash = sha256(prev_hash ‖ body)``, hex;
    ``prev_hash`` of seq 1 is 64 zeros (``GENESIS_HASH``).
    ``id, time_ns, source, host, type, action, actor_id, actor_name,
    actor_image, who_login, who_user, container``: copies of body fields
    (``container`` is ``attributes.container`` when it is a string), kept as
    plain columns so that filters use indexes. They are not hashed, so
    ``verify`` checks each against the body (see below).

``alerts`` (one row per alert, never updated or deleted; a chain of its own)
    ``seq INTEGER PRIMARY KEY``: alert seq 1, 2, 3 … without gaps.
    ``body TEXT``: the canonical JSON of ``Alert.content()``, ``seq`` included.
    ``prev_hash``, ``hash``: as for events, from the genesis hash at alert
    seq 1.
    ``id`` (unique: derived from (event id, rule, index), so re-evaluating an
    event stores nothing twice), ``time_ns``, ``rule``, ``severity``,
    ``event_seq`` (the stored event it was raised on, checked on insert),
    ``host``, ``container``, ``image``, ``who_login``, ``who_user``,
    ``suppressed`` (1 when a configured exception suppressed it, else 0):
    copied, indexed columns, checked by ``verify`` like those of events.

``checkpoints`` (append-only as well)
    ``n INTEGER PRIMARY KEY`` (1, 2, 3 …), ``trail_id``, ``seq``, ``hash``,
    ``time_ns``, ``key_fingerprint``, ``signature``, ``alerts_seq``,
    ``alerts_hash``: an Ed25519 signature of
    ``sinks.signing.checkpoint_payload(trail_id, seq, hash, time_ns,
    alerts_seq, alerts_hash)``, i.e. of both chain heads at that moment.
    Written every ``checkpoint_interval_secs`` while appending and on
    ``close()``. The alerts columns came with migration
    ``0006_checkpoint_alerts_head`` and default to (0, genesis hash) for
    older rows; for that head the payload is the original one, so those
    rows verify unchanged (``sinks.signing``).

``source_state(name TEXT PRIMARY KEY, value TEXT, updated_ns INTEGER)``
    Mutable bookkeeping, NOT part of the audit trail: no hash chain, no
    append-only triggers, not covered by checkpoints or ``verify``. ``value``
    is the canonical JSON object of a source's read position (the audit
    log's device, inode, offset and serial; the Docker stream's last
    ``timeNano``), replaced in the same transaction as the events read up
    to it, so a restarted source neither loses nor repeats events. The name
    ``docktrail.rules`` holds the rules evaluation mark
    ``{"evaluated_through": seq}``: every event up to that seq has been
    evaluated; it is written with the alerts of those events and never goes
    backwards. Names starting with ``docktrail.`` are reserved.

``_migrations(name, applied_ns)``
    The names of the applied schema migrations (``MIGRATIONS`` below).

``head_seal`` (one row, replaced by every write; ``sinks.headseal``)
    The writer's signature over both heads as each write transaction leaves
    them. Rows past it were written by someone else (``foreign-rows``): the
    writer refuses to chain on or sign them, and their deliveries are never due.

A new trail is built under a temporary name with its genesis checkpoint
(checkpoint 1, at seq 0) and head seal, then linked into place, so a trail
file always holds a signature. A writer that finds itself alone on the trail
(``sinks.trailfiles.WriterLock``) seals what a crashed writer left after the
last checkpoint: it checks that tail's chain and stores a ``trail-recovered``
event and a checkpoint. Every checkpoint is also appended to the witness
file when one is configured (``sinks.witness``).

Triggers ``BEFORE UPDATE`` and ``BEFORE DELETE`` on ``events``, ``alerts``
and ``checkpoints`` abort with ``docktrail trail is append-only``.

Verify algorithm
----------------
One read transaction (a consistent snapshot while the service keeps
appending) and constant memory: one pass over ``events`` in seq order merged
with one pass over ``checkpoints`` in ``n`` order, then one pass over
``alerts`` in seq order merged with a second pass over ``checkpoints``. For
each event row:

1. seq is the previous seq + 1, starting at 1 (else: rows deleted);
2. ``prev_hash`` equals the previous row's ``hash`` (else: deleted or
   reordered rows);
3. ``hash`` equals ``sha256(prev_hash ‖ body)`` (else: the row was edited);
4. every copied column equals its value in the body, ``seq`` included (else:
   a column was edited; queries would lie even though the chain holds);
5. each checkpoint taking effect at this seq: numbered one after the other,
   its seq and alerts seq not below those of the checkpoint before, made
   for this trail's ``trail_id``, its signature (over both heads) valid
   under the verifying key (the public half of the signing key, or the
   auditor's public key file), and its hash equal to the row's hash.

For each alert row, steps 1 to 4 likewise (messages say "alert seq N"), then:

6. the event at the alert's ``event_seq`` exists and has the ``event_id``
   the alert's body names (else: the alert or the events were edited);
7. each checkpoint whose alerts seq is this alert seq signed this row's
   hash (else: alerts up to it were rewritten).

A checkpoint pointing past the last row of either chain means rows were
deleted at the end. A trail without a valid checkpoint fails, even an empty
one: its genesis is missing (emptied, or rebuilt from scratch). Then the
head seal: signed, not behind the last checkpoint, matching the rows it
names; rows past it are ``foreign-rows``. Then the six append-only triggers
with their original text, the whole schema against the one the applied
migrations create on an empty database, ``PRAGMA integrity_check``, and the
outbox (every delivery's status has its chained ``delivery`` event, and no
queued delivery is gone).
These come after the rows so that a tampered row, the more precise finding,
is named first. ``verify_file`` (the CLI) opens the file read-only and adds
the auditor's pins (``trail_id``, key fingerprint) and the witness.

The first problem found is reported with ``first_bad_seq`` (events) or
``first_bad_alert_seq`` (alerts), the first seq that can no longer be
trusted: the bad row itself, or, for a bad checkpoint, the first seq after
the last valid one (anything after it may have been rewritten). Events and
alerts after the last valid checkpoint are reported as ``unsealed`` and
``unsealed_alerts``: they are normal (at most one interval's worth after a
crash), but only the chain vouches for them, not a signature. What verify
cannot see without the witness: the whole file replaced by an older genuine
copy of itself (rollback).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import re
import secrets
import socket
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Self, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError
from sqlite_utils import Database

from config.errors import SigningKeyError, TamperError, TrailBusyError, TrailError
from config.models import TrailConfig
from listener.model.alert import Alert
from listener.model.event import GENESIS_HASH, Actor, Event, chain_hash, natural_id
from sinks import headseal, outbox, trailcheck, trailfiles, witness
from sinks.base import (
    AlertFilter,
    AppendResult,
    AsyncLifecycle,
    EventFilter,
    SourceState,
    SyncLifecycle,
    Wanted,
    severities_at_least,
    values_of,
)
from sinks.chain import (
    RULES_MARK,
    VerifyReport,
    check_mark,
    decode_state,
    encode_states,
    event_ref_problem,
    link_problem,
    mark_state,
    mark_value,
    seal,
    seal_alerts,
    split_new,
)
from sinks.filtering import glob_prefix, is_glob
from sinks.headseal import Heads
from sinks.outbox import Router
from sinks.signing import (
    Checkpoint,
    checkpoint_payload,
    fingerprint,
    load_or_create_key,
    load_public_key,
    sign,
    verify_signature,
)

__all__ = [
    "MIGRATIONS",
    "Checkpoint",
    "Pins",
    "SQLiteTrail",
    "VerifyReport",
    "apply_migrations",
    "verify_file",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
Problem = tuple[int | None, str]
"""(first bad seq or None, what is wrong and where)."""

APPEND_ONLY_MESSAGE = "docktrail trail is append-only"
BUSY_TIMEOUT_SECS = 10.0
ID_CHUNK = 500  # ids per `IN (...)` lookup, below SQLite's old 999-parameter limit
CACHE_KIB = 16 * 1024  # page cache: keeps the random-order id index hot during bulk ingest
# A commit of 500 events dirties ~750 pages, most of them random leaves of the id
# index. SQLite's default autocheckpoint (1000 pages) would copy them back into the
# database after nearly every commit; a larger WAL lets one checkpoint write each
# page once for many commits (measured: the largest single saving on the append path).
WAL_AUTOCHECKPOINT_PAGES = 8192
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


_COPIED_NAMES = tuple(name for name, _ in _COPIED)
_ALERT_COPIED_NAMES = tuple(name for name, _ in _ALERT_COPIED)
_INSERT = _insert_sql("events", _COPIED)
_ALERT_INSERT = _insert_sql("alerts", _ALERT_COPIED)
_VERIFY_ROWS = (
    f"SELECT seq, prev_hash, hash, body, {_columns_match_sql(_COPIED)} FROM events ORDER BY seq"
)
# The last column: the alert's event exists and is the one its body names (step 6).
_VERIFY_ALERT_ROWS = (
    f"SELECT seq, prev_hash, hash, body, {_columns_match_sql(_ALERT_COPIED)}, event_seq, "
    "CASE WHEN json_valid(body) THEN (SELECT id FROM events WHERE events.seq = alerts.event_seq) "
    "IS json_extract(body, '$.event_id') ELSE 0 END "
    "FROM alerts ORDER BY seq"
)
_UPSERT_STATE = (
    "INSERT INTO source_state (name, value, updated_ns) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_ns = excluded.updated_ns"
)


def _copied_values(content: dict[str, Any]) -> tuple[Any, ...]:
    """The copied columns' values, in `_COPIED` order, from an event's content."""
    actor, who = content["actor"], content["who"]
    container = content["attributes"].get("container")
    return (
        content["id"],
        content["time_ns"],
        content["source"],
        content["host"],
        content["type"],
        content["action"],
        actor["id"],
        actor["name"],
        actor["image"],
        who["login"],
        who["user"],
        container if isinstance(container, str) else None,
    )


def _alert_copied_values(content: dict[str, Any]) -> tuple[Any, ...]:
    """The copied columns' values, in `_ALERT_COPIED` order, from an alert's content."""
    who = content["who"]
    return (
        content["id"],
        content["time_ns"],
        content["rule"],
        content["severity"],
        content["event_seq"],
        content["host"],
        content["container"],
        content["image"],
        who["login"],
        who["user"],
        0 if content["suppressed"] is None else 1,
    )


# -- migrations ---------------------------------------------------------------


class Migration(NamedTuple):
    name: str
    apply: Callable[[Database], None]


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
"""Every append-only trigger with its text; verify checks that each is intact."""


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


MIGRATIONS: list[Migration] = [
    Migration("0001_tables", _m0001_tables),
    Migration("0002_indexes", _m0002_indexes),
    Migration("0003_append_only_triggers", _m0003_append_only),
    Migration("0004_source_state", _m0004_source_state),
    Migration("0005_alerts", _m0005_alerts),
    Migration("0006_checkpoint_alerts_head", _m0006_checkpoint_alerts_head),
    Migration("0007_outbox", outbox.migrate),
    Migration("0008_head_seal", headseal.migrate),
]
"""Schema history, oldest first. Append new ones; never edit an applied one."""
GENESIS_MIGRATIONS = [m.name for m in MIGRATIONS[:8]]
"""Applied in every trail created with a genesis checkpoint, from its creation on."""


def apply_migrations(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the missing `migrations` in one transaction; return the names applied."""
    if not _pending(db, migrations):
        return []  # the common case takes no write lock (read-only copies open too)
    conn = db.conn
    with _immediate(conn):
        db.execute(
            "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_ns INTEGER)"
        )
        pending = _pending(db, migrations)  # again, now under the lock: others may have won
        for migration in pending:
            migration.apply(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", [migration.name, time.time_ns()])
    return [m.name for m in pending]


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
def _immediate(conn: sqlite3.Connection) -> Iterator[None]:
    """A write transaction taken up front, so concurrent writers queue instead of failing."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


# -- queries ------------------------------------------------------------------


def build_query(
    f: EventFilter, columns: str = "seq, body, prev_hash, hash"
) -> tuple[str, list[Any]]:
    """SQL and parameters selecting what `sinks.filtering.matches` selects, in seq order."""
    where: list[str] = []
    params: list[Any] = []
    # Without statistics SQLite favours the (type, action) index even when a far
    # more selective one applies; `+` leaves type/action to the other indexes then.
    narrower = (f.container, f.image, f.user, f.since_ns, f.until_ns)
    plus = "+" if any(value is not None for value in narrower) else ""
    equal = (
        (f"{plus}type", f.type),
        (f"{plus}action", f.action),
        ("source", f.source),
        ("host", f.host),
    )
    for column, wanted in equal:
        _add_any_of(where, params, wanted, functools.partial(_equal_sql, column))
    bounds = (("time_ns >= ?", f.since_ns), ("time_ns < ?", f.until_ns), ("seq > ?", f.after_seq))
    for clause, number in bounds:
        if number is not None:
            where.append(clause)
            params.append(number)
    _add_all_of(where, params, f.container, _container_sql)
    _add_any_of(where, params, f.image, _image_sql)
    _add_any_of(where, params, f.user, _user_sql)
    for key, wanted in f.labels.items():
        _add_any_of(where, params, wanted, functools.partial(_label_sql, key))
    sql = f"SELECT {columns} FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq"
    if f.limit is not None:
        sql += " LIMIT ?"
        params.append(max(f.limit, 0))
    return sql, params


def _add_any_of(
    where: list[str],
    params: list[Any],
    wanted: Wanted,
    term: Callable[[str], tuple[str, list[Any]]],
) -> None:
    """One AND-ed condition: any of the wanted values' terms (nothing when unset)."""
    clauses: list[str] = []
    for value in values_of(wanted):
        clause, values = term(value)
        clauses.append(clause)
        params.extend(values)
    if clauses:
        where.append(clauses[0] if len(clauses) == 1 else "(" + " OR ".join(clauses) + ")")


def _add_all_of(
    where: list[str],
    params: list[Any],
    wanted: Wanted,
    term: Callable[[tuple[str, ...]], tuple[str, list[Any]]],
) -> None:
    """One AND-ed condition built from every wanted value at once (nothing when unset)."""
    values = values_of(wanted)
    if values:
        clause, clause_params = term(values)
        where.append(clause)
        params.extend(clause_params)


def _equal_sql(column: str, value: str) -> tuple[str, list[Any]]:
    return f"{column} = ?", [value]


def _user_sql(value: str) -> tuple[str, list[Any]]:
    return "(who_login = ? OR who_user = ?)", [value, value]


def _label_sql(key: str, value: str) -> tuple[str, list[Any]]:
    clause = (
        "EXISTS (SELECT 1 FROM json_each(events.body, '$.attributes.labels') AS label "
        "WHERE label.key = ? AND label.type = 'text' AND label.value = ?)"
    )
    return clause, [key, value]


def _container_sql(values: tuple[str, ...]) -> tuple[str, list[Any]]:
    """Events of the containers named (names through renames) or id-prefixed by `values`."""
    # A flat OR of indexable terms lets SQLite answer each term from its own index.
    # `+type` keeps the planner off the (type, action) index, which for a common
    # type would mean scanning every container event.
    names = _marks(values)
    terms = [f"(+type = 'container' AND actor_name IN ({names}))"]
    params: list[Any] = list(values)
    for column, typed in (("actor_id", "+type = 'container' AND "), ("container", "")):
        for value in values:
            prefix, prefix_params = _prefix_sql(column, value)
            terms.append(f"({typed}{prefix})")
            params.extend(prefix_params)
    bore, bore_params = _ids_named_sql(values)
    terms += [f"(+type = 'container' AND actor_id IN ({bore}))", f"container IN ({bore})"]
    params += bore_params * 2
    if len(values) == 1:
        return "(" + " OR ".join(terms) + ")", params
    # Several values make more OR terms than the planner will answer index by
    # index (it scans instead): a union of one indexed select per term does.
    union = " UNION ".join(f"SELECT seq FROM events WHERE {term}" for term in terms)
    return f"seq IN ({union})", params


def _ids_named_sql(names: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The ids of the containers that ever bore one of `names`.

    A rename changes the name the Engine puts in later events, not the
    container; its `oldName` ("/a1") names it too, should the trail lack the
    earlier events. Network events carry only these ids.
    """
    old = (*names, *(f"/{name}" for name in names))
    sql = (
        "SELECT actor_id FROM events WHERE +type = 'container' "
        f"AND actor_name IN ({_marks(names)}) "
        "UNION SELECT actor_id FROM events WHERE type = 'container' AND action = 'rename' "
        f"AND json_extract(body, '$.attributes.oldName') IN ({_marks(old)})"
    )
    return sql, [*names, *old]


def _marks(values: tuple[str, ...]) -> str:
    return ", ".join("?" * len(values))


def _image_sql(value: str) -> tuple[str, list[Any]]:
    if not is_glob(value):
        return "(actor_image = ? OR (+type = 'image' AND actor_name = ?))", [value, value]
    # GLOB plus the literal prefix as a range: the range is what uses the index.
    prefix = glob_prefix(value)
    image_range, image_params = _prefix_sql("actor_image", prefix)
    name_range, name_params = _prefix_sql("actor_name", prefix)
    clause = (
        f"((actor_image GLOB ? AND {image_range}) "
        f"OR (+type = 'image' AND actor_name GLOB ? AND {name_range}))"
    )
    return clause, [value, *image_params, value, *name_params]


def build_alert_query(
    f: AlertFilter, columns: str = "seq, body, prev_hash, hash"
) -> tuple[str, list[Any]]:
    """SQL and parameters selecting what `sinks.filtering.alert_matches` selects, in seq order."""
    where: list[str] = []
    params: list[Any] = []
    for column, wanted in (("rule", f.rule), ("severity", f.severity), ("host", f.host)):
        _add_any_of(where, params, wanted, functools.partial(_equal_sql, column))
    simple: tuple[tuple[str, object], ...] = (
        ("time_ns >= ?", f.since_ns),
        ("time_ns < ?", f.until_ns),
        ("seq > ?", f.after_seq),
        ("event_seq = ?", f.event_seq),
    )
    for clause, value in simple:
        if value is not None:
            where.append(clause)
            params.append(value)
    if f.min_severity is not None:
        names = severities_at_least(f.min_severity)
        where.append(f"severity IN ({', '.join('?' * len(names))})")
        params.extend(names)
    if not f.include_suppressed:
        where.append("suppressed = 0")
    _add_all_of(where, params, f.container, _alert_container_sql)
    _add_any_of(where, params, f.image, functools.partial(_glob_or_equal_sql, "image"))
    _add_any_of(where, params, f.user, _user_sql)
    sql = f"SELECT {columns} FROM alerts"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq"
    if f.limit is not None:
        sql += " LIMIT ?"
        params.append(max(f.limit, 0))
    return sql, params


def _alert_container_sql(values: tuple[str, ...]) -> tuple[str, list[Any]]:
    """The alert's own container name, or an event of that container (as for events)."""
    by_event, event_params = _container_sql(values)
    clause = (
        f"(container IN ({_marks(values)}) "
        f"OR event_seq IN (SELECT seq FROM events WHERE {by_event}))"
    )
    return clause, [*values, *event_params]


def _glob_or_equal_sql(column: str, value: str) -> tuple[str, list[Any]]:
    if not is_glob(value):
        return f"{column} = ?", [value]
    prefix, prefix_params = _prefix_sql(column, glob_prefix(value))
    return f"({column} GLOB ? AND {prefix})", [value, *prefix_params]


def _prefix_sql(column: str, prefix: str) -> tuple[str, list[Any]]:
    """`column` starts with `prefix`, as an index-friendly range."""
    upper = _prefix_upper(prefix)
    if upper is None:
        return f"{column} >= ?", [prefix]
    return f"{column} >= ? AND {column} < ?", [prefix, upper]


def _prefix_upper(prefix: str) -> str | None:
    """The least string above every string starting with `prefix` (UTF-8 byte order)."""
    while prefix:
        nxt = ord(prefix[-1]) + 1
        if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded; skip past them
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


def _event_from_row(seq: int, body: str, prev_hash: str, digest: str) -> Event:
    try:
        event = Event.model_validate_json(body)
    except ValidationError as exc:
        raise TamperError(
            f"stored body is not a valid event ({exc.error_count()} errors); run docktrail verify",
            seq=seq,
        ) from exc
    event.prev_hash = prev_hash
    event.hash = digest
    return event


def _alert_from_row(seq: int, body: str, prev_hash: str, digest: str) -> Alert:
    try:
        alert = Alert.model_validate_json(body)
    except ValidationError as exc:
        raise TamperError(
            f"alert seq {seq}: stored body is not a valid alert ({exc.error_count()} errors); "
            "run docktrail verify"
        ) from exc
    alert.prev_hash = prev_hash
    alert.hash = digest
    return alert


# -- errors -------------------------------------------------------------------


def _is_busy(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _trail_error(path: Path, doing: str, exc: sqlite3.Error) -> TrailError:
    if _is_busy(exc):
        return TrailBusyError(f"{path}: {doing}: locked by another writer ({exc})")
    if isinstance(exc, sqlite3.ProgrammingError) and "thread" in str(exc):
        return TrailError(
            f"{path}: {doing}: called from another thread; after start(), "
            "use `await trail.call(...)`"
        )
    if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return TrailError(
            f"{path}: {doing}: the disk is full; everything stored before this write is kept "
            "and intact: free space, then run the same command again (it resumes)"
        )
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        return TrailError(f"{path}: not a docktrail trail (not an SQLite database)")
    return TrailError(f"{path}: {doing}: {exc}")


# -- the trail ----------------------------------------------------------------


class SQLiteTrail(SyncLifecycle, AsyncLifecycle):
    """The embedded trail. Sync API for CLI and tests; async API for the service.

    In async use (`start()` … `aclose()`) the connection belongs to one worker
    thread and every operation runs there; reach the sync API through
    `await trail.call(lambda t: ...)`.
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: Literal["full", "normal"] = "full",
        signing_key: Path | None = None,
        checkpoint_interval_secs: float = 60.0,
        checkpoint_every_events: int = 10_000,
        witness_path: Path | None = None,
        group: str | None = None,
    ) -> None:
        if durability not in ("full", "normal"):
            raise TrailError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.signing_key = signing_key if signing_key is not None else self.path.with_suffix(".key")
        self.checkpoint_interval_secs = checkpoint_interval_secs
        self.checkpoint_every_events = checkpoint_every_events
        self.witness_path = witness_path
        self.group = group
        self.recovered: Event | None = None  # the trail-recovered event this writer stored
        self._writer_lock = trailfiles.WriterLock(self.path, group)
        self._writer = False  # checked the trail's tail and holds the writers' lock
        self._own_seal: headseal.Seal | None = None  # the last seal this instance wrote
        self._since_checkpoint = 0  # events stored since this instance's last checkpoint
        self._unwitnessed: list[Checkpoint] = []
        self.applied_migrations: list[str] = []
        self._conn: sqlite3.Connection | None = None
        self._trail_id = ""
        self._key: Ed25519PrivateKey | None = None
        self._key_fingerprint = ""
        self._dirty = False  # this instance stored events that no checkpoint covers yet
        self._last_checkpoint = time.monotonic()
        self._executor: ThreadPoolExecutor | None = None
        self._ticker: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: TrailConfig) -> Self:
        return cls(
            config.path,
            durability=config.durability,
            signing_key=config.signing_key,
            checkpoint_interval_secs=config.checkpoint_interval_secs,
            checkpoint_every_events=config.checkpoint_every_events,
            witness_path=config.witness_path,
            group=config.group,
        )

    @property
    def trail_id(self) -> str:
        self._connection()
        return self._trail_id

    # -- sync lifecycle -------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrailError(f"{self.path}: cannot create its directory: {exc.strerror}") from exc
        with self._errors("create"):
            if not self.path.exists():
                self._create()
        if self.path.stat().st_size == 0:
            raise TrailError(
                f"{self.path}: the file is empty; a trail always holds at least its genesis "
                "checkpoint (emptied?). `docktrail verify` it; remove it to start a new trail"
            )
        with self._errors("open"):
            self._conn = self._connect()
        self._last_checkpoint = time.monotonic()
        if self._unwitnessed:
            self._checkpointed()  # this instance created the trail: witness its genesis

    def _create(self) -> None:
        """Create the trail sealed by its genesis checkpoint, then put it in place.

        Built under a temporary name and linked to `path` (which never replaces
        a trail another process created meanwhile), so a crash never leaves a
        trail file without its genesis: an empty or unsealed file at `path` is
        never docktrail's doing.
        """
        temporary = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.new")
        trailfiles.create_private(temporary, self.group)
        try:
            conn = sqlite3.connect(temporary, isolation_level=None)
            try:
                self._setup(conn)
                with _immediate(conn):
                    self._seal_heads(conn)
                    self._checkpoint_in(conn)
            finally:
                conn.close()  # the last connection: SQLite folds the WAL into the file
            try:
                os.link(temporary, self.path)
            except FileExistsError:
                self._unwitnessed.clear()  # another process created it first: theirs stands
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{temporary}{suffix}").unlink(missing_ok=True)

    def _connect(self) -> sqlite3.Connection:
        # Switching a new file to WAL (and WAL recovery) can fail with SQLITE_BUSY
        # without consulting the busy handler when others open it at the same
        # moment, so the whole setup is retried until the busy timeout.
        deadline = time.monotonic() + BUSY_TIMEOUT_SECS
        while True:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_SECS, isolation_level=None)
            try:
                self._setup(conn)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
            except BaseException:
                conn.close()
                raise

    def _setup(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        conn.execute(f"PRAGMA synchronous = {self.durability.upper()}")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        self.applied_migrations = apply_migrations(db)
        row = conn.execute("SELECT value FROM meta WHERE key = 'trail_id'").fetchone()
        if row is None:
            raise TamperError("meta table has no trail_id (database rewritten?)")
        self._trail_id = row[0]

    def close(self) -> None:
        """Seal what this instance appended with a checkpoint, then close."""
        conn = self._conn
        if conn is None:
            return
        try:
            # Only a writer seals: a read-only user (query, verify) must never
            # sign on the service's behalf, perhaps with the wrong key.
            if self._dirty:
                self._checkpoint_if_moved(conn)
        finally:
            self._conn = None
            conn.close()
            self._writer = False
            self._writer_lock.release()

    # -- writing --------------------------------------------------------------

    def append(
        self, events: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        """Store the new events of `events` and the sources' state in one transaction.

        All or nothing: a batch that fails stores neither its events nor the
        state. The state is stored even when no event is new.
        """
        return self._append(events, encode_states(source_state))

    def _append(self, events: Sequence[Event], states: list[tuple[str, str]]) -> AppendResult:
        conn = self._connection()
        if not events and not states:
            return AppendResult()
        self._ensure_writer()
        with self._errors("append"), _immediate(conn):
            self._check_own_heads(conn)
            sealed, duplicates = self._insert_events(conn, events) if events else ([], 0)
            if states:
                self._put_states(conn, states)
            if sealed:
                self._seal_heads(conn)
        if sealed:
            self._dirty = True
            self._since_checkpoint += len(sealed)
            self._periodic_checkpoint()
        return AppendResult(stored=[stored for stored, _, _ in sealed], duplicates=duplicates)

    def _insert_events(
        self, conn: sqlite3.Connection, events: Sequence[Event]
    ) -> tuple[list[tuple[Event, dict[str, Any], str]], int]:
        known = self._stored_ids(conn, "events", [event.id for event in events])
        fresh, duplicates = split_new(events, known)
        seq, prev_hash = self._head(conn)
        sealed = seal(fresh, seq, prev_hash)
        conn.executemany(
            _INSERT,
            [
                (stored.seq, *_copied_values(content), body, stored.prev_hash, stored.hash)
                for stored, content, body in sealed
            ],
        )
        return sealed, duplicates

    @staticmethod
    def _put_states(conn: sqlite3.Connection, states: list[tuple[str, str]]) -> None:
        now = time.time_ns()
        conn.executemany(_UPSERT_STATE, [(name, value, now) for name, value in states])

    @staticmethod
    def _stored_ids(conn: sqlite3.Connection, table: str, ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(ids), ID_CHUNK):
            chunk = ids[start : start + ID_CHUNK]
            sql = f"SELECT id FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})"
            found.update(row[0] for row in conn.execute(sql, chunk))
        return found

    @staticmethod
    def _head(conn: sqlite3.Connection, table: str = "events") -> tuple[int, str]:
        row = conn.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
        return (0, GENESIS_HASH) if row is None else (row[0], row[1])

    def append_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        """Store the new alerts, their deliveries and the evaluation mark in one transaction.

        `route(alert)` names the destinations of each new alert; each gets a
        pending row in the outbox (`sinks.outbox`), committed with the alert.

        Alerts whose id is stored already (a replay, a repair after a crash)
        are skipped; the new ones are sealed in place and returned. Raises
        `TrailError`, storing nothing, when an alert's `event_seq` is not the
        stored event it names, or `evaluated_through` is past the last event.
        The mark never goes backwards: a lower one is ignored.
        """
        conn = self._connection()
        if not alerts and evaluated_through is None:
            return []
        self._ensure_writer()
        with self._errors("append alerts"), _immediate(conn):
            self._check_own_heads(conn)
            known = self._stored_ids(conn, "alerts", [alert.id for alert in alerts])
            fresh, _duplicates = split_new(alerts, known)
            self._check_event_refs(conn, fresh)
            if evaluated_through is not None:
                check_mark(evaluated_through, self._head(conn)[0])
            sealed = seal_alerts(fresh, *self._head(conn, "alerts"))
            conn.executemany(
                _ALERT_INSERT,
                [
                    (
                        stored.seq,
                        *_alert_copied_values(content),
                        body,
                        stored.prev_hash,
                        stored.hash,
                    )
                    for stored, content, body in sealed
                ],
            )
            if route is not None and sealed:
                outbox.enqueue(
                    conn, ((a.seq or 0, a.id, a.time_ns, route(a)) for a, _, _ in sealed)
                )
                self._record_queued(conn, sealed[0][0].seq or 0, sealed[-1][0].seq or 0)
            if evaluated_through is not None and evaluated_through > self._mark(conn):
                self._put_states(conn, [mark_state(evaluated_through)])
            if sealed:
                self._seal_heads(conn)
        if sealed:
            self._dirty = True
            self._periodic_checkpoint()
        return [stored for stored, _, _ in sealed]

    @staticmethod
    def _check_event_refs(conn: sqlite3.Connection, alerts: Sequence[Alert]) -> None:
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

    @staticmethod
    def _mark(conn: sqlite3.Connection) -> int:
        row = conn.execute(
            "SELECT value FROM source_state WHERE name = ?", (RULES_MARK,)
        ).fetchone()
        return mark_value(None if row is None else row[0])

    # -- reading --------------------------------------------------------------

    def query(self, f: EventFilter) -> Iterator[Event]:
        """Events selected by `f`, in seq order, read lazily."""
        conn = self._connection()
        sql, params = build_query(f)
        with self._errors("query"):
            cursor = conn.execute(sql, params)
        return self._events(cursor)

    def _events(self, cursor: sqlite3.Cursor) -> Iterator[Event]:
        with self._errors("query"):
            for seq, body, prev_hash, digest in cursor:
                yield _event_from_row(seq, body, prev_hash, digest)

    def query_plan(self, f: EventFilter) -> list[str]:
        """SQLite's EXPLAIN QUERY PLAN lines for `query(f)`."""
        sql, params = build_query(f)
        with self._errors("explain"):
            rows = self._connection().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return [row[-1] for row in rows]

    def count(self) -> int:
        with self._errors("count"):
            return int(self._connection().execute("SELECT count(*) FROM events").fetchone()[0])

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last event; (0, GENESIS_HASH) when empty."""
        with self._errors("head"):
            return self._head(self._connection())

    def get(self, seq: int) -> Event | None:
        with self._errors("get"):
            row = (
                self._connection()
                .execute("SELECT seq, body, prev_hash, hash FROM events WHERE seq = ?", (seq,))
                .fetchone()
            )
        return None if row is None else _event_from_row(*row)

    def seqs_by_id(
        self, ids: Sequence[str], table: Literal["events", "alerts"] = "events"
    ) -> dict[str, int]:
        """id -> seq of the stored rows among `ids` (the central trail's dedupe and lookups)."""
        found: dict[str, int] = {}
        unique = sorted(set(ids))
        with self._errors("look up ids"):
            conn = self._connection()
            for start in range(0, len(unique), ID_CHUNK):
                chunk = unique[start : start + ID_CHUNK]
                sql = f"SELECT id, seq FROM {table} WHERE id IN ({', '.join('?' * len(chunk))})"
                found.update(conn.execute(sql, chunk).fetchall())
        return found

    def load_source_state(self, name: str) -> dict[str, Any] | None:
        """The state last stored for source `name`, or None."""
        with self._errors("load source state"):
            row = (
                self._connection()
                .execute("SELECT value FROM source_state WHERE name = ?", (name,))
                .fetchone()
            )
        return None if row is None else decode_state(row[0])

    def source_states(self) -> dict[str, dict[str, Any]]:
        """Every stored state by name, the rules evaluation mark (`RULES_MARK`) included."""
        with self._errors("load source state"):
            rows = self._connection().execute("SELECT name, value FROM source_state ORDER BY name")
            return {name: decode_state(value) for name, value in rows}

    def evaluated_through(self) -> int:
        """Every event up to this seq has been evaluated by the rules (0: none)."""
        with self._errors("read evaluation mark"):
            return self._mark(self._connection())

    def query_alerts(self, f: AlertFilter) -> Iterator[Alert]:
        """Alerts selected by `f`, in alert seq order, read lazily."""
        sql, params = build_alert_query(f)
        with self._errors("query alerts"):
            cursor = self._connection().execute(sql, params)
        return self._alerts(cursor)

    def _alerts(self, cursor: sqlite3.Cursor) -> Iterator[Alert]:
        with self._errors("query alerts"):
            for row in cursor:
                yield _alert_from_row(*row)

    def alerts_by_seq(self, seqs: Sequence[int]) -> dict[int, Alert]:
        """The stored alerts of these seqs (missing ones are left out)."""
        conn = self._connection()
        found: dict[int, Alert] = {}
        unique = sorted(set(seqs))
        with self._errors("read alerts"):
            for start in range(0, len(unique), ID_CHUNK):
                chunk = unique[start : start + ID_CHUNK]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT seq, body, prev_hash, hash FROM alerts WHERE seq IN ({marks})", chunk
                )
                found.update((row[0], _alert_from_row(*row)) for row in rows)
        return found

    @property
    def outbox(self) -> outbox.Outbox:
        """The deliveries of alerts to destinations (`sinks.outbox`)."""
        return outbox.Outbox(self._connection(), self._writer_transaction, self._record_delivery)

    @contextmanager
    def _writer_transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        self._ensure_writer()
        with _immediate(conn):
            yield

    def _record_queued(self, conn: sqlite3.Connection, first_seq: int, last_seq: int) -> None:
        """Chain the deliveries just queued for alerts `first_seq`..`last_seq`, per destination
        and status (`queued`, or `deduplicated`: never to be sent)."""
        rows = conn.execute(
            "SELECT destination, status, id FROM deliveries WHERE alert_seq BETWEEN ? AND ? "
            "ORDER BY destination, status, id",
            (first_seq, last_seq),
        )
        groups: dict[tuple[str, str], list[int]] = {}
        for destination, status, number in rows:
            action = "queued" if status == "pending" else status
            groups.setdefault((destination, action), []).append(number)
        for (destination, action), ids in groups.items():
            self._chain_delivery(conn, destination, action, ids, None)

    def _record_delivery(
        self,
        conn: sqlite3.Connection,
        destination: str,
        action: str,
        ids: Sequence[int],
        attempt_id: int | None,
    ) -> None:
        """Chain one attempt's outcome for `ids` (inside the attempt's transaction)."""
        self._check_own_heads(conn)
        self._chain_delivery(conn, destination, action, ids, attempt_id)
        self._seal_heads(conn)
        self._dirty = True
        self._since_checkpoint += 1

    def _chain_delivery(
        self,
        conn: sqlite3.Connection,
        destination: str,
        action: str,
        ids: Sequence[int],
        attempt_id: int | None,
    ) -> None:
        now = time.time_ns()
        event = Event(
            id=natural_id("docktrail", "delivery", self._trail_id, attempt_id, action, ids[0]),
            time_ns=now,
            source="docktrail",
            host=socket.gethostname(),
            type="delivery",
            action=action,
            actor=Actor(id=destination, name=destination),
            attributes={"attempt": attempt_id, "deliveries": sorted(ids)},
        )
        self._insert_events(conn, [event])

    def alerts_for_event(self, seq: int) -> list[Alert]:
        """The alerts raised on the event at `seq`, in alert seq order."""
        return list(self.query_alerts(AlertFilter(event_seq=seq)))

    def alerts_query_plan(self, f: AlertFilter) -> list[str]:
        """SQLite's EXPLAIN QUERY PLAN lines for `query_alerts(f)`."""
        sql, params = build_alert_query(f)
        with self._errors("explain"):
            rows = self._connection().execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
        return [row[-1] for row in rows]

    def count_alerts(self) -> int:
        with self._errors("count alerts"):
            return int(self._connection().execute("SELECT count(*) FROM alerts").fetchone()[0])

    def alerts_head(self) -> tuple[int, str]:
        """(seq, hash) of the last alert; (0, GENESIS_HASH) when there is none."""
        with self._errors("head"):
            return self._head(self._connection(), "alerts")

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Sign the current heads of both chains and store the signature.

        Refuses (`TamperError`) when the heads are not the ones this writer (or
        another docktrail writer) sealed: foreign rows are never signed.
        """
        conn = self._connection()
        self._ensure_writer()
        self._unwitnessed.clear()
        with self._errors("checkpoint"), _immediate(conn):
            self._check_own_heads(conn)
            cp = self._checkpoint_in(conn)
        self._checkpointed()
        return cp

    def _checkpoint_in(self, conn: sqlite3.Connection) -> Checkpoint:
        """Sign the heads inside the caller's write transaction."""
        last = conn.execute(
            "SELECT n, key_fingerprint FROM checkpoints ORDER BY n DESC LIMIT 1"
        ).fetchone()
        key = self._signer(None if last is None else last[1])
        seq, digest = self._head(conn)
        alerts_seq, alerts_hash = self._head(conn, "alerts")
        now = time.time_ns()
        payload = checkpoint_payload(self._trail_id, seq, digest, now, alerts_seq, alerts_hash)
        cp = Checkpoint(
            1 if last is None else last[0] + 1,
            self._trail_id,
            seq,
            digest,
            now,
            self._key_fingerprint,
            sign(key, payload),
            alerts_seq,
            alerts_hash,
        )
        conn.execute(
            "INSERT INTO checkpoints (n, trail_id, seq, hash, time_ns, key_fingerprint, "
            "signature, alerts_seq, alerts_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cp.number,
                cp.trail_id,
                cp.seq,
                cp.hash,
                cp.time_ns,
                cp.key_fingerprint,
                cp.signature,
                cp.alerts_seq,
                cp.alerts_hash,
            ),
        )
        self._unwitnessed.append(cp)
        return cp

    def _checkpointed(self) -> None:
        """After a commit that stored checkpoints: reset the counters, tell the witness."""
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        made, self._unwitnessed = self._unwitnessed, []
        if self.witness_path is None:
            return
        try:
            witness.append(self.witness_path, made, self.group)
        except TrailError as exc:
            # the checkpoint is committed; the witness lags until the next one succeeds
            log.error("checkpoint %s not witnessed: %s", made[-1].number if made else "?", exc)

    def _signer(self, last_fingerprint: str | None) -> Ed25519PrivateKey:
        """The signing key, refusing one that differs from the key of earlier checkpoints.

        A silently created new key would make every earlier checkpoint fail
        verification, so a lost key is an error, not a fresh start.
        """
        if self._key is None:
            if last_fingerprint is not None and not self.signing_key.exists():
                raise SigningKeyError(
                    f"{self.signing_key}: signing key not found, but this trail was signed "
                    f"with key {last_fingerprint}; restore that key"
                )
            key = load_or_create_key(self.signing_key)
            self._key, self._key_fingerprint = key, fingerprint(key.public_key())
        if last_fingerprint is not None and last_fingerprint != self._key_fingerprint:
            raise SigningKeyError(
                f"{self.signing_key}: key {self._key_fingerprint} is not key "
                f"{last_fingerprint} that signed this trail's last checkpoint"
            )
        return self._key

    def _checkpoint_if_moved(self, conn: sqlite3.Connection) -> None:
        with self._errors("checkpoint"):
            last = conn.execute(
                "SELECT seq, hash, alerts_seq, alerts_hash FROM checkpoints ORDER BY n DESC LIMIT 1"
            ).fetchone()
            heads = (*self._head(conn), *self._head(conn, "alerts"))
        if heads != (tuple(last) if last is not None else (0, GENESIS_HASH, 0, GENESIS_HASH)):
            self.checkpoint()
        else:
            self._dirty = False

    # -- the writer's own heads (sinks.headseal) --------------------------------

    def _ensure_writer(self) -> None:
        """Before this instance's first write: seal a new trail, or check and recover its tail.

        A new trail gets its genesis checkpoint. Otherwise the stored heads must
        be the sealed ones (`_check_own_heads`), and a writer alone on the
        trail seals the tail a crashed writer left (`_recover`).
        """
        if self._writer:
            return
        conn = self._connection()
        alone = self._writer_lock.acquire()
        try:
            self._unwitnessed.clear()
            with self._errors("open for writing"), _immediate(conn):
                if self._is_empty(conn):
                    self._seal_heads(conn)
                    self._checkpoint_in(conn)  # genesis: the trail is never unsigned
                else:
                    self._check_own_heads(conn)
                    if alone:
                        self._recover(conn)
            if self._unwitnessed:
                self._checkpointed()
        except BaseException:
            self._writer_lock.release()
            raise
        self._writer_lock.share()
        self._writer = True

    @staticmethod
    def _is_empty(conn: sqlite3.Connection) -> bool:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM checkpoints), (SELECT count(*) FROM head_seal)"
        ).fetchone()
        return tuple(row) == (0, 0) and headseal.current(conn) == headseal.EMPTY

    def _check_own_heads(self, conn: sqlite3.Connection) -> None:
        """Refuse to write after rows docktrail did not write (inside the write transaction)."""
        seal = headseal.read(conn)
        if seal is not None and seal == self._own_seal:
            sealed = seal.heads  # our own last write: its signature was made here
        elif seal is not None:
            key = self._signer(seal.key_fingerprint)
            if not headseal.signed(seal, self._trail_id, key.public_key()):
                raise TamperError(
                    "the head seal's signature is invalid (forged); run docktrail verify"
                )
            sealed = seal.heads
        elif headseal.has_genesis(conn):
            raise TamperError("the head seal is missing (deleted); run docktrail verify")
        else:
            return  # a trail from before head seals: its next write seals it
        stored = headseal.current(conn)
        if stored != sealed:
            bad_seq, bad_alert, message = headseal.foreign_problem(stored, sealed)
            where = "" if bad_seq is not None or bad_alert is None else f"alert seq {bad_alert}: "
            raise TamperError(
                f"{where}foreign rows: {message}; refusing to sign them (run docktrail verify)",
                seq=bad_seq,
            )

    def _seal_heads(self, conn: sqlite3.Connection) -> None:
        """Sign the heads as this write leaves them (inside its transaction)."""
        last = conn.execute(
            "SELECT key_fingerprint FROM checkpoints ORDER BY n DESC LIMIT 1"
        ).fetchone()
        key = self._signer(None if last is None else last[0])
        heads = headseal.current(conn)
        self._own_seal = headseal.write(conn, self._trail_id, heads, key, self._key_fingerprint)

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Seal what a crashed writer left after the last checkpoint, saying so in the trail."""
        last = conn.execute(
            "SELECT seq, alerts_seq, time_ns FROM checkpoints ORDER BY n DESC LIMIT 1"
        ).fetchone()
        since_seq, since_alert_seq, since_ns = (0, 0, None) if last is None else tuple(last)
        heads = headseal.current(conn)
        unsealed, unsealed_alerts = heads.seq - since_seq, heads.alerts_seq - since_alert_seq
        if unsealed <= 0 and unsealed_alerts <= 0:
            return
        _check_tail(conn, "events", since_seq)
        _check_tail(conn, "alerts", since_alert_seq)
        now = time.time_ns()
        attributes: dict[str, Any] = {
            "unsealed_events": unsealed,
            "unsealed_alerts": unsealed_alerts,
            "first_unsealed_seq": since_seq + 1,
            "first_unsealed_alert_seq": since_alert_seq + 1,
            "last_checkpoint_ns": since_ns,
            "reason": "the previous writer stopped without its final checkpoint (a crash)",
        }
        recovered = Event(
            id=natural_id(
                "docktrail", "trail-recovered", self._trail_id, heads.seq, heads.alerts_seq
            ),
            time_ns=now,
            source="docktrail",
            host=socket.gethostname(),
            type="trail",
            action="trail-recovered",
            attributes=attributes,
        )
        self._insert_events(conn, [recovered])
        self._seal_heads(conn)
        self._checkpoint_in(conn)
        self.recovered = recovered
        log.warning(
            "trail %s: sealed %d events and %d alerts left unsealed by a crash (since seq %d)",
            self.path,
            unsealed,
            unsealed_alerts,
            since_seq + 1,
        )

    def _periodic_checkpoint(self) -> None:
        """Checkpoint when due. Never raises: the append it follows has committed."""
        if not self._dirty or self._conn is None:
            return
        if (
            time.monotonic() - self._last_checkpoint < self.checkpoint_interval_secs
            and self._since_checkpoint < self.checkpoint_every_events
        ):
            return
        try:
            self.checkpoint()
        except TrailError as exc:
            self._last_checkpoint = time.monotonic()  # retry next interval, not every append
            log.error(
                "trail checkpoint failed (retrying in %ss): %s", self.checkpoint_interval_secs, exc
            )

    # -- verify ---------------------------------------------------------------

    def verify(self, public_key: Path | None = None) -> VerifyReport:
        """Check the chain, the copied columns, the checkpoints and the triggers.

        `public_key`: a PEM file (public or private) to check signatures with;
        default: the signing key file.
        """
        conn = self._connection()
        with self._errors("verify"):
            conn.execute("BEGIN")  # one snapshot for both cursors, even while others append
            try:
                return self._verify(conn, public_key)
            finally:
                # COMMIT, not ROLLBACK: nothing was written, and a rollback would
                # abort a query the caller may still be iterating on this connection.
                conn.execute("COMMIT")

    def _verify(self, conn: sqlite3.Connection, public_key: Path | None) -> VerifyReport:
        key_path = public_key if public_key is not None else self.signing_key
        public = None  # without a key only a trail with no checkpoints can be checked
        if public_key is not None or key_path.exists():
            public = load_public_key(key_path)
        return _verify_connection(conn, self._trail_id, public, key_path)

    # -- async API (TrailSink) ------------------------------------------------

    async def start(self) -> None:
        """Open on the worker thread, check the signing key, start the checkpoint timer."""
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="docktrail-trail")
        try:
            await self._call(self._start_in_worker)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._ticker = asyncio.create_task(self._tick(), name="docktrail-trail-checkpoints")

    def _start_in_worker(self) -> None:
        self.open()
        try:
            # fail at start-up, not one interval later, on a missing or wrong key
            with self._errors("start"):
                row = (
                    self._connection()
                    .execute("SELECT key_fingerprint FROM checkpoints ORDER BY n DESC LIMIT 1")
                    .fetchone()
                )
            self._signer(None if row is None else row[0])
            self._ensure_writer()  # seal what a crashed writer left, before anything new
        except BaseException:
            self._dirty = False
            self.close()
            raise

    async def write(
        self, batch: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        # list() and encoding here: the caller may reuse its batch and change its
        # state dicts while the worker is still busy with them
        return await self._call(self._append, list(batch), encode_states(source_state))

    async def write_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        """`append_alerts` on the worker thread."""
        append = functools.partial(
            self.append_alerts, evaluated_through=evaluated_through, route=route
        )
        return await self._call(append, list(alerts))

    async def call(self, fn: Callable[[Self], T]) -> T:
        """Run `fn(self)` on the worker thread that owns the connection."""
        return await self._call(fn, self)

    async def aclose(self) -> None:
        executor = self._executor
        if executor is None:
            return
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
            self._ticker = None
        try:
            await self._call(self.close)
        finally:
            self._executor = None
            executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise TrailError(f"{self.path}: trail not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _tick(self) -> None:
        # Seals the tail when appends stop: append() only checks the interval itself.
        while True:
            await asyncio.sleep(self.checkpoint_interval_secs)
            await self._call(self._periodic_checkpoint)

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
            raise _trail_error(self.path, doing, exc) from exc


@dataclass(frozen=True, slots=True)
class Pins:
    """What an auditor pinned: the trail's id, its key's fingerprint, and the witness."""

    trail_id: str | None = None
    key_fingerprint: str | None = None
    witness: Path | None = None


def verify_file(path: Path, key_path: Path, pins: Pins = Pins()) -> VerifyReport:
    """Verify the trail at `path` read-only: never creates, migrates or writes anything.

    `key_path`: a PEM file (public or private) to check signatures with.
    """
    uri = "file:" + urllib.parse.quote(str(Path(path).absolute())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_SECS)
    except sqlite3.Error as exc:
        raise _trail_error(path, "open", exc) from exc
    try:
        with contextlib.closing(conn):
            public = load_public_key(key_path)
            conn.execute("BEGIN")  # one snapshot while the service keeps appending
            return _verify_snapshot(conn, public, key_path, pins)
    except sqlite3.Error as exc:
        raise _trail_error(path, "verify", exc) from exc


def _verify_snapshot(
    conn: sqlite3.Connection, public: Ed25519PublicKey, key_path: Path, pins: Pins
) -> VerifyReport:
    applied = trailcheck.applied_migrations(conn)
    key_id = fingerprint(public)
    if applied is None or "0001_tables" not in applied:
        return _not_a_trail(conn, key_id)
    trail_id = _stored_trail_id(conn)
    report = _verify_connection(conn, trail_id, public, key_path, applied)
    finding = _pin_problem(trail_id, key_id, pins)
    if report.ok and finding is None and pins.witness is not None:
        witnessed = witness.check(pins.witness, conn, trail_id, public)
        if witnessed.finding is not None:
            finding = trailcheck.Finding(
                witnessed.problem or "", witnessed.first_bad_seq, None, witnessed.finding
            )
        else:
            note = f"witness: {witnessed.checked} checkpoints agree"
            if witnessed.ignored:
                note += f" ({witnessed.ignored} lines not signed by this key ignored)"
            report = dataclasses.replace(report, notes=(*report.notes, note))
    if report.ok and finding is not None:
        return _failed(report, finding)
    return report


def _stored_trail_id(conn: sqlite3.Connection) -> str:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'trail_id'").fetchone()
    except sqlite3.OperationalError:  # meta dropped: reported by the schema check
        return ""
    return "" if row is None else str(row[0])


def _not_a_trail(conn: sqlite3.Connection, key_id: str) -> VerifyReport:
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    what = "the file is empty" if tables == 0 else "the file has no docktrail schema"
    return VerifyReport(
        ok=False,
        events=0,
        checkpoints=0,
        first_bad_seq=1,
        problem=f"no genesis: {what} (emptied, or replaced by another database)",
        unsealed=0,
        key_fingerprint=key_id,
        finding="tampered",
    )


def _pin_problem(trail_id: str, key_id: str, pins: Pins) -> trailcheck.Finding | None:
    if pins.trail_id is not None and pins.trail_id != trail_id:
        return trailcheck.Finding(
            f"this is trail {trail_id or '(none)'}, not the pinned trail {pins.trail_id} "
            "(the file was replaced)",
            1,
        )
    if pins.key_fingerprint is not None and pins.key_fingerprint != key_id:
        return trailcheck.Finding(
            f"verifying key {key_id} is not the pinned key {pins.key_fingerprint} "
            "(the key beside the trail was replaced; verify with the auditor's public key)",
            1,
        )
    return None


def _failed(report: VerifyReport, finding: trailcheck.Finding) -> VerifyReport:
    return dataclasses.replace(
        report,
        ok=False,
        first_bad_seq=finding.seq,
        first_bad_alert_seq=finding.alert_seq,
        problem=finding.problem,
        finding=finding.kind,
        notes=(),
    )


def _verify_connection(
    conn: sqlite3.Connection,
    trail_id: str,
    public: Ed25519PublicKey | None,
    key_path: Path,
    applied: Sequence[str] | None = None,
) -> VerifyReport:
    """Every check of one snapshot; the most precise finding first (module docstring)."""
    if applied is None:
        applied = trailcheck.applied_migrations(conn) or []
    expected = trailcheck.expected_schema(MIGRATIONS, applied)
    dropped = trailcheck.missing_tables(conn, expected) or trailcheck.downgrade_problem(
        conn, applied, GENESIS_MIGRATIONS
    )
    if dropped is not None:  # the checks below read every table
        return _failed(_empty_report(public, trail_id), dropped)
    audit = _Audit(conn, trail_id, public, key_path)
    problem = audit.run()
    finding: trailcheck.Finding | None = None
    vouched: Heads | None = None
    if finding is None and problem is None and "0008_head_seal" in applied:
        finding, vouched = trailcheck.seal_problem(conn, trail_id, public, audit.checkpointed())
    if finding is None and problem is None:
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        problem = _trigger_problem(db)
    if finding is None and problem is None:
        finding = (
            trailcheck.schema_problem(conn, expected)
            or trailcheck.integrity_problem(conn)
            or trailcheck.delivery_problem(conn)
        )
    report = _audit_report(conn, audit, problem, public, trail_id)
    if finding is not None:
        return _failed(report, finding)
    if not report.ok:
        return report
    return dataclasses.replace(report, notes=_tail_notes(report, vouched))


def _empty_report(public: Ed25519PublicKey | None, trail_id: str) -> VerifyReport:
    return VerifyReport(
        ok=True,
        events=0,
        checkpoints=0,
        first_bad_seq=None,
        problem=None,
        unsealed=0,
        key_fingerprint=None if public is None else fingerprint(public),
        trail_id=trail_id,
    )


def _audit_report(
    conn: sqlite3.Connection,
    audit: _Audit,
    problem: Problem | None,
    public: Ed25519PublicKey | None,
    trail_id: str,
) -> VerifyReport:
    events, alerts, checkpoints = (
        int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        for table in ("events", "alerts", "checkpoints")
    )
    bad = None if problem is None else problem[0]
    return VerifyReport(
        ok=problem is None,
        events=events,
        checkpoints=checkpoints,
        first_bad_seq=None if audit.in_alerts else bad,
        problem=None if problem is None else problem[1],
        unsealed=max(audit.last_seq - audit.sealed_seq, 0),
        key_fingerprint=None if public is None else fingerprint(public),
        alerts=alerts,
        first_bad_alert_seq=bad if audit.in_alerts else None,
        unsealed_alerts=max(audit.last_alert_seq - audit.sealed_alert_seq, 0),
        finding=None if problem is None else "tampered",
        trail_id=trail_id,
    )


def _tail_notes(report: VerifyReport, vouched: Heads | None) -> tuple[str, ...]:
    if not (report.unsealed or report.unsealed_alerts):
        return ()
    tail = f"{report.unsealed} events and {report.unsealed_alerts} alerts after the last checkpoint"
    if vouched is None:
        return (f"{tail}, vouched for by the hash chain only",)
    return (
        f"{tail}, sealed by the writer's head seal (a writer is running, or stopped without "
        "its final checkpoint; its next start seals them)",
    )


class _Audit:
    """One streaming verify over both chains and the checkpoints (module docstring)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        trail_id: str,
        public: Ed25519PublicKey | None,
        key_path: Path,
    ) -> None:
        self.conn = conn
        self.trail_id = trail_id
        self.public = public
        self.key_path = key_path
        self.fingerprint = "" if public is None else fingerprint(public)
        self.checkpoints = conn.cursor().execute(
            "SELECT n, trail_id, seq, hash, time_ns, key_fingerprint, signature, alerts_seq, "
            "alerts_hash FROM checkpoints ORDER BY n"
        )
        self.pending: tuple[Any, ...] | None = self.checkpoints.fetchone()
        self.last_n = 0
        self.last_cp_seq = 0
        self.last_cp_alert_seq = 0
        self.sealed_seq = 0  # seq of the last valid checkpoint
        self.last_seq = 0
        self.in_alerts = False  # the problem found (if any) is in the alerts chain
        self.sealed_alert_seq = 0
        self.last_alert_seq = 0
        self.valid_checkpoints = 0
        self.sealed_hash = GENESIS_HASH
        self.sealed_alert_hash = GENESIS_HASH

    def checkpointed(self) -> Heads:
        """The heads of the last valid checkpoint (after `run`)."""
        return Heads(
            self.sealed_seq, self.sealed_hash, self.sealed_alert_seq, self.sealed_alert_hash
        )

    def run(self) -> Problem | None:
        problem = self._events_pass()
        if problem is None:
            self.in_alerts = True
            problem = self._alerts_pass()
        return problem

    # -- events and the checkpoints' signatures (steps 1-5) ---------------------

    def _events_pass(self) -> Problem | None:
        problem = self._checkpoints_at(0, GENESIS_HASH)
        if problem is not None:
            return problem
        expected_seq, expected_prev = 1, GENESIS_HASH
        for seq, prev_hash, digest, body, columns_ok in self.conn.execute(_VERIFY_ROWS):
            # the fast path holds for intact rows; link_problem says what is wrong otherwise
            if not (
                seq == expected_seq
                and prev_hash == expected_prev
                and chain_hash(prev_hash, body) == digest
            ):
                return link_problem(seq, expected_seq, prev_hash, expected_prev, digest, body)
            if not columns_ok:
                return seq, self._column_problem("seq", seq, body)
            self.last_seq, expected_seq, expected_prev = seq, seq + 1, digest
            if self.pending is not None and self.pending[2] <= seq:
                problem = self._checkpoints_at(seq, digest)
                if problem is not None:
                    return problem
        return self._finish()

    def _checkpoints_at(self, seq: int, digest: str | None) -> Problem | None:
        while self.pending is not None and self.pending[2] <= seq:
            problem = self._checkpoint_problem(self.pending, digest)
            if problem is not None:
                return problem
            self.sealed_seq, self.sealed_hash = self.pending[2], self.pending[3]
            self.valid_checkpoints += 1
            self.pending = self.checkpoints.fetchone()
        return None

    def _checkpoint_problem(self, row: tuple[Any, ...], digest: str | None) -> Problem | None:
        """Problem of one checkpoint; `digest` is the hash of its row, None when missing."""
        n, trail_id, seq, signed_hash, time_ns, claimed_key, signature, alert_seq, alert_hash = row
        where = f"checkpoint {n} (seq {seq})"
        bad = self.sealed_seq + 1  # everything after the last good checkpoint is suspect
        if n != self.last_n + 1:
            return bad, (
                f"checkpoint {self.last_n + 1}: missing (checkpoint numbers jump "
                f"from {self.last_n} to {n}; deleted)"
            )
        if seq < self.last_cp_seq:
            return bad, f"{where}: out of order (checkpoint {n - 1} is at seq {self.last_cp_seq})"
        if alert_seq < self.last_cp_alert_seq:
            return bad, (
                f"{where}: out of order (alert seq {alert_seq}; checkpoint {n - 1} is at "
                f"alert seq {self.last_cp_alert_seq})"
            )
        if trail_id != self.trail_id:
            return bad, (
                f"{where}: made for trail {trail_id}, not this trail {self.trail_id} "
                "(copied from another trail)"
            )
        if self.public is None:
            raise SigningKeyError(
                f"{self.key_path}: no key to check checkpoint signatures with; "
                "pass the auditor's public key file"
            )
        payload = checkpoint_payload(trail_id, seq, signed_hash, time_ns, alert_seq, alert_hash)
        if not verify_signature(self.public, payload, signature):
            claimed = "" if claimed_key == self.fingerprint else f"; it names key {claimed_key}"
            return bad, (
                f"{where}: signature invalid for key {self.fingerprint} "
                f"(database rewritten or another key{claimed})"
            )
        if digest is None:
            return self.last_seq + 1, (
                f"{where}: the trail ends at seq {self.last_seq} (rows deleted at the end)"
            )
        if signed_hash != digest:
            return bad, f"{where}: signed hash does not match seq {seq} (rows up to it rewritten)"
        self.last_n, self.last_cp_seq, self.last_cp_alert_seq = n, seq, alert_seq
        return None

    def _finish(self) -> Problem | None:
        if self.pending is not None:  # a checkpoint beyond the last row
            return self._checkpoint_problem(self.pending, None)
        if self.valid_checkpoints == 0:
            return 1, (
                f"no signed checkpoint: not even the genesis checkpoint; none of the "
                f"{self.last_seq} events is sealed (an emptied or replaced database looks "
                "like this)"
            )
        return None

    # -- alerts against the (now validated) checkpoints (steps 1-4, 6, 7) -------

    def _alerts_pass(self) -> Problem | None:
        # Every checkpoint passed the events pass: numbered, in order, signed.
        self.alert_checkpoints = self.conn.cursor().execute(
            "SELECT n, alerts_seq, alerts_hash FROM checkpoints ORDER BY n"
        )
        self.alert_pending: tuple[Any, ...] | None = self.alert_checkpoints.fetchone()
        problem = self._alert_checkpoints_at(0, GENESIS_HASH)
        if problem is not None:
            return problem
        expected_seq, expected_prev = 1, GENESIS_HASH
        for row in self.conn.execute(_VERIFY_ALERT_ROWS):
            seq, prev_hash, digest, body, columns_ok, event_seq, event_ok = row
            label = "alert seq"
            if not (
                seq == expected_seq
                and prev_hash == expected_prev
                and chain_hash(prev_hash, body) == digest
            ):
                return link_problem(
                    seq, expected_seq, prev_hash, expected_prev, digest, body, label
                )
            if not columns_ok:
                return seq, self._column_problem(label, seq, body)
            if not event_ok:
                return seq, self._event_problem(seq, event_seq, body)
            self.last_alert_seq, expected_seq, expected_prev = seq, seq + 1, digest
            if self.alert_pending is not None and self.alert_pending[1] <= seq:
                problem = self._alert_checkpoints_at(seq, digest)
                if problem is not None:
                    return problem
        if self.alert_pending is not None:  # a checkpoint beyond the last alert
            n, alert_seq, _ = self.alert_pending
            return self.last_alert_seq + 1, (
                f"checkpoint {n} (alert seq {alert_seq}): the alerts end at alert seq "
                f"{self.last_alert_seq} (rows deleted at the end)"
            )
        return None

    def _alert_checkpoints_at(self, seq: int, digest: str) -> Problem | None:
        # Alert seqs are contiguous and checkpoints in order (both checked), so each
        # checkpoint is met exactly at its alerts seq.
        while self.alert_pending is not None and self.alert_pending[1] <= seq:
            n, alert_seq, signed_hash = self.alert_pending
            if signed_hash != digest:
                return self.sealed_alert_seq + 1, (
                    f"checkpoint {n} (alert seq {alert_seq}): signed alerts hash does not match "
                    f"alert seq {alert_seq} (alerts up to it rewritten)"
                )
            self.sealed_alert_seq, self.sealed_alert_hash = alert_seq, signed_hash
            self.alert_pending = self.alert_checkpoints.fetchone()
        return None

    def _event_problem(self, seq: int, event_seq: int, body: str) -> str:
        row = self.conn.execute("SELECT id FROM events WHERE seq = ?", (event_seq,)).fetchone()
        try:
            event_id = json.loads(body).get("event_id")
        except (ValueError, AttributeError):
            event_id = None
        where = f"alert seq {seq}"
        problem = event_ref_problem(
            where, event_seq, str(event_id), None if row is None else row[0]
        )
        return problem or f"{where}: does not point at its event (row edited)"

    # -- copied columns (step 4), the slow path that names the column ----------

    def _column_problem(self, label: str, seq: int, body: str) -> str:
        alerts = label != "seq"
        table, names = ("alerts", _ALERT_COPIED_NAMES) if alerts else ("events", _COPIED_NAMES)
        values = _alert_copied_values if alerts else _copied_values
        try:
            content = json.loads(body)
            expected = (content["seq"], *values(content))
        except (ValueError, KeyError, TypeError, AttributeError):
            return (
                f"{label} {seq}: body is not a valid {'alert' if alerts else 'event'} (row edited)"
            )
        stored = self.conn.execute(
            f"SELECT seq, {', '.join(names)} FROM {table} WHERE seq = ?", (seq,)
        ).fetchone()
        for name, want, have in zip(("seq", *names), expected, stored, strict=True):
            if want != have or type(want) is not type(have):
                return f"{label} {seq}: column {name} does not match the body (row edited)"
        return f"{label} {seq}: copied columns do not match the body (row edited)"


def _check_tail(conn: sqlite3.Connection, table: str, after_seq: int) -> None:
    """The rows after `after_seq` must chain on from it (a crashed writer's tail)."""
    row = conn.execute(f"SELECT hash FROM {table} WHERE seq = ?", (after_seq,)).fetchone()
    expected_seq, expected_prev = after_seq + 1, GENESIS_HASH if row is None else row[0]
    rows = conn.execute(
        f"SELECT seq, prev_hash, hash, body FROM {table} WHERE seq > ? ORDER BY seq", (after_seq,)
    )
    for seq, prev_hash, digest, body in rows:
        if (
            seq != expected_seq
            or prev_hash != expected_prev
            or chain_hash(prev_hash, body) != digest
        ):
            label = "seq" if table == "events" else "alert seq"
            raise TamperError(
                f"the unsealed tail does not chain on from the last checkpoint at {label} {seq}; "
                "run docktrail verify"
            )
        expected_seq, expected_prev = seq + 1, digest


def _trigger_problem(db: Database) -> Problem | None:
    present = db.triggers_dict
    for name, sql in TRIGGERS.items():
        if name not in present:
            return None, f"append-only trigger {name} is missing (dropped)"
        if _squash(present[name]) != _squash(sql):
            return None, f"append-only trigger {name} was altered"
    return None


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()
