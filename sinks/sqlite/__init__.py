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
    queries return. Null fields of the model (top level, ``actor``, ``who``,
    ``why``) are left out (``listener.model.event.compact``); rows written
    before that hold them, and each row is hashed and verified as stored.
    ``prev_hash``, ``hash``: ``hash = sha256(prev_hash ‖ body)``, hex;
    ``prev_hash`` of seq 1 is 64 zeros (``GENESIS_HASH``).
    ``id, time_ns, source, host, type, action, actor_id, actor_name,
    actor_image, who_login, who_user, container``: copies of body fields
    (``container`` is ``attributes.container`` when it is a string), kept as
    plain columns so that filters use indexes. They are not hashed, so
    ``verify`` checks each against the body (see below).
    Index ``events_exec_id`` (migration ``0010_exec_id_index``, for
    ``query -f session=``) is on ``json_extract(body, '$.attributes.execID')``
    of the exec events (``action GLOB 'exec*'``): computed from the hashed
    body, nothing copied. A trail on read-only storage may lack it
    (``index_only``), as it may lack the label index.

``labels(id, key, value)``, ``label_actors(label, actor_seq)`` (migration
``0011_label_index``, for ``query -f label=``; append-only)
    Each distinct label once, and for each the actors whose events carried it,
    an actor being named by the seq of its first event. Derived from the
    hashed bodies (``sinks.sqlite.labels``): queries use it to narrow where
    they look and still match every event on its body; ``verify`` checks that
    it holds every label of every event it walks.

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
   then, once migration ``0014_actor_index`` is applied, the actor index holds
   the row: ``actors`` rows for its actor and the container it names, each with
   a ``first_seq`` at or before it, and its ``actor_names`` row (else: rows
   deleted or moved, and ``query -f container=`` would miss events). Rows past
   ``meta.actors_through_seq`` (an older docktrail's) may lack them: a note;
5. each checkpoint taking effect at this seq: numbered one after the other,
   its seq and alerts seq not below those of the checkpoint before, made
   for this trail's ``trail_id``, its signature (over both heads) valid
   under the verifying key (the public half of the signing key, or the
   auditor's public key file), and its hash equal to the row's hash.

For each alert row, steps 1 to 4 likewise (messages say "alert seq N"; no actor
index), then:

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
migrations create on an empty database, ``PRAGMA integrity_check`` (run on a
second read-only connection while the chains are walked: it costs as much as
the walk), every ``actors.first_seq`` an event naming that id (with step 4:
the true first, by which the label index names actors), the label index's
completeness, and the
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

from sinks.chain import VerifyReport
from sinks.signing import Checkpoint
from sinks.sqlite.queries import build_alert_query, build_query
from sinks.sqlite.schema import MIGRATIONS, TRIGGERS, apply_migrations
from sinks.sqlite.trail import SQLiteTrail
from sinks.sqlite.verification import Pins, verify_file

__all__ = [
    "MIGRATIONS",
    "TRIGGERS",
    "Checkpoint",
    "Pins",
    "SQLiteTrail",
    "VerifyReport",
    "apply_migrations",
    "build_alert_query",
    "build_query",
    "verify_file",
]
