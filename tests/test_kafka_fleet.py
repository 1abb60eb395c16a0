"""Fleet rules over the central trail: what no single host sees."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.models import KafkaConfig
from listener.model.event import Actor
from sinks.base import AlertFilter
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once, host_event

UNTRUSTED = "evil.example.com/miner:1"


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def fleet_alerts(directory: Path, rule: str) -> list[dict[str, object]]:
    with SQLiteTrail(directory / "central.db") as central:
        return [a.details for a in central.query_alerts(AlertFilter(rule=rule))]


def publish_hosts(directory: Path, kafka: KafkaConfig, hosts: list[str], **event: object) -> None:
    for name in hosts:
        host = HostTrail(directory, name)
        host.add(1, **event)
        host.publish(kafka)
        host.close()


def test_the_same_untrusted_image_on_three_hosts(tmp_path: Path, kafka: KafkaConfig) -> None:
    pull = {"type": "image", "action": "pull", "actor": Actor(id=UNTRUSTED, name=UNTRUSTED)}
    publish_hosts(tmp_path, kafka, ["node-a", "node-b"], **pull)
    consume_once(central_config(tmp_path, kafka))
    assert fleet_alerts(tmp_path, "fleet-untrusted-image") == []  # two hosts: not yet
    publish_hosts(tmp_path, kafka, ["node-c"], **pull)
    consume_once(central_config(tmp_path, kafka))  # a restarted consumer keeps its windows
    [alert] = fleet_alerts(tmp_path, "fleet-untrusted-image")
    assert alert["hosts"] == ["node-a", "node-b", "node-c"]
    assert alert["normalized"] == UNTRUSTED


def test_a_trusted_image_on_every_host_is_quiet(tmp_path: Path, kafka: KafkaConfig) -> None:
    image = "docker.io/library/busybox:1.36"
    pull = {"type": "image", "action": "pull", "actor": Actor(id=image, name=image)}
    publish_hosts(tmp_path, kafka, ["node-a", "node-b", "node-c"], **pull)
    consume_once(central_config(tmp_path, kafka))
    assert fleet_alerts(tmp_path, "fleet-untrusted-image") == []


def test_churn_spread_over_hosts(tmp_path: Path, kafka: KafkaConfig) -> None:
    for name in ("node-a", "node-b", "node-c"):
        host = HostTrail(tmp_path, name)
        host.add(4, action="create")  # below any single host's churn threshold
        host.publish(kafka)
        host.close()
    rules = {"rules": {"fleet-churn": {"threshold": 10, "min_hosts": 3, "window_secs": 60}}}
    consume_once(central_config(tmp_path, kafka, **rules))
    [alert] = fleet_alerts(tmp_path, "fleet-churn")
    assert alert["count"] == 11 and alert["hosts"] == ["node-a", "node-b", "node-c"]


def test_one_host_naming_others_is_a_chain_alert_not_a_fleet(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    pull = {"type": "image", "action": "pull", "actor": Actor(id=UNTRUSTED, name=UNTRUSTED)}
    host = HostTrail(tmp_path, "node-a")
    for n, claimed in enumerate(("node-a", "node-b", "node-c"), start=1):
        host.trail.append([host_event(claimed, n, **pull)])
    host.publish(kafka)
    host.close()
    consume_once(central_config(tmp_path, kafka))

    assert fleet_alerts(tmp_path, "fleet-untrusted-image") == []  # one publisher
    broken = fleet_alerts(tmp_path, "host-chain-broken")
    assert [(a["problem"], a["host_seq"]) for a in broken] == [
        ("host-mismatch", 2),
        ("host-mismatch", 3),
    ]
    assert "names host 'node-b' but was published by 'node-a'" in str(broken[0]["detail"])
