"""The trail semantics in plain Python, and `MemoryTrail`, an in-memory trail for tests.

This module is the one place that defines, for every trail implementation:

- how a batch is deduplicated (`split_new`): an event (or alert) whose `id`
  is already stored, or repeated earlier in the same batch, is a duplicate;
- how events are sealed into the hash chain (`seal`): each new event gets
  `seq` = previous seq + 1, `prev_hash` = the previous event's hash (the
  genesis hash for seq 1) and `hash = sha256(prev_hash ‖ canonical JSON of
  its content, seq included)` (`listener.model.event.chain_hash`);
- the same for alerts (`seal_alerts`), in a chain of their own: alert seq 1,
  2, 3 … from the genesis hash, over the canonical JSON of `Alert.content()`;
- how one link of either chain is checked (`link_problem`), with the wording
  of the problems that `verify` reports, and whether an alert points at its
  stored event (`event_ref_problem`);
- what an `EventFilter` selects (`matches`) and what an `AlertFilter`
  selects (`alert_matches`), which the SQLite trail translates to SQL and
  which the tests hold both implementations to;
- how source state and the rules evaluation mark are encoded
  (`encode_states`, `mark_state`, `check_mark`).

`MemoryTrail` has the sync and async API of `sinks.sqlite.SQLiteTrail` but
keeps everything in lists; its `verify` checks both chains only (there are no
signed checkpoints in memory).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from config.errors import TrailError
from listener.model.alert import Alert
from listener.model.event import GENESIS_HASH, Actor, Event, Who, Why, canonical_json, chain_hash
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
from sinks.outbox import Route, Router

T = TypeVar("T")
Sealed = tuple[Event, dict[str, Any], str]
"""A sealed event: the stored copy, its hashed content, and that content's canonical JSON."""
SealedAlert = tuple[Alert, dict[str, Any], str]
"""A sealed alert, as `Sealed`."""

RESERVED_STATE_PREFIX = "docktrail."
"""Source state names of docktrail's own bookkeeping; sources may not use them."""
RULES_MARK = RESERVED_STATE_PREFIX + "rules"
"""The state entry holding the rules evaluation mark, {"evaluated_through": seq}."""


class _Identified(Protocol):
    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=_Identified)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """Outcome of `verify`.

    `first_bad_seq` is the first seq that can no longer be trusted and
    `problem` says what is wrong and where; both are None when `ok`. When
    the problem is in the alerts chain, `first_bad_alert_seq` is set instead
    of `first_bad_seq` and `problem` starts with "alert seq N" or names the
    checkpoint. `unsealed` and `unsealed_alerts` count the events and alerts
    after the last valid signed checkpoint.
    """

    ok: bool
    events: int
    checkpoints: int
    first_bad_seq: int | None
    problem: str | None
    unsealed: int
    key_fingerprint: str | None
    alerts: int = 0
    first_bad_alert_seq: int | None = None
    unsealed_alerts: int = 0
    finding: str | None = None
    """When not ok: "tampered", "foreign-rows", "rolled-back" or "forked"."""
    trail_id: str | None = None
    notes: tuple[str, ...] = ()
    """What an intact trail's auditor should know (an unsealed tail, the witness checked)."""


def split_new(items: Sequence[Item], known: Container[str]) -> tuple[list[Item], int]:
    """What to store (the first of each unknown id, events or alerts) and the duplicate count."""
    fresh: list[Item] = []
    seen: set[str] = set()
    for item in items:
        if item.id in known or item.id in seen:
            continue
        seen.add(item.id)
        fresh.append(item)
    return fresh, len(items) - len(fresh)


def seal(events: Sequence[Event], seq: int, prev_hash: str) -> list[Sealed]:
    """Chain `events` after the head (`seq`, `prev_hash`).

    The caller's events are sealed in place (`seq`, `hash`, `prev_hash` set)
    and returned: a copy per event would cost as much as hashing it.
    """
    sealed: list[Sealed] = []
    for event in events:
        seq += 1
        content, body = _content_and_body(event, seq)
        digest = _digest("event", event.id, prev_hash, body)
        # Set in place rather than copied: a copy per event costs as much as the hash.
        event.seq, event.hash, event.prev_hash = seq, digest, prev_hash
        sealed.append((event, content, body))
        prev_hash = digest
    return sealed


