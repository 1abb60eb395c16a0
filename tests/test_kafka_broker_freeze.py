"""A broker frozen (SIGSTOP) while events keep arriving, then resumed (SIGCONT).

The running publisher waits on the frozen broker; the trail keeps the events;
when the broker resumes the backlog drains and the central trail holds each
event exactly once. The freeze lasts `DOCKTRAIL_TEST_KAFKA_FREEZE_SECS`
(default 10; the issue's acceptance names 30).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from config.models import DocktrailConfig
from listener.publish import Publishing
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.kafka_broker import topic_config
from tests.kafka_hosts import HostTrail, central_config, consume_once, host_event
from tests.kafka_tansu import TansuBroker

FREEZE_SECS = float(os.environ.get("DOCKTRAIL_TEST_KAFKA_FREEZE_SECS", "10"))
BEFORE, DURING, AFTER = 5, 20, 5
DRAIN_TIMEOUT_SECS = 120.0


async def published_through(publishing: Publishing, seq: int) -> None:
    deadline = time.monotonic() + DRAIN_TIMEOUT_SECS
    while publishing.publisher.position.events < seq:
        assert time.monotonic() < deadline, f"published {publishing.publisher.position}"
        await asyncio.sleep(0.1)


async def run_host(config: DocktrailConfig, tansu: TansuBroker) -> None:
    trail = SQLiteTrail.from_config(config.trail)
    async with trail:
        publishing = await Publishing.start(config, trail, "node-a")
        assert publishing is not None
        count = 0

        async def add(n: int) -> None:
            nonlocal count
            await trail.write([host_event("node-a", count + i + 1) for i in range(n)])
            count += n

        try:
            await add(BEFORE)
            await published_through(publishing, BEFORE)
            tansu.freeze()
            try:
                for _ in range(DURING):  # events keep arriving while the broker is frozen
                    await asyncio.sleep(FREEZE_SECS / DURING)
                    await add(1)
                assert publishing.publisher.position.events < BEFORE + DURING
            finally:
                tansu.resume()
            await add(AFTER)
            await published_through(publishing, count)
        finally:
            await publishing.finish()


def test_a_frozen_broker_delays_the_trail_and_loses_nothing(
    tmp_path: Path, tansu: TansuBroker
) -> None:
    kafka = topic_config(tansu.bootstrap, publish_interval_secs=0.2, retry_max_secs=1.0)
    host = HostTrail(tmp_path, "node-a")  # creates the trail and its genesis checkpoint
    host.close()
    asyncio.run(run_host(host.config(kafka), tansu))

    report = consume_once(central_config(tmp_path, kafka))
    total = BEFORE + DURING + AFTER
    assert (report.problems, report.malformed_total) == (0, 0)
    with SQLiteTrail(tmp_path / "central.db") as central:
        events = list(central.query(EventFilter(host="node-a", type="container")))
        assert [event.attributes["fleet"]["seq"] for event in events] == list(range(1, total + 1))
        assert central.verify().ok
