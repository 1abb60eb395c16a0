"""The label index: which actors ever carried a label, so `query -f label=` need not
read every body (migration `0011_label_index`).

Derived from the hashed bodies, never the other way round. An event's labels are the
text values of its `attributes.labels` object, as `sinks.filtering` matches them. Two
append-only tables hold them:

- `labels (id, key, value)`: each distinct label once;
- `label_actors (label, actor_seq)`: the label was on an event of the actor whose first
  event in the trail is at `actor_seq`. The actor is named by that seq rather than by
  its id: about 10 bytes a row instead of about 80 (a container carries every label on
  every event, so the rows are per actor, not per event).

A query uses them only to narrow where it looks; every event it returns is still
matched on its body. A row too many costs a look, never a wrong answer. A row too few
would hide events: `verify` looks for that (`Completeness`), checking every event's
labels as it walks the chain, with the same derivation as the migration's.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sinks.sqlite.bucketed as bucketed
from sinks.base import values_of
from sinks.sqlite.actors import through_seq
from sinks.sqlite.bucketed import ActorIndex

TABLES = ("labels", "label_actors")
CREATE = (
    "CREATE TABLE labels (id INTEGER PRIMARY KEY, key TEXT NOT NULL, value TEXT NOT NULL, "
    "UNIQUE (key, value))",
    "CREATE TABLE label_actors (label INTEGER NOT NULL, actor_seq INTEGER NOT NULL, "
    "PRIMARY KEY (label, actor_seq)) WITHOUT ROWID",
)

# Every (actor, labels) pair of the trail once, the labels as JSON (`->` keeps a string
# a JSON string, so `json_each` never reads a bare text as JSON), and each label of it.
# `json_each` of an object yields text keys; of an array, integer ones; of a scalar,
# none: only an object's members with text values are labels.
_CARRIED = (
    "FROM (SELECT DISTINCT actor_id, body -> '$.attributes.labels' AS labels FROM events) "
    "AS carried, json_each(carried.labels) AS label"
)
_IS_LABEL = "typeof(label.key) = 'text' AND label.type = 'text'"
_FIRST_SEQ = "(SELECT min(seq) FROM events AS first WHERE first.actor_id = {actor})"
# The same from the actor index (migration 0014), which has no index on `actor_id` alone.
_INDEXED_FIRST_SEQ = (
    "(SELECT min(first_seq) FROM actors WHERE actor_id = {actor} AND via = 'actor_id')"
)
# An actor only an older docktrail stored (after `actors_through_seq`): its first event
# is after that seq, a range of the rows.
_TAIL_FIRST_SEQ = (
    "(SELECT min(seq) FROM events AS first WHERE first.seq > {through} "
    "AND first.actor_id = {actor})"
)
_THE_LABEL = "labels.key = label.key AND labels.value = label.value"

POPULATE = (
    f"INSERT OR IGNORE INTO labels (key, value) SELECT label.key, label.value "
    f"{_CARRIED} WHERE {_IS_LABEL}",
    "INSERT OR IGNORE INTO label_actors (label, actor_seq) SELECT labels.id, "
    f"{_FIRST_SEQ.format(actor='carried.actor_id')} "
    f"{_CARRIED} JOIN labels ON {_THE_LABEL} WHERE {_IS_LABEL}",
)
"""The migration's fill from the events already stored: the definition of the index."""

# A label of the (actor, labels JSON) pairs given as a JSON array that the index lacks.
# Each pair's actor's first event is looked up once (MATERIALIZED), not once per label.
_MISSING_AMONG = (
    "WITH pair AS MATERIALIZED (SELECT value ->> '$[0]' AS actor, value ->> '$[1]' AS labels, "
    "{first_seq} AS first_seq FROM json_each(?)) "
    f"SELECT pair.actor, label.key, label.value FROM pair, json_each(pair.labels) AS label "
    f"WHERE {_IS_LABEL} AND NOT EXISTS (SELECT 1 FROM labels JOIN label_actors "
    f"ON label_actors.label = labels.id WHERE {_THE_LABEL} "
    "AND label_actors.actor_seq = pair.first_seq) LIMIT 1"
)
CHECK_BATCH = 2_000  # pairs per look-up
CHECKED_KEPT = 8_192  # pairs remembered as checked (about 3 MB); then forgotten, looked up again