def _content_and_body(event: Event, seq: int) -> tuple[dict[str, Any], str]:
    """`event.content()` with `seq` set, and its canonical JSON.

    Fast path: pydantic keeps field values in `__dict__`, so for plain `Event`
    objects the content dict can be assembled without `model_dump`, which is
    the costliest step of an append. Anything unusual (subclasses, nested
    models inside `attributes`) takes the reference path; the tests check
    that both give identical bytes.
    """
    actor, who, why = event.actor, event.who, event.why
    if type(event) is Event and type(actor) is Actor and type(who) is Who and type(why) is Why:
        content = dict(event.__dict__)
        del content["hash"], content["prev_hash"]
        content["seq"] = seq
        content["actor"] = actor.__dict__
        content["who"] = who.__dict__
        content["why"] = why.__dict__
        try:
            return content, canonical_json(content)
        except (TypeError, ValueError, RecursionError):
            pass
    content = event.model_copy(update={"seq": seq}).content()
    return content, _encode("event", event.id, content)


def seal_alerts(alerts: Sequence[Alert], seq: int, prev_hash: str) -> list[SealedAlert]:
    """Chain `alerts` after the alerts head (`seq`, `prev_hash`); in place, as `seal`."""
    sealed: list[SealedAlert] = []
    for alert in alerts:
        seq += 1
        content = alert.content()
        content["seq"] = seq
        body = _encode("alert", alert.id, content)
        digest = _digest("alert", alert.id, prev_hash, body)
        alert.seq, alert.hash, alert.prev_hash = seq, digest, prev_hash
        sealed.append((alert, content, body))
        prev_hash = digest
    return sealed


def _encode(kind: str, item_id: str, content: dict[str, Any]) -> str:
    try:
        return canonical_json(content)
    except (TypeError, ValueError, RecursionError) as exc:
        raise TrailError(f"{kind} {item_id}: content cannot be stored as JSON: {exc}") from exc


def _digest(kind: str, item_id: str, prev_hash: str, body: str) -> str:
    try:
        return chain_hash(prev_hash, body)
    except UnicodeEncodeError as exc:  # lone surrogates: not storable as UTF-8
        raise TrailError(f"{kind} {item_id}: content is not valid Unicode: {exc}") from exc


def link_problem(
    seq: int,
    expected_seq: int,
    prev_hash: str,
    expected_prev: str,
    hash: str,
    body: str,
    label: str = "seq",
) -> tuple[int, str] | None:
    """The first problem of one stored event (or alert) as (bad seq, message), or None.

    `expected_seq` and `expected_prev` come from the previous row (1 and the
    genesis hash for the first one); `body` is the stored canonical JSON.
    `label` names a position in messages: "seq" for events, "alert seq".
    """
    if seq != expected_seq:
        if seq < expected_seq:
            return seq, f"{label} {seq}: out of order (comes after {label} {expected_seq - 1})"
        if expected_seq == 1:
            return 1, f"{label} 1: missing (trail starts at {label} {seq})"
        return expected_seq, (
            f"{label} {expected_seq}: missing ({label} jumps from {expected_seq - 1} to {seq})"
        )
    if prev_hash != expected_prev:
        if seq == 1:
            return 1, f"{label} 1: prev_hash is not the genesis hash (rows deleted at the start)"
        return seq, (
            f"{label} {seq}: prev_hash does not match {label} {seq - 1} (row deleted or reordered)"
        )
    if chain_hash(prev_hash, body) != hash:
        return seq, f"{label} {seq}: hash does not match its content (row edited)"
    return None


def event_ref_problem(
    where: str, event_seq: int, event_id: str, stored_id: str | None
) -> str | None:
    """Whether an alert points at its event: `stored_id` is the id stored at `event_seq`.

    Alerts are written after their events, so a missing or different event
    is a bug upstream when appending, and an edited row when verifying.
    """
    if stored_id is None:
        return f"{where}: points at event seq {event_seq}, which is not stored"
    if stored_id != event_id:
        return f"{where}: event seq {event_seq} is event {stored_id}, not event {event_id}"
    return None


# -- source state and the rules evaluation mark -------------------------------


