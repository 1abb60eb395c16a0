"""`consume --heads` lists the checkpoints a host signed, never rows that look like them."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.models import KafkaConfig
from sinks.base import EventFilter
from sinks.kafka.chains import host_heads
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once, host_event


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def test_a_host_row_dressed_as_a_signed_head_is_not_one(tmp_path: Path, kafka: KafkaConfig) -> None:
    # Host trails hold docktrail's own `trail` events now; one who can write a host's trail
    # adds a row shaped like the central record of a signed head, for itself and another host.
    fake = {"n": 9, "seq": 99, "hash": "f" * 64, "signature": "00" * 64}
    host = HostTrail(tmp_path, "node-a")
    host.add(1)
    dressed = {"source": "docktrail", "type": "trail", "action": "checkpoint",
               "attributes": {"checkpoint": fake}}  # fmt: skip
    rows = [host_event("node-a", 2, **dressed), host_event("node-a", 3, **dressed)]
    host.trail.append([rows[0], rows[1].model_copy(update={"host": "node-b"})])
    host.publish(kafka)
    host.close()
    consume_once(central_config(tmp_path, kafka))
    with SQLiteTrail(tmp_path / "central.db") as central:
        stored = list(central.query(EventFilter(type="trail", action="checkpoint")))
        assert len(stored) == 3  # the rows are kept as evidence, with the genesis head
        assert [h["n"] for h in host_heads(central, "node-a")] == [1]  # the genesis only
        assert list(host_heads(central, "node-b")) == []
