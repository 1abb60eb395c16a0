"""SQL that finds actors' events through the actor index (`sinks.sqlite.actors`,
migration 0014): in the buckets of seqs where the `actors` table says it has events.

The events are indexed by `(seq >> BUCKET_BITS, actor_id)` and `(seq >> BUCKET_BITS,
container)`: there is no index keyed by an id alone. SQLite uses those indexes only
where a query names the very expression of the index (`actors.BUCKET`, on `events.seq`)
equal to a value, so every look-up here is one index search per bucket: those of the
actor's `actors` rows (one per bucket it has events in), and those after `through_seq`,
whose rows may be in no table yet (an older docktrail stored them).

`ActorIndex` is what a query needs to know of a trail that has the index; a trail
without it (read-only storage, from before the migration) is queried with the SQL of
before, through the per-id indexes it still has.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sinks.sqlite.actors import BUCKET, BUCKET_BITS, last_event_seq, present, through_seq

# Evaluated once per statement (an uncorrelated scalar subquery): a rowid look-up.
HEAD_BUCKET = f"((SELECT max(seq) FROM events) >> {BUCKET_BITS})"
BUCKET_ORDER = f"{BUCKET}, seq"
"""The order of a bucketed walk: seq order, which SQLite reads off the index bucket by
bucket (with `ORDER BY seq` it would collect and sort every match first)."""


@dataclass(frozen=True, slots=True)
class ActorIndex:
    """A trail with the actor index, as a query reads it."""

    through_seq: int  # the rows after it may be in no table yet: they are read directly
    behind: bool = True  # there are rows after it (else no query looks for them by bucket)

    @property
    def tail_from(self) -> int | None:
        """`through_seq` when rows follow it, for `in_buckets`' `through`; else None."""
        return self.through_seq if self.behind else None


def actor_index(conn: sqlite3.Connection) -> ActorIndex | None:
    """The trail's `ActorIndex`, None when it has no actor index."""
    return index_of(conn) if present(conn) else None


def index_of(conn: sqlite3.Connection) -> ActorIndex:
    """The `ActorIndex` of a trail known to have the index (`through_seq` moves with every
    write: read for each query)."""
    through = through_seq(conn)
    head = last_event_seq(conn)
    return ActorIndex(through, behind=through < head)


def in_buckets(
    where: str, params: Sequence[Any] = (), through: int | None = None
) -> tuple[str, list[Any]]:
    """The condition: the event is in a bucket of an `actors` row meeting `where`, with
    `params` (and, given `through`, in one after it: rows an older docktrail stored).

    The buckets are walked by a recursive CTE, each the least above the last (a search
    of the primary key each): with it, SQLite searches the bucketed index for each
    bucket (and value of `actor_id` or `container`, equal, in a list or a range), in
    bucket order (`BUCKET_ORDER`). Given as `IN (SELECT bucket FROM actors ...)`, or
    through a join, the planner scans the index instead (it has no statistics)."""
    walked = (
        f"WITH RECURSIVE walked(n) AS (SELECT min(bucket) FROM actors WHERE {where} "
        f"UNION ALL SELECT (SELECT min(bucket) FROM actors WHERE {where} AND bucket > n) "
        "FROM walked WHERE n IS NOT NULL) SELECT n FROM walked"
    )
    sql_params = [*params, *params]
    if through is not None:
        walked += f" UNION ALL {tail_buckets('?')}"  # IN: a bucket twice is once
        sql_params.append(through)
    return f"{BUCKET} IN ({walked})", sql_params


def tail_buckets(through: str) -> str:
    """A SELECT of the buckets of the rows after seq `through` (an SQL expression), none
    when there are none: those an older docktrail stored without the tables."""
    return (  # `through` once: it may be a parameter
        f"SELECT n FROM (WITH RECURSIVE after(seq) AS (SELECT {through}), tail(n) AS "
        f"(SELECT (seq + 1) >> {BUCKET_BITS} FROM after WHERE seq < (SELECT max(seq) FROM events) "
        f"UNION ALL SELECT n + 1 FROM tail WHERE n < {HEAD_BUCKET}) SELECT n FROM tail)"
    )


def walk(where: str, params: Sequence[Any], condition: str) -> tuple[str, list[Any]]:
    """A SELECT of the seqs of the events meeting `condition` (on the index's second
    column, and any other) in the buckets of the `actors` rows meeting `where`."""
    clause, sql_params = in_buckets(where, params)
    return f"SELECT seq FROM events WHERE {clause} AND {condition}", sql_params


ONE_ACTOR = "actor_id = ? AND via = 'actor_id'"
BUCKET_AND_ACTOR = f"({BUCKET} = ? AND actor_id = ?)"
"""One actor's events in one bucket: as an OR term of several, a search each."""


def one_actor(actor: str, through: int | None) -> tuple[str, list[Any]]:
    """The condition: the event is `actor`'s (its own, as `actor_id`), searched in the
    buckets it has rows for and those after `through` (None: none); read in
    `BUCKET_ORDER`."""
    clause, params = in_buckets(ONE_ACTOR, [actor], through)
    return f"{clause} AND actor_id = ?", [*params, actor]