_ADD_LABEL = "INSERT OR IGNORE INTO labels (key, value) VALUES (?, ?)"
_LABEL_ID = "SELECT id FROM labels WHERE key = ? AND value = ?"
_ADD_ACTOR = "INSERT OR IGNORE INTO label_actors (label, actor_seq) VALUES (?, ?)"
_ACTOR_SEQ = "SELECT " + _INDEXED_FIRST_SEQ.format(actor="?")  # writers have the actor index
ACTORS_REMEMBERED = 10_000  # a writer's memory of indexed actors (and of label ids)
_FIRST_ACTOR = "SELECT min(actor_seq) FROM label_actors WHERE label = ?"  # the first key
_ACTORS = (  # the ids of the actors whose first events are at the seqs given (JSON)
    "SELECT DISTINCT first.actor_id FROM json_each(?) AS actor "
    "JOIN events AS first ON first.seq = actor.value ORDER BY 1"
)
_EVENTS = (  # the events of those actors, at most ? of them
    "SELECT events.seq FROM json_each(?) AS actor JOIN events AS first "
    "ON first.seq = actor.value JOIN events ON events.actor_id = first.actor_id LIMIT ?"
)
# Through the actor index (migration 0014): the buckets of those actors, and their rows
# an older docktrail stored after `through_seq` (in no table yet).
_ACTOR_BUCKETS = (
    "SELECT bucket, actor_id FROM actors WHERE via = 'actor_id' "
    "AND actor_id IN (SELECT value FROM json_each(?)) ORDER BY bucket"
)
_TAIL_EVENTS = (
    "SELECT seq FROM events WHERE seq > ? AND actor_id IN (SELECT value FROM json_each(?)) LIMIT ?"
)
PAIRS_PER_LOOK_UP = 200  # actors, and OR terms, per statement
FEW_ACTORS = 64
"""Up to this many actors, a page of a label's events is read actor by actor (an index
walk each, stopping at the page's end)."""
CANDIDATES = 10_000
"""Below this many actors, or events of them, they are collected (about 0.6 µs each)."""
SEVERAL_KEYS_FACTOR = 5  # events collected for several keys: 50,000 (about 30 ms)

