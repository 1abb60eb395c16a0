"""Publishing the local trail to Kafka, from a persisted offset.

The trail is the buffer: nothing is queued in memory between the pipeline and
Kafka. Each round reads the rows after the last published position (events,
then the alerts whose event is published, then the checkpoints whose heads
are published), sends them, waits for the brokers' acknowledgements, and only
then stores the new position in the trail (`source_state`
``kafka.publish:<topic>``). A crash or an unreachable broker therefore
repeats rows (the consumer drops them by id), never loses them, and a broker
outage only delays publication.

The producer side follows aiokafka's own split: `Accumulator` packs values
into record batches (`AIOKafkaProducer.create_batch`), `Sender` hands full
batches to the producer (`send_batch`) and collects their acknowledgements.
All of a host's records go to one partition (the murmur2 hash of the host
name, as Kafka's Java clients choose it), so they arrive in trail order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from config.errors import DocktrailError, SinkError, TrailError
from config.models import KafkaConfig
from sinks.kafka.client import ensure_topic, kafka_errors, producer_options
from sinks.kafka.records import encode_checkpoint, encode_row, row_prefix
from sinks.signing import load_public_key

log = logging.getLogger(__name__)

STATE_PREFIX = "kafka.publish:"
"""`source_state` name prefix of the published position, one per topic."""

_CHECKPOINT_FIELDS = (
    "n, trail_id, seq, hash, time_ns, key_fingerprint, signature, alerts_seq, alerts_hash"
)


@dataclass(slots=True)
class PublishedPosition:
    """The last event seq, alert seq and checkpoint number the brokers acknowledged.

    `partition`: where this trail's records went. It is kept while the topic
    has it: were the host to follow the hash of its name into a partition
    added later, its new records could be consumed before its older ones.
    `end_offset`: the offset after the last record acknowledged, in partition
    `end_offset_partition`; a broker that acknowledges a later record there
    below it lost the topic's records (restarted with empty storage, topic
    recreated) and the trail is republished.
    """

    events: int = 0
    alerts: int = 0
    checkpoints: int = 0
    partition: int | None = None
    end_offset: int = 0
    end_offset_partition: int | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> PublishedPosition:
        if not state:
            return cls()
        try:
            counts = (int(state["events"]), int(state["alerts"]), int(state["checkpoints"]))
            partition = state.get("partition")
            acked = state.get("end_offset_partition")
            return cls(
                *counts,
                None if partition is None else int(partition),
                int(state.get("end_offset") or 0),
                None if acked is None else int(acked),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TrailError(f"source_state {STATE_PREFIX}…: not a published position") from exc

    def as_state(self) -> dict[str, int | None]:
        return {"events": self.events, "alerts": self.alerts, "checkpoints": self.checkpoints,
                "partition": self.partition, "end_offset": self.end_offset,
                "end_offset_partition": self.end_offset_partition}  # fmt: skip


@dataclass(slots=True)
class PublishStats:
    events: int = 0
    alerts: int = 0
    checkpoints: int = 0
    rounds: int = 0
    failures: int = 0
    republished: int = 0

    @property
    def records(self) -> int:
        return self.events + self.alerts + self.checkpoints


class TrailRows:
    """Read-only access to the trail's rows on a connection of its own (WAL: never blocks)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            uri = f"file:{self.path}?mode=ro"
            self._conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
        return self._conn

    def trail_id(self) -> str:
        row = self._read("SELECT value FROM meta WHERE key = 'trail_id'", ())
        if not row:
            raise TrailError(f"{self.path}: no trail_id")
        return str(row[0][0])

    def events_after(self, seq: int, limit: int) -> list[tuple[int, str, str, str]]:
        sql = "SELECT seq, body, prev_hash, hash FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
        return self._read(sql, (seq, limit))

    def alerts_after(self, seq: int, events_through: int, limit: int) -> list[tuple[Any, ...]]:
        """Alert rows in seq order, stopping before the first whose event is not published."""
        sql = (
            "SELECT a.seq, a.body, a.prev_hash, a.hash, e.hash, a.event_seq FROM alerts a "
            "JOIN events e ON e.seq = a.event_seq WHERE a.seq > ? ORDER BY a.seq LIMIT ?"
        )
        rows = self._read(sql, (seq, limit))
        for index, row in enumerate(rows):
            if row[5] > events_through:
                return rows[:index]
        return rows

    def checkpoints_after(
        self, number: int, events_through: int, alerts_through: int
    ) -> list[tuple[Any, ...]]:
        sql = f"SELECT {_CHECKPOINT_FIELDS} FROM checkpoints WHERE n > ? ORDER BY n"
        rows = self._read(sql, (number,))
        for index, row in enumerate(rows):
            if row[2] > events_through or row[7] > alerts_through:
                return rows[:index]
        return rows

    def _read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        try:
            return self._connection().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise TrailError(f"{self.path}: read rows to publish: {exc}") from exc

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Sender:
    """Hands closed batches to the producer and collects their acknowledgements."""

    def __init__(self, producer: Any, topic: str, partition: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partition = partition
        self._pending: list[asyncio.Future[Any]] = []
        self._counts: list[int] = []

    async def send(self, batch: Any) -> None:
        batch.close()
        count = batch.record_count()
        future = await self._producer.send_batch(batch, self._topic, partition=self._partition)
        self._pending.append(future)
        self._counts.append(count)

    async def acknowledged(self) -> Acknowledged | None:
        """Wait until the brokers acknowledged every batch sent (raises the first failure).

        Returns the first offset and the end offset the brokers gave the
        records, or None when nothing was sent or the acks carry no offsets.
        """
        pending, self._pending = self._pending, []
        counts, self._counts = self._counts, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        offsets = [getattr(result, "offset", None) for result in results]
        first, last = (offsets[0], offsets[-1]) if offsets else (None, None)
        if not isinstance(first, int) or not isinstance(last, int) or first < 0:
            return None  # acks=0: the brokers do not say where the records went
        return Acknowledged(first=first, end=last + counts[-1])


@dataclass(frozen=True, slots=True)
class Acknowledged:
    first: int
    end: int


class Accumulator:
    """Packs record values into batches of at most `max_batch_bytes`."""

    def __init__(self, producer: Any, sender: Sender, key: bytes) -> None:
        self._producer = producer
        self._sender = sender
        self._key = key
        self._batch: Any = None

    async def append(self, value: bytes) -> None:
        if self._batch is None:
            self._batch = self._producer.create_batch()
        if self._batch.append(key=self._key, value=value, timestamp=None) is not None:
            return
        await self._sender.send(self._batch)  # full: ship it, start the next one
        self._batch = self._producer.create_batch()
        if self._batch.append(key=self._key, value=value, timestamp=None) is None:
            raise SinkError(f"a record of {len(value)} bytes exceeds kafka.max_batch_bytes")

    async def flush(self) -> None:
        if self._batch is not None and self._batch.record_count():
            await self._sender.send(self._batch)
        self._batch = None


SaveState = Callable[[dict[str, dict[str, int | None]]], Awaitable[Any]]


@dataclass(slots=True)
class _Round:
    position: PublishedPosition
    sent: PublishStats = field(default_factory=PublishStats)


class KafkaPublisher:
    """Publishes one trail (`trail_path`) to `config.topic` as `host`.

    `save_state(source_state)` stores the published position in the trail (the
    running service passes its trail's `write`, so the position is written by
    the trail's own writer). `position` is where the last run stopped.
    """

    def __init__(
        self,
        config: KafkaConfig,
        *,
        host: str,
        trail_path: Path,
        signing_key: Path,
        position: PublishedPosition,
        save_state: SaveState,
    ) -> None:
        self.config = config
        self.host = host
        self.position = position
        self.stats = PublishStats()
        self._rows = TrailRows(trail_path)
        self._signing_key = signing_key
        self._save_state = save_state
        self._producer: Any = None
        self._partition = 0
        self._public_key: str | None = None
        self._prefixes: dict[str, bytes] = {}
        self._republish = False

    @property
    def started(self) -> bool:
        return self._producer is not None

    @property
    def state_name(self) -> str:
        return STATE_PREFIX + self.config.topic

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        await ensure_topic(self.config)
        trail_id = await asyncio.to_thread(self._rows.trail_id)
        self._prefixes = {kind: row_prefix(kind, self.host, trail_id)
                          for kind in ("event", "alert", "checkpoint")}  # fmt: skip
        producer = AIOKafkaProducer(**producer_options(self.config))
        try:
            async with kafka_errors("start producer", self.config):
                await producer.start()
                self._partition = await self._choose_partition(producer)
        except BaseException:
            await producer.stop()  # a failed start leaves connections open otherwise
            raise
        self._producer = producer

    async def _choose_partition(self, producer: Any) -> int:
        from aiokafka.partitioner import DefaultPartitioner

        partitions = sorted(await producer.partitions_for(self.config.topic))
        if not partitions:
            raise SinkError(f"kafka topic {self.config.topic} has no partitions")
        kept = self.position.partition
        if kept is not None and kept in partitions:
            return kept
        return int(DefaultPartitioner()(self.host.encode(), partitions, partitions))

    async def aclose(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()  # sends what is still buffered first
        self._rows.close()

    async def __aenter__(self) -> KafkaPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def publish_pending(self) -> int:
        """Publish every row stored so far; returns the records sent."""
        total = 0
        while True:
            self._republish = False
            sent = await self.publish_round()
            total += sent
            if sent < self.config.publish_batch_size and not self._republish:
                return total

    async def publish_round(self) -> int:
        """One round: read, send, wait for acks, store the position. Returns records sent."""
        if self._producer is None:
            raise SinkError("kafka publisher not started")
        current = _Round(dataclasses.replace(self.position))
        sender = Sender(self._producer, self.config.topic, self._partition)
        accumulator = Accumulator(self._producer, sender, self.host.encode())
        async with kafka_errors(f"publish to {self.config.topic}", self.config):
            await self._events(current, accumulator)
            await self._alerts(current, accumulator)
            await self._checkpoints(current, accumulator)
            await accumulator.flush()
            acknowledged = await sender.acknowledged()
        sent = current.sent
        current.position.partition = self._partition
        if acknowledged is not None:
            current.position.end_offset = acknowledged.end
            current.position.end_offset_partition = self._partition
            if self._lost_records(acknowledged):
                current.position = self._restart_from_scratch(acknowledged)
        if sent.records:
            await self._save_state({self.state_name: current.position.as_state()})
            self.position = current.position
            self.stats.events += sent.events
            self.stats.alerts += sent.alerts
            self.stats.checkpoints += sent.checkpoints
        self.stats.rounds += 1
        return sent.records

    def _lost_records(self, acknowledged: Acknowledged) -> bool:
        same_partition = self.position.end_offset_partition == self._partition
        return same_partition and acknowledged.first < self.position.end_offset

    def _restart_from_scratch(self, acknowledged: Acknowledged) -> PublishedPosition:
        """The topic lost records we published: republish the whole trail (consumers dedupe)."""
        log.warning(
            "kafka topic is behind the published position (broker lost its records?); "
            "republishing the trail from its start",
            extra={"fields": {"topic": self.config.topic, "partition": self._partition,
                              "published_end_offset": self.position.end_offset,
                              "acknowledged_offset": acknowledged.first}},
        )  # fmt: skip
        self.stats.republished += 1
        self._republish = True
        return PublishedPosition(partition=self._partition, end_offset=acknowledged.end,
                                 end_offset_partition=self._partition)  # fmt: skip

    async def _events(self, current: _Round, accumulator: Accumulator) -> None:
        limit = self.config.publish_batch_size
        rows = await asyncio.to_thread(self._rows.events_after, current.position.events, limit)
        prefix = self._prefixes["event"]
        for seq, body, prev_hash, digest in rows:
            await accumulator.append(encode_row(prefix, seq, body, prev_hash, digest))
        if rows:
            current.position.events = rows[-1][0]
            current.sent.events = len(rows)

    async def _alerts(self, current: _Round, accumulator: Accumulator) -> None:
        position = current.position
        limit = self.config.publish_batch_size
        rows = await asyncio.to_thread(
            self._rows.alerts_after, position.alerts, position.events, limit
        )
        prefix = self._prefixes["alert"]
        for seq, body, prev_hash, digest, event_hash, _ in rows:
            await accumulator.append(encode_row(prefix, seq, body, prev_hash, digest, event_hash))
        if rows:
            position.alerts = rows[-1][0]
            current.sent.alerts = len(rows)

    async def _checkpoints(self, current: _Round, accumulator: Accumulator) -> None:
        position = current.position
        rows = await asyncio.to_thread(
            self._rows.checkpoints_after, position.checkpoints, position.events, position.alerts
        )
        if not rows:
            return
        public_key = await self._public_key_b64()
        prefix = self._prefixes["checkpoint"]
        names = [name.strip() for name in _CHECKPOINT_FIELDS.split(",")]
        for row in rows:
            body = {**dict(zip(names, row, strict=True)), "public_key": public_key}
            await accumulator.append(encode_checkpoint(prefix, row[0], body))
        position.checkpoints = rows[-1][0]
        current.sent.checkpoints = len(rows)

    async def _public_key_b64(self) -> str:
        if self._public_key is None:
            public = await asyncio.to_thread(load_public_key, self._signing_key)
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            self._public_key = base64.b64encode(raw).decode()
        return self._public_key

    async def run(self, stop: asyncio.Event) -> None:
        """Publish new rows every `publish_interval_secs` until `stop`; outages are retried."""
        delay = self.config.publish_interval_secs
        while not stop.is_set():
            try:
                if self._producer is None:
                    await self.start()  # brokers down at start-up: retried like a send
                await self.publish_pending()
                delay = self.config.publish_interval_secs
            except DocktrailError as exc:  # brokers down, trail busy: the rows wait
                self.stats.failures += 1
                delay = min(max(delay * 2, 1.0), self.config.retry_max_secs)
                log.warning(
                    "kafka publish failed; the trail keeps the rows, retrying",
                    extra={"fields": {"error": str(exc), "retry_in_secs": delay}},
                )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stop.wait()
