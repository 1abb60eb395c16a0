"""Running the rules over stored events: the pipeline stage, crash repair, replay.

Rules run after the events are stored, so every alert points at a stored
event. The alerts of a batch and the mark "events up to seq N are evaluated"
are written in one transaction; on start, events after the mark (a crash
between the two writes) are evaluated again. Alert ids derive from (event id,
rule, index), so an evaluation repeated after a crash stores nothing twice.

Windowed rules (churn, sprawl, exec severity) need what came before: `prime`
replays the container table, the churn baselines and the recent window from
the trail, so a restarted service judges the next event as a never-stopped
one would.

The container-config rules judge a container's configuration once: on an
`observed` or `posture` event whose configuration was judged already for
that container (the same fingerprint), their findings are not repeated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from config.models import RulesConfig
from listener.model.alert import Alert
from listener.model.catalogue import CONFIG_ACTIONS
from listener.model.event import Event
from listener.rules.activity import already_judged, learn_churn, track_container
from listener.rules.base import RuleContext, engine_sockets
from listener.rules.image import track_image
from listener.rules.registry import RULES, evaluate
from sinks.base import EventFilter

if TYPE_CHECKING:
    from notifiers.routing import Routing
    from sinks.outbox import Route, Router

log = logging.getLogger(__name__)

# The rules that judge a container's configuration (create, observed, posture).
CONFIG_RULES = frozenset(rule.meta.id for rule in RULES if rule.meta.actions == CONFIG_ACTIONS)

_NS = 1_000_000_000
PRIME_WINDOW_FACTOR = 2  # replay twice the longest rule window before the mark
BATCH = 2_000


class RuleEngine:
    """The rules with their state; turns stored events into alerts."""

    def __init__(
        self,
        rules: RulesConfig,
        *,
        attribution_available: bool = False,
        docker_host: str | None = None,
    ) -> None:
        self.context = RuleContext(rules=rules, attribution_available=attribution_available)
        if docker_host is not None:
            self.context.engine_sockets = engine_sockets(docker_host)

    def alerts_for(self, events: Iterable[Event]) -> list[Alert]:
        alerts: list[Alert] = []
        for event in events:
            alerts.extend(self.alerts_for_event(event))
        return alerts

    def alerts_for_event(self, event: Event) -> list[Alert]:
        alerts = []
        seen: dict[str, int] = {}
        judged = already_judged(event, self.context)
        for found in evaluate(event, self.context):
            if judged and found.rule in CONFIG_RULES:
                continue  # alerted when this configuration was first judged
            index = seen.get(found.rule, 0)
            seen[found.rule] = index + 1
            alerts.append(Alert.from_finding(found, event, index))
        return alerts

    def prime(self, history: Iterable[Event], *, recent_from_ns: int) -> None:
        """Rebuild rule state from events already evaluated, without alerting.

        The container table (with the configurations judged) and the churn
        baselines need the whole history; the other windows only what is
        recent. Findings are discarded: they were stored when those events were
        first evaluated.
        """
        for event in history:
            if event.time_ns >= recent_from_ns:
                evaluate(event, self.context)
            else:
                track_container(event, self.context)
                track_image(event, self.context)
                learn_churn(event, self.context)

    def window_ns(self) -> int:
        rules = self.context.rules
        return PRIME_WINDOW_FACTOR * rules.container_churn.window_secs * _NS


class RulesStage:
    """Pipeline stage: evaluate what was stored, store the alerts and the mark.

    With `routing`, each new alert's deliveries go into the outbox in the same
    transaction, and `on_queued` (the delivery worker's wake-up) is called.
    """

    def __init__(
        self,
        trail: Any,
        engine: RuleEngine,
        *,
        routing: Routing | None = None,
        on_queued: Callable[[], None] | None = None,
        on_alerts: Callable[[Sequence[Alert]], None] | None = None,
    ) -> None:
        self._trail = trail
        self._on_alerts = on_alerts  # sees each stored alert once (metrics)
        self._engine = engine
        self._routing = routing if routing else None
        self._on_queued = on_queued
        self.alerts_stored = 0
        self.deliveries_queued = 0

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        if not stored:
            return
        alerts = self._engine.alerts_for(stored)
        last = stored[-1].seq
        queued = self.deliveries_queued
        route = self._router(stored) if alerts else None
        written = await self._trail.write_alerts(alerts, evaluated_through=last, route=route)
        self.alerts_stored += len(written)
        if self._on_alerts is not None:
            self._on_alerts(written)
        if self.deliveries_queued > queued and self._on_queued is not None:
            self._on_queued()

    def _router(self, events: Sequence[Event]) -> Router | None:
        routing = self._routing
        if routing is None:
            return None
        labels = {event.seq: event.attributes.get("labels") or {} for event in events}

        def route(alert: Alert) -> list[Route]:
            routes = routing.routes(alert, labels.get(alert.event_seq))
            self.deliveries_queued += len(routes)
            return routes

        return route

    async def start(self) -> None:
        """Prime the rules from the trail and evaluate what a crash left unevaluated."""
        repaired = await self._trail.call(self._prime_and_repair)
        if repaired:
            log.info(
                "evaluated events stored before a crash",
                extra={"fields": {"events": repaired}},
            )

    def _prime_and_repair(self, trail: Any) -> int:
        through = trail.evaluated_through()
        head, _ = trail.head()
        if through:
            last = trail.get(through)
            recent_from = (last.time_ns if last else 0) - self._engine.window_ns()
            self._engine.prime(
                _events(trail, EventFilter(), until_seq=through), recent_from_ns=recent_from
            )
        pending = list(_events(trail, EventFilter(after_seq=through), until_seq=head))
        if pending:
            alerts = self._engine.alerts_for(pending)
            route = self._router(pending)
            stored = trail.append_alerts(alerts, evaluated_through=pending[-1].seq, route=route)
            self.alerts_stored += len(stored)
        return len(pending)


def _events(trail: Any, base: EventFilter, *, until_seq: int) -> Iterator[Event]:
    """Events of `base` up to `until_seq`, read page by page (bounded memory)."""
    after = base.after_seq or 0
    while after < until_seq:
        page = EventFilter(after_seq=after, limit=BATCH, type=base.type)
        events = [e for e in trail.query(page) if e.seq is not None and e.seq <= until_seq]
        if not events:
            return
        yield from events
        after = events[-1].seq or until_seq


def replay_trail(
    trail: Any,
    rules: RulesConfig,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[Alert]:
    """Alerts the rules give on the stored events that the trail does not hold yet.

    Every event is evaluated in seq order so that windowed rules see what they
    would have seen live; `since_ns`/`until_ns` only choose what is reported.
    `on_progress(seq, head)` is called after each event.
    """
    from sinks.base import AlertFilter

    engine = RuleEngine(rules, attribution_available=has_attribution(trail))
    stored = {alert.id for alert in trail.query_alerts(AlertFilter())}
    head, _ = trail.head()
    found: list[Alert] = []
    for event in _events(trail, EventFilter(), until_seq=head):
        alerts = engine.alerts_for_event(event)
        in_range = (since_ns is None or event.time_ns >= since_ns) and (
            until_ns is None or event.time_ns < until_ns
        )
        if in_range:
            found.extend(alert for alert in alerts if alert.id not in stored)
        if on_progress is not None and event.seq is not None:
            on_progress(event.seq, head)
    return found


def store_alerts(trail: Any, alerts: Sequence[Alert], notifications: Any = None) -> list[Alert]:
    """Store replayed alerts; with `notifications` (a NotificationsConfig) queue their deliveries.

    The event labels that routing may need are read from the trail.
    """
    route = None
    if notifications is not None:
        from notifiers.routing import Routing

        routing = Routing(notifications)

        def route(alert: Alert) -> list[Route]:
            event = trail.get(alert.event_seq)
            labels = event.attributes.get("labels") if event is not None else None
            return routing.routes(alert, labels or {})

    return trail.append_alerts(alerts, route=route)  # type: ignore[no-any-return]


def has_attribution(trail: Any) -> bool:
    """Whether the trail holds audit records, without which no change can be attributed."""
    return next(iter(trail.query(EventFilter(source="auditd", limit=1))), None) is not None
