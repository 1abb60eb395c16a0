"""The record format and the chain check alone (no broker): bounds and spoofing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from config.errors import InputError
from listener.model.event import Actor, canonical_json, chain_hash
from sinks.kafka.chains import FleetChains, host_content
from sinks.kafka.chainstate import Accepted, Located
from sinks.kafka.records import decode
from sinks.signing import load_or_create_key
from tests.kafka_hosts import HostTrail, checkpoint_value, event_values


def accept(values: list[bytes]) -> Accepted:
    records = [Located(decode(v, f"t[0]@{i}", 1 << 20), f"t[0]@{i}") for i, v in enumerate(values)]
    return FleetChains({}).accept(records, set(), set())


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "tombstone"),
        (b"x" * 2000, "exceeds 1024"),
        (b"[1]", "not a docktrail v1 record"),
        (b'{"v":1,"kind":"nope","host":"h","trail_id":"t","seq":1,"body":{}}', "unknown kind"),
        (b'{"v":1,"kind":"event","host":"","trail_id":"t","seq":1,"body":{}}', "host and"),
        (b'{"v":1,"kind":"event","host":"h","trail_id":"t","seq":0,"body":{}}', "positive"),
        (b'{"v":1,"kind":"event","host":"h","trail_id":"t","seq":true,"body":{}}', "positive"),
        (b'{"v":1,"kind":"event","host":"h","trail_id":"t","seq":1,"body":{},"hash":"ab"}', "hex"),
    ],
)
def test_bad_records_are_refused_with_their_place(value: bytes | None, reason: str) -> None:
    with pytest.raises(InputError, match=reason) as caught:
        decode(value, "topic[2]@17", 1024)
    assert str(caught.value).startswith("topic[2]@17: ")


def test_a_host_attribute_named_fleet_can_neither_fake_nor_hide_a_problem(tmp_path: Path) -> None:
    host = HostTrail(tmp_path, "node-a")
    fake = {"problem": "gap", "detail": "made up"}
    stored = host.add(2, type="volume", action="create", actor=Actor(id="v"),
                      attributes={"fleet": fake})  # fmt: skip
    values = event_values(host)
    accepted = accept(list(values.values()))
    assert accepted.problems == 0
    for event, original in zip(accepted.events, stored, strict=True):
        assert "problem" not in event.attributes["fleet"]
        fleet = event.attributes["fleet"]
        digest = chain_hash(fleet["prev_hash"], canonical_json(host_content(event)))
        assert digest == original.hash


def test_an_invalid_event_body_is_malformed_and_the_next_row_shows_the_gap(tmp_path: Path) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(3)
    values = event_values(host)
    broken = orjson.loads(values[2])
    broken["body"]["unexpected"] = 1  # not an event any more: refused, not stored
    accepted = accept([values[1], orjson.dumps(broken), values[3]])
    assert [str(e) for e in accepted.malformed] == [
        "t[0]@1: event seq 2: unexpected: Extra inputs are not permitted"
    ]
    assert [e.attributes["fleet"].get("problem") for e in accepted.events] == [None, "gap"]


def test_an_edited_host_chain_state_stops_consume_with_its_name() -> None:
    from config.errors import TrailError

    with pytest.raises(TrailError, match=r"source_state fleet\.host:node-a: not a host chain"):
        FleetChains({"fleet.host:node-a": {"trail_id": "t", "events": "oops"}})


def test_a_new_trail_is_told_on_its_host_s_next_stored_row_even_in_a_later_batch(
    tmp_path: Path,
) -> None:
    first, second, other = (HostTrail(tmp_path, "node-a"), HostTrail(tmp_path, "node-a", "new"),
                            HostTrail(tmp_path, "node-b"))  # fmt: skip
    for host in (first, second, other):
        host.add(1)
    chains = FleetChains({})
    located = [
        Located(decode(v, "t[0]@0", 1 << 20), "t[0]@0") for v in event_values(first).values()
    ]
    chains.accept(located, set(), set())
    broken = orjson.loads(event_values(second)[1])
    broken["body"]["unexpected"] = 1  # the new trail's first record is refused ...
    batch = [orjson.dumps(broken), event_values(other)[1]]
    located = [Located(decode(v, f"t[0]@{i}", 1 << 20), f"t[0]@{i}") for i, v in enumerate(batch)]
    accepted = chains.accept(located, set(), set())
    assert [e.attributes["fleet"].get("problem") for e in accepted.events] == [None]  # node-b
    states = chains.changed_states()  # ... and the switch survives a restart of consume
    later = FleetChains(states)
    second.add(1)
    located = [Located(decode(event_values(second)[2], "t[0]@2", 1 << 20), "t[0]@2")]
    accepted = later.accept(located, set(), set())
    assert [e.attributes["fleet"].get("problem") for e in accepted.events] == ["new-trail"]


def test_a_forged_checkpoint_moves_nothing(tmp_path: Path) -> None:
    host = HostTrail(tmp_path, "node-a")
    stored = host.add(2)
    key = load_or_create_key(host.trail.signing_key)
    forged = orjson.loads(checkpoint_value(host, 999, 2, stored[1].hash or "", key))
    forged["body"]["signature"] = "00" * 64
    genuine = checkpoint_value(host, 1, 2, stored[1].hash or "", key)
    accepted = accept([*event_values(host).values(), orjson.dumps(forged), genuine])
    problems = [e.attributes["fleet"].get("problem") for e in accepted.events]
    assert problems == [None, None, "bad-signature", None]  # not a "rewind" after n 999


def test_made_up_host_names_beyond_max_hosts_are_refused_and_known_hosts_go_on(
    tmp_path: Path,
) -> None:
    """Whoever may write to the topic cannot grow the consumer's chains without end."""
    hosts = [HostTrail(tmp_path, f"node-{n}") for n in range(4)]
    for host in hosts:
        host.add(2)
    chains = FleetChains({}, max_hosts=2)
    values = [event_values(host)[1] for host in hosts] + [event_values(hosts[0])[2]]
    located = [Located(decode(v, f"t[0]@{i}", 1 << 20), f"t[0]@{i}") for i, v in enumerate(values)]
    accepted = chains.accept(located, set(), set())
    assert sorted(chains.hosts) == ["node-0", "node-1"]
    assert [e.attributes["fleet"]["publisher"] for e in accepted.events] == [
        "node-0",
        "node-1",
        "node-0",
    ]
    assert [(m.path, "kafka.consume.max_hosts" in m.reason) for m in accepted.malformed] == [
        ("t[0]@2", True),
        ("t[0]@3", True),
    ]
