"""A restarted consumer rebuilds its fleet windows from the events they count."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.models import KafkaConfig
from listener.event import Actor
from sinks.base import AlertFilter
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import T0, HostTrail, central_config, consume_once

UNTRUSTED = "evil.example.com/miner:1"
HOUR_NS = 3600 * 1_000_000_000


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def publish_pull(directory: Path, kafka: KafkaConfig, name: str, later_record: bool) -> None:
    host = HostTrail(directory, name)
    host.add(1, type="image", action="pull", actor=Actor(id=UNTRUSTED, name=UNTRUSTED))
    if later_record:  # docktrail's own record, stamped when written (here two hours on)
        host.add(1, source="docktrail", type="trail", action="trail-recovered",
                 time_ns=T0 + 2 * HOUR_NS, actor=Actor(id="trail"))  # fmt: skip
    host.publish(kafka)
    host.close()


def test_windows_survive_a_restart_after_later_docktrail_records(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    publish_pull(tmp_path, kafka, "node-a", later_record=False)
    publish_pull(tmp_path, kafka, "node-b", later_record=True)
    consume_once(central_config(tmp_path, kafka))
    publish_pull(tmp_path, kafka, "node-c", later_record=False)
    consume_once(central_config(tmp_path, kafka))  # restarted: windows from the trail
    with SQLiteTrail(tmp_path / "central.db") as central:
        found = list(central.query_alerts(AlertFilter(rule="fleet-untrusted-image")))
    assert [alert.details["hosts"] for alert in found] == [["node-a", "node-b", "node-c"]]
