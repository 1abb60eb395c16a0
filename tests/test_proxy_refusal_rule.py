"""A refusal of the socket proxy is an alert as well as an event (issue: every refusal)."""

from __future__ import annotations

from config.models import RulesConfig
from listener.model.event import Actor, Event, Who, natural_id
from listener.rules.engine import RuleEngine

T0 = 1_795_346_502_000_000_000


def api_call(action: str, **attributes: object) -> Event:
    return Event(
        id=natural_id("refusal", action),
        seq=1,
        time_ns=T0,
        source="docktrail",
        host="h1",
        type="api-call",
        action=action,
        actor=Actor(id="", name="priv-1"),
        attributes={"method": "POST", "path": "/containers/create", **attributes},
        who=Who(login="mallory", uid=1004, method="peer"),
    )


def test_a_refused_call_raises_one_high_alert_naming_who_and_why() -> None:
    reason = "docktrail policy refused this request for mallory: privileged"
    findings = RuleEngine(RulesConfig()).alerts_for_event(api_call("refused", refused=reason))
    [found] = [f for f in findings if f.rule == "proxy-refusal"]
    assert found.severity == "high"
    assert "mallory" in found.summary and "privileged" in found.summary
    assert found.details["path"] == "/containers/create"


def test_a_forwarded_call_raises_nothing() -> None:
    findings = RuleEngine(RulesConfig()).alerts_for_event(api_call("post", status=201))
    assert [f for f in findings if f.rule == "proxy-refusal"] == []
