"""Posture changes as `docktrail` events, and what the trail says was seen last.

A check is recorded when its status or value differs from the last one
recorded for it on this host (at start, every check is recorded once as the
baseline). The event says whether the posture got worse: the rules alert on
that, never on an unchanged posture seen again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from listener.bounds import bound_event
from listener.model.event import Actor, Event, natural_id
from listener.posture.check import Check
from sinks.base import EventFilter

POSTURE_ACTION = "posture"
FAMILIES = ("daemon", "audit-rules", "host")  # event types of the posture families


@dataclass(frozen=True, slots=True)
class Seen:
    """The last recorded outcome of one check."""

    status: str
    value: Any
    time_ns: int


def _key(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


class PostureMemory:
    """The last recorded outcome of each (family, check) on this host."""

    def __init__(self, seen: dict[tuple[str, str], Seen] | None = None) -> None:
        self.seen = seen if seen is not None else {}

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> PostureMemory:
        memory = cls()
        for event in events:
            memory.note(event)
        return memory

    @classmethod
    def from_trail(cls, trail: Any, host: str) -> PostureMemory:
        """Blocking: reads this host's posture events from the trail (in seq order)."""
        wanted = EventFilter(type=FAMILIES, action=POSTURE_ACTION, host=host, source="docktrail")
        return cls.from_events(trail.query(wanted))

    def note(self, event: Event) -> None:
        if event.action != POSTURE_ACTION or event.type not in FAMILIES:
            return
        check = str(event.attributes.get("check") or "")
        status = str(event.attributes.get("status") or "")
        self.seen[(event.type, check)] = Seen(status, event.attributes.get("value"), event.time_ns)

    def changes(
        self,
        family: str,
        checks: Iterable[Check],
        actor: Actor,
        host: str,
        reason: str,
        *,
        summary_after_ns: int | None = None,
    ) -> list[Event]:
        """Events for the checks whose outcome differs from the last one recorded.

        With `summary_after_ns` (counts that move all the time: sprawl, usage),
        only the status counts, and a check that is not `pass` is recorded again
        as a summary once that long has passed since its last record.
        """
        events = []
        now = time.time_ns()
        for check in checks:
            previous = self.seen.get((family, check.check))
            # Moving counts: a poor status is summed up when first seen and then daily.
            summary = summary_after_ns is not None and check.status != "pass"
            if previous is not None and previous.status == check.status:
                if summary_after_ns is not None:
                    summary = summary and now - previous.time_ns >= summary_after_ns
                    if not summary:
                        continue
                elif _key(previous.value) == _key(check.value):
                    continue
            event = posture_event(family, check, previous, actor, host, reason)
            event.attributes["summary"] = summary
            self.note(event)
            events.append(event)
        return events


def posture_event(
    family: str, check: Check, previous: Seen | None, actor: Actor, host: str, reason: str
) -> Event:
    now = time.time_ns()
    previous_status = previous.status if previous is not None else None
    attributes: Mapping[str, Any] = {
        "check": check.check,
        "cis": check.cis,
        "status": check.status,
        "previous_status": previous_status,
        "worse": check.worse_than(previous_status),
        "detail": check.detail,
        "value": check.value,
        "items": list(check.items[:50]),
        "reason": reason,
    }
    return bound_event(
        Event(
            id=natural_id("docktrail", host, family, POSTURE_ACTION, actor.id, check.check, now),
            time_ns=now,
            source="docktrail",
            host=host,
            type=family,
            action=POSTURE_ACTION,
            actor=actor,
            attributes=dict(attributes),
        ),
        surrogates="escape",
    )
