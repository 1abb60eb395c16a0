"""container-churn's baseline learned from the trail's history (`baseline: learn`).

Each case gives a history (windows of creates/destroys of one host, image and
login), then a burst, and says whether the burst alerts and with which
threshold. The history is learned either by the engine's `prime` (a service
starting on a trail that holds it) or by evaluating it event by event (a
service that saw it live); both must agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from config.models import RulesConfig
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from listener.rules.activity import activity_state
from listener.rules.engine import RuleEngine, RulesStage
from sinks.base import AlertFilter
from sinks.memory import MemoryTrail

WINDOW_SECS = 60
_S = 1_000_000_000
BASE_NS = 1_795_000_020 // WINDOW_SECS * WINDOW_SECS * _S  # a window's start
_counter = iter(range(1, 10**9))


def burst(start_ns: int, count: int, *, login: str = "ci", image: str = "app:1") -> list[Event]:
    """`count` creates/destroys (alternating) 100 ms apart, by `login`, of `image`."""
    events = []
    for i in range(count):
        n = next(_counter)
        events.append(
            Event(
                seq=n,  # as stored: alerts point at stored events
                id=natural_id("churn-test", n),
                time_ns=start_ns + i * _S // 10,
                source="docker",
                host="h1",
                type="container",
                action="create" if i % 2 == 0 else "destroy",
                actor=Actor(id=f"c{n // 2}", name=f"job-{n // 2}", image=image),
                who=Who(login=login, method="auditd-cli"),
            )
        )
    return events


def history(counts: list[int], **kwargs: Any) -> list[Event]:
    """One burst per count, every other window, so that no two bursts share a window."""
    events: list[Event] = []
    for index, count in enumerate(counts):
        events += burst(BASE_NS + 2 * index * WINDOW_SECS * _S, count, **kwargs)
    return events


def after(events: list[Event]) -> int:
    """The start of a window well after `events` (their sliding window is over)."""
    window_ns = WINDOW_SECS * _S
    return (events[-1].time_ns // window_ns + 4) * window_ns


@dataclass(frozen=True)
class Case:
    name: str
    history: list[int]
    burst: int
    fires: bool
    threshold: int | None = None  # expected `threshold` of the alert
    baseline: str | None = None  # expected `baseline` of the alert
    learned: int | None = None  # expected `learned_threshold` of the alert
    rule: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("routine 40 per window is learned: 40 again is quiet", [40] * 30, 40, False),
    Case("routine 40: 60 is still within the baseline (40 x 1.5)", [40] * 30, 60, False),
    Case("routine 40: a burst of 100 alerts over the learned 60", [40] * 30, 100, True, 60,
         "learned", 60),
    Case("too little history: the configured threshold applies", [40] * 10, 40, True, 20,
         "fixed", None),
    Case("baseline fixed ignores the history", [40] * 30, 40, True, 20, "fixed", None,
         {"baseline": "fixed"}),
    Case("a learned threshold below the configured one does not lower it", [6] * 30, 21, True,
         20, "fixed", 9),
    Case("a quiet history keeps the configured threshold: 20 is quiet", [6] * 30, 20, False),
    Case("min windows is configurable", [40] * 10, 40, False, rule={"baseline_min_windows": 10}),
    Case("p99 of 30 windows is their highest: one outlier of 80 sets it", [10] * 29 + [80], 100,
         False),
    Case("a lower percentile leaves the outlier out", [10] * 29 + [80], 31, True, 30, "learned",
         30, {"baseline_percentile": 90, "baseline_factor": 3}),
]  # fmt: skip


def rules(case: Case) -> RulesConfig:
    settings = {"threshold": 20, "window_secs": WINDOW_SECS, **case.rule}
    return RulesConfig.model_validate({"container-churn": settings})


def churn_alerts(alerts: list[Alert]) -> list[Alert]:
    return [alert for alert in alerts if alert.rule == "container-churn"]


def learned_live(case: Case, past: list[Event]) -> RuleEngine:
    engine = RuleEngine(rules(case))
    engine.alerts_for(past)
    return engine


def learned_at_start(case: Case, past: list[Event]) -> RuleEngine:
    engine = RuleEngine(rules(case))
    # As `RulesStage` does: only the last two windows are evaluated again.
    engine.prime(iter(past), recent_from_ns=past[-1].time_ns - engine.window_ns())
    return engine


@pytest.mark.parametrize("learn", [learned_live, learned_at_start], ids=["live", "prime"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_churn_threshold(case: Case, learn: Any) -> None:
    past = history(case.history)
    engine = learn(case, past)
    found = churn_alerts(engine.alerts_for(burst(after(past), case.burst)))
    assert bool(found) is case.fires
    if case.fires:
        assert case.threshold is not None
        (alert,) = found
        details = alert.details
        assert (details["threshold"], details["baseline"]) == (case.threshold, case.baseline)
        assert details["learned_threshold"] == case.learned
        assert details["configured_threshold"] == 20
        assert details["scopes"]["host h1"] == case.threshold + 1  # fires as it goes over


def test_the_baseline_keeps_learning_as_events_flow() -> None:
    case = Case("", [], 0, False)
    engine = RuleEngine(rules(case))
    past = history([40] * 23)
    assert churn_alerts(engine.alerts_for(past))  # not learned yet: 40 > 20 alerts
    more = burst(after(past), 40)
    engine.alerts_for(more)  # the 24th window...
    later = burst(after(more), 40)
    assert not churn_alerts(engine.alerts_for(later))  # ...once closed, 40 is usual


def test_each_scope_learns_its_own_baseline() -> None:
    """The host and the CI login churn routinely; alice never did: her burst alerts."""
    case = Case("", [], 0, False)
    past = history([40] * 30)
    engine = learned_at_start(case, past)
    (alert,) = churn_alerts(engine.alerts_for(burst(after(past), 40, login="alice")))
    assert alert.details["scopes"] == {"user h1/alice": 21}
    assert alert.details["thresholds"] == {"user h1/alice": 20}
    assert alert.details["baseline"] == "fixed"


def test_memory_is_per_window_not_per_event() -> None:
    engine = learned_at_start(Case("", [], 0, False), history([40] * 30))
    baselines = activity_state(engine.context).baselines
    host = baselines["host", "h1"]
    assert host.histogram == {40: 29} and host.windows == 29  # the last window is still open
    assert host.learned == 60
    assert set(baselines) == {("host", "h1"), ("image", "h1", "app:1"), ("user", "h1", "ci")}


async def test_a_restarted_service_learns_from_the_trail() -> None:
    """`RulesStage.start` primes from the stored, evaluated history; then a burst is judged."""
    trail = MemoryTrail()
    past = history([40] * 30)
    stored = trail.append(past).stored
    trail.append_alerts([], evaluated_through=stored[-1].seq)
    engine = RuleEngine(rules(Case("", [], 0, False)))
    stage = RulesStage(trail, engine)
    await stage.start()
    usual = trail.append(burst(after(past), 40)).stored
    await stage.after_write(usual)
    unusual = trail.append(burst(after(usual), 100)).stored
    await stage.after_write(unusual)
    alerts = churn_alerts(list(trail.query_alerts(AlertFilter())))
    assert [a.event_seq for a in alerts] == [unusual[60].seq]
    assert alerts[0].details["baseline"] == "learned"
