"""Three hosts and two consumers of one central trail: exactly the union, in each host's order.

A second `consume` of the same central trail waits as a hot standby
(`sinks.kafka.standby`) and takes over, from the offsets the trail stored,
when the active one stops.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from config.models import DocktrailConfig, KafkaConfig
from listener.consume import ConsumeReport, consume
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config

HOSTS = ("node-a", "node-b", "node-c")
FIRST, SECOND = 10, 5
WAIT_SECS = 60.0


class ConsumerThread:
    """`docktrail consume` running until stopped, on a loop of its own."""

    def __init__(self, config: DocktrailConfig) -> None:
        self.config = config
        self.report: ConsumeReport | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        async def main() -> ConsumeReport:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            return await consume(self.config, stop=self._stop)

        self.report = asyncio.run(main())

    def stop(self) -> ConsumeReport:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT_SECS)
        assert self.report is not None, "the consumer did not stop"
        return self.report


def central_events(directory: Path) -> int:
    path = directory / "central.db"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # not created yet


def wait_for_central(directory: Path, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECS
    while central_events(directory) < count:
        assert time.monotonic() < deadline, f"central holds {central_events(directory)}"
        time.sleep(0.1)


def publish_round(hosts: list[HostTrail], kafka: KafkaConfig, events: int) -> None:
    for host in hosts:
        host.add(events)
        host.trail.checkpoint()
        host.publish(kafka)


def test_two_consumers_on_one_central_trail_store_the_union_once(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    kafka = topic_config(kafka_bootstrap)
    hosts = [HostTrail(tmp_path, name) for name in HOSTS]
    config = central_config(tmp_path, kafka)
    # Events, then the genesis and one later checkpoint per host.
    first_records = len(HOSTS) * (FIRST + 2)
    publish_round(hosts, kafka, FIRST)
    active = ConsumerThread(config)
    wait_for_central(tmp_path, first_records)
    standby = ConsumerThread(config)
    publish_round(hosts, kafka, SECOND)
    wait_for_central(tmp_path, first_records + len(HOSTS) * (SECOND + 1))
    first = active.stop()
    publish_round(hosts, kafka, SECOND)  # only the standby, now active, is left to store it
    total = len(HOSTS) * (FIRST + 2 * SECOND + 4)
    wait_for_central(tmp_path, total)
    second = standby.stop()
    for host in hosts:
        host.close()

    # The standby read nothing while the other was active, then exactly what followed.
    assert (second.records, second.stored, second.duplicates) == (
        len(HOSTS) * (SECOND + 1),
    ) * 2 + (0,)
    assert first.stored + second.stored == total
    assert first.problems == second.problems == 0
    with SQLiteTrail(tmp_path / "central.db") as central:
        assert central.verify().ok
        for name in HOSTS:
            events = central.query(EventFilter(host=name, type="container"))
            seqs = [event.attributes["fleet"]["seq"] for event in events]
            assert seqs == list(range(1, FIRST + 2 * SECOND + 1))
