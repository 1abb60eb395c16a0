"""A broker restarted with empty storage: the hosts republish, the central trail stays exact."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sinks.base import EventFilter
from sinks.kafka.publisher import STATE_PREFIX
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once
from tests.kafka_tansu import TansuBroker


def central_seqs(directory: Path, host: str) -> list[int]:
    with SQLiteTrail(directory / "central.db") as central:
        assert central.verify().ok
        events = central.query(EventFilter(host=host, type="container"))
        return [event.attributes["fleet"]["seq"] for event in events]


def test_a_broker_restarted_empty_gets_the_trail_again(
    tmp_path: Path, tansu: TansuBroker, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = topic_config(tansu.bootstrap)
    host = HostTrail(tmp_path, "node-a")
    host.alert(host.add(6)[1])
    host.trail.checkpoint()
    host.publish(kafka)
    first = consume_once(central_config(tmp_path, kafka))
    assert (first.stored, first.problems, first.host_alerts) == (6 + 2, 0, 1)  # and heads

    tansu.restart()  # every record and the topic itself are gone
    # The central consumer notices first here: its stored offsets are past the new ends.
    assert consume_once(central_config(tmp_path, kafka)).records == 0
    host.add(3)
    with caplog.at_level(logging.WARNING, logger="sinks.kafka.publisher"):
        sent = host.publish(kafka)
    assert "kafka topic is behind the published position" in caplog.text
    # The new events first (they showed the loss), then the whole trail again:
    # events, alert, genesis and the later checkpoint.
    assert sent == 3 + (9 + 1 + 2)
    position = host.trail.load_source_state(STATE_PREFIX + kafka.topic)
    assert position is not None and position["events"] == 9
    host.close()

    again = consume_once(central_config(tmp_path, kafka))
    assert (again.stored, again.problems) == (3, 0)
    assert again.duplicates >= 6
    assert central_seqs(tmp_path, "node-a") == list(range(1, 10))


def test_a_consumer_started_after_the_republication_reads_it_all(
    tmp_path: Path, tansu: TansuBroker
) -> None:
    kafka = topic_config(tansu.bootstrap)
    host = HostTrail(tmp_path, "node-a")
    host.add(4)
    host.publish(kafka)
    assert consume_once(central_config(tmp_path, kafka)).stored == 4 + 1  # and genesis
    tansu.restart()
    host.add(2)
    host.publish(kafka)  # republished before the consumer looks again
    host.close()
    report = consume_once(central_config(tmp_path, kafka))
    assert report.problems == 0
    assert central_seqs(tmp_path, "node-a") == list(range(1, 7))