def encode_states(source_state: SourceState | None) -> list[tuple[str, str]]:
    """(name, canonical JSON) of each source's state; TrailError for what cannot be stored.

    Encoded before anything is written, so a bad state fails its whole batch.
    """
    if not source_state:
        return []
    encoded: list[tuple[str, str]] = []
    for name, value in source_state.items():
        if not isinstance(name, str) or not name or name.startswith(RESERVED_STATE_PREFIX):
            raise TrailError(
                f"source state name {name!r}: not a name a source may use "
                f"(non-empty, not starting with {RESERVED_STATE_PREFIX!r})"
            )
        if not isinstance(value, Mapping):
            raise TrailError(f"source state {name!r}: must be a mapping, not {type(value)}")
        text = _encode("source state", repr(name), dict(value))
        try:
            text.encode()
        except UnicodeEncodeError as exc:
            raise TrailError(f"source state {name!r}: not valid Unicode: {exc}") from exc
        encoded.append((name, text))
    return encoded


def decode_state(text: str) -> dict[str, Any]:
    """A stored state; the table is mutable bookkeeping, so it is checked on the way out."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise TrailError(f"stored source state is not a JSON object: {text[:80]!r}")
    return value


def mark_state(evaluated_through: int) -> tuple[str, str]:
    """The state entry of the rules evaluation mark."""
    return RULES_MARK, canonical_json({"evaluated_through": evaluated_through})


def mark_value(text: str | None) -> int:
    """The mark stored as `text` (from `mark_state`); 0 when there is none."""
    if text is None:
        return 0
    value = decode_state(text).get("evaluated_through")
    if not isinstance(value, int):
        raise TrailError(f"rules evaluation mark is not a seq: {text[:80]!r}")
    return value


def check_mark(evaluated_through: int, head_seq: int) -> None:
    """The mark may only name stored events: 0 <= mark <= the events head."""
    if not 0 <= evaluated_through <= head_seq:
        raise TrailError(
            f"evaluated_through={evaluated_through}: the trail holds events 1 to {head_seq}"
        )


# -- filter semantics ---------------------------------------------------------


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
    return _labels_match(event, f.labels)


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


class MemoryTrail(SyncLifecycle, AsyncLifecycle):
    """A trail in Python lists, with the same API as `SQLiteTrail` (minus signing)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._ids: set[str] = set()
        self._alerts: list[Alert] = []
        self._alert_ids: set[str] = set()
        self._states: dict[str, str] = {}  # name -> canonical JSON, as SQLite stores it
        self.routed: list[tuple[str, Route]] = []  # (alert id, route) given to append_alerts

    # sync lifecycle: nothing to acquire, kept for API parity
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    # -- events and source state ----------------------------------------------

    def append(
        self, events: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        """Store the new events and the sources' state together; all or nothing."""
        states = encode_states(source_state)
        fresh, duplicates = split_new(events, self._ids)
        seq, prev_hash = self.head()
        sealed = seal(fresh, seq, prev_hash)  # raises before anything is stored
        for stored, _content, _body in sealed:
            # deep copies: a caller mutating what it got back must not edit the trail
            self._events.append(stored.model_copy(deep=True))
            self._ids.add(stored.id)
        self._states.update(states)
        return AppendResult(stored=[s[0] for s in sealed], duplicates=duplicates)

    def load_source_state(self, name: str) -> dict[str, Any] | None:
        text = self._states.get(name)
        return None if text is None else decode_state(text)

    def source_states(self) -> dict[str, dict[str, Any]]:
        return {name: decode_state(text) for name, text in sorted(self._states.items())}

    def query(self, f: EventFilter) -> Iterator[Event]:
        start = max(f.after_seq or 0, 0)
        left = f.limit
        named = container_ids_named(self._events, f.container)
        for event in self._events[start:]:
            if left is not None and left <= 0:
                return
            if matches(event, f, named):
                if left is not None:
                    left -= 1
                yield event.model_copy(deep=True)

    def count(self) -> int:
        return len(self._events)

    def head(self) -> tuple[int, str]:
        if not self._events:
            return 0, GENESIS_HASH
        last = self._events[-1]
        return last.seq or 0, last.hash or ""

    def get(self, seq: int) -> Event | None:
        if 1 <= seq <= len(self._events):
            return self._events[seq - 1].model_copy(deep=True)
        return None

    # -- alerts ---------------------------------------------------------------

    def append_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        """Store the new alerts and advance the evaluation mark together; all or nothing.

        Routes are only recorded (`routed`): the outbox and its worker need SQLite.
        """
        fresh, _duplicates = split_new(alerts, self._alert_ids)
        for alert in fresh:
            stored_id = self._event_id(alert.event_seq)
            problem = event_ref_problem(
                f"alert {alert.id}", alert.event_seq, alert.event_id, stored_id
            )
            if problem is not None:
                raise TrailError(problem)
        if evaluated_through is not None:
            check_mark(evaluated_through, self.head()[0])
        sealed = seal_alerts(fresh, *self.alerts_head())
        for stored, _content, _body in sealed:
            self._alerts.append(stored.model_copy(deep=True))
            self._alert_ids.add(stored.id)
            if route is not None:
                self.routed.extend((stored.id, r) for r in route(stored))
        if evaluated_through is not None and evaluated_through > self.evaluated_through():
            name, text = mark_state(evaluated_through)
            self._states[name] = text
        return [s[0] for s in sealed]

    def _event_id(self, seq: int) -> str | None:
        return self._events[seq - 1].id if 1 <= seq <= len(self._events) else None

    def evaluated_through(self) -> int:
        """Every event up to this seq has been evaluated by the rules (0: none)."""
        return mark_value(self._states.get(RULES_MARK))

    def query_alerts(self, f: AlertFilter) -> Iterator[Alert]:
        start = max(f.after_seq or 0, 0)
        left = f.limit
        named = container_ids_named(self._events, f.container)
        for alert in self._alerts[start:]:
            if left is not None and left <= 0:
                return
            event = self._events[alert.event_seq - 1] if f.container is not None else None
            if alert_matches(alert, f, event, named):
                if left is not None:
                    left -= 1
                yield alert.model_copy(deep=True)

    def alerts_for_event(self, seq: int) -> list[Alert]:
        return list(self.query_alerts(AlertFilter(event_seq=seq)))

    def count_alerts(self) -> int:
        return len(self._alerts)

    def alerts_head(self) -> tuple[int, str]:
        """(seq, hash) of the last alert; (0, GENESIS_HASH) when there is none."""
        if not self._alerts:
            return 0, GENESIS_HASH
        last = self._alerts[-1]
        return last.seq or 0, last.hash or ""

    # -- verify ---------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check both chains; bodies are re-serialised with the reference encoder."""
        expected_seq, expected_prev = 1, GENESIS_HASH
        for event in self._events:
            body = canonical_json(event.content())
            seq = event.seq if event.seq is not None else 0
            problem = link_problem(
                seq, expected_seq, event.prev_hash or "", expected_prev, event.hash or "", body
            )
            if problem is not None:
                return self._report(problem)
            expected_seq, expected_prev = seq + 1, event.hash or ""
        return self._report(self._alerts_problem(), alerts=True)

    def _alerts_problem(self) -> tuple[int, str] | None:
        expected_seq, expected_prev = 1, GENESIS_HASH
        for alert in self._alerts:
            body = canonical_json(alert.content())
            seq = alert.seq if alert.seq is not None else 0
            digest = alert.hash or ""
            problem = link_problem(
                seq, expected_seq, alert.prev_hash or "", expected_prev, digest, body, "alert seq"
            )
            if problem is not None:
                return problem
            stored_id = self._event_id(alert.event_seq)
            ref = event_ref_problem(f"alert seq {seq}", alert.event_seq, alert.event_id, stored_id)
            if ref is not None:
                return seq, ref
            expected_seq, expected_prev = seq + 1, digest
        return None

    def _report(self, problem: tuple[int, str] | None, *, alerts: bool = False) -> VerifyReport:
        count = len(self._events)
        bad = None if problem is None else problem[0]
        return VerifyReport(
            ok=problem is None,
            events=count,
            checkpoints=0,
            first_bad_seq=None if alerts else bad,
            problem=None if problem is None else problem[1],
            unsealed=count,  # nothing is ever signed in memory
            key_fingerprint=None,
            alerts=len(self._alerts),
            first_bad_alert_seq=bad if alerts else None,
            unsealed_alerts=len(self._alerts),
        )

    # async API (the TrailSink protocol): the work is tiny, so it runs inline
    async def start(self) -> None:
        self.open()

    async def write(
        self, batch: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        return self.append(batch, source_state=source_state)

    async def write_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        return self.append_alerts(alerts, evaluated_through=evaluated_through, route=route)

    async def call(self, fn: Callable[[Self], T]) -> T:
        """As `SQLiteTrail.call`: run `fn(self)` (inline here, there is no worker)."""
        return fn(self)

    async def aclose(self) -> None:
        self.close()
