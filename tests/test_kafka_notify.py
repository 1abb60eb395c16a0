"""`consume` sends fleet and chain alerts to the destinations; the hosts' own only when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.models import KafkaConfig
from listener.model.event import Actor
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once
from tests.notify_servers import WebhookServer

UNTRUSTED = "evil.example.com/miner:1"


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def publish_fleet(directory: Path, kafka: KafkaConfig) -> None:
    pull = {"type": "image", "action": "pull", "actor": Actor(id=UNTRUSTED, name=UNTRUSTED)}
    for name in ("node-a", "node-b", "node-c"):
        host = HostTrail(directory, name)
        [event] = host.add(1, **pull)
        host.alert(event, "untrusted-image")  # each host alerted on its own pull
        host.publish(kafka)
        host.close()


def alert_rules(server: WebhookServer) -> list[str]:
    rules = []
    for item in server.received:
        rules += [alert["rule"] for alert in item.json["alerts"]]  # docktrail's own object
    return sorted(rules)


@pytest.mark.parametrize(
    ("notify_host_alerts", "expected"),
    [
        (False, ["fleet-untrusted-image"]),
        (True, ["fleet-untrusted-image", *["untrusted-image"] * 3]),
    ],
)
def test_fleet_alerts_reach_the_destinations(
    tmp_path: Path,
    kafka: KafkaConfig,
    webhook_server: WebhookServer,
    notify_host_alerts: bool,
    expected: list[str],
) -> None:
    publish_fleet(tmp_path, kafka)
    kafka = kafka.model_copy(update={"consume": kafka.consume.model_copy(
        update={"notify_host_alerts": notify_host_alerts})})  # fmt: skip
    destination = {"name": "secops", "url": webhook_server.json_url(), "format": "json",
                   "min_severity": "high"}  # fmt: skip
    notifications = {"destinations": [destination], "group_window_secs": 0,
                     "dedup_window_secs": 0}  # fmt: skip
    report = consume_once(central_config(tmp_path, kafka, notifications=notifications))
    assert (report.alerts, report.host_alerts) == (1, 3)
    assert alert_rules(webhook_server) == expected
