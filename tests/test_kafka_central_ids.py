"""Central ids (`sinks.kafka.centralids`): a new central trail names one host's rows in seq
order, so they follow each other in its id index; a central trail filled before the
scheme was recorded keeps the random ids its rows have, and a record received again
after the upgrade is still found stored."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from config.errors import TrailError
from config.models import KafkaConfig
from listener.model.event import natural_id
from sinks.base import EventFilter
from sinks.kafka.centralids import IDS_STATE, CentralIds
from sinks.kafka.publisher import STATE_PREFIX
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once

HASHES = [f"{n:064x}" for n in range(1, 400)]


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def test_one_host_trails_rows_follow_each_other_in_seq_order() -> None:
    ids = CentralIds("host-seq")
    a = [ids.event("trail-a", seq, digest) for seq, digest in enumerate(HASHES, 1)]
    b = [ids.event("trail-b", seq, digest) for seq, digest in enumerate(HASHES, 1)]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in a + b)
    assert a == sorted(a) and b == sorted(b)
    merged = sorted(a + b)  # each host's rows are one run of the index, not interleaved
    assert merged in (a + b, b + a)
    assert len(set(a + b)) == len(a) + len(b)


def test_the_same_key_names_an_event_and_an_alert_apart() -> None:
    ids = CentralIds("host-seq")
    assert ids.event("trail-a", 7, HASHES[0]) != ids.alert("trail-a", 7, HASHES[0])
    # a fork (another row at the same seq) is another id
    assert ids.event("trail-a", 7, HASHES[0]) != ids.event("trail-a", 7, HASHES[1])


def test_the_digest_scheme_is_the_ids_older_central_trails_hold() -> None:
    ids = CentralIds("digest")
    assert ids.event("t", 3, HASHES[2]) == natural_id("fleet-event", "t", 3, HASHES[2])
    assert ids.alert("t", 3, HASHES[2]) == natural_id("fleet-alert", "t", 3, HASHES[2])


def test_the_scheme_of_a_trail() -> None:
    assert CentralIds.of_trail({}, empty=True).scheme == "host-seq"
    assert CentralIds.of_trail({}, empty=False).scheme == "digest"  # filled before schemes
    recorded = {IDS_STATE: {"scheme": "digest"}}
    assert CentralIds.of_trail(recorded, empty=True).scheme == "digest"
    with pytest.raises(TrailError, match="unknown id scheme 'sorted'"):
        CentralIds.of_trail({IDS_STATE: {"scheme": "sorted"}}, empty=True)
    with pytest.raises(TrailError, match=r"unknown id scheme \['host-seq'\]"):
        CentralIds.of_trail({IDS_STATE: ["host-seq"]}, empty=True)  # type: ignore[dict-item]


def _host_rows(central: Path) -> list[tuple[int, str]]:
    """(host seq, central id) of the host events in the central trail."""
    with SQLiteTrail(central) as trail:
        found = [e for e in trail.query(EventFilter()) if e.type != "trail"]
    return sorted((event.attributes["fleet"]["seq"], event.id) for event in found)


def test_a_new_central_trail_records_its_scheme_and_orders_each_hosts_rows(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(30)
    host.publish(kafka)
    host.close()
    assert consume_once(central_config(tmp_path, kafka)).stored == 30 + 1  # and genesis
    with SQLiteTrail(tmp_path / "central.db") as trail:
        assert trail.load_source_state(IDS_STATE) == {"scheme": "host-seq"}
    rows = _host_rows(tmp_path / "central.db")
    assert [seq for seq, _ in rows] == list(range(1, 31))
    assert [central_id for _, central_id in rows] == sorted(central_id for _, central_id in rows)


def test_an_older_central_trail_keeps_its_ids_and_finds_records_received_again(
    tmp_path: Path, kafka: KafkaConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(4)
    host.publish(kafka)
    # Consumed as docktrail did before central ids had schemes: random ids, none recorded.
    with monkeypatch.context() as patched:
        patched.setattr(CentralIds, "of_trail", classmethod(lambda cls, *_, **__: cls("digest")))
        assert consume_once(central_config(tmp_path, kafka)).stored == 4 + 1
    with sqlite3.connect(tmp_path / "central.db") as conn:
        conn.execute("DELETE FROM source_state WHERE name = ?", (IDS_STATE,))
    before = _host_rows(tmp_path / "central.db")
    assert before == [(s, natural_id("fleet-event", i, s, h)) for s, i, h in _keys(tmp_path, 1, 4)]
    # The publisher crashed before storing its position: everything comes again.
    host.trail.append([], source_state={STATE_PREFIX + kafka.topic: {
        "events": 0, "alerts": 0, "checkpoints": 0}})  # fmt: skip
    host.add(2)
    host.publish(kafka)
    host.close()
    report = consume_once(central_config(tmp_path, kafka))
    assert (report.stored, report.duplicates, report.problems) == (2, 4 + 1, 0)
    with SQLiteTrail(tmp_path / "central.db") as trail:
        assert trail.load_source_state(IDS_STATE) == {"scheme": "digest"}
    after = _host_rows(tmp_path / "central.db")
    assert after == [(s, natural_id("fleet-event", i, s, h)) for s, i, h in _keys(tmp_path, 1, 6)]


def _keys(directory: Path, first: int, last: int) -> list[tuple[int, str, str]]:
    """(host seq, host trail id, host hash) of the host events `first..last`."""
    with SQLiteTrail(directory / "node-a.db") as trail:
        trail_id = trail.trail_id
        events = [e for e in trail.query(EventFilter()) if first <= (e.seq or 0) <= last]
    return [(e.seq or 0, trail_id, e.hash or "") for e in events]
