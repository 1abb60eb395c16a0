"""What a rule declares about itself and what it reports: the model notifiers and sinks share.

The rules themselves (`listener.rules`) sit above sinks and notifiers; these
types sit below them, so an alert or a message never needs the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from config.models import Severity

SEVERITY_RANK: Mapping[str, int] = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}


@dataclass(frozen=True, slots=True)
class RuleMeta:
    id: str
    severity: Severity
    cis: str
    description: str
    # What the rule can fire on; the engine skips it for anything else without a call.
    types: frozenset[str] = frozenset({"container"})
    actions: frozenset[str] | None = None  # None: every action of those types


@dataclass(slots=True)
class Finding:
    """One match of a rule on one event, before it becomes a stored alert."""

    rule: str
    severity: Severity
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    container: str | None = None
    image: str | None = None
    suppressed_by: str | None = None  # the exception's reason, when one applies
