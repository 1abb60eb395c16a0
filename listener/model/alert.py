"""The `Alert` model: a rule's finding on a stored event.

The contract is DESIGN.md's "Alert object". Alerts are stored in the trail
beside events, append-only and hash-chained the same way. An alert's id is
derived from the event and the rule, so evaluating the same event twice (crash
repair, replay) yields the same alert and the trail stores it once.
"""

from __future__ import annotations

from hashlib import sha256 as _sha256
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from config.models import Severity
from listener.model.event import Chained, Event, Who, time_prefix
from listener.model.finding import Finding
from listener.model.trusted import trusted


class Alert(Chained, BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int | None = Field(None, description="Position among alerts, set by the trail.")
    id: str = Field(description="Derived from (event id, rule, match index).")
    time_ns: int = Field(description="Time of the event that fired it, UTC ns.")
    rule: str = Field(description="Rule id.")
    severity: Severity = Field(description="critical, high, medium, low or info.")
    event_seq: int = Field(description="`seq` of the stored event it points at.")
    event_id: str = Field(description="`id` of that event.")
    host: str = Field(description="Host of the event.")
    container: str | None = Field(None, description="Container name (or short id).")
    image: str | None = Field(None, description="Image reference.")
    who: Who = Field(default_factory=Who, description="Who caused the event.")
    summary: str = Field(description="One line for people.")
    details: dict[str, Any] = Field(default_factory=dict, description="Rule-specific facts.")
    suppressed: str | None = Field(
        None, description="Reason of the configured exception that suppressed it, if any."
    )
    hash: str | None = Field(None, description="sha256(prev_hash ‖ canonical alert), hex.")
    prev_hash: str | None = Field(None, description="`hash` of the previous alert.")

    @classmethod
    def from_finding(cls, found: Finding, event: Event, index: int = 0) -> Alert:
        if event.seq is None:
            raise ValueError("alerts point at stored events: the event has no seq")
        # Built unvalidated (`trusted`): every value comes from a validated event and a
        # finding of ours (its severity from the catalogue or the validated config).
        # Validating them again was a tenth of the rules' time on a replay, and
        # `model_construct` (defaults resolved one by one) cost nearly as much.
        values = {
            "seq": None,
            "id": alert_id(event, found.rule, index),
            "time_ns": event.time_ns,
            "rule": found.rule,
            "severity": found.severity,
            "event_seq": event.seq,
            "event_id": event.id,
            "host": event.host,
            "container": found.container,
            "image": found.image,
            "who": event.who,
            "summary": found.summary,
            "details": dict(found.details),
            "suppressed": found.suppressed_by,
            "hash": None,
            "prev_hash": None,
        }
        return trusted(cls, values, set(_FROM_FINDING_GIVEN))


def alert_id(event: Event, rule: str, index: int) -> str:
    """Time-ordered as the Engine's event ids are: a commit's alerts are neighbours in
    the trail's unique id index, not one random leaf each (docs/trail-index-cost.md).
    An older docktrail's id of the same alert was `natural_id` of the same parts
    (`sinks.sqlite.legacy_ids.ALERTS`)."""
    # `time_ordered_id(event.time_ns, "alert", event.id, rule, index)` spelt out (an f-string
    # formats each part as `str` does): a third of the cost of building an alert was the
    # generic id's calls and join.
    key = f"alert\x1f{event.id}\x1f{rule}\x1f{index}"
    return time_prefix(event.time_ns) + _sha256(key.encode()).hexdigest()[:24]


# The fields `from_finding` sets, as validation would record them (the others: defaults).
_FROM_FINDING_GIVEN = frozenset(Alert.model_fields) - {"seq", "hash", "prev_hash"}
