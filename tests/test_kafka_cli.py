"""`ingest` and `run` publish when `kafka:` is set; `docktrail consume` builds the central trail."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner, Result

from config.models import KafkaConfig
from listener.cli import main
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config

if TYPE_CHECKING:
    from tests.dockerd import Dockerd

EVENTS = Path(__file__).parent / "data" / "scenario-a" / "events.jsonl"


@pytest.fixture
def kafka(kafka_bootstrap: str) -> KafkaConfig:
    return topic_config(kafka_bootstrap)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`consume` in-process sets up the service's logging; later tests expect pytest's."""
    root, quiet = logging.getLogger(), logging.getLogger("aiokafka")
    saved = (root.handlers[:], root.level, quiet.level)
    yield
    root.handlers[:], _, _ = saved
    root.setLevel(saved[1])
    quiet.setLevel(saved[2])


def kafka_yaml(kafka: KafkaConfig) -> str:
    return (
        f"kafka:\n  bootstrap_servers: '{kafka.bootstrap_servers}'\n  topic: {kafka.topic}\n"
        "  create_topics: true\n  publish_interval_secs: 0.1\n"
    )


def write_config(path: Path, host: str, trail: Path, kafka: KafkaConfig, extra: str = "") -> Path:
    path.write_text(f"host: {host}\ntrail:\n  path: {trail}\n{extra}{kafka_yaml(kafka)}")
    return path


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config), *args], catch_exceptions=False)


def test_ingest_publishes_and_consume_builds_the_central_trail(
    tmp_path: Path, kafka: KafkaConfig
) -> None:
    host = write_config(tmp_path / "host.yaml", "node-a", tmp_path / "host.db", kafka)
    central = write_config(tmp_path / "central.yaml", "central", tmp_path / "central.db", kafka)
    result = cli(host, "ingest", "--docker-events", str(EVENTS))
    assert result.exit_code == 0, result.output
    assert "records to kafka" in result.output
    with SQLiteTrail(tmp_path / "host.db") as trail:
        stored = trail.count()
    result = cli(central, "consume", "--once")
    assert result.exit_code == 0, result.output
    # The events, the genesis checkpoint and the one sealing the ingest.
    assert f"stored {stored + 2}," in result.output
    assert "chain problems 0" in result.output
    again = cli(host, "ingest", "--docker-events", str(EVENTS))
    assert "published 0 records to kafka" in again.output  # nothing new: nothing sent
    assert "stored 0," in cli(central, "consume", "--once").output
    heads = [
        json.loads(line) for line in cli(central, "consume", "--heads", "node-a").output.split()
    ]
    assert heads and heads[-1]["seq"] == stored and "problem" not in heads[-1]


def test_consume_without_kafka_settings_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"trail:\n  path: {tmp_path / 'c.db'}\n")
    result = CliRunner().invoke(main, ["-c", str(config), "consume", "--once"])
    assert result.exit_code == 2
    assert "needs a kafka: section" in result.output


def test_run_publishes_while_running_and_up_to_its_last_seal(
    tmp_path: Path, kafka: KafkaConfig, dockerd: Dockerd
) -> None:
    from tests.dockerd import BUSYBOX_REF, wait_until
    from tests.kafka_hosts import central_config, consume_once
    from tests.test_run_live import Service

    service = Service(tmp_path, dockerd)
    service.config.write_text(service.config.read_text() + kafka_yaml(kafka))
    service.start()
    central = central_config(tmp_path, kafka)
    try:
        dockerd.docker("create", "--name", "kafka-live-1", BUSYBOX_REF, "true")

        def arrived() -> bool:
            consume_once(central)
            with SQLiteTrail(tmp_path / "central.db") as trail:
                return any(trail.query(EventFilter(container="kafka-live-1", action="create")))

        assert wait_until(arrived, timeout=20), service.log_text()
    finally:
        assert service.stop() == 0, service.log_text()
    consume_once(central)
    with SQLiteTrail(service.trail_path) as host, SQLiteTrail(tmp_path / "central.db") as trail:
        seq, digest = host.head()
        from sinks.kafka.chains import host_heads

        last = list(host_heads(trail, "live-test"))[-1]
        assert (last["seq"], last["hash"]) == (seq, digest)  # the seal at SIGTERM arrived


def test_run_keeps_recording_while_the_brokers_are_down(tmp_path: Path) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens there once the socket is closed
    config = tmp_path / "docktrail.yaml"
    config.write_text(
        f"trail:\n  path: {tmp_path / 't.db'}\n"
        f"docker:\n  host: unix://{tmp_path / 'no-docker.sock'}\n"
        "auditd:\n  enabled: false\n"
        f"kafka:\n  bootstrap_servers: '127.0.0.1:{port}'\n  publish_interval_secs: 0.1\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-m", "listener", "-c", str(config), "run"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert child.stderr is not None
    messages: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any("kafka publish failed" in m for m in messages):
        messages.append(json.loads(child.stderr.readline() or '{"message": ""}')["message"])
    assert any("kafka publish failed" in m for m in messages), messages
    assert child.poll() is None, "run must keep running while the brokers are down"
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 0
    with SQLiteTrail(tmp_path / "t.db") as trail:
        assert trail.verify().checkpoints >= 1  # sealed at SIGTERM all the same
        assert trail.load_source_state("kafka.publish:docktrail.events") is None
