"""What a rule is: declared metadata plus a small pure function.

A rule function takes one stored `Event` and the `RuleContext` (configuration
and the little state that windowed rules need) and yields `Finding`s. Rules
never do I/O, so they run the same way live, on ingest and on replay, and can
be tested alone. `RULES` in `listener.rules.registry` lists them all.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from config.models import RuleConfig, RuleException, RulesConfig, Severity
from listener.model.event import Event
from listener.model.finding import SEVERITY_RANK, Finding, RuleMeta

log = logging.getLogger(__name__)

__all__ = [
    "ENGINE_SOCKETS", "SEVERITY_RANK", "Finding", "Rule", "RuleContext", "RuleFunc", "RuleMeta",
    "container_name", "engine_sockets", "exception_reason", "finding", "judged", "note_failure",
    "rule_failures", "settled",
]  # fmt: skip

ENGINE_SOCKETS = (
    "/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock", "/run/docker/containerd/containerd.sock",
)  # fmt: skip


RuleFunc = Callable[[Event, "RuleContext"], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Rule:
    meta: RuleMeta
    check: RuleFunc

    def settings(self, rules: RulesConfig) -> RuleConfig:
        return getattr(rules, self.meta.id.replace("-", "_"))  # type: ignore[no-any-return]


@dataclass(slots=True)
class RuleContext:
    """Configuration plus the per-trail state of windowed rules.

    `state` is keyed by rule id; each rule owns its entry. Replaying events in
    `seq` order rebuilds it exactly, so live and replay agree.
    """

    rules: RulesConfig = field(default_factory=RulesConfig)
    attribution_available: bool = False
    # Unix socket paths of the Engines watched (docker.host, the daemon's own): a mount of
    # one, of a directory holding one, or onto one's usual path hands over the host.
    engine_sockets: tuple[str, ...] = ENGINE_SOCKETS
    state: dict[str, Any] = field(default_factory=dict)
    # (type, action) -> the enabled rules that apply, with their settings; filled on use.
    dispatch: dict[tuple[str, str], list[tuple[Rule, RuleConfig]]] = field(default_factory=dict)


def engine_sockets(docker_host: str) -> tuple[str, ...]:
    """The usual Engine socket paths plus the one `docker.host` names (unix://PATH)."""
    path = docker_host.removeprefix("unix://") if docker_host.startswith("unix://") else ""
    return tuple(dict.fromkeys([*ENGINE_SOCKETS, *([path] if path.startswith("/") else [])]))


def container_name(event: Event) -> str | None:
    if event.type != "container":
        return None
    return event.actor.name or event.actor.id[:12] or None


def finding(
    meta: RuleMeta, event: Event, summary: str, *, severity: Severity | None = None, **details: Any
) -> Finding:
    # positional: keywords cost a third of building a finding
    container = container_name(event)
    image = event.actor.image or (event.actor.name if event.type == "image" else None)
    return Finding(meta.id, severity or meta.severity, summary, details, container, image)


def judged(rule: Rule, settings: RuleConfig, event: Event, ctx: RuleContext) -> Iterator[Finding]:
    """The rule's findings on `event` with the configured severity and exception applied.

    A rule that fails on one event is logged and gives no finding on it: events
    read back from the trail (at start, in `replay`) are whatever the file holds,
    and one odd body must not stop the service from starting or the other rules.
    """
    try:
        for found in rule.check(event, ctx):
            yield settled(found, settings, event)
    except Exception as exc:
        note_failure(rule.meta.id, event, exc)


def settled(found: Finding, settings: RuleConfig, event: Event) -> Finding:
    """`found` with the configured severity and exception applied (what `judged` yields)."""
    if settings.severity is not None:
        found.severity = settings.severity
    exceptions = settings.exceptions
    found.suppressed_by = exception_reason(exceptions, event) if exceptions else None
    return found


_FAILURES: Counter[str] = Counter()
_FAILURES_LOGGED = 10  # per rule, then every 1000th: odd rows by the million must not flood the log


def rule_failures() -> dict[str, int]:
    """How many times each rule has failed on an event in this process."""
    return dict(_FAILURES)


def note_failure(what: str, event: Event, exc: Exception) -> None:
    """Log that `what` (a rule id, or the rules' state tracking) failed on `event`."""
    _FAILURES[what] += 1
    count = _FAILURES[what]
    if count <= _FAILURES_LOGGED or not count % 1000:
        log.error(
            "rules: %s failed on event %s (seq %s, %s %s): %s: %.200r (failure %d of it)",
            what, event.id, event.seq, event.type, event.action,
            type(exc).__name__, str(exc), count,
        )  # fmt: skip


def exception_reason(exceptions: Iterable[RuleException], event: Event) -> str | None:
    """The reason of the first exception that covers this event, if any."""
    for exception in exceptions:
        if _exception_matches(exception, event):
            return exception.reason
    return None


def _exception_matches(exception: RuleException, event: Event) -> bool:
    image = event.actor.image or (event.actor.name if event.type == "image" else None)
    labels: Mapping[str, Any] = event.attributes.get("labels") or {}
    checks = [
        (exception.image, image),
        (exception.container, container_name(event)),
        (exception.user, event.who.login),
    ]
    for pattern, value in checks:
        if pattern is not None and not (value and fnmatch.fnmatchcase(value, pattern)):
            return False
    if exception.label is not None:
        key, _, value = exception.label.partition("=")
        if labels.get(key) != value:
            return False
    return any(v is not None for v in (exception.image, exception.container, exception.user,
                                       exception.label))  # fmt: skip
