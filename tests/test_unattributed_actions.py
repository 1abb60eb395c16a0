"""`unattributed-change` covers every state change a login asks for, raw-API starts
included, but not the daemon's own restarts of a container by its restart policy."""

from __future__ import annotations

from listener.model.event import Event, Who
from listener.rules.base import RuleContext
from tests.test_rules import event, rules_fired

_S = 1_000_000_000
T0 = 1_795_346_502_000_000_000


def unknown(action: str, at_s: float = 0, **config: object) -> Event:
    return event(
        action, login=None, actor_id="c0ffee", time_ns=T0 + int(at_s * _S), config=dict(config)
    ).model_copy(update={"who": Who(method="unknown")})


def fired(ctx: RuleContext, *events: Event) -> list[bool]:
    return ["unattributed-change" in rules_fired(e, ctx) for e in events]


def test_raw_api_start_stop_and_kill_are_flagged() -> None:
    ctx = RuleContext(attribution_available=True)
    assert fired(ctx, unknown("start"), unknown("kill", 5), unknown("stop", 6)) == [True] * 3
    assert fired(ctx, unknown("die", 5.5)) == [False]  # the kill/stop says it already


def test_a_restart_policy_start_after_an_exit_is_not_flagged() -> None:
    ctx = RuleContext(attribution_available=True)
    exited = unknown("die", 0, restart_policy="always")
    policy_start = unknown("start", 2, restart_policy="always")
    assert fired(ctx, exited, policy_start) == [False, False]
    # a start long after the exit, or after a deliberate stop, is someone's
    assert fired(ctx, unknown("die", 10), unknown("start", 200, restart_policy="always")) == [
        False,
        True,
    ]
    stopped = [unknown("die", 300), unknown("stop", 300.1), unknown("start", 301)]
    assert fired(ctx, *stopped) == [False, True, True]
    # without a restart policy a start right after an exit is someone's too
    assert fired(ctx, unknown("die", 400, restart_policy="no"), unknown("start", 401)) == [
        False,
        True,
    ]


def test_the_start_of_a_container_whose_exit_was_not_seen_is_the_daemons() -> None:
    """A daemon restart: the old daemon's die is lost, the new one restores the container."""
    ctx = RuleContext(attribution_available=True)
    started = event("start", actor_id="c0ffee", time_ns=T0)  # by a login
    restored = unknown("start", 600, restart_policy="unless-stopped")
    assert fired(ctx, started, restored) == [False, False]
    assert fired(ctx, unknown("die", 700), unknown("stop", 700), unknown("start", 900)) == [
        False,
        True,
        True,
    ]


def test_attributed_start_and_no_audit_coverage_are_not_flagged() -> None:
    assert not fired(RuleContext(attribution_available=True), event("start"))[0]
    assert not fired(RuleContext(attribution_available=False), unknown("start"))[0]
