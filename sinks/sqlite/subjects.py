"""Who a filter names, as SQL on either layout of the trail: a container (the names it
bore through renames, id prefixes, the events whose `container` column names it) and
an image (the events that name it, and its own events by name). With the actor index
(migration 0014) through its tables and seq buckets; without it (a read-only trail of
before), through the old per-column indexes.
"""

from __future__ import annotations

from typing import Any

import sinks.sqlite.bucketed as bucketed
from sinks.filtering import glob_prefix, is_glob
from sinks.sqlite.actors import VIAS
from sinks.sqlite.bucketed import ActorIndex
from sinks.sqlite.sqlterms import Term, any_term, marks, prefix_sql


def container_sql(
    values: tuple[str, ...], actor_index: ActorIndex | None = None
) -> tuple[str, list[Any]]:
    """Events of the containers named (names through renames) or id-prefixed by `values`."""
    if actor_index is not None:
        return _indexed_container_sql(values, actor_index)
    # A flat OR of indexable terms lets SQLite answer each term from its own index.
    # `+type` keeps the planner off the (type, action) index, which for a common
    # type would mean scanning every container event.
    names = marks(values)
    terms = [f"(+type = 'container' AND actor_name IN ({names}))"]
    params: list[Any] = list(values)
    for column, typed in (("actor_id", "+type = 'container' AND "), ("container", "")):
        for value in values:
            prefix, prefix_params = prefix_sql(column, value)
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
    renamed, old = _renamed_sql(names)
    sql = (
        "SELECT actor_id FROM events WHERE +type = 'container' "
        f"AND actor_name IN ({marks(names)}) UNION {renamed}"
    )
    return sql, [*names, *old]


def _renamed_sql(names: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The ids of the containers renamed from one of `names` (through the (type,
    action) index: renames are few), and its parameters."""
    old = (*names, *(f"/{name}" for name in names))
    sql = (
        "SELECT actor_id FROM events WHERE type = 'container' AND action = 'rename' "
        f"AND json_extract(body, '$.attributes.oldName') IN ({marks(old)})"
    )
    return sql, old


def _indexed_container_sql(values: tuple[str, ...], index: ActorIndex) -> tuple[str, list[Any]]:
    """`container_sql` through the actor index: the ids named (`_named_cte`) and each
    id prefix, through each column, walked in the buckets they have rows for; the
    rows not in the tables yet (`through_seq`) read as they are, where the terms of
    `container_sql` decide."""
    named = Term("actor_id IN (SELECT id FROM named)", [])
    walks = [_walk(via, named, Term(f"{via} IN (SELECT id FROM named)", [])) for via in VIAS]
    tail = [
        Term("(+type = 'container' AND actor_id IN (SELECT id FROM named))", []),
        Term("container IN (SELECT id FROM named)", []),
    ]
    for value in values:
        for via in VIAS:
            rows = Term(*prefix_sql(via, value))
            walks.append(_walk(via, Term(*prefix_sql("actor_id", value)), rows))
            tail.append(Term(f"{_TYPED[via]}{rows.clause}", rows.params))
    rest, rest_params = any_term(tail)
    past = f"SELECT seq FROM events WHERE seq > ? AND {rest}"
    walks.append(Term(past, [index.through_seq, *rest_params]))
    cte = _named_cte(values, index)
    sql = f"WITH {cte.clause} " + " UNION ALL ".join(walk.clause for walk in walks)
    return f"seq IN ({sql})", [*cte.params, *(param for walk in walks for param in walk.params)]


_TYPED = {"actor_id": "+type = 'container' AND ", "container": ""}  # as `container_sql`


def _walk(via: str, ids: Term, rows: Term) -> Term:
    """The events whose column `via` names an id of `ids` (a condition on the ids in
    `actors`; `rows`: the same on the events' column), in the buckets the ids have rows
    for: an index search per bucket (and id, when they are a list)."""
    walk, params = bucketed.walk(
        f"via = '{via}' AND {ids.clause}", ids.params, _TYPED[via] + rows.clause
    )
    return Term(walk, [*params, *rows.params])


def _named_cte(values: tuple[str, ...], index: ActorIndex) -> Term:
    """CTE `named(id)`: `_ids_named_sql` through the actor index, the names from
    `actor_names` and from the rows not in it yet."""
    names = marks(values)
    renamed, old = _renamed_sql(values)
    sql = (
        "named(id) AS (SELECT actor_id FROM actor_names WHERE name IN "
        f"({names}) AND type = 'container' UNION {renamed} UNION SELECT actor_id FROM "
        f"events WHERE seq > ? AND +type = 'container' AND actor_name IN ({names}))"
    )
    return Term(sql, [*values, *old, index.through_seq, *values])


def image_sql(value: str, actor_index: ActorIndex | None = None) -> tuple[str, list[Any]]:
    terms = image_terms(value, actor_index)
    if actor_index is None:
        return any_term(terms)
    # One OR term of the by-name ones: as a flat OR, the planner would scan.
    image, *by_name = terms
    union = " UNION ALL ".join(f"SELECT seq FROM events WHERE {term.clause}" for term in by_name)
    by_name_params = [param for term in by_name for param in term.params]
    return any_term([image, Term(f"seq IN ({union})", by_name_params)])


def image_terms(value: str, actor_index: ActorIndex | None = None) -> list[Term]:
    """The event's image, or (an image's own events) its name: one term each, or, through
    the actor index, a term of the name's ids and one of the rows not in it yet."""
    if actor_index is not None:
        return [_image_term(value), *_indexed_image_name_terms(value, actor_index)]
    if not is_glob(value):
        return [_image_term(value), Term("+type = 'image' AND actor_name = ?", [value])]
    # GLOB plus the literal prefix as a range: the range is what uses the index.
    name_range, name_params = prefix_sql("actor_name", glob_prefix(value))
    by_name = f"+type = 'image' AND actor_name GLOB ? AND {name_range}"
    return [_image_term(value), Term(by_name, [value, *name_params])]


def _image_term(value: str) -> Term:
    if not is_glob(value):
        return Term("actor_image = ?", [value])
    image_range, image_params = prefix_sql("actor_image", glob_prefix(value))
    return Term(f"actor_image GLOB ? AND {image_range}", [value, *image_params])


def _indexed_image_name_terms(value: str, index: ActorIndex) -> list[Term]:
    """An image's events by name: those of the ids `actor_names` says bore it, walked
    in the buckets they have rows for, in seq order; and the rows after
    `through_seq`, read as they are."""
    if is_glob(value):
        name_range, range_params = prefix_sql("name", glob_prefix(value))
        names, name_params = f"{name_range} AND name GLOB ?", [*range_params, value]
        row = "actor_name GLOB ?"
    else:
        names, name_params, row = "name = ?", [value], "actor_name = ?"
    ids = f"SELECT actor_id FROM actor_names WHERE {names} AND type = 'image'"
    buckets, bucket_params = bucketed.in_buckets(
        f"via = 'actor_id' AND actor_id IN ({ids})", name_params
    )
    walk = f"{buckets} AND actor_id IN ({ids}) AND +type = 'image' AND {row}"
    return [
        Term(walk, [*bucket_params, *name_params, value], bucketed.BUCKET_ORDER),
        Term(f"seq > ? AND +type = 'image' AND {row}", [index.through_seq, value]),
    ]
