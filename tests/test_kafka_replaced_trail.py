"""A replaced host trail is one incident: `new-trail`, its new key told with it, not apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.models import KafkaConfig
from sinks.base import AlertFilter
from sinks.signing import load_or_create_key
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import (
    HostTrail,
    central_config,
    checkpoint_value,
    consume_once,
    event_values,
    produce,
)


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def chain_alerts(directory: Path) -> list[dict[str, Any]]:
    with SQLiteTrail(directory / "central.db") as central:
        found = central.query_alerts(AlertFilter(rule="host-chain-broken"))
        return [{"problem": a.details["problem"], "detail": a.details["detail"]} for a in found]


def replaced(directory: Path, kafka: KafkaConfig) -> HostTrail:
    """node-a published one trail; the host now writes another database (its own key)."""
    first = HostTrail(directory, "node-a")
    first.add(2)
    first.publish(kafka)
    first.close()
    consume_once(central_config(directory, kafka))
    replacement = HostTrail(directory, "node-a", name="node-a-new")
    replacement.count = 2
    return replacement


def test_a_replacement_whose_genesis_arrives_first_is_one_alert_naming_the_key(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = replaced(tmp_path, kafka)
    host.add(1)
    key = load_or_create_key(host.trail.signing_key)
    genesis = checkpoint_value(host, 1, 0, "0" * 64, key)
    produce(kafka, "node-a", [genesis, *event_values(host).values()])
    host.close()
    consume_once(central_config(tmp_path, kafka))
    [alert] = chain_alerts(tmp_path)
    assert alert["problem"] == "new-trail"
    assert "also key-changed" in alert["detail"]


def test_a_key_change_after_the_replacement_is_still_an_alert(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = replaced(tmp_path, kafka)
    stored = host.add(1)
    host.publish(kafka)  # rows, then the new trail's genesis under its own key
    other = Ed25519PrivateKey.generate()
    produce(kafka, "node-a", [checkpoint_value(host, 2, stored[0].seq or 0, stored[0].hash or "",
                                               other)])  # fmt: skip
    host.close()
    consume_once(central_config(tmp_path, kafka))
    assert [a["problem"] for a in chain_alerts(tmp_path)] == ["new-trail", "key-changed"]
