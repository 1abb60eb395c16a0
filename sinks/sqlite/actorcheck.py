"""Verify's checks of the actor index (migration 0014, `sinks.sqlite.actors`), beside
the chain walk's probe of every row (`schema.verify_event_rows`).

What would hide events is a row missing or a first seq too late: the walk finds that
at the event it would hide, and `row_problem` says which table lacks what. What
would misname an actor is a first seq too early: the label index names an actor by
its first event's seq, read from `actors`. `first_seq_problem` checks that every
row's first seq is an event naming that id through that column; with the walk's
check (a first seq at or before every such event), each is then the true first.

Not checked as such: a row naming an id or a name that no event has. It costs a
look-up and hides nothing (queries match every event on its row). An `actors` row of
that kind is found all the same (its first seq names no such id); an `actor_names`
one is not looked for: that would be a second pass over the events.
"""

from __future__ import annotations

import sqlite3

from sinks.sqlite.actors import BUCKET_BITS
from sinks.trailcheck import Finding

# Each column that names an actor (`actors.VIAS`), and what the messages call the id.
_WHAT = {"actor_id": "actor", "container": "container"}
_HIDES = "query -f container= would not find its events"
_ROW = "SELECT actor_id, container, actor_name, type FROM events WHERE seq = ?"
_FIRST = "SELECT first_seq FROM actors WHERE actor_id = ? AND via = ? AND bucket = ?"
_NAMED = "SELECT 1 FROM actor_names WHERE name = ? AND type = ? AND actor_id = ?"
# A row whose first seq is no event naming its id through its column, or not in its
# bucket. `IS NOT`: an event missing (NULL) or a `via` that is no column (NULL) is such
# a row too. The first in seq order: every row is read anyway (one seq look-up each).
_INEXACT = (
    "SELECT actors.actor_id, actors.via, actors.first_seq, events.seq IS NOT NULL "
    "FROM actors LEFT JOIN events ON events.seq = actors.first_seq "
    "WHERE (CASE actors.via WHEN 'actor_id' THEN events.actor_id "
    "WHEN 'container' THEN events.container END) IS NOT actors.actor_id "
    f"OR actors.first_seq >> {BUCKET_BITS} IS NOT actors.bucket "
    "ORDER BY actors.first_seq LIMIT 1"
)


def row_problem(conn: sqlite3.Connection, seq: int, through: int) -> str:
    """Which of the index's rows event `seq` lacks (the walk's probe found one lacking;
    `through`: `actors.through_seq`, past which a missing row is no problem)."""
    actor, container, name, kind = conn.execute(_ROW, (seq,)).fetchone()
    for named, via in ((actor, "actor_id"), (container, "container")):
        problem = None if named is None else _id_problem(conn, seq, through, named, via)
        if problem is not None:
            return problem
    if name is not None and seq <= through and not _named(conn, name, kind, actor):
        return (
            f"seq {seq}: the actor index has no name {name} ({kind}) for actor {actor} "
            f"(actor_names table edited: {_HIDES} by that name)"
        )
    return f"seq {seq}: the actor index does not hold this event (actor tables edited)"


def _named(conn: sqlite3.Connection, name: str, kind: str, actor: str) -> bool:
    return conn.execute(_NAMED, (name, kind, actor)).fetchone() is not None


def _id_problem(
    conn: sqlite3.Connection, seq: int, through: int, named: str, via: str
) -> str | None:
    row = conn.execute(_FIRST, (named, via, seq >> BUCKET_BITS)).fetchone()
    what = f"{_WHAT[via]} {named}"
    if row is None:
        if seq > through:  # not in the index yet: an older docktrail stored the event
            return None
        return f"seq {seq}: the actor index has no row for {what} (actors table edited: {_HIDES})"
    first = row[0]
    if isinstance(first, int | float) and first <= seq:  # as SQL compares: text is later
        return None
    return (
        f"seq {seq}: the actor index has {what} first at seq {first}, after this event "
        f"(actors table edited: {_HIDES} before it)"
    )


def first_seq_problem(conn: sqlite3.Connection) -> Finding | None:
    """A row of `actors` whose first seq is not an event naming its id (too early: the
    label index would name the wrong actor by it), the first in seq order."""
    row = conn.execute(_INEXACT).fetchone()
    if row is None:
        return None
    named, via, first, is_event = row
    what = f"{_WHAT.get(via, f'id (through {via})')} {named}"
    if not is_event:
        return Finding(
            f"the actor index has {what} first at seq {first}, which is no event "
            "(actors table edited)"
        )
    misnames = ": the label index would name another actor by it" if via == "actor_id" else ""
    return Finding(
        f"seq {first}: the actor index has {what} first at this event, which does not "
        f"name it (actors table edited{misnames})",
        first,
    )


def tail_note(through: int, last_seq: int) -> str | None:
    """What an auditor should know of the events after `through` (`actors.through_seq`)."""
    if last_seq <= through:  # a through seq past the head only means nothing is missing
        return None
    return (
        f"{last_seq - through} events after seq {through} are not in the actor index yet "
        "(stored by an older docktrail); the next writer adds them"
    )
