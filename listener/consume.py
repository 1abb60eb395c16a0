"""`docktrail consume`: the central fleet trail, built from the hosts' Kafka records.

One consumer reads every partition of `kafka.topic` and writes the central
trail (`trail.path` of this configuration) — an ordinary docktrail trail with
its own chain and signed checkpoints. Each batch of records goes through:

1. decode (a malformed record is reported with its partition and offset and
   skipped; the chain check then sees the hole);
2. the per-host chain check (`sinks.kafka.chains`): records received before
   are dropped, the others become central events, marked when they do not
   extend their host's chain;
3. one write of the events; then the fleet rules (`listener.rules.fleet`) and
   the hosts' own alerts (pointed at the central copies of their events),
   stored with the rules' evaluation mark and their deliveries;
4. one write of the consumed offsets and the hosts' chain states.

Where to resume is the central trail's, not the consumer group's: offsets
are stored after the rows they produced, so a crash re-reads records that
step 2 then drops by id. The group's committed offsets follow for lag
monitoring only (`kafka.consume.group_id`). Partitions are assigned
explicitly (one central writer; no rebalancing can move them away mid-batch);
a second consumer of the same central trail waits as a hot standby
(`sinks.kafka.standby`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config.errors import ConfigError, InputError, SinkError, TrailError
from config.models import DocktrailConfig, KafkaConfig, RulesConfig
from listener import giveway
from listener.model.alert import Alert
from listener.model.event import Event
from listener.rules.fleet import (
    FLEET_KEY,
    WINDOWED_TYPES,
    evaluate_fleet,
    fleet_context,
    prime_fleet,
)
from sinks.base import EventFilter
from sinks.kafka.centralids import IDS_STATE, CentralIds
from sinks.kafka.chains import FleetChains, central_alert, orphan_event
from sinks.kafka.chainstate import Accepted, HostAlert, Located
from sinks.kafka.client import consumer_options, ensure_topic, kafka_errors
from sinks.kafka.records import decode
from sinks.kafka.standby import active_consumer
from sinks.sqlite import SQLiteTrail

if TYPE_CHECKING:
    from notifiers.routing import Routing
    from sinks.outbox import Route

log = logging.getLogger("docktrail.consume")

OFFSETS_PREFIX = "kafka.consume:"
"""`source_state` name prefix of the consumed offsets ({partition: next offset}), per topic."""
POLL_MS = 500
MALFORMED_KEPT = 100
_NS = 1_000_000_000


@dataclass(slots=True)
class ConsumeReport:
    records: int = 0
    stored: int = 0
    duplicates: int = 0
    problems: int = 0
    alerts: int = 0
    host_alerts: int = 0
    malformed: list[InputError] = field(default_factory=list)  # the first MALFORMED_KEPT
    malformed_total: int = 0

    def summary(self) -> str:
        return (
            f"records {self.records}, stored {self.stored}, duplicates {self.duplicates}, "
            f"malformed {self.malformed_total}, chain problems {self.problems}, "
            f"host alerts {self.host_alerts}, fleet alerts {self.alerts}"
        )


class FleetEngine:
    """The fleet rules with their windows; turns stored central events into alerts."""

    def __init__(self, rules: RulesConfig) -> None:
        self.context = fleet_context(rules)
        self.window_ns = _NS * max(
            rules.fleet_churn.window_secs, rules.fleet_untrusted_image.window_secs
        )

    def alerts_for(self, events: Sequence[Event]) -> list[Alert]:
        alerts = []
        for event in events:
            seen: dict[str, int] = {}
            for found in evaluate_fleet(event, self.context):
                index = seen[found.rule] = seen.get(found.rule, -1) + 1
                alerts.append(Alert.from_finding(found, event, index))
        return alerts

    def prime_and_repair(self, trail: SQLiteTrail) -> list[Alert]:
        """Windows from recent evaluated events; alerts of events stored but never evaluated."""
        through = trail.evaluated_through()
        # The windows reach back from the last event judged that they count: not from a
        # host's checkpoint or docktrail's own records, stamped when they were written.
        last = trail.last_time_of(WINDOWED_TYPES, through) if through else None
        if last is not None:
            recent = EventFilter(since_ns=last - self.window_ns)
            prime_fleet((e for e in trail.query(recent) if (e.seq or 0) <= through), self.context)
        pending = list(trail.query(EventFilter(after_seq=through)))
        return self.alerts_for(pending)


class CentralTrail:
    """Turns batches of Kafka messages into central rows (steps 1 to 4 above)."""

    def __init__(
        self, config: DocktrailConfig, trail: SQLiteTrail, states: dict[str, Any], *, empty: bool
    ):
        """`states`: the trail's `source_state`; `empty`: whether it holds no event yet."""
        self.kafka = _kafka(config)
        self.trail = trail
        ids = CentralIds.of_trail(states, empty=empty)
        self._unrecorded_ids = None if IDS_STATE in states else ids
        self.chains = FleetChains(states, self.kafka.consume.max_hosts, ids)
        self.offsets = _offsets(self.offsets_name, states.get(self.offsets_name) or {})
        self.engine = FleetEngine(config.rules)
        self.report = ConsumeReport()
        self.routing: Routing | None = None
        self.on_queued: Callable[[], None] | None = None
        self._notify_host_alerts = self.kafka.consume.notify_host_alerts

    @property
    def offsets_name(self) -> str:
        return OFFSETS_PREFIX + self.kafka.topic

    async def start(self) -> None:
        if self._unrecorded_ids is not None:  # before the first row: a restart names alike
            await self.trail.write([], source_state={IDS_STATE: self._unrecorded_ids.state()})
            self._unrecorded_ids = None
        alerts = await self.trail.call(self.engine.prime_and_repair)
        if alerts:
            head = await self.trail.call(lambda t: t.head()[0])
            await self._store_alerts(alerts, [], head)

    async def handle(self, batch: dict[Any, list[Any]]) -> None:
        located = self._decode(batch)
        events, alerts = self.chains.ids_to_look_up(item.record for item in located)
        stored_events = set(await self.trail.call(lambda t: t.seqs_by_id(events)))
        stored_alerts = set(await self.trail.call(lambda t: t.seqs_by_id(alerts, "alerts")))
        # CPU work (hashes, signatures, validation): off the loop, so fetching goes on meanwhile
        accepted = await giveway.to_thread(
            self.chains.accept, located, stored_events, stored_alerts
        )
        await self._add_orphans(accepted.host_alerts, accepted.events, stored_events)
        self._count(accepted)
        result = await self.trail.write(accepted.events)
        self.report.stored += len(result.stored)
        self.report.duplicates += result.duplicates
        central_seqs = await self.trail.call(
            lambda t: t.seqs_by_id([h.event_id for h in accepted.host_alerts])
        )
        host = [central_alert(h, central_seqs[h.event_id]) for h in accepted.host_alerts
                if h.event_id in central_seqs]  # fmt: skip
        fleet = self.engine.alerts_for(result.stored)
        head = result.stored[-1].seq if result.stored else None
        await self._store_alerts(fleet, host, head)
        await self.trail.write(
            [], source_state={self.offsets_name: self.offsets, **self.chains.changed_states()}
        )

    def _decode(self, batch: dict[Any, list[Any]]) -> list[Located]:
        located = []
        limit = self.kafka.consume.max_record_bytes
        for tp, messages in batch.items():
            for message in messages:
                where = f"{tp.topic}[{tp.partition}]@{message.offset}"
                self.report.records += 1
                try:
                    located.append(Located(decode(message.value, where, limit), where))
                except InputError as exc:
                    self._malformed(exc)
                self.offsets[str(tp.partition)] = message.offset + 1
        return located

    def _malformed(self, exc: InputError) -> None:
        self.report.malformed_total += 1
        if len(self.report.malformed) < MALFORMED_KEPT:  # a long run must not grow without end
            self.report.malformed.append(exc)
        log.warning("malformed record skipped: %s", exc)

    def _count(self, accepted: Accepted) -> None:
        for exc in accepted.malformed:
            self._malformed(exc)
        self.report.problems += accepted.problems
        self.report.duplicates += accepted.duplicates
        if accepted.problems:
            log.warning("host chain problems", extra={"fields": {"records": accepted.problems}})

    async def _add_orphans(
        self, host_alerts: list[HostAlert], events: list[Event], stored: set[str]
    ) -> None:
        """Host alerts whose event is neither stored nor in this batch become problem events."""
        wanted = [h.event_id for h in host_alerts if h.event_id not in stored]
        found = set(await self.trail.call(lambda t: t.seqs_by_id(wanted)))
        found |= {event.id for event in events}
        for host_alert in host_alerts:
            if host_alert.event_id not in stored and host_alert.event_id not in found:
                events.append(orphan_event(host_alert))
                self.report.problems += 1

    async def _store_alerts(self, fleet: list[Alert], host: list[Alert], head: int | None) -> None:
        host_ids = {alert.id for alert in host}

        def route(alert: Alert) -> list[Route]:
            if self.routing is None or (alert.id in host_ids and not self._notify_host_alerts):
                return []
            return self.routing.routes(alert, None)

        written = await self.trail.write_alerts(
            [*host, *fleet], evaluated_through=head, route=route if self.routing else None
        )
        self.report.host_alerts += sum(1 for alert in written if alert.id in host_ids)
        self.report.alerts += sum(1 for alert in written if alert.id not in host_ids)
        if written and self.on_queued is not None:
            self.on_queued()


