"""The chain check's data: what it keeps per host and what a batch becomes.

`HostChain` is one host's position in its chains as the central trail knows
it, kept between batches (and restarts) in `source_state`
``fleet.host:<host>``. `FleetChains.accept` takes `Located` records, works
through them in a `Batch` and hands back `Accepted`: the central rows, with
the host alerts (`HostAlert`) still waiting for the central seq of their
event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config.errors import InputError
from listener.model.alert import Alert
from listener.model.event import GENESIS_HASH, Event
from sinks.kafka.centralids import CentralIds
from sinks.kafka.records import Record

STATE_PREFIX = "fleet.host:"
Head = tuple[int, str]
Problem = tuple[str, str]
"""(problem, detail) of a record that does not extend its host chain."""


@dataclass(slots=True)
class HostChain:
    """What the central trail knows of one host's chains."""

    trail_id: str
    events: Head = (0, GENESIS_HASH)
    alerts: Head = (0, GENESIS_HASH)
    checkpoint: tuple[int, int, int] = (0, 0, 0)  # number, events seq, alerts seq
    key: str | None = None  # fingerprint of the key its checkpoints are signed with
    pending: Problem | None = None  # new-trail: told on this host's next stored row
    # A new database signs with a key of its own: its first checkpoint re-pins the key,
    # as part of the new-trail incident rather than a second alert.
    repin: bool = False

    def take_pending(self) -> Problem | None:
        problem, self.pending = self.pending, None
        return problem

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> HostChain:
        events, alerts, checkpoint = state["events"], state["alerts"], state["checkpoint"]
        return cls(
            trail_id=state["trail_id"],
            events=(int(events[0]), str(events[1])),
            alerts=(int(alerts[0]), str(alerts[1])),
            checkpoint=(int(checkpoint[0]), int(checkpoint[1]), int(checkpoint[2])),
            key=state.get("key"),
            pending=_problem(state.get("pending")),
            repin=bool(state.get("repin", False)),
        )

    def as_state(self) -> dict[str, Any]:
        return {
            "trail_id": self.trail_id,
            "events": list(self.events),
            "alerts": list(self.alerts),
            "checkpoint": list(self.checkpoint),
            "key": self.key,
            "pending": list(self.pending) if self.pending else None,
            "repin": self.repin,
        }


def _problem(value: Any) -> Problem | None:
    return None if not value else (str(value[0]), str(value[1]))


@dataclass(slots=True)
class HostAlert:
    """A host's alert, to be stored once its event's central seq is known."""

    alert: Alert
    event_id: str  # central id of the event it points at
    origin: dict[str, Any]


@dataclass(slots=True)
class Accepted:
    """What one batch of records becomes."""

    events: list[Event] = field(default_factory=list)
    host_alerts: list[HostAlert] = field(default_factory=list)
    duplicates: int = 0
    malformed: list[InputError] = field(default_factory=list)
    problems: int = 0


@dataclass(slots=True)
class Batch:
    """One `accept` call: how central ids are made, those stored so far (looked up
    before it, and the rows it adds) and what the batch becomes."""

    ids: CentralIds
    stored_events: set[str]
    stored_alerts: set[str]
    out: Accepted = field(default_factory=Accepted)


@dataclass(frozen=True, slots=True)
class Located:
    """A record with where it came from (topic/partition/offset), for messages."""

    record: Record
    where: str
