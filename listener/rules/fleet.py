"""Fleet rules: judged by `docktrail consume` over the central trail of many hosts.

The host rules (`listener.rules.registry.RULES`) run on every host and their
alerts arrive with the host's trail; running them again centrally would only
repeat them. These rules see what no single host can: the chain of each host
as it arrives (`host-chain-broken`), churn summed over the fleet, and one
untrusted image spreading over hosts. They are pure functions over stored
central events, like the host rules, so replaying the central trail in seq
order rebuilds their state.

A central event carries how it arrived in `attributes.fleet`
(`sinks.kafka.chains`): the host chain position and, when the chain check
found one, `problem` and `detail`.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from config.models import RuleConfig, RulesConfig
from listener.model.event import Event
from listener.rules.activity import CHURN_ACTIONS
from listener.rules.base import Finding, Rule, RuleContext, RuleMeta, finding, judged
from listener.rules.image import named_reference, normalize_reference, untrusted_reason

_NS = 1_000_000_000
FLEET_KEY = "fleet"
# Untrusted images held (hosts that ran them lately) before those gone quiet are swept.
_IMAGES_SWEPT_FROM = 4_096
"""Key of `Event.attributes` under which the central trail records how an event arrived."""

CHAIN_BROKEN = RuleMeta(
    "host-chain-broken",
    "critical",
    "-",
    "A host's published trail has a gap, a fork, goes backwards, does not hash, is "
    "replaced by a new trail, or a checkpoint's signature or key does not match.",
    types=frozenset(),  # any type: checked on every central event
)
FLEET_CHURN = RuleMeta(
    "fleet-churn",
    "medium",
    "6.5",
    "More container creates/destroys across the fleet in a window than the threshold, "
    "from at least min_hosts hosts.",
)
FLEET_IMAGE = RuleMeta(
    "fleet-untrusted-image",
    "high",
    "4.2, 6.4",
    "The same untrusted image is pulled or run on min_hosts hosts within the window.",
    types=frozenset({"image", "container"}),
)

WINDOWED_TYPES = FLEET_CHURN.types | FLEET_IMAGE.types
"""Event types the time-windowed fleet rules count."""


def publisher(event: Event) -> str:
    """The host whose signed chain carried the event: the one fleet rules count.

    An event's own `host` is what the publisher wrote in it; a host naming
    others must not make one untrusted pull look like many hosts' pulls.
    """
    arrival = event.attributes.get(FLEET_KEY)
    if isinstance(arrival, Mapping) and isinstance(arrival.get("publisher"), str):
        return str(arrival["publisher"])
    return event.host


def check_chain(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    arrival = event.attributes.get(FLEET_KEY)
    if not isinstance(arrival, Mapping) or not arrival.get("problem"):
        return
    problem, detail = str(arrival["problem"]), str(arrival.get("detail") or "")
    yield finding(
        CHAIN_BROKEN,
        event,
        f"trail of host {publisher(event)}: {problem}: {detail}",
        problem=problem,
        detail=detail,
        trail_id=arrival.get("trail_id"),
        host_seq=arrival.get("seq"),
    )


@dataclass(slots=True)
class FleetState:
    churn: deque[tuple[int, str]] = field(default_factory=deque)
    churn_hosts: Counter[str] = field(default_factory=Counter)  # hosts in the churn window
    churn_quiet_until: int = 0
    image_hosts: dict[str, dict[str, int]] = field(default_factory=dict)
    image_alerted_until: dict[str, int] = field(default_factory=dict)
    sweep_images_at: int = _IMAGES_SWEPT_FROM  # images held when the next sweep runs


def fleet_state(ctx: RuleContext) -> FleetState:
    state = ctx.state.get(FLEET_KEY)
    if state is None:
        state = ctx.state[FLEET_KEY] = FleetState()
    return state


def check_fleet_churn(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action not in CHURN_ACTIONS:
        return
    settings = ctx.rules.fleet_churn
    state = fleet_state(ctx)
    window, counts = state.churn, state.churn_hosts
    window.append((event.time_ns, publisher(event)))
    counts[publisher(event)] += 1
    while window and window[0][0] <= event.time_ns - settings.window_secs * _NS:
        _, host = window.popleft()
        counts[host] -= 1
        if not counts[host]:
            del counts[host]
    hosts = counts.keys()
    if len(window) <= settings.threshold or len(hosts) < settings.min_hosts:
        return
    if event.time_ns < state.churn_quiet_until:
        return  # one alert per burst
    state.churn_quiet_until = event.time_ns + settings.window_secs * _NS
    yield finding(
        FLEET_CHURN,
        event,
        f"{len(window)} container creates/destroys on {len(hosts)} hosts "
        f"in {settings.window_secs}s",
        count=len(window),
        hosts=sorted(hosts),
        threshold=settings.threshold,
        window_secs=settings.window_secs,
    )


def check_fleet_image(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    reference = named_reference(event)
    if reference is None or untrusted_reason(reference, ctx.rules.untrusted_image) is None:
        return
    settings = ctx.rules.fleet_untrusted_image
    image = normalize_reference(reference)
    window_ns = settings.window_secs * _NS
    state = fleet_state(ctx)
    seen = state.image_hosts.setdefault(image, {})
    seen[publisher(event)] = event.time_ns
    for host, when in list(seen.items()):
        if when <= event.time_ns - window_ns:
            del seen[host]
    if len(state.image_hosts) >= state.sweep_images_at:
        _forget_quiet_images(state, event.time_ns, window_ns)
    if len(seen) < settings.min_hosts or event.time_ns < state.image_alerted_until.get(image, 0):
        return
    state.image_alerted_until[image] = event.time_ns + window_ns
    yield finding(
        FLEET_IMAGE,
        event,
        f"untrusted image {image} on {len(seen)} hosts within {settings.window_secs}s",
        normalized=image,
        hosts=sorted(seen),
        window_secs=settings.window_secs,
    )


def _forget_quiet_images(state: FleetState, now_ns: int, window_ns: int) -> None:
    """Images no host ran within the window and not in an alert's quiet period count as
    never seen: one-off tags across a fleet must not grow the tables for ever. Swept when
    they have doubled since the last sweep (a constant cost per new image)."""
    oldest = now_ns - window_ns
    state.image_hosts = {
        image: hosts
        for image, hosts in state.image_hosts.items()
        if any(when > oldest for when in hosts.values())
    }
    state.image_alerted_until = {
        image: until for image, until in state.image_alerted_until.items() if until > now_ns
    }
    state.sweep_images_at = max(_IMAGES_SWEPT_FROM, 2 * len(state.image_hosts))


FLEET_RULES: tuple[Rule, ...] = (
    Rule(CHAIN_BROKEN, check_chain),
    Rule(FLEET_CHURN, check_fleet_churn),
    Rule(FLEET_IMAGE, check_fleet_image),
)
FLEET_RULES_BY_ID: Mapping[str, Rule] = {rule.meta.id: rule for rule in FLEET_RULES}


def evaluate_fleet(event: Event, ctx: RuleContext) -> list[Finding]:
    """Findings of the enabled fleet rules on one central event (suppressed ones marked)."""
    findings: list[Finding] = []
    for rule in FLEET_RULES:
        settings: RuleConfig = rule.settings(ctx.rules)
        if not settings.enabled:
            continue
        findings.extend(judged(rule, settings, event, ctx))
    return findings


def fleet_context(rules: RulesConfig) -> RuleContext:
    return RuleContext(rules=rules)


def prime_fleet(events: Iterable[Event], ctx: RuleContext) -> None:
    """Rebuild the windows from recent central events without alerting."""
    for event in events:
        evaluate_fleet(event, ctx)
