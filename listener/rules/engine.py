"""Running the rules over stored events: the pipeline stage, crash repair, replay.

Rules run after the events are stored, so every alert points at a stored
event. The alerts of a batch and the mark "events up to seq N are evaluated"
are written in one transaction; on start, events after the mark (a crash
between the two writes) are evaluated again. Alert ids derive from (event id,
rule, index), so an evaluation repeated after a crash stores nothing twice.

Windowed rules (churn, sprawl, exec severity) need what came before. The
stage saves the rules' state every `SAVE_EVERY_EVENTS` events and at a clean
stop (`listener.rules.snapshot`: authenticated, bound to the trail and the
configuration); a start restores it and evaluates, without alerting, only the
events stored after it, so its cost does not grow with the trail. Without a
valid saved state (the first start, another configuration, a row that does
not authenticate) every stored event is evaluated again, without alerting,
and the state is saved at once. Either way a restarted service judges the
next event exactly as a never-stopped one would.

The container-config rules judge a container's configuration once: on an
`observed` or `posture` event whose configuration was judged already for
that container (the same fingerprint), their findings are not repeated.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from config.errors import RuleStateError
from config.models import RulesConfig
from listener.model.alert import Alert
from listener.model.catalogue import AUDIT_EVENT_TYPES, CONFIG_ACTIONS
from listener.model.event import Event
from listener.rules.activity import REJUDGED_ACTIONS, already_judged, track_container
from listener.rules.base import RuleContext, engine_sockets, note_failure
from listener.rules.churn import learn_churn
from listener.rules.image import track_image
from listener.rules.registry import RULES, evaluate
from listener.rules.snapshot import (
    STATE_NAME,
    Binding,
    mac_key,
    open_saved,
    seal,
    state_scope,
)
from sinks.base import EventFilter, stored_after

if TYPE_CHECKING:
    from notifiers.routing import Routing
    from sinks.outbox import Route, Router

log = logging.getLogger(__name__)

# The rules that judge a container's configuration (create, observed, posture).
CONFIG_RULES = frozenset(rule.meta.id for rule in RULES if rule.meta.actions == CONFIG_ACTIONS)

_NS = 1_000_000_000
PRIME_WINDOW_FACTOR = 2  # replay twice the longest rule window before the mark
BATCH = 2_000
REPAIR_NOTICE_EVENTS = 100_000  # more unevaluated events than this at a start: say so
# Events evaluated between two saves of the rules' state: what a start after a crash
# evaluates again at most (a clean stop saves). A save costs in proportion to the
# state (the container table), so a big state is saved less often: at least
# SAVED_BYTES_PER_EVENT bytes of it per event between saves, which keeps the cost of
# saving under a microsecond per event (about 1 µs per 200 bytes here).
SAVE_EVERY_EVENTS = 5_000
SAVED_BYTES_PER_EVENT = 200
# Replay: new alerts asked of the trail at once (bounds what a replay holds in memory).
STORED_LOOKUP_CHUNK = 2_000
# The collector's thresholds during a replay: the service's (`listener.app.GC_THRESHOLDS`).
REPLAY_GC_THRESHOLDS = (50_000, 50, 100)


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
        alerts_for_event = self.alerts_for_event  # looked up once, not per event
        for event in events:
            found = alerts_for_event(event)
            if found:
                alerts.extend(found)
        return alerts

    def alerts_for_event(self, event: Event) -> list[Alert]:
        # asked only of the actions that may show a configuration judged before: a call
        # for every event cost more than the check itself
        judged = event.action in REJUDGED_ACTIONS and self._already_judged(event)
        findings = evaluate(event, self.context)
        if not findings:
            return []  # most events: no dict, no list of alerts
        alerts = []
        seen: dict[str, int] = {}
        for found in findings:
            if judged and found.rule in CONFIG_RULES:
                continue  # alerted when this configuration was first judged
            index = seen.get(found.rule, 0)
            seen[found.rule] = index + 1
            alerts.append(Alert.from_finding(found, event, index))
        return alerts

    def _already_judged(self, event: Event) -> bool:
        try:
            return already_judged(event, self.context)
        except Exception as exc:  # as in `evaluate`: one odd stored body must not stop the
            note_failure("already_judged", event, exc)  # rules; its findings are alerted
            return False

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

    def replay(self, events: Iterable[Event]) -> int:
        """Fold events evaluated before into the state, exactly as live, without alerting."""
        count = 0
        for event in events:
            evaluate(event, self.context)
            count += 1
        return count

    def scope(self) -> str:
        context = self.context
        ids = [rule.meta.id for rule in RULES]
        return state_scope(context.rules, ids, context.attribution_available)

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
        self.restored_from: int | None = None  # seq of the saved state this start used
        self.replayed = 0  # evaluated events this start read again to rebuild the state
        self._mac_key: bytes | None = None
        self._folded_through = 0  # the last event the engine's state includes
        self._saved_through = 0
        self._save_every = SAVE_EVERY_EVENTS

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
        self._folded_through = max(self._folded_through, last or 0)
        if self._on_alerts is not None:
            self._on_alerts(written)
        if self.deliveries_queued > queued and self._on_queued is not None:
            self._on_queued()
        if self._folded_through - self._saved_through >= self._save_every:
            await self.save_state()

    async def save_state(self) -> None:
        """Save the rules' state (at a clean stop, and every `SAVE_EVERY_EVENTS` events or more)."""
        await self._trail.call(self._save)

    def _save(self, trail: Any) -> None:
        through = self._folded_through
        if self._mac_key is None or not through or through == self._saved_through:
            return
        binding = self._binding(trail, through)
        if binding is None:
            return
        try:
            saved = seal(self._engine.context.state, binding, self._mac_key)
        except (RuleStateError, TypeError, ValueError) as exc:  # orjson's errors are both
            log.warning(
                "rules state not saved: starts rebuild it", extra={"fields": {"why": str(exc)}}
            )
            self._mac_key = None  # the same next time: stop trying
            return
        trail.save_rule_state(STATE_NAME, saved)
        self._saved_through = through
        self._save_every = max(SAVE_EVERY_EVENTS, len(saved.body) // SAVED_BYTES_PER_EVENT)

    def _binding(self, trail: Any, through: int) -> Binding | None:
        event = trail.get(through)
        if event is None or event.hash is None:
            return None
        return Binding(trail.trail_id, through, event.hash, self._engine.scope())

    def _restore(self, trail: Any, through: int) -> int | None:
        """Restore the saved state when it authenticates and is not past the mark; its seq."""
        if self._mac_key is None:
            return None
        saved = trail.load_rule_state(STATE_NAME)
        if saved is None or not 0 < saved.through_seq <= through:
            return None
        binding = self._binding(trail, saved.through_seq)
        state = open_saved(saved, binding, self._mac_key) if binding is not None else None
        if state is None:
            log.warning(
                "saved rules state does not hold for this trail, key and rules configuration "
                "(edited, or the configuration changed): rebuilding it from the trail",
                extra={"fields": {"through_seq": saved.through_seq}},
            )
            return None
        self._engine.context.state = state
        return int(saved.through_seq)

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
        persists = hasattr(trail, "load_rule_state") and hasattr(trail, "signing_key")
        self._mac_key = mac_key(trail.signing_key) if persists else None
        if through:
            self.restored_from = self._restore(trail, through)
            start = self.restored_from or 0
            self._saved_through = start
            after = EventFilter(after_seq=start)
            self.replayed = self._engine.replay(_events(trail, after, until_seq=through))
        evaluated = self._evaluate_unevaluated(trail, through, head)
        if self.replayed + evaluated >= SAVE_EVERY_EVENTS:
            self._save(trail)  # the next start need not do this again
        return evaluated

    def _evaluate_unevaluated(self, trail: Any, through: int, head: int) -> int:
        """Evaluates the events stored after the mark (a crash, or a writer without
        rules), a page at a time: memory stays bounded, and each page's alerts and
        mark are stored before the next page is read."""
        if head - through > REPAIR_NOTICE_EVENTS:
            log.info(
                "evaluating events stored without their alerts",
                extra={"fields": {"events": head - through, "after_seq": through}},
            )
        evaluated, self._folded_through = 0, through
        for page in _pages(trail, EventFilter(after_seq=through), until_seq=head):
            alerts = self._engine.alerts_for(page)
            last = page[-1].seq or through
            stored = trail.append_alerts(alerts, evaluated_through=last, route=self._router(page))
            self.alerts_stored += len(stored)
            evaluated, self._folded_through = evaluated + len(page), last
        return evaluated


def _pages(trail: Any, base: EventFilter, *, until_seq: int) -> Iterator[list[Event]]:
    """Events of `base` up to `until_seq`, BATCH at a time (bounded memory)."""
    after = base.after_seq or 0
    while after < until_seq:
        page = EventFilter(after_seq=after, limit=BATCH, type=base.type)
        events = [e for e in trail.query(page) if e.seq is not None and e.seq <= until_seq]
        if not events:
            return
        yield events
        after = events[-1].seq or until_seq


def _events(trail: Any, base: EventFilter, *, until_seq: int) -> Iterator[Event]:
    """Events of `base` up to `until_seq`, BATCH rows a statement, one at a time."""
    return stored_after(trail, base.after_seq or 0, until_seq, page=BATCH, type=base.type)


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
    engine = RuleEngine(rules, attribution_available=has_attribution(trail))
    head, _ = trail.head()
    found: list[Alert] = []
    pending: list[Alert] = []  # in range; whether the trail holds them is asked in chunks
    with _fewer_collections():
        for event in _events(trail, EventFilter(), until_seq=head):
            alerts = engine.alerts_for_event(event)
            if alerts and _in_range(event.time_ns, since_ns, until_ns):
                pending.extend(alerts)
                if len(pending) >= STORED_LOOKUP_CHUNK:
                    found.extend(_not_stored(trail, pending))
                    pending = []
            if on_progress is not None and event.seq is not None:
                on_progress(event.seq, head)
    found.extend(_not_stored(trail, pending))
    return found


def _in_range(time_ns: int, since_ns: int | None, until_ns: int | None) -> bool:
    return (since_ns is None or time_ns >= since_ns) and (until_ns is None or time_ns < until_ns)


def _not_stored(trail: Any, alerts: list[Alert]) -> list[Alert]:
    """`alerts` without those the trail holds, asked by id (the SQLite trail) rather than by
    reading every stored alert back as a model."""
    if not alerts:
        return []
    if hasattr(trail, "stored_alert_ids"):
        stored: Collection[str] = trail.stored_alert_ids(alerts)
    else:
        from sinks.base import AlertFilter

        stored = {alert.id for alert in trail.query_alerts(AlertFilter())}
    return [alert for alert in alerts if alert.id not in stored]


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """Run the cyclic collector seldom, and never over what existed before, during a replay.

    A replay allocates a model per event and keeps the rules' state (the container
    table) alive: with CPython's default threshold the collector walked that state
    again and again, about a fifth of replay's time. The objects it allocates form
    no cycles to speak of: refcounting frees them. The service does the same for
    its whole life (`listener.app.tune_gc`); a caller that froze already is left alone.
    """
    thresholds = gc.get_threshold()
    froze = gc.get_freeze_count() == 0
    if froze:
        gc.freeze()
    gc.set_threshold(*REPLAY_GC_THRESHOLDS)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if froze:
            gc.unfreeze()


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
    # By type (indexed): by source alone scans the whole table when there is none.
    found = EventFilter(source="auditd", type=AUDIT_EVENT_TYPES, limit=1)
    return next(iter(trail.query(found)), None) is not None