Labelled = tuple[str, str, str]  # actor id, label key, label value
K = TypeVar("K")
V = TypeVar("V")


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables and fill them from the stored events (about 4 s per 1M events)."""
    for sql in (*CREATE, *POPULATE):
        conn.execute(sql)


def present(conn: sqlite3.Connection) -> bool:
    """Whether this trail has the index (a trail on read-only storage may lack it)."""
    sql = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN (?, ?)"
    return bool(conn.execute(sql, TABLES).fetchone()[0] == len(TABLES))


class LabelWriter:
    """Indexes the labels of the events a writer inserts, in the same transaction.

    It remembers, per actor, the labels it indexed last: a container's events all
    carry its labels, so most events cost a comparison of two dicts. What it learns
    in a transaction counts only once committed (`committed`): a rolled-back batch's
    labels were not indexed, and its retry must index them."""

    def __init__(self) -> None:
        self.indexed: dict[str, dict[str, Any]] = {}  # actor id -> its labels, all indexed
        self.ids: dict[tuple[str, str], int] = {}  # (key, value) -> label id
        self._staged: dict[str, dict[str, Any]] = {}
        self._staged_ids: dict[tuple[str, str], int] = {}

    def stage(self, conn: sqlite3.Connection, contents: Iterable[Mapping[str, Any]]) -> None:
        """Index the labels of events just inserted, in the open transaction."""
        self.discard()
        new: set[Labelled] = set()
        indexed, staged = self.indexed, self._staged  # locals: read for every event
        for content in contents:
            labels = content["attributes"].get("labels")
            if not labels:
                continue
            actor = content["actor"].get("id")
            if indexed.get(actor) == labels or type(labels) is not dict:
                continue
            if staged.get(actor) != labels:
                new.update(
                    (actor, key, value) for key, value in labels.items() if type(value) is str
                )
                staged[actor] = dict(labels)
        if new:
            self._record(conn, new)

    def _record(self, conn: sqlite3.Connection, new: set[Labelled]) -> None:
        unknown = sorted({(key, value) for _, key, value in new} - self.ids.keys())
        conn.executemany(_ADD_LABEL, unknown)
        for pair in unknown:
            self._staged_ids[pair] = conn.execute(_LABEL_ID, pair).fetchone()[0]
        actors = {actor for actor, _, _ in new}  # a look-up per actor, not per label
        first = {actor: conn.execute(_ACTOR_SEQ, (actor,)).fetchone()[0] for actor in actors}
        ids = self.ids | self._staged_ids
        rows = {(ids[key, value], first[actor]) for actor, key, value in new}
        conn.executemany(_ADD_ACTOR, sorted(rows))

    def committed(self) -> None:
        """The transaction of the last `stage` committed: remember what it indexed."""
        _remember(self.indexed, self._staged)
        _remember(self.ids, self._staged_ids)
        self.discard()

    def discard(self) -> None:
        """Forget what the last `stage` did (its transaction rolled back, or none)."""
        self._staged, self._staged_ids = {}, {}


def _remember(known: dict[K, V], learnt: dict[K, V]) -> None:
    if len(known) > ACTORS_REMEMBERED:
        known.clear()  # a big host's history: look them up again
    known.update(learnt)


@dataclass(frozen=True, slots=True)
class LabelPlan:
    """Where the events a label filter selects can be, from the index (the narrowest
    of what is known: `actors`, else `seqs`, else `among`, else `from_seq`)."""

    nothing: bool = False  # some wanted label is on no event
    from_seq: int = 0  # no selected event is before this seq
    actors: tuple[str, ...] | None = None  # every selected event is of one of them (few)
    seqs: str | None = None  # every selected event is at one of these seqs (a JSON array)
    among: str | None = None  # ... is of one of these actors (their ids, a JSON array)
    # A page read in two steps (`plan(..., split=True)`, `rest`): the selected events
    # before `split_seq` are all of the `head` actors (the first FEW_ACTORS to appear:
    # every other one's first event is at `split_seq` or later), read actor by actor;
    # the rest, from `split_seq` on, only when that does not fill the page.
    head: tuple[str, ...] | None = None
    split_seq: int = 0
    chosen: str = "[]"  # the first seqs of every actor it may be (a JSON array), for `rest`
    keys: int = 1  # how many label keys are wanted, for `rest`


def plan(
    conn: sqlite3.Connection,
    wanted: Mapping[str, str | tuple[str, ...]],
    actor_index: ActorIndex | None,
    split: bool = False,
) -> LabelPlan:
    """The `LabelPlan` of `wanted` (key -> value or values; every key must match);
    `actor_index`: the trail's (`bucketed.actor_index`), None when it has none.
    `split`: a page is wanted, and may be read in two steps (`LabelPlan.head`).

    The actors of the key fewest carry, kept when they carry every other key too, are
    read actor by actor when few; at their events when those are fewer than
    `CANDIDATES`; else in seq order from the first of them (for several keys, each
    row's actor looked up among them: they may rarely meet). A key carried by
    `CANDIDATES` actors or more is read in seq order from its first actor's first
    event: it is on at least that many events after it."""
    keys: list[tuple[int, list[int]]] = []
    from_seq = 0
    for key, values in wanted.items():
        ids = _label_ids(conn, key, values_of(values) or ())
        firsts = [first for label in ids for (first,) in conn.execute(_FIRST_ACTOR, (label,))]
        if not any(first is not None for first in firsts):
            return LabelPlan(nothing=True)
        from_seq = max(from_seq, min(first for first in firsts if first is not None))
        keys.append((_actors_up_to(conn, ids, CANDIDATES), ids))
    if not keys:
        return LabelPlan()
    keys.sort(key=lambda counted: counted[0])
    if keys[0][0] >= CANDIDATES:
        return LabelPlan(from_seq=from_seq)
    actor_seqs = _actors_of_all(conn, [ids for _, ids in keys])
    if not actor_seqs:
        return LabelPlan(nothing=True)
    from_seq, chosen = max(from_seq, actor_seqs[0]), json.dumps(actor_seqs)
    if len(actor_seqs) <= FEW_ACTORS:
        return LabelPlan(from_seq=from_seq, actors=tuple(_actor_ids(conn, chosen)))
    if split:  # a page often ends among the first actors' events: the rest is read if not
        head = tuple(_actor_ids(conn, json.dumps(actor_seqs[:FEW_ACTORS])))
        split_seq = actor_seqs[FEW_ACTORS]
        return LabelPlan(
            from_seq=from_seq, head=head, split_seq=split_seq, chosen=chosen, keys=len(keys)
        )
    return _widened(conn, from_seq, chosen, len(keys), actor_index)


def rest(conn: sqlite3.Connection, split: LabelPlan, actor_index: ActorIndex | None) -> LabelPlan:
    """The second step of a `split` plan: where its events from `split.split_seq` on can be."""
    widened = _widened(conn, split.from_seq, split.chosen, split.keys, actor_index)
    return dataclasses.replace(widened, split_seq=split.split_seq)


def _widened(
    conn: sqlite3.Connection,
    from_seq: int,
    chosen: str,
    keys: int,
    actor_index: ActorIndex | None,
) -> LabelPlan:
    """The plan of more than FEW_ACTORS actors (their first seqs: `chosen`, a JSON array)."""
    # One key past CANDIDATES events is on enough rows to read in order; several may
    # meet on few of them, so their actors' events are worth collecting further.
    most = CANDIDATES if keys == 1 else CANDIDATES * SEVERAL_KEYS_FACTOR
    seqs = set(_events_of(conn, chosen, most, actor_index))
    if len(seqs) < most:
        return LabelPlan(from_seq=from_seq, seqs=json.dumps(sorted(seqs)))
    if keys == 1:  # the key's own density: a body test of each row costs no more
        return LabelPlan(from_seq=from_seq)
    return LabelPlan(from_seq=from_seq, among=json.dumps(_actor_ids(conn, chosen)))


def _actors_of_all(conn: sqlite3.Connection, keys: Sequence[list[int]]) -> list[int]:
    """The actors (first seqs, in order) of the first key's labels that carried one of
    each other key's labels too: each a look-up in the index, never a set of them all."""
    sql = (
        f"SELECT DISTINCT actor_seq FROM label_actors AS carrier WHERE label IN ({_marks(keys[0])})"
    )
    params: list[int] = list(keys[0])
    for ids in keys[1:]:
        sql += (
            " AND EXISTS (SELECT 1 FROM label_actors AS other WHERE other.label "
            f"IN ({_marks(ids)}) AND other.actor_seq = carrier.actor_seq)"
        )
        params.extend(ids)
    return [row[0] for row in conn.execute(sql + " ORDER BY actor_seq", params)]


def _events_of(
    conn: sqlite3.Connection, actor_seqs: str, most: int, actor_index: ActorIndex | None
) -> list[int]:
    """Seqs of events of the actors whose first events are at `actor_seqs` (JSON), at
    most `most` of them (all of them when fewer)."""
    if actor_index is None:
        return [row[0] for row in conn.execute(_EVENTS, (actor_seqs, most))]
    # An index search per (actor, bucket) row, as OR terms of constants (SQLite then
    # searches the bucketed index for each; a join or an `IN` of the buckets it scans),
    # then the rows after `through_seq`, which may be in no table yet.
    # A chunk of actors at a time: their ids are row look-ups, stopped at `most` events.
    found: list[int] = []
    firsts = json.loads(actor_seqs)
    for start in range(0, len(firsts), PAIRS_PER_LOOK_UP):
        ids = json.dumps(_actor_ids(conn, json.dumps(firsts[start : start + PAIRS_PER_LOOK_UP])))
        found += _bucketed_events(conn, ids, most - len(found))
        if actor_index.behind:
            tail = conn.execute(_TAIL_EVENTS, (actor_index.through_seq, ids, most - len(found)))
            found += [row[0] for row in tail]
        if len(found) >= most:
            break
    return found


def _bucketed_events(conn: sqlite3.Connection, ids: str, most: int) -> list[int]:
    """Seqs of the events of the actors `ids` (JSON) in the buckets they have rows for,
    at most `most`."""
    pairs = [tuple(row) for row in conn.execute(_ACTOR_BUCKETS, (ids,))]
    found: list[int] = []
    for start in range(0, len(pairs), PAIRS_PER_LOOK_UP):
        chunk = pairs[start : start + PAIRS_PER_LOOK_UP]
        terms = " OR ".join([bucketed.BUCKET_AND_ACTOR] * len(chunk))
        params = [value for pair in chunk for value in pair]
        sql = f"SELECT seq FROM events WHERE {terms} LIMIT ?"
        found += [row[0] for row in conn.execute(sql, (*params, most - len(found)))]
        if len(found) >= most:
            break
    return found


def _actor_ids(conn: sqlite3.Connection, actor_seqs: str) -> list[str]:
    return [row[0] for row in conn.execute(_ACTORS, (actor_seqs,))]


def _label_ids(conn: sqlite3.Connection, key: str, values: Sequence[str]) -> list[int]:
    sql = f"SELECT id FROM labels WHERE key = ? AND value IN ({_marks(values)})"
    return [row[0] for row in conn.execute(sql, (key, *values))]


class Completeness:
    """Verify's check that the index holds every label of the events it is shown.

    The chain walk reads each event's actor and labels (its SQL extracts them from a
    body it parses anyway) and hands on a pair not in `seen`: a container's events all
    carry its labels, so most are. New pairs are looked up `CHECK_BATCH` at a time."""

    def __init__(self, conn: sqlite3.Connection, actor_index: bool = True) -> None:
        self.conn = conn
        # An older docktrail's rows past `actors_through_seq` are not in the actor index
        # yet: their actors' first seqs are scanned for (short-circuit: only for those).
        first_seq = _FIRST_SEQ
        if actor_index:
            tail = _TAIL_FIRST_SEQ.format(through=through_seq(conn), actor="{actor}")
            first_seq = f"coalesce({_INDEXED_FIRST_SEQ}, {tail})"
        self._missing_among = _MISSING_AMONG.format(
            first_seq=first_seq.format(actor="value ->> '$[0]'")
        )
        self.seen: set[tuple[str, str]] = set()  # checked, or about to be
        self.pending: list[tuple[str, str]] = []
        self.missing: Labelled | None = None

    def add(self, pair: tuple[str, str]) -> None:
        """An event's actor id and `attributes.labels` as JSON, not in `seen`."""
        if len(self.seen) > CHECKED_KEPT:  # forget what was checked: a later sight costs a look
            self.seen.clear()
            self.seen.update(self.pending)
        self.seen.add(pair)
        self.pending.append(pair)
        if len(self.pending) >= CHECK_BATCH:
            self.finish()

    def finish(self) -> Labelled | None:
        """Look up what is pending; the first label found missing, if any."""
        if self.pending and self.missing is None:
            row = self.conn.execute(self._missing_among, (json.dumps(self.pending),)).fetchone()
            self.missing = None if row is None else (str(row[0]), str(row[1]), str(row[2]))
        self.pending = []
        return self.missing


def _actors_up_to(conn: sqlite3.Connection, ids: Sequence[int], most: int) -> int:
    """How many actors carry one of the labels `ids`, counted up to `most` only: a
    project's label on every container would be a count of 770,000 rows at 10M events."""
    sql = (
        f"SELECT count(*) FROM (SELECT 1 FROM label_actors WHERE label IN ({_marks(ids)}) LIMIT ?)"
    )
    return int(conn.execute(sql, (*ids, most)).fetchone()[0])


def _marks(values: Sequence[object]) -> str:
    return ", ".join("?" * len(values))
