"""The delivery worker: sends what the outbox holds, durably and without noise.

One task per destination, so a slow or dead channel only ever delays itself.
Each pass of a destination's task:

1. reads its due deliveries (`sinks.outbox.Outbox.due`);
2. groups them by rule and host: the first alert of a group goes out at once;
   more of that group within `group_window_secs` of the last message wait and
   go out together at the window's end ("12 alerts of container-churn on …");
3. respects the destination's rate limit: over it, groups wait (and grow);
4. claims the deliveries of each message, renders it (`notifiers.render`),
   sends it (`notifiers.apprise`), and records the attempt. A failure is
   retried with exponential backoff and jitter until `max_age_secs` after
   the alert was queued; then the delivery is marked failed, logged, counted
   and recorded in the trail as a `notification/delivery-failed` event.

Restart-safe: every decision is read back from the outbox (last message per
group, messages in the last minute), not from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from config.models import Destination, NotificationsConfig
from listener.model.event import Event, Why, natural_id
from notifiers.base import Channel, Message, SendOutcome
from sinks.outbox import Delivery

if TYPE_CHECKING:
    from listener.model.alert import Alert
    from notifiers.render import Renderer
    from sinks.sqlite import SQLiteTrail

log = logging.getLogger(__name__)

_NS = 1_000_000_000
RATE_WINDOW_NS = 60 * _NS
MAX_ALERTS_PER_MESSAGE = 200  # a text digest lists what fits and says "… and N more"
MAX_ALERTS_PER_JSON_MESSAGE = 20  # JSON carries whole alert objects: all must fit the body
LEASE_MARGIN_SECS = 30.0  # a claim outlives the send's timeout by this much


@dataclass(slots=True)
class DestinationStats:
    messages: int = 0  # successful sends
    delivered: int = 0  # alerts carried by them
    failures: int = 0  # failed attempts
    failed: int = 0  # deliveries given up
    last_error: str | None = None


@dataclass(slots=True)
class WorkerStats:
    destinations: dict[str, DestinationStats] = field(default_factory=dict)

    def of(self, name: str) -> DestinationStats:
        return self.destinations.setdefault(name, DestinationStats())

    def summary(self) -> str:
        """One line: per destination, messages and alerts sent, failures, pending left."""
        if not self.destinations:
            return "nothing to send"
        return ", ".join(
            f"{name}: {s.messages} messages ({s.delivered} alerts), {s.failures} failed attempts"
            + (f", last error: {s.last_error}" if s.failures and s.last_error else "")
            for name, s in sorted(self.destinations.items())
        )


@dataclass(slots=True, frozen=True)
class Batch:
    """The deliveries that go out in one message."""

    group_key: str
    deliveries: tuple[Delivery, ...]


class DeliveryWorker:
    """Sends the outbox of `trail` to the configured destinations."""

    def __init__(
        self,
        trail: SQLiteTrail,
        config: NotificationsConfig,
        *,
        host: str,
        channels: Mapping[str, Channel] | None = None,
        renderer: Renderer | None = None,
        clock: Callable[[], int] = time.time_ns,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._trail = trail
        self._config = config
        self._host = host
        self._channels = dict(channels) if channels is not None else build_channels(config)
        self._renderer = renderer if renderer is not None else default_renderer(config)
        self._clock = clock
        self._jitter = jitter
        self._wakeups = {d.name: asyncio.Event() for d in config.destinations}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        self.stats = WorkerStats()

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        self._closing = False
        for destination in self._config.destinations:
            task = asyncio.create_task(
                self._run_destination(destination), name=f"notify-{destination.name}"
            )
            self._tasks.append(task)

    def wake(self) -> None:
        """New deliveries were queued: look now instead of at the next poll."""
        for event in self._wakeups.values():
            event.set()

    async def aclose(self) -> None:
        # The flag as well as the cancel: a cancel that lands as a wait ends can be
        # swallowed (asyncio.wait_for in 3.11), and the loop must end all the same.
        self._closing = True
        self.wake()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    async def __aenter__(self) -> DeliveryWorker:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def flush(self, *, names: Sequence[str] | None = None) -> WorkerStats:
        """Attempt every pending delivery now, ignoring backoff, grouping holds and rate limits.

        Returns what this flush did. Used by `notify flush` and by `ingest` and
        `replay` with `--notify live` before they exit.
        """
        before = _snapshot(self.stats)
        chosen = [d for d in self._config.destinations if names is None or d.name in names]
        # one forced pass each: what fails again stays pending for the next one
        await asyncio.gather(*(self._pass(d, force=True) for d in chosen))
        return _difference(self.stats, before)

    # -- one destination --------------------------------------------------------

    async def _run_destination(self, destination: Destination) -> None:
        wakeup = self._wakeups[destination.name]
        poll_ns = int(self._config.poll_interval_secs * _NS)
        while not self._closing:
            try:
                next_ns = await self._pass(destination, force=False)
            except Exception:
                log.exception("delivery pass failed", extra={"fields": _dest(destination)})
                next_ns = None
            now = self._clock()
            wait_ns = poll_ns if next_ns is None else max(0, min(poll_ns, next_ns - now))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_ns / _NS):
                    await wakeup.wait()
            wakeup.clear()

    async def _pass(self, destination: Destination, *, force: bool) -> int | None:
        """Send what is due; return when this destination should be looked at again."""
        now = self._clock()
        name = destination.name
        due = await self._trail.call(lambda t: t.outbox.due(name, now, force=force))
        hold_until: list[int] = []
        if due:
            batches, held = await self._plan(destination, due, now, force=force)
            hold_until.extend(held)
            for batch in batches:
                await self._send(destination, batch)
        # Due deliveries that wait (grouping, rate limit) are covered by `hold_until`.
        next_due = await self._trail.call(lambda t: t.outbox.next_due_ns(name, self._clock()))
        candidates = [t for t in (*hold_until, next_due) if t is not None]
        return min(candidates) if candidates else None

    async def _plan(
        self, destination: Destination, due: Sequence[Delivery], now: int, *, force: bool
    ) -> tuple[list[Batch], list[int]]:
        """Split the due deliveries into messages to send now, and times to look again."""
        groups: dict[str, list[Delivery]] = {}
        for delivery in due:
            groups.setdefault(delivery.group_key, []).append(delivery)
        window_ns = int(self._config.group_window_secs * _NS)
        per_message = self._per_message(destination) if window_ns else 1  # 0: grouping off
        if force:
            return [b for k, items in groups.items() for b in _batches(k, items, per_message)], []
        name = destination.name
        sent = await self._trail.call(
            lambda t: t.outbox.sent_messages_since(name, now - RATE_WINDOW_NS)
        )
        budget = destination.rate_limit_per_min - len(sent)
        batches: list[Batch] = []
        held: list[int] = []
        for key, items in groups.items():
            last = await self._trail.call(lambda t, k=key: t.outbox.last_sent_ns(name, k))  # type: ignore[misc]
            if window_ns and last is not None and now < last + window_ns:
                held.append(last + window_ns)
                continue
            for batch in _batches(key, items, per_message):
                if budget <= 0:
                    held.append(sent[0] + RATE_WINDOW_NS if sent else now + RATE_WINDOW_NS)
                    break
                budget -= 1
                batches.append(batch)
        return batches, held

    def _per_message(self, destination: Destination) -> int:
        json = self._channels[destination.name].family == "json"
        return MAX_ALERTS_PER_JSON_MESSAGE if json else MAX_ALERTS_PER_MESSAGE

    async def _send(self, destination: Destination, batch: Batch) -> None:
        name = destination.name
        channel = self._channels[name]
        now = self._clock()
        lease_until = now + int((self._config.timeout_secs + LEASE_MARGIN_SECS) * _NS)
        ids = [d.id for d in batch.deliveries]
        claimed = set(await self._trail.call(lambda t: t.outbox.claim(ids, now, lease_until)))
        deliveries = [d for d in batch.deliveries if d.id in claimed]
        if not deliveries:
            return  # another sender took them
        outcome = await self._render_and_send(destination, channel, deliveries)
        await self._record(destination, deliveries, outcome)

    async def _render_and_send(
        self, destination: Destination, channel: Channel, deliveries: Sequence[Delivery]
    ) -> SendOutcome:
        try:
            message = await self._message(destination, channel, deliveries)
        except Exception as exc:  # a broken user template: retried once it is fixed
            return SendOutcome(ok=False, status="FAILURE", elapsed_ms=0.0, error=str(exc))
        return await channel.send(message)

    async def _message(
        self, destination: Destination, channel: Channel, deliveries: Sequence[Delivery]
    ) -> Message:
        seqs = [d.alert_seq for d in deliveries]
        ids = [d.id for d in deliveries]
        alerts, whys, duplicates = await self._trail.call(
            lambda t: (*_alerts_and_whys(t, seqs), t.outbox.duplicates_of(ids))
        )
        return self._renderer.render(
            alerts,
            family=channel.family,
            language=destination.language,
            timezone=destination.timezone,
            whys=whys,
            duplicates=duplicates,
            body_limit=channel.body_limit,
            title_limit=channel.title_limit,
        )

    async def _record(
        self, destination: Destination, deliveries: Sequence[Delivery], outcome: SendOutcome
    ) -> None:
        name = destination.name
        now = self._clock()
        ids = [d.id for d in deliveries]
        max_age_ns = int(self._config.max_age_secs * _NS)
        expired = (
            [] if outcome.ok else [d.id for d in deliveries if now - d.created_ns > max_age_ns]
        )
        next_ns = now + self._backoff_ns(max(d.attempts for d in deliveries))
        await self._trail.call(
            lambda t: t.outbox.record_attempt(
                name,
                ids,
                status=outcome.status,
                ok=outcome.ok,
                elapsed_ms=outcome.elapsed_ms,
                error=outcome.error,
                next_ns=next_ns,
                now_ns=now,
                expired=expired,
            )
        )
        if expired:
            await self._surface_failure(destination, deliveries, expired, outcome, now)
        self._count(destination, deliveries, outcome, expired)  # once all is in the trail

    def _backoff_ns(self, attempts: int) -> int:
        """Exponential, capped, with equal jitter (half fixed, half random)."""
        ceiling = min(
            self._config.retry_max_secs, self._config.retry_initial_secs * (2 ** min(attempts, 32))
        )
        return int((ceiling / 2 + self._jitter() * ceiling / 2) * _NS)

    def _count(
        self,
        destination: Destination,
        deliveries: Sequence[Delivery],
        outcome: SendOutcome,
        expired: Sequence[int],
    ) -> None:
        stats = self.stats.of(destination.name)
        if outcome.ok:
            stats.messages += 1
            stats.delivered += len(deliveries)
            return
        stats.failures += 1
        stats.failed += len(expired)
        stats.last_error = outcome.error
        log.warning(
            "delivery attempt failed",
            extra={
                "fields": {
                    **_dest(destination),
                    "alerts": len(deliveries),
                    "status": outcome.status,
                    "error": outcome.error,
                }
            },
        )

    async def _surface_failure(
        self,
        destination: Destination,
        deliveries: Sequence[Delivery],
        expired: Sequence[int],
        outcome: SendOutcome,
        now: int,
    ) -> None:
        gone = [d for d in deliveries if d.id in set(expired)]
        alert_ids = [d.alert_id for d in gone]
        log.error(
            "gave up delivering alerts: too old to retry",
            extra={
                "fields": {
                    **_dest(destination),
                    "alerts": len(gone),
                    "error": outcome.error,
                    "max_age_secs": self._config.max_age_secs,
                }
            },
        )
        event = Event(
            id=natural_id("delivery-failed", destination.name, *alert_ids),
            time_ns=now,
            source="docktrail",
            host=self._host,
            type="notification",
            action="delivery-failed",
            attributes={
                "destination": destination.name,
                "alerts": alert_ids,
                "attempts": max(d.attempts for d in gone) + 1,
                "error": outcome.error,
            },
        )
        await self._trail.write([event])


def _batches(key: str, items: Sequence[Delivery], size: int) -> list[Batch]:
    return [Batch(key, tuple(items[start : start + size])) for start in range(0, len(items), size)]


def _alerts_and_whys(trail: SQLiteTrail, seqs: Sequence[int]) -> tuple[list[Alert], dict[str, Why]]:
    by_seq = trail.alerts_by_seq(seqs)
    alerts = [by_seq[seq] for seq in seqs if seq in by_seq]
    whys: dict[str, Why] = {}
    for alert in alerts:
        event = trail.get(alert.event_seq)
        if event is not None and event.why != Why():
            whys[alert.id] = event.why
    return alerts, whys


def _dest(destination: Destination) -> dict[str, object]:
    return {"destination": destination.name}


def _snapshot(stats: WorkerStats) -> dict[str, tuple[int, int, int, int]]:
    return {
        name: (s.messages, s.delivered, s.failures, s.failed)
        for name, s in stats.destinations.items()
    }


def _difference(stats: WorkerStats, before: dict[str, tuple[int, int, int, int]]) -> WorkerStats:
    result = WorkerStats()
    for name, now in stats.destinations.items():
        old = before.get(name, (0, 0, 0, 0))
        result.destinations[name] = DestinationStats(
            messages=now.messages - old[0],
            delivered=now.delivered - old[1],
            failures=now.failures - old[2],
            failed=now.failed - old[3],
            last_error=now.last_error,
        )
    return result


def build_channels(config: NotificationsConfig) -> dict[str, Channel]:
    from notifiers.apprise import AppriseChannel

    return {
        d.name: AppriseChannel(
            d.name, d.url, tags=d.tags, timeout_secs=config.timeout_secs, family=d.format
        )
        for d in config.destinations
    }


def default_renderer(config: NotificationsConfig) -> Renderer:
    from notifiers.render import Renderer

    return Renderer(config.templates_dir, link_base_url=config.link_base_url)


async def deliver_now(trail: Any, config: NotificationsConfig, *, host: str) -> WorkerStats:
    """Flush the outbox of a started trail once (`ingest`/`replay --notify live`, `notify flush`).

    Deliveries that fail stay pending for the service (or a later flush).
    """
    worker = DeliveryWorker(trail, config, host=host)
    return await worker.flush()
