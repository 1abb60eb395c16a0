"""Filters as SQL (what `sinks.filtering` means, in an index-friendly form) and rows
back to events and alerts.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

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
from sinks.sqlite.labels import LabelPlan

_MAX_TIME_NS = 2**63 - 1


def build_query(
    f: EventFilter, columns: str = "seq, body, prev_hash, hash", labels: LabelPlan | None = None
) -> tuple[str, list[Any]]:
    """SQL and parameters selecting what `sinks.filtering.matches` selects, in seq order.

    `labels`: where the label index says `f.labels` can match (`sinks.sqlite.labels.plan`);
    None reads every body's labels (a trail without the index)."""
    if labels is not None and labels.nothing:  # seq starts at 1: a search that finds nothing
        return _select(columns, "events", ["seq < 1"], [], f.limit)
    if f.limit is not None and _pages_by_subject(f):
        return _first_page(f, columns, f.limit, labels)
    if f.limit is not None and labels is not None and labels.actors is not None:
        return _pages_by_actor(f, columns, f.limit, labels.actors)
    where, params = _event_where(f, labels=labels)
    return _select(columns, "events", where, params, f.limit)


def _pages_by_subject(f: EventFilter) -> bool:
    """A user or image filter without the narrower container or time range."""
    narrower = (f.container, f.since_ns, f.until_ns)
    subject = f.user is not None or f.image is not None
    return subject and all(value is None for value in narrower)


def _first_page(
    f: EventFilter, columns: str, limit: int, labels: LabelPlan | None
) -> tuple[str, list[Any]]:
    """A page of a user or image filter: the first `limit` of each index, merged.

    Either filter is an OR of two indexed terms (login or user; image or image
    name), which SQLite answers by collecting every match and sorting it, even
    for LIMIT 100 of a login with millions of events. Each term alone walks its
    index in seq order and stops at `limit`; the first `limit` of the union
    are among those.
    """
    wanted: Wanted
    if f.user is not None:
        wanted, terms = f.user, _user_terms
        rest = dataclasses.replace(f, limit=None, user=None)
    else:
        wanted, terms = f.image, _image_terms
        rest = dataclasses.replace(f, limit=None, image=None)
    where, params = _event_where(rest, narrowed=True, labels=labels)
    branches = [
        ([*where, term], params + term_params)
        for value in values_of(wanted)
        for term, term_params in terms(value)
    ]
    return _merged_pages("events", columns, branches, limit)


def _pages_by_actor(
    f: EventFilter, columns: str, limit: int, actors: tuple[str, ...]
) -> tuple[str, list[Any]]:
    """A page of a label filter whose labels few actors carry: each actor's first
    `limit` (an actor-id index walk in seq order), merged. An `IN` of the actors would
    collect every event of theirs and sort it: a container's millions of health checks."""
    where, params = _event_where(dataclasses.replace(f, limit=None), narrowed=True)
    branches = [([*where, "actor_id = ?"], [*params, actor]) for actor in actors]
    return _merged_pages("events", columns, branches, limit)


def _merged_pages(
    table: str, columns: str, branches: list[tuple[list[str], list[Any]]], limit: int
) -> tuple[str, list[Any]]:
    """The first `limit` rows of the union of `branches` (each: conditions, parameters)."""
    selects: list[str] = []
    params: list[Any] = []
    for where, where_params in branches:
        sql, sql_params = _select("seq", table, where, list(where_params), limit)
        selects.append(f"SELECT seq FROM ({sql})")
        params.extend(sql_params)
    union = " UNION ALL ".join(selects)
    return _select(columns, table, [f"seq IN ({union})"], params, limit)


def _event_where(
    f: EventFilter, narrowed: bool = False, labels: LabelPlan | None = None
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
    _add_all_of(where, params, f.container, _container_sql)
    _add_any_of(where, params, f.image, _image_sql)
    _add_any_of(where, params, f.user, _user_sql)
    for key, wanted in f.labels.items():
        _add_any_of(where, params, wanted, functools.partial(_label_sql, key))
    if labels is not None:
        _add_label_bounds(where, params, labels)
    _add_any_of(where, params, f.session, _session_sql)
    return where, params


def _add_label_bounds(where: list[str], params: list[Any], labels: LabelPlan) -> None:
    """Where the label index says the labels can match; the bodies still decide."""
    if labels.actors is not None:
        where.append(f"actor_id IN ({_marks(labels.actors)})")
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


def _select(
    columns: str, table: str, where: list[str], params: list[Any], limit: int | None
) -> tuple[str, list[Any]]:
    """The statement of a query: its conditions (all must hold), in seq order, at most `limit`."""
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq"
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
    return _any_term(_user_terms(value))


def _user_terms(value: str) -> list[tuple[str, list[Any]]]:
    return [("who_login = ?", [value]), ("who_user = ?", [value])]


def _any_term(terms: list[tuple[str, list[Any]]]) -> tuple[str, list[Any]]:
    """One condition: any of `terms`."""
    clause = "(" + " OR ".join(f"({term})" for term, _ in terms) + ")"
    return clause, [param for _, term_params in terms for param in term_params]


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
    return _any_term(_image_terms(value))


def _image_terms(value: str) -> list[tuple[str, list[Any]]]:
    if not is_glob(value):
        return [("actor_image = ?", [value]), ("+type = 'image' AND actor_name = ?", [value])]
    # GLOB plus the literal prefix as a range: the range is what uses the index.
    prefix = glob_prefix(value)
    image_range, image_params = prefix_sql("actor_image", prefix)
    name_range, name_params = prefix_sql("actor_name", prefix)
    return [
        (f"actor_image GLOB ? AND {image_range}", [value, *image_params]),
        (f"+type = 'image' AND actor_name GLOB ? AND {name_range}", [value, *name_params]),
    ]


def build_alert_query(
    f: AlertFilter, columns: str = "seq, body, prev_hash, hash"
) -> tuple[str, list[Any]]:
    """SQL and parameters selecting what `sinks.filtering.alert_matches` selects, in seq order."""
    narrower = (f.container, f.since_ns, f.until_ns, f.event_seq)
    if f.limit is not None and f.user is not None and all(v is None for v in narrower):
        # A page of a login's alerts: as for events (`_first_page`).
        where, params = _alert_where(dataclasses.replace(f, limit=None, user=None))
        branches = [
            ([*where, term], params + term_params)
            for value in values_of(f.user)
            for term, term_params in _user_terms(value)
        ]
        return _merged_pages("alerts", columns, branches, f.limit)
    return _select(columns, "alerts", *_alert_where(f), f.limit)


def _alert_where(f: AlertFilter) -> tuple[list[str], list[Any]]:
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
    _add_all_of(where, params, f.container, _alert_container_sql)
    _add_any_of(where, params, f.image, functools.partial(_glob_or_equal_sql, "image"))
    _add_any_of(where, params, f.user, _user_sql)
    return where, params


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
    prefix, prefix_params = prefix_sql(column, glob_prefix(value))
    return f"({column} GLOB ? AND {prefix})", [value, *prefix_params]


def prefix_sql(column: str, prefix: str) -> tuple[str, list[Any]]:
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
    about 5 % of reading a row back."""
    model.__dict__.update(prev_hash=prev_hash, hash=digest)
    model.__pydantic_fields_set__.update(("prev_hash", "hash"))
