"""What a query filter selects, for every trail implementation.

`matches` (an `EventFilter`) and `alert_matches` (an `AlertFilter`) are the
meaning of a query; the SQLite trail translates them to SQL
(`sinks.sqlite`), the memory trail applies them directly, and the tests hold
both to the same answers. The glob helpers give `*`, `?` and `[…]` their
docker-like meaning.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from listener.model.alert import Alert
from listener.model.event import Event
from sinks.base import (
    AlertFilter,
    EventFilter,
    Wanted,
    severities_at_least,
    values_of,
)


def matches(event: Event, f: EventFilter, named_ids: frozenset[str] = frozenset()) -> bool:
    """Whether `event` is selected by `f` (every field but `after_seq`/`limit`).

    `named_ids` are the ids of the containers that bore a wanted name
    (`container_ids_named`): their events match whatever name they carry then.
    """
    plain = (
        (f.type, event.type),
        (f.action, event.action),
        (f.source, event.source),
        (f.host, event.host),
    )
    if any(not _one_of(wanted, value) for wanted, value in plain):
        return False
    if f.since_ns is not None and event.time_ns < f.since_ns:
        return False
    if f.until_ns is not None and event.time_ns >= f.until_ns:
        return False
    if f.container is not None and not _container_matches(event, f.container, named_ids):
        return False
    if f.image is not None and not any(_image_matches(event, v) for v in values_of(f.image)):
        return False
    if f.user is not None and not (
        _one_of(f.user, event.who.login) or _one_of(f.user, event.who.user)
    ):
        return False
    if f.session is not None and not _session_matches(event, f.session):
        return False
    return _labels_match(event, f.labels)


def _session_matches(event: Event, wanted: Wanted) -> bool:
    """An exec event (`exec_create` … `exec-command`) of the exec id or a prefix of it."""
    exec_id = event.attributes.get("execID")
    return (
        event.action.startswith("exec")
        and isinstance(exec_id, str)
        and any(exec_id.startswith(v) for v in values_of(wanted))
    )


def _one_of(wanted: Wanted, value: str | None) -> bool:
    """An unset field matches anything; a set one, any of its values."""
    return wanted is None or value in values_of(wanted)


def container_ids_named(events: Iterable[Event], wanted: Wanted) -> frozenset[str]:
    """Ids of the containers whose events carried one of the wanted names (renames included)."""
    names = set(values_of(wanted))
    if not names:
        return frozenset()
    return frozenset(e.actor.id for e in events if e.type == "container" and _bore(e, names))


def _bore(event: Event, names: set[str]) -> bool:
    """The event names the container by one of `names`, now or (a rename) before."""
    if event.actor.name in names:
        return True
    old = event.attributes.get("oldName") if event.action == "rename" else None
    return isinstance(old, str) and old.lstrip("/") in names


def alert_matches(
    alert: Alert, f: AlertFilter, event: Event | None, named_ids: frozenset[str] = frozenset()
) -> bool:
    """Whether `alert` is selected by `f` (every field but `after_seq`/`limit`).

    `event` is the alert's stored event: `container` also selects alerts
    whose event is about that container (name or id prefix, as for events).
    """
    plain = ((f.rule, alert.rule), (f.severity, alert.severity), (f.host, alert.host))
    if any(not _one_of(wanted, value) for wanted, value in plain):
        return False
    if f.event_seq is not None and alert.event_seq != f.event_seq:
        return False
    if f.min_severity is not None and alert.severity not in severities_at_least(f.min_severity):
        return False
    if not f.include_suppressed and alert.suppressed is not None:
        return False
    if f.since_ns is not None and alert.time_ns < f.since_ns:
        return False
    if f.until_ns is not None and alert.time_ns >= f.until_ns:
        return False
    if f.container is not None and not _alert_container_matches(
        alert, event, f.container, named_ids
    ):
        return False
    if f.image is not None and not any(_glob_or_equal(v, alert.image) for v in values_of(f.image)):
        return False
    return f.user is None or _one_of(f.user, alert.who.login) or _one_of(f.user, alert.who.user)


def _alert_container_matches(
    alert: Alert, event: Event | None, wanted: Wanted, named_ids: frozenset[str]
) -> bool:
    if _one_of(wanted, alert.container):
        return True
    return event is not None and _container_matches(event, wanted, named_ids)


def _glob_or_equal(wanted: str, value: str | None) -> bool:
    if value is None:
        return False
    return glob_match(wanted, value) if is_glob(wanted) else value == wanted


def _container_matches(event: Event, wanted: Wanted, named_ids: frozenset[str]) -> bool:
    if event.type == "container" and event.actor.id in named_ids:
        return True
    # network connect/disconnect events name the container in their attributes
    attached = event.attributes.get("container")
    if isinstance(attached, str) and attached in named_ids:
        return True
    for value in values_of(wanted):
        if event.type == "container" and (
            event.actor.name == value or event.actor.id.startswith(value)
        ):
            return True
        if isinstance(attached, str) and attached.startswith(value):
            return True
    return False


def _image_matches(event: Event, wanted: str) -> bool:
    return _glob_or_equal(wanted, event.actor.image) or (
        event.type == "image" and _glob_or_equal(wanted, event.actor.name)
    )


def _labels_match(event: Event, wanted: dict[str, str | tuple[str, ...]]) -> bool:
    if not wanted:
        return True
    labels = event.attributes.get("labels")
    if not isinstance(labels, dict):
        return False
    return all(
        isinstance(labels.get(k), str) and labels[k] in values_of(v) for k, v in wanted.items()
    )


def is_glob(value: str) -> bool:
    """Filter values with a `*` are glob patterns (SQLite GLOB syntax)."""
    return "*" in value


def glob_match(pattern: str, text: str) -> bool:
    """SQLite's GLOB: `*`, `?`, `[...]` and `[^...]`, case-sensitive, no escapes."""
    regex = _glob_regex(pattern)
    return regex is not None and regex.fullmatch(text) is not None


def glob_prefix(pattern: str) -> str:
    """The literal text before the first wildcard; lets SQL narrow a GLOB by index."""
    match = re.search(r"[*?\[]", pattern)
    return pattern if match is None else pattern[: match.start()]


@functools.lru_cache(maxsize=256)
def _glob_regex(pattern: str) -> re.Pattern[str] | None:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            end, klass = _glob_class(pattern, i)
            if klass is None:
                return None  # SQLite: an unterminated class never matches
            out.append(klass)
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _glob_class(pattern: str, start: int) -> tuple[int, str | None]:
    """Translate the `[...]` class opening at `start`; returns (index of `]`, regex)."""
    i = start + 1
    negate = i < len(pattern) and pattern[i] == "^"
    if negate:
        i += 1
    first = i
    if i < len(pattern) and pattern[i] == "]":  # a leading ] is a literal member
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        i += 1
    if i >= len(pattern):
        return i, None
    members = pattern[first:i].replace("\\", "\\\\").replace("[", "\\[").replace("]", "\\]")
    members = members.replace("^", "\\^")
    return i, f"[{'^' if negate else ''}{members}]"


# -- the in-memory trail ----------------------------------------------------