def _offsets(name: str, state: dict[str, Any]) -> dict[str, int]:
    if not all(key.isdigit() and type(value) is int and value >= 0 for key, value in state.items()):
        raise TrailError(f"source_state {name}: not partition offsets: {state!r}")
    return dict(state)


def _kafka(config: DocktrailConfig) -> KafkaConfig:
    if config.kafka is None:
        raise ConfigError("docktrail consume needs a kafka: section (bootstrap_servers, topic)")
    return config.kafka


async def consume(
    config: DocktrailConfig, *, stop: asyncio.Event, once: bool = False
) -> ConsumeReport:
    """Consume into the central trail until `stop` (or, with `once`, until caught up)."""
    kafka = _kafka(config)
    async with active_consumer(config.trail.path, stop) as active:
        if not active:
            return ConsumeReport()
        return await _consume_trail(config, kafka, stop, once)


async def _consume_trail(
    config: DocktrailConfig, kafka: KafkaConfig, stop: asyncio.Event, once: bool
) -> ConsumeReport:
    trail = SQLiteTrail.from_config(config.trail, config.host_name())
    async with trail:
        states = await trail.call(lambda t: t.source_states())
        empty = await trail.call(lambda t: t.head()[0] == 0)
        central = CentralTrail(config, trail, states, empty=empty)
        worker = _delivery(config, trail, central)
        await central.start()
        if worker is not None:
            await worker.start()
        try:
            await _consume_loop(kafka, central, stop, once)
        finally:
            if worker is not None:
                await worker.aclose()  # what is unsent stays in the outbox
        if worker is not None and once:
            await worker.flush()  # one run: what it queued is sent before it exits
    return central.report


