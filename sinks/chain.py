"""The trail's chain semantics, shared by every trail (SQLite, memory, Kafka).

This module is the one place that defines:

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
- how source state and the rules evaluation mark are encoded
  (`encode_states`, `mark_state`, `check_mark`).

What a query filter selects is in `sinks.filtering`.
"""

from __future__ import annotations

import json
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from config.errors import TrailError
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, Why, canonical_json, chain_hash
from sinks.base import SourceState

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
        _set_chained(event, seq, digest, prev_hash)
        sealed.append((event, content, body))
        prev_hash = digest
    return sealed


_CHAINED_FIELDS = frozenset(("seq", "hash", "prev_hash"))


def _set_chained(event: Event, seq: int, digest: str, prev_hash: str) -> None:
    """`event.seq, event.hash, event.prev_hash = …`: what pydantic's assignment does for
    a plain `Event` (no validation on assignment), without its three look-ups (3 % of
    an append)."""
    if type(event) is not Event:
        event.seq, event.hash, event.prev_hash = seq, digest, prev_hash
        return
    values = event.__dict__
    values["seq"], values["hash"], values["prev_hash"] = seq, digest, prev_hash
    event.__pydantic_fields_set__.update(_CHAINED_FIELDS)


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
        content["seq"] = seq  # no other field of a plain Event can be null: only its parts
        content["actor"] = _not_null(actor)
        content["who"] = _not_null(who)
        content["why"] = _not_null(why)
        try:
            return content, canonical_json(content)
        except (TypeError, ValueError, RecursionError):
            pass
    content = event.model_copy(update={"seq": seq}).content()
    return content, _encode("event", event.id, content)


def _not_null(part: Actor | Who | Why) -> dict[str, Any]:
    """The part's fields that are not None (`compact`'s rule for the parts)."""
    # A loop, not a comprehension: Python 3.11 makes a function call of each one
    # (a quarter of this, three times per event).
    kept: dict[str, Any] = {}
    for key, item in part.__dict__.items():
        if item is not None:
            kept[key] = item
    return kept


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
