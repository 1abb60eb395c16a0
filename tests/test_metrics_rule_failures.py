"""A rule that fails on an odd stored event is counted on /metrics, by rule."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import generate_latest

from listener.metrics import ServiceMetrics
from listener.model.event import Actor, Event, natural_id
from listener.rules.base import note_failure


def test_rule_failures_are_a_gauge_by_rule(tmp_path: Path) -> None:
    metrics = ServiceMetrics(tmp_path / "trail.db")
    event = Event(
        id=natural_id("metrics-test", 1),
        time_ns=1_795_346_502_000_000_000,
        source="docker",
        host="h1",
        type="container",
        action="create",
        actor=Actor(id="c1"),
    )
    for _ in range(3):
        note_failure("metrics-test-rule", event, ValueError("odd body"))
    text = generate_latest(metrics.registry).decode()
    assert 'docktrail_rule_failures{rule="metrics-test-rule"} 3.0' in text