def _delivery(config: DocktrailConfig, trail: SQLiteTrail, central: CentralTrail) -> Any:
    if not config.notifications.destinations:
        return None

    from notifiers.routing import Routing
    from notifiers.worker import DeliveryWorker

    worker = DeliveryWorker(trail, config.notifications, host=config.host_name())
    central.routing = Routing(config.notifications)
    central.on_queued = worker.wake
    return worker


async def _consume_loop(
    kafka: KafkaConfig, central: CentralTrail, stop: asyncio.Event, once: bool
) -> None:
    from aiokafka import AIOKafkaConsumer

    await ensure_topic(kafka)
    consumer = AIOKafkaConsumer(**consumer_options(kafka))
    async with kafka_errors(f"consume {kafka.topic}", kafka):
        await consumer.start()
        try:
            partitions = await _assign(consumer, kafka.topic, central.offsets)
            await _forget_lost_offsets(consumer, partitions, central)
            while not stop.is_set():
                batch = await _fetch(consumer, kafka.consume.batch_size)
                if batch:
                    await central.handle(batch)
                    await _commit(consumer, central.offsets, kafka.topic)
                elif once and await _caught_up(consumer, partitions):
                    return
        finally:
            await consumer.stop()


async def _fetch(consumer: Any, batch_size: int) -> dict[Any, list[Any]]:
    """Up to `batch_size` records: waits for the first, then takes what is already fetched.

    One `getmany` returns what one fetch response held (a few hundred records);
    writing each of those as a central transaction would cost a commit apiece.
    """
    batch: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=POLL_MS,
                                                         max_records=batch_size)  # fmt: skip
    count = sum(map(len, batch.values()))
    while batch and count < batch_size:
        more = await consumer.getmany(timeout_ms=0, max_records=batch_size - count)
        if not more:
            break
        for tp, messages in more.items():
            batch.setdefault(tp, []).extend(messages)
            count += len(messages)
    return batch


