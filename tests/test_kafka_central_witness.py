"""The central trail's copy of a host's signed heads is a witness for that host's trail:
a host trail later rolled back to an older copy of itself fails `verify --witness`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from config.models import KafkaConfig
from listener.cli import main
from sinks.kafka.chains import host_heads
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


def verify(host: HostTrail, witness: Path) -> tuple[int, str]:
    key = str(host.path.with_suffix(".key"))
    args = ["--db", str(host.path), "verify", "--public-key", key, "--witness", str(witness)]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_a_rolled_back_host_trail_fails_against_the_central_heads(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = HostTrail(tmp_path, "node-a")
    host.add(3)
    host.trail.checkpoint()
    host.close()
    older = tmp_path / "older-copy.db"
    shutil.copy(host.path, older)  # what an attacker keeps to put back later
    host = HostTrail(tmp_path, "node-a")
    host.count = 3
    host.add(3)
    host.trail.checkpoint()
    host.publish(kafka)
    host.close()
    consume_once(central_config(tmp_path, kafka))

    heads = tmp_path / "node-a.heads.jsonl"
    with SQLiteTrail(tmp_path / "central.db") as central:
        lines = [json.dumps(head) for head in host_heads(central, "node-a")]
    heads.write_text("\n".join(lines) + "\n")
    assert len(lines) == 3  # the genesis and both checkpoints

    code, output = verify(host, heads)
    assert code == 0 and "witness: 3 checkpoints agree" in output, output

    shutil.copy(older, host.path)  # rolled back: the first three events and their head
    for suffix in ("-wal", "-shm"):
        host.path.with_name(host.path.name + suffix).unlink(missing_ok=True)
    code, output = verify(host, heads)
    assert code == 1 and "ROLLED BACK" in output, output
