"""Hosts publish their trails to a real broker; `consume` builds the central trail."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from config.errors import SinkError
from config.models import KafkaConfig
from listener.model.event import GENESIS_HASH, canonical_json, chain_hash
from sinks.base import AlertFilter, EventFilter
from sinks.kafka.chains import host_content, host_heads
from sinks.kafka.publisher import STATE_PREFIX
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def test_events_alerts_and_heads_reach_the_central_trail(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    stored = host.add(5)
    host.alert(stored[2])
    checkpoint = host.trail.checkpoint()
    host.close()

    # The events, the alert, the genesis checkpoint sealed when the trail was created
    # (it pins the host's key and trail_id from the start) and the later checkpoint.
    assert host.publish(kafka) == 5 + 1 + 2
    report = consume_once(central_config(tmp_path, kafka))
    assert (report.stored, report.problems, report.host_alerts, len(report.malformed)) == (
        7,
        0,
        1,
        0,
    )

    with SQLiteTrail(tmp_path / "central.db") as central:
        events = list(central.query(EventFilter(host="node-a", type="container")))
        assert [e.attributes["fleet"]["seq"] for e in events] == [1, 2, 3, 4, 5]
        # The host's own hash is recomputable from the central copy.
        for event, original in zip(events, stored, strict=True):
            content = host_content(event)
            assert chain_hash(event.attributes["fleet"]["prev_hash"], canonical_json(content)) == (
                original.hash
            )
        [alert] = central.query_alerts(AlertFilter())
        assert alert.rule == "privileged-container"
        assert alert.event_seq == events[2].seq and alert.event_id == events[2].id
        genesis, head = host_heads(central, "node-a")
        assert (genesis["n"], genesis["seq"], genesis["hash"]) == (1, 0, GENESIS_HASH)
        assert "problem" not in genesis and genesis["key_fingerprint"] == head["key_fingerprint"]
        assert (head["seq"], head["hash"], head["signature"]) == (
            checkpoint.seq,
            checkpoint.hash,
            checkpoint.signature,
        )
        assert central.verify().ok


def test_publishing_resumes_from_the_stored_position(tmp_path: Path, kafka: KafkaConfig) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(3)
    assert host.publish(kafka) == 3 + 1  # and the genesis checkpoint
    assert host.publish(kafka) == 0  # nothing new: nothing sent again
    host.add(2)
    assert host.publish(kafka) == 2
    position = host.trail.load_source_state(STATE_PREFIX + kafka.topic)
    assert position is not None and position.pop("partition") in range(kafka.partitions)
    del position["end_offset"], position["end_offset_partition"]
    assert position == {"events": 5, "alerts": 0, "checkpoints": 1}
    host.close()
    central = central_config(tmp_path, kafka)
    report = consume_once(central)
    assert (report.records, report.stored, report.problems) == (6, 6, 0)
    assert consume_once(central).records == 0  # the central trail keeps its offsets


def test_a_host_keeps_its_partition(tmp_path: Path, kafka: KafkaConfig) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(2)
    host.publish(kafka)
    name = STATE_PREFIX + kafka.topic
    position = host.trail.load_source_state(name)
    assert position is not None
    # As if the topic had grown and the host's name now hashed elsewhere: the stored one wins.
    other = (position["partition"] + 1) % kafka.partitions
    host.trail.append([], source_state={name: position | {"partition": other}})
    host.add(2)
    host.publish(kafka)
    host.close()
    consume_once(central_config(tmp_path, kafka))
    with SQLiteTrail(tmp_path / "central.db") as trail:
        offsets = trail.load_source_state("kafka.consume:" + kafka.topic)
    # The first partition also holds the genesis checkpoint.
    assert offsets == {str(position["partition"]): 3, str(other): 2}


def test_a_broker_outage_delays_publication_and_loses_nothing(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(3)
    down = kafka.model_copy(update={"bootstrap_servers": f"127.0.0.1:{closed_port()}"})
    with pytest.raises(SinkError, match=r"kafka 127\.0\.0\.1:"):
        host.publish(down)
    assert host.trail.load_source_state(STATE_PREFIX + kafka.topic) is None
    host.add(1)
    assert host.publish(kafka) == 4 + 1  # and the genesis checkpoint
    host.close()
    assert consume_once(central_config(tmp_path, kafka)).stored == 5


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the test connects


def test_records_received_twice_are_stored_once(tmp_path: Path, kafka: KafkaConfig) -> None:
    host = HostTrail(tmp_path, "node-a")
    event = host.add(4)[0]
    host.alert(event)
    host.trail.checkpoint()
    host.publish(kafka)
    # A publisher that crashed before storing its position sends everything again.
    host.trail.append([], source_state={STATE_PREFIX + kafka.topic: {
        "events": 0, "alerts": 0, "checkpoints": 0}})  # fmt: skip
    host.publish(kafka)
    host.close()
    report = consume_once(central_config(tmp_path, kafka))
    assert report.records == 2 * (4 + 1 + 2)  # events, alert, genesis and checkpoint
    assert (report.stored, report.duplicates, report.problems, report.host_alerts) == (6, 7, 0, 1)
