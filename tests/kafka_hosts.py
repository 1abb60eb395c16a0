"""Host trails for the Kafka tests: real SQLite trails filled with events, alerts, checkpoints."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.models import DocktrailConfig, KafkaConfig
from listener.consume import ConsumeReport, consume
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from listener.publish import publish_trail
from listener.rules.base import Finding
from sinks.kafka.client import ensure_topic
from sinks.kafka.publisher import TrailRows
from sinks.kafka.records import encode_checkpoint, encode_row, row_prefix
from sinks.signing import checkpoint_payload, fingerprint, sign
from sinks.sqlite import SQLiteTrail

T0 = 1_780_000_000 * 1_000_000_000


def host_event(host: str, n: int, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": natural_id("kafka-test", host, n),
        "time_ns": T0 + n * 1_000_000,
        "source": "docker",
        "host": host,
        "type": "container",
        "action": "start",
        "actor": Actor(id=f"{host}-c{n}", name=f"web-{n}", image="registry.internal/web:1"),
        "who": Who(login="alice", user="root"),
    }
    return Event(**(base | fields))


class HostTrail:
    """One host's local trail (and signing key) in `directory`."""

    def __init__(self, directory: Path, host: str, name: str | None = None) -> None:
        self.host = host
        self.path = directory / f"{name or host}.db"
        self.trail = SQLiteTrail(self.path)
        self.trail.open()
        self.count = 0

    def add(self, n: int, **fields: Any) -> list[Event]:
        events = [host_event(self.host, self.count + i + 1, **fields) for i in range(n)]
        self.count += n
        return self.trail.append(events).stored

    def alert(self, event: Event, rule: str = "privileged-container") -> Alert:
        found = Finding(rule=rule, severity="critical", summary=f"{rule} on {event.actor.name}")
        return self.trail.append_alerts([Alert.from_finding(found, event)])[0]

    def config(self, kafka: KafkaConfig) -> DocktrailConfig:
        return DocktrailConfig.model_validate(
            {"host": self.host, "trail": {"path": str(self.path)}, "kafka": kafka.model_dump()}
        )

    def publish(self, kafka: KafkaConfig) -> int:
        return asyncio.run(publish_trail(self.config(kafka)))

    def close(self) -> None:
        self.trail.close()


def central_config(directory: Path, kafka: KafkaConfig, **extra: Any) -> DocktrailConfig:
    settings = {"host": "central", "trail": {"path": str(directory / "central.db")}}
    return DocktrailConfig.model_validate({**settings, "kafka": kafka.model_dump(), **extra})


def consume_once(config: DocktrailConfig) -> ConsumeReport:
    async def run() -> ConsumeReport:
        return await consume(config, stop=asyncio.Event(), once=True)

    return asyncio.run(run())


def event_values(host: HostTrail, trail_id: str | None = None) -> dict[int, bytes]:
    """seq -> the record value the publisher would send for each stored event."""
    rows = TrailRows(host.path)
    try:
        prefix = row_prefix("event", host.host, trail_id or rows.trail_id())
        return {row[0]: encode_row(prefix, *row) for row in rows.events_after(0, 1_000_000)}
    finally:
        rows.close()


def alert_values(host: HostTrail) -> dict[int, bytes]:
    """alert seq -> the record value the publisher would send for each stored alert."""
    rows = TrailRows(host.path)
    try:
        prefix = row_prefix("alert", host.host, rows.trail_id())
        found = rows.alerts_after(0, 2**62, 1_000_000)
        return {row[0]: encode_row(prefix, *row[:5]) for row in found}
    finally:
        rows.close()


def produce(kafka: KafkaConfig, key: str, values: list[bytes]) -> None:
    """Send raw record values as a publisher (or an attacker) would, keyed by host."""

    async def send() -> None:
        from aiokafka import AIOKafkaProducer

        await ensure_topic(kafka)
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers,
                                    enable_idempotence=False)  # fmt: skip
        await producer.start()
        try:
            for value in values:
                await producer.send_and_wait(kafka.topic, value, key=key.encode())
        finally:
            await producer.stop()

    asyncio.run(send())


def checkpoint_value(host: HostTrail, number: int, seq: int, digest: str,
                      key: Ed25519PrivateKey) -> bytes:  # fmt: skip
    """A checkpoint record as a host (or one holding its key) would publish it."""
    trail_id = host.trail.trail_id
    time_ns = 1_780_000_100 * 1_000_000_000 + number
    public = key.public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    body = {
        "n": number, "trail_id": trail_id, "seq": seq, "hash": digest, "time_ns": time_ns,
        "key_fingerprint": fingerprint(public), "alerts_seq": 0,
        "alerts_hash": "0" * 64, "public_key": base64.b64encode(raw).decode(),
        "signature": sign(key, checkpoint_payload(trail_id, seq, digest, time_ns)),
    }  # fmt: skip
    return encode_checkpoint(row_prefix("checkpoint", host.host, trail_id), number, body)