async def _assign(consumer: Any, topic: str, offsets: dict[str, int]) -> list[Any]:
    from aiokafka import TopicPartition

    numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        await consumer.topics()  # fetches the cluster's metadata
        numbers = consumer.partitions_for_topic(topic)
    if not numbers:
        raise SinkError(f"kafka topic {topic} does not exist (kafka.create_topics for development)")
    partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
    consumer.assign(partitions)
    for tp in partitions:
        stored = offsets.get(str(tp.partition))
        if stored is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, stored)
    return partitions


async def _forget_lost_offsets(consumer: Any, partitions: list[Any], central: CentralTrail) -> None:
    """Read again from the start a partition whose broker forgot the group's offset.

    The group's offset is committed after every batch the central trail
    stored; a broker without it lost its state (restarted with empty storage,
    topic recreated), and its records at our stored offset are other records
    or none. The hosts republish; the chain check drops what the central
    trail holds. (End offsets cannot tell: tansu reports the last batch's
    first offset + 1.) Stored at once, so a restart before the republished
    records arrive does not skip them. A group whose offsets expired is read
    again too: slower, never wrong.
    """
    lost = []
    for tp in partitions:
        stored = central.offsets.get(str(tp.partition), 0)
        if stored and await consumer.committed(tp) is None:
            lost.append(tp)
            log.warning(
                "kafka partition %s[%d]: the group has no offset though %d records were "
                "consumed (the broker lost its records?); reading it again from its start",
                tp.topic, tp.partition, stored,
            )  # fmt: skip
            central.offsets[str(tp.partition)] = 0
            await consumer.seek_to_beginning(tp)
    if lost:
        await central.trail.write([], source_state={central.offsets_name: central.offsets})


async def _caught_up(consumer: Any, partitions: list[Any]) -> bool:
    ends = await consumer.end_offsets(partitions)
    for tp in partitions:
        if await consumer.position(tp) < ends[tp]:
            return False
    return True


async def _commit(consumer: Any, offsets: dict[str, int], topic: str) -> None:
    """The group's offsets, for lag monitoring; the central trail's own are what counts."""
    from aiokafka import TopicPartition
    from aiokafka.errors import KafkaError

    try:
        await consumer.commit({TopicPartition(topic, int(p)): o for p, o in offsets.items()})
    except KafkaError as exc:
        log.debug("committing group offsets failed: %s", exc)


def fleet_problem(event: Event) -> str | None:
    """The chain problem recorded on a central event, if any."""
    fleet = event.attributes.get(FLEET_KEY)
    return fleet.get("problem") if isinstance(fleet, dict) else None
