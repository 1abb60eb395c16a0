"""A host chain that does not extend is an alert in the central trail, never a silent accept."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.models import KafkaConfig
from listener.consume import ConsumeReport
from sinks.base import AlertFilter
from sinks.kafka.chains import host_heads
from sinks.kafka.publisher import STATE_PREFIX
from sinks.signing import load_or_create_key
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import (
    HostTrail,
    alert_values,
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
    """(host seq, problem) of every host-chain-broken alert in the central trail."""
    with SQLiteTrail(directory / "central.db") as central:
        assert central.verify().ok  # the central trail itself stays intact
        found = central.query_alerts(AlertFilter(rule="host-chain-broken"))
        return [{"seq": a.details["host_seq"], "problem": a.details["problem"]} for a in found]


def consume(directory: Path, kafka: KafkaConfig) -> ConsumeReport:
    return consume_once(central_config(directory, kafka))


def test_a_gap_is_an_alert_and_the_rows_around_it_are_kept(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(5)
    values = event_values(host)
    produce(kafka, "node-a", [values[1], values[2], values[4], values[5]])
    report = consume(tmp_path, kafka)
    assert (report.stored, report.problems) == (4, 1)
    assert chain_alerts(tmp_path) == [{"seq": 4, "problem": "gap"}]


def test_a_rolled_back_and_rewritten_host_trail_is_a_fork(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(3)
    host.close()
    backup = tmp_path / "backup.db"
    shutil.copy(host.path, backup)
    host = HostTrail(tmp_path, "node-a")
    host.count = 3
    host.add(2)
    host.publish(kafka)
    host.close()
    # The attacker restores the backup and writes a different history after seq 3.
    shutil.copy(backup, host.path)
    host = HostTrail(tmp_path, "node-a")
    host.count = 3
    host.add(2, action="stop")
    published = {"events": 3, "alerts": 0, "checkpoints": 1}
    host.trail.append([], source_state={STATE_PREFIX + kafka.topic: published})
    host.publish(kafka)
    host.close()
    consume(tmp_path, kafka)
    problems = chain_alerts(tmp_path)
    assert {"seq": 4, "problem": "fork"} in problems
    assert all(p["problem"] in ("fork", "rewind") for p in problems)


def test_an_edited_event_does_not_hash(tmp_path: Path, kafka: KafkaConfig) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(3)
    values = event_values(host)
    record = orjson.loads(values[2])
    record["body"]["who"]["login"] = "mallory"
    produce(kafka, "node-a", [values[1], orjson.dumps(record), values[3]])
    consume(tmp_path, kafka)
    assert chain_alerts(tmp_path) == [{"seq": 2, "problem": "bad-hash"}]


def test_a_host_publishing_a_new_trail_is_an_alert(tmp_path: Path, kafka: KafkaConfig) -> None:
    first = HostTrail(tmp_path, "node-a")
    first.add(3)
    first.publish(kafka)
    first.close()
    replacement = HostTrail(tmp_path, "node-a", name="node-a-new")
    replacement.add(1)
    replacement.publish(kafka)
    replacement.close()
    consume(tmp_path, kafka)
    assert chain_alerts(tmp_path) == [{"seq": 1, "problem": "new-trail"}]


def test_checkpoints_going_backwards_or_signed_by_another_key_are_alerts(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    stored = host.add(5)
    key = load_or_create_key(host.trail.signing_key)
    hashes = [event.hash or "" for event in stored]
    bad_signature = orjson.loads(checkpoint_value(host, 4, 5, hashes[4], key))
    bad_signature["body"]["signature"] = "00" * 64
    produce(kafka, "node-a", [
        *event_values(host).values(),
        checkpoint_value(host, 1, 3, hashes[2], key),
        checkpoint_value(host, 2, 5, hashes[4], key),
        checkpoint_value(host, 3, 2, hashes[1], key),  # the trail went back to seq 2
        orjson.dumps(bad_signature),
        checkpoint_value(host, 5, 5, hashes[4], Ed25519PrivateKey.generate()),
    ])  # fmt: skip
    report = consume(tmp_path, kafka)
    assert report.stored == 5 + 5
    problems = [p["problem"] for p in chain_alerts(tmp_path)]
    assert problems == ["rewind", "bad-signature", "key-changed"]
    with SQLiteTrail(tmp_path / "central.db") as central:
        heads = list(host_heads(central, "node-a"))
    assert [(h["n"], h.get("problem")) for h in heads] == [
        (1, None),
        (2, None),
        (3, "rewind"),
        (4, "bad-signature"),
        (5, "key-changed"),
    ]


def test_malformed_records_are_reported_with_their_place_and_skipped(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(2)
    values = event_values(host)
    produce(kafka, "node-a", [values[1], b"\xffnot json", b'{"v": 9}', values[2]])
    report = consume(tmp_path, kafka)
    assert (report.stored, report.problems) == (2, 0)
    reasons = [str(error) for error in report.malformed]
    assert len(reasons) == 2
    assert all(f"{kafka.topic}[" in reason and "]@" in reason for reason in reasons)
    assert "not JSON" in reasons[0] and "not a docktrail v1 record" in reasons[1]


def test_an_alert_whose_event_never_arrived_is_an_alert(tmp_path: Path, kafka: KafkaConfig) -> None:
    host = HostTrail(tmp_path, "node-a")
    stored = host.add(2)
    host.alert(stored[1])
    events = event_values(host)
    # Event 2 is lost in transit: the alert on it arrives alone.
    produce(kafka, "node-a", [events[1], *alert_values(host).values()])
    report = consume(tmp_path, kafka)
    assert report.host_alerts == 0
    assert chain_alerts(tmp_path) == [{"seq": 1, "problem": "alert-without-event"}]
