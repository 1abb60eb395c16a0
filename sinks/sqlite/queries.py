"""Filters as SQL (what `sinks.filtering` means, in an index-friendly form) and rows
back to events and alerts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

import sinks.sqlite.bucketed as bucketed
import sinks.sqlite.subjects as subjects
from config.errors import TamperError
from listener.model.alert import Alert
from listener.model.event import Event
from sinks.base import (
    AlertFilter,
    EventFilter,
    Wanted,
    severities_at_least,
    values_of,
)
from sinks.filtering import glob_prefix, is_glob
from sinks.sqlite.bucketed import ActorIndex
from sinks.sqlite.labels import LabelPlan
from sinks.sqlite.sqlterms import Term, any_term, marks, prefix_sql

_MAX_TIME_NS = 2**63 - 1


def build_query(
    f: EventFilter,
    columns: str = "seq, body, prev_hash, hash",
    labels: LabelPlan | None = None,
    actor_index: ActorIndex | None = None,
) -> tuple[str, list[Any]]:
    """SQL and parameters selecting what `sinks.filtering.matches` selects, in seq order.

    `labels`: where the label index says `f.labels` can match (`sinks.sqlite.labels.plan`);
    None reads every body's labels (a trail without the index). `actor_index`: the
    trail has the actor index (`sinks.sqlite.bucketed.actor_index`); None: it has the
    per-id indexes of before (a read-only trail from before migration 0014)."""
    if labels is not None and labels.nothing:  # seq starts at 1: a search that finds nothing
        return _select(columns, "events", ["seq < 1"], [], f.limit)
    if f.limit is not None and _pages_by_subject(f):
        return _first_page(f, columns, f.limit, labels, actor_index)
    if f.limit is not None and labels is not None and labels.actors is not None:
        return _pages_by_actor(f, columns, f.limit, labels.actors, actor_index)
    if f.limit is not None and labels is not None and labels.head is not None:
        # A parameter, not in the text: one compiled statement serves every page (the
        # connection keeps 128, and one of 64 walks is large).
        before = Term("seq < ?", [labels.split_seq])
        return _pages_by_actor(f, columns, f.limit, labels.head, actor_index, before)
    where, params = _event_where(f, labels=labels, actor_index=actor_index)
    return _select(columns, "events", where, params, f.limit)


def _pages_by_subject(f: EventFilter) -> bool:
    """A user or image filter without the narrower container or time range."""
    narrower = (f.container, f.since_ns, f.until_ns)
    subject = f.user is not None or f.image is not None
    return subject and all(value is None for value in narrower)


def _first_page(
    f: EventFilter,
    columns: str,
    limit: int,
    labels: LabelPlan | None,
    actor_index: ActorIndex | None,
) -> tuple[str, list[Any]]:
    """A page of a user or image filter: the first `limit` of each index, merged.

    Either filter is an OR of two indexed terms (login or user; image or image
    name), which SQLite answers by collecting every match and sorting it, even
    for LIMIT 100 of a login with millions of events. Each term alone walks its
    index in seq order and stops at `limit`; the first `limit` of the union
    are among those.
    """
    wanted: Wanted
    terms: Callable[[str], list[Term]]
    if f.user is not None:
        wanted, terms = f.user, _user_terms
        rest = dataclasses.replace(f, limit=None, user=None)
    else:
        wanted, terms = f.image, functools.partial(subjects.image_terms, actor_index=actor_index)
        rest = dataclasses.replace(f, limit=None, image=None)
    where, params = _event_where(rest, narrowed=True, labels=labels, actor_index=actor_index)
    branches = [
        Term(" AND ".join([*where, term.clause]), params + term.params, term.order)
        for value in values_of(wanted)
        for term in terms(value)
    ]
    return _merged_pages("events", columns, branches, limit)


def _pages_by_actor(
    f: EventFilter,
    columns: str,
    limit: int,
    actors: tuple[str, ...],
    actor_index: ActorIndex | None,
    also: Term | None = None,
) -> tuple[str, list[Any]]:
    """A page of a label filter whose labels few actors carry: each actor's first
    `limit` (an actor-id index walk in seq order), merged. An `IN` of the actors would
    collect every event of theirs and sort it: a container's millions of health checks.
    `also`: conditions every event must meet too."""
    rest = dataclasses.replace(f, limit=None)
    where, params = _event_where(rest, narrowed=True, actor_index=actor_index)
    if also is not None:
        where, params = [*where, also.clause], [*params, *also.params]
    branches = [
        Term(" AND ".join([*where, term.clause]), params + term.params, term.order)
        for term in map(functools.partial(_actor_walk, actor_index=actor_index), actors)
    ]
    return _merged_pages("events", columns, branches, limit)


def _actor_walk(actor: str, actor_index: ActorIndex | None) -> Term:
    """One actor's events, walked in seq order (an index walk that stops at the page's
    end): bucket by bucket from its first, through the actor index."""
    if actor_index is None:
        return Term("actor_id = ?", [actor])
    return Term(*bucketed.one_actor(actor, actor_index.tail_from), bucketed.BUCKET_ORDER)


def _merged_pages(
    table: str, columns: str, branches: list[Term], limit: int
) -> tuple[str, list[Any]]:
    """The first `limit` rows of the union of `branches` (each: its conditions, AND-ed)."""
    selects: list[str] = []
    params: list[Any] = []
    for branch in branches:
        where = [branch.clause] if branch.clause else []
        sql, sql_params = _select("seq", table, where, list(branch.params), limit, branch.order)
        selects.append(f"SELECT seq FROM ({sql})")
        params.extend(sql_params)
    union = " UNION ALL ".join(selects)
    return _select(columns, table, [f"seq IN ({union})"], params, limit)


def _event_where(
    f: EventFilter,
    narrowed: bool = False,
    labels: LabelPlan | None = None,
    actor_index: ActorIndex | None = None,
) -> tuple[list[str], list[Any]]:
    """The conditions of `f` (all must hold) and their parameters."""
    where: list[str] = []
    params: list[Any] = []
    # Without statistics SQLite favours the (type, action) index even when a far
    # more selective one applies; `+` leaves type/action to the other indexes then.
    narrower = (f.container, f.image, f.user, f.since_ns, f.until_ns)
    narrowed = narrowed or labels is not None
    plus = "+" if narrowed or any(value is not None for value in narrower) else ""
    equal = (
        (f"{plus}type", f.type),
        (f"{plus}action", f.action),
        ("source", f.source),
        ("host", f.host),
    )
    for column, wanted in equal:
        _add_any_of(where, params, wanted, functools.partial(_equal_sql, column))
    bounds = (("time_ns >= ?", f.since_ns), ("time_ns < ?", f.until_ns), ("seq > ?", f.after_seq))
    if f.since_ns is not None and f.until_ns is None:
        # Without an upper bound the planner scans the whole table in seq order
        # rather than range-search the time index; every stored time is below this.
        where.append(f"time_ns <= {_MAX_TIME_NS}")
    for clause, number in bounds:
        if number is not None:
            where.append(clause)
            params.append(number)
    container = functools.partial(subjects.container_sql, actor_index=actor_index)
    _add_all_of(where, params, f.container, container)
    _add_any_of(
        where, params, f.image, functools.partial(subjects.image_sql, actor_index=actor_index)
    )
    _add_any_of(where, params, f.user, _user_sql)
    for key, wanted in f.labels.items():
        _add_any_of(where, params, wanted, functools.partial(_label_sql, key))
    if labels is not None:
        _add_label_bounds(where, params, labels, actor_index)
    _add_any_of(where, params, f.session, _session_sql)
    return where, params


def _add_label_bounds(
    where: list[str], params: list[Any], labels: LabelPlan, actor_index: ActorIndex | None
) -> None:
    """Where the label index says the labels can match; the bodies still decide."""
    if labels.head is not None:  # the first step of a page read in two: before split_seq
        first = dataclasses.replace(labels, actors=labels.head, head=None, split_seq=0)
        _add_label_bounds(where, params, first, actor_index)
        where.append("seq < ?")
        params.append(labels.split_seq)
        return
    if labels.actors is not None and actor_index is not None:  # few: an exact walk each
        walks = [bucketed.one_actor(actor, actor_index.tail_from) for actor in labels.actors]
        union = " UNION ALL ".join(f"SELECT seq FROM events WHERE {walk}" for walk, _ in walks)
        where.append(f"seq IN ({union})")
        params.extend(param for _, walk_params in walks for param in walk_params)
    elif labels.actors is not None:
        where.append(f"actor_id IN ({marks(labels.actors)})")
        params.extend(labels.actors)
    elif labels.seqs is not None:
        where.append("seq IN (SELECT value FROM json_each(?))")
        params.append(labels.seqs)
    else:  # read in seq order from the first actor's first event
        if labels.among is not None:  # `+`: a test of each row read, not an index walk
            where.append("+actor_id IN (SELECT value FROM json_each(?))")
            params.append(labels.among)
        if labels.from_seq:
            where.append("seq >= ?")
            params.append(labels.from_seq)
    if labels.split_seq:  # the second step of a page read in two: from split_seq on
        where.append("seq >= ?")
        params.append(labels.split_seq)


def _select(
    columns: str,
    table: str,
    where: list[str],
    params: list[Any],
    limit: int | None,
    order: str = "seq",
) -> tuple[str, list[Any]]:
    """The statement of a query: its conditions (all must hold), in `order` (seq order,
    as SQLite is to read it), at most `limit`."""
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {order}"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(max(limit, 0))
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
    return any_term(_user_terms(value))


def _user_terms(value: str) -> list[Term]:
    return [Term("who_login = ?", [value]), Term("who_user = ?", [value])]


# As the exec-id index (`events_exec_id`, migration 0010) computes it, or it is not used.
_EXEC_ID = "json_extract(events.body, '$.attributes.execID')"
_TEXT_END = "\U0010ffff"  # the highest code point: every text starting with v sorts below v + it


def _session_sql(value: str) -> tuple[str, list[Any]]:
    """The exec id, whole or a prefix of it (`sinks.filtering._session_matches`).

    The `action` term is the exec-id index's (`events_exec_id`) own condition and
    the range finds the prefix in it; the `substr` term keeps the match exact
    whatever the range lets through."""
    clause = (
        f"(events.action GLOB 'exec*' AND {_EXEC_ID} >= ? AND {_EXEC_ID} < ? "
        f"AND substr({_EXEC_ID}, 1, ?) = ?)"
    )
    return clause, [value, value + _TEXT_END, len(value), value]


def _label_sql(key: str, value: str) -> tuple[str, list[Any]]:
    clause = (
        "EXISTS (SELECT 1 FROM json_each(events.body, '$.attributes.labels') AS label "
        "WHERE label.key = ? AND label.type = 'text' AND label.value = ?)"
    )
    return clause, [key, value]


def build_alert_query(
    f: AlertFilter,
    columns: str = "seq, body, prev_hash, hash",
    actor_index: ActorIndex | None = None,
) -> tuple[str, list[Any]]:
    """SQL and parameters selecting what `sinks.filtering.alert_matches` selects, in seq order.

    `actor_index`: as for `build_query` (an alert's event by container)."""
    narrower = (f.container, f.since_ns, f.until_ns, f.event_seq)
    if f.limit is not None and f.user is not None and all(v is None for v in narrower):
        # A page of a login's alerts: as for events (`_first_page`).
        rest = dataclasses.replace(f, limit=None, user=None)
        where, params = _alert_where(rest, actor_index)
        branches = [
            Term(" AND ".join([*where, term.clause]), params + term.params)
            for value in values_of(f.user)
            for term in _user_terms(value)
        ]
        return _merged_pages("alerts", columns, branches, f.limit)
    return _select(columns, "alerts", *_alert_where(f, actor_index), f.limit)


def _alert_where(
    f: AlertFilter, actor_index: ActorIndex | None = None
) -> tuple[list[str], list[Any]]:
    """The conditions of `f` (all must hold) and their parameters."""
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
    if f.since_ns is not None and f.until_ns is None:
        where.append(f"time_ns <= {_MAX_TIME_NS}")  # as for events: a range, not a scan
    if f.min_severity is not None:
        names = severities_at_least(f.min_severity)
        where.append(f"severity IN ({', '.join('?' * len(names))})")
        params.extend(names)
    if not f.include_suppressed:
        where.append("suppressed = 0")
    container = functools.partial(_alert_container_sql, actor_index=actor_index)
    _add_all_of(where, params, f.container, container)
    _add_any_of(where, params, f.image, functools.partial(_glob_or_equal_sql, "image"))
    _add_any_of(where, params, f.user, _user_sql)
    return where, params


def _alert_container_sql(
    values: tuple[str, ...], actor_index: ActorIndex | None = None
) -> tuple[str, list[Any]]:
    """The alert's own container name, or an event of that container (as for events)."""
    by_event, event_params = subjects.container_sql(values, actor_index)
    clause = (
        f"(container IN ({marks(values)}) "
        f"OR event_seq IN (SELECT seq FROM events WHERE {by_event}))"
    )
    return clause, [*values, *event_params]


def _glob_or_equal_sql(column: str, value: str) -> tuple[str, list[Any]]:
    if not is_glob(value):
        return f"{column} = ?", [value]
    prefix, prefix_params = prefix_sql(column, glob_prefix(value))
    return f"({column} GLOB ? AND {prefix})", [value, *prefix_params]


# What `model_validate_json` calls, without its Python wrapper (a tenth of the validation).
# Validation is most of reading a row back, yet no Python path beats it: orjson plus the
# checks that make an untrusted body safe to build without validation (canonical bytes,
# exact field types) plus the models built by hand (`listener.model.trusted`) took
# 7.5 µs a row of the rules benchmark, against 5.3 µs here (orjson alone: 1.7 µs).
_validate_event_json = Event.__pydantic_validator__.validate_json


def event_from_row(seq: int, body: str, prev_hash: str, digest: str) -> Event:
    try:
        event: Event = _validate_event_json(body)
    except ValidationError as exc:
        raise TamperError(
            f"stored body is not a valid event ({exc.error_count()} errors); run docktrail verify",
            seq=seq,
        ) from exc
    _chain(event, prev_hash, digest)
    return event


def alert_from_row(seq: int, body: str, prev_hash: str, digest: str) -> Alert:
    try:
        alert = Alert.model_validate_json(body)
    except ValidationError as exc:
        raise TamperError(
            f"alert seq {seq}: stored body is not a valid alert ({exc.error_count()} errors); "
            "run docktrail verify"
        ) from exc
    _chain(alert, prev_hash, digest)
    return alert


def _chain(model: Event | Alert, prev_hash: str, digest: str) -> None:
    """What pydantic's `__setattr__` does for a plain field, without its dispatch per call:
    about 5 % of reading a row back. Item by item: `update` with keywords built a dict
    and a tuple per row, and cost twice as much."""
    values = model.__dict__
    values["prev_hash"] = prev_hash
    values["hash"] = digest
    given = model.__pydantic_fields_set__
    given.add("prev_hash")
    given.add("hash")
