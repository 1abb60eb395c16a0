"""Publishing the local trail to Kafka from `run` and `ingest` (when `kafka:` is set).

The trail stays the one place events are written; publication follows it
from a persisted position (`sinks.kafka.publisher`). `run` publishes every
`kafka.publish_interval_secs` and, on SIGTERM, seals the trail with a
checkpoint and publishes up to it before exiting; `ingest` publishes what it
stored (and everything still unpublished) before it exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from config.errors import SinkError
from config.models import DocktrailConfig, KafkaConfig
from sinks.kafka.publisher import STATE_PREFIX, KafkaPublisher, PublishedPosition
from sinks.sqlite import SQLiteTrail

log = logging.getLogger("docktrail.publish")

FINISH_TIMEOUT_SECS = 10.0


async def open_publisher(config: KafkaConfig, trail: SQLiteTrail, host: str) -> KafkaPublisher:
    """A publisher of the started `trail`, resuming where the last one stopped (not started)."""
    state = await trail.call(lambda t: t.load_source_state(STATE_PREFIX + config.topic))

    async def save(states: dict[str, dict[str, int | None]]) -> None:
        await trail.write([], source_state=states)

    return KafkaPublisher(
        config,
        host=host,
        trail_path=trail.path,
        signing_key=trail.signing_key,
        position=PublishedPosition.from_state(state),
        save_state=save,
    )


class Publishing:
    """The service's background publication: started after the trail, finished before it."""

    def __init__(self, publisher: KafkaPublisher, trail: SQLiteTrail) -> None:
        self.publisher = publisher
        self._trail = trail
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(publisher.run(self._stop), name="kafka-publisher")

    @classmethod
    async def start(
        cls, config: DocktrailConfig, trail: SQLiteTrail, host: str
    ) -> Publishing | None:
        if config.kafka is None:
            return None
        return cls(await open_publisher(config.kafka, trail, host), trail)

    async def abort(self) -> None:
        """Stop without a final publish (the service is failing)."""
        self._stop.set()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.publisher.aclose()

    async def finish(self) -> None:
        """Seal the trail and publish up to the seal; what fails stays for the next start.

        Bounded by `FINISH_TIMEOUT_SECS`: brokers that stopped answering must not
        hold the service past its stop timeout.
        """
        self._stop.set()
        try:
            await asyncio.wait_for(self._task, FINISH_TIMEOUT_SECS)
            await self._trail.call(lambda t: t.checkpoint())
            if self.publisher.started:
                await asyncio.wait_for(self.publisher.publish_pending(), FINISH_TIMEOUT_SECS)
        except (SinkError, TimeoutError) as exc:
            log.warning("kafka: final publish failed; the next start publishes it: %r", exc)
        finally:
            with contextlib.suppress(SinkError):
                await self.publisher.aclose()


async def publish_trail(config: DocktrailConfig) -> int:
    """Publish everything of `config.trail` not published yet; returns the records sent."""

    assert config.kafka is not None
    trail = SQLiteTrail.from_config(config.trail, config.host_name())
    async with trail:
        publisher = await open_publisher(config.kafka, trail, config.host_name())
        async with publisher:
            return await publisher.publish_pending()
