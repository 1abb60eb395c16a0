"""The durable outbox and the delivery worker: routing, dedup, grouping, rate limits,
retries, giving up, restarts, and one slow destination beside a fast one.

The worker runs against the real SQLite trail and the real renderer; channels
are `RecordingChannel`s (the real apprise channel is tested against real
servers in test_notify_channels.py and test_notify_live.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from config.errors import TrailError
from config.models import NotificationsConfig
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from notifiers.recording import RecordingChannel
from notifiers.routing import Routing
from notifiers.worker import DeliveryWorker
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail

T0 = 1_795_346_502_000_000_000
S = 1_000_000_000


def config(**fields: Any) -> NotificationsConfig:
    base: dict[str, Any] = {
        "destinations": [
            {"name": "chat", "url": "json://127.0.0.1:9/x", "min_severity": "medium"},
        ],
        "dedup_window_secs": 0,
        "group_window_secs": 0,
        "retry_initial_secs": 0.05,
        "retry_max_secs": 0.2,
        "poll_interval_secs": 0.05,
    }
    return NotificationsConfig.model_validate(base | fields)


def event(n: int, *, name: str = "web-1", login: str = "alice", **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": natural_id("outbox-test", n),
        "time_ns": T0 + n * S,
        "source": "docker",
        "host": "h1",
        "type": "container",
        "action": "create",
        "actor": Actor(id=f"{n:064x}", name=name, image="busybox:latest"),
        "who": Who(login=login, user="root"),
    }
    return Event(**(base | fields))


def alert(ev: Event, rule: str = "privileged-container", severity: str = "critical") -> Alert:
    assert ev.seq is not None
    return Alert(
        id=natural_id("alert", ev.id, rule, 0),
        time_ns=ev.time_ns,
        rule=rule,
        severity=severity,  # type: ignore[arg-type]
        event_seq=ev.seq,
        event_id=ev.id,
        host=ev.host,
        container=ev.actor.name,
        image=ev.actor.image,
        who=ev.who,
        summary=f"{rule} on {ev.actor.name}",
    )


@pytest.fixture
async def trail(tmp_path: Path) -> Any:
    t = SQLiteTrail(tmp_path / "trail.db", durability="normal")
    async with t:
        yield t


async def store(
    trail: SQLiteTrail,
    cfg: NotificationsConfig,
    events: list[Event],
    rule: str = "privileged-container",
    severity: str = "critical",
) -> list[Alert]:
    stored = (await trail.write(events)).stored
    routing = Routing(cfg)
    alerts = [alert(e, rule, severity) for e in stored]
    return await trail.write_alerts(alerts, route=lambda a: routing.routes(a))


async def counts(trail: SQLiteTrail) -> dict[str, dict[str, int]]:
    return await trail.call(lambda t: t.outbox.counts())


async def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def alert_ids(channel: RecordingChannel) -> list[str]:
    return [a["id"] for m in channel.messages for a in json.loads(m.body)["alerts"]]


# -- the outbox -----------------------------------------------------------------


async def test_deliveries_are_written_with_their_alerts(trail: SQLiteTrail) -> None:
    cfg = config(
        destinations=[
            {"name": "all", "url": "json://h/x", "min_severity": "info"},
            {"name": "crit", "url": "json://h/y", "min_severity": "critical"},
            {"name": "exec", "url": "json://h/z", "min_severity": "info", "rules": ["exec"]},
        ]
    )
    await store(trail, cfg, [event(1)], severity="critical")
    await store(trail, cfg, [event(2)], severity="low")
    found = await counts(trail)
    assert found["all"]["pending"] == 2
    assert found["crit"]["pending"] == 1
    assert "exec" not in found


async def test_a_failed_alert_write_queues_nothing(trail: SQLiteTrail) -> None:
    cfg = config()
    stored = (await trail.write([event(1)])).stored
    bad = alert(stored[0]).model_copy(update={"event_id": "not-the-stored-event"})
    routing = Routing(cfg)
    with pytest.raises(TrailError):
        await trail.write_alerts([bad], route=lambda a: routing.routes(a))
    assert await counts(trail) == {}


async def test_routing_by_host_and_labels_and_suppression() -> None:
    cfg = config(
        destinations=[
            {"name": "prod", "url": "json://h/x", "hosts": ["prod-*"], "min_severity": "info"},
            {
                "name": "team",
                "url": "json://h/y",
                "labels": {"team": "payments", "env": "*"},
                "min_severity": "info",
            },
        ]
    )
    routing = Routing(cfg)
    ev = event(1, seq=1)
    on_prod = alert(ev).model_copy(update={"host": "prod-3"})
    assert [r.destination for r in routing.routes(on_prod)] == ["prod"]
    labels = {"team": "payments", "env": "staging"}
    assert [r.destination for r in routing.routes(alert(ev), labels)] == ["team"]
    assert routing.routes(alert(ev), {"team": "payments"}) == []
    suppressed = on_prod.model_copy(update={"suppressed": "approved debug box"})
    assert routing.routes(suppressed, labels) == []


async def test_identical_alerts_within_the_window_are_deduplicated(trail: SQLiteTrail) -> None:
    cfg = config(dedup_window_secs=60)
    # same rule, host, container and login: events 1 and 2 are 1 s apart, 3 is 100 s later
    events = [event(1), event(2), event(100)]
    await store(trail, cfg, events)
    found = await counts(trail)
    assert found["chat"]["pending"] == 2
    assert found["chat"]["deduplicated"] == 1
    other_login = [event(3, login="bob")]
    await store(trail, cfg, other_login)
    assert (await counts(trail))["chat"]["pending"] == 3


# -- the worker -------------------------------------------------------------------


async def test_an_alert_is_sent_once_with_its_content(trail: SQLiteTrail) -> None:
    cfg = config()
    channel = RecordingChannel("chat")
    async with DeliveryWorker(trail, cfg, host="h1", channels={"chat": channel}) as worker:
        stored = await store(trail, cfg, [event(1)])
        worker.wake()
        await wait_until(lambda: len(channel.messages) == 1)
        await asyncio.sleep(0.2)  # a second pass must not send it again
    assert alert_ids(channel) == [stored[0].id]
    body = json.loads(channel.messages[0].body)
    assert body["alerts"][0]["rule"] == "privileged-container"
    assert (await counts(trail))["chat"]["sent"] == 1
    assert len(channel.messages) == 1


async def test_failures_are_retried_with_backoff_until_sent(trail: SQLiteTrail) -> None:
    cfg = config()
    channel = RecordingChannel("chat", failures=["FAILURE", "TIMEOUT", "FAILURE"])
    async with DeliveryWorker(trail, cfg, host="h1", channels={"chat": channel}) as worker:
        await store(trail, cfg, [event(1), event(2)])
        worker.wake()
        await wait_until(lambda: len(channel.messages) == 2)
        # the channel has the message before the worker notes the attempt: wait for both
        await wait_until(lambda: worker.stats.of("chat").messages == 2)
    attempts = await trail.call(lambda t: t.outbox.attempts("chat"))
    assert Counter(a.status for a in attempts) == {"FAILURE": 2, "TIMEOUT": 1, "SUCCESS": 2}
    assert attempts[-1].error == "scripted failure"
    assert (await counts(trail))["chat"] == {
        "pending": 0,
        "sent": 2,
        "failed": 0,
        "deduplicated": 0,
    }


async def test_backoff_doubles_with_jitter_up_to_the_cap(trail: SQLiteTrail) -> None:
    cfg = config(retry_initial_secs=2, retry_max_secs=60)
    channels = {"chat": RecordingChannel("chat")}
    low = DeliveryWorker(trail, cfg, host="h1", channels=channels, jitter=lambda: 0.0)
    high = DeliveryWorker(trail, cfg, host="h1", channels=channels, jitter=lambda: 1.0)
    assert [low._backoff_ns(n) / S for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert [high._backoff_ns(n) / S for n in range(7)] == [2, 4, 8, 16, 32, 60, 60]


async def test_too_old_deliveries_fail_and_are_recorded_in_the_trail(
    trail: SQLiteTrail,
) -> None:
    cfg = config(max_age_secs=0.3)
    channel = RecordingChannel("chat", failures=["FAILURE"] * 1000)
    async with DeliveryWorker(trail, cfg, host="h1", channels={"chat": channel}) as worker:
        stored = await store(trail, cfg, [event(1)])
        worker.wake()
        await wait_until(lambda: worker.stats.of("chat").failed == 1)
    assert (await counts(trail))["chat"]["failed"] == 1
    failed = await trail.call(lambda t: list(t.query(EventFilter(type="notification"))))
    assert len(failed) == 1
    assert failed[0].action == "delivery-failed"
    assert failed[0].source == "docktrail"
    assert failed[0].attributes["alerts"] == [stored[0].id]
    assert failed[0].attributes["error"] == "scripted failure"


async def test_a_burst_is_grouped_into_few_messages(trail: SQLiteTrail) -> None:
    cfg = config(group_window_secs=2)
    channel = RecordingChannel("chat")
    async with DeliveryWorker(trail, cfg, host="h1", channels={"chat": channel}) as worker:
        first = await store(trail, cfg, [event(1)], rule="container-churn", severity="high")
        worker.wake()
        await wait_until(lambda: len(channel.messages) == 1)
        rest = []
        for n in range(2, 51):  # 49 more, one write each, as a live burst comes in
            rest += await store(trail, cfg, [event(n)], rule="container-churn", severity="high")
            worker.wake()
        await wait_until(lambda: len(alert_ids(channel)) == 50)
    # the first at once; the other 49 at the window's end, 20 per JSON message
    assert len(channel.messages) == 4
    assert sorted(alert_ids(channel)) == sorted(a.id for a in first + rest)
    grouped = json.loads(channel.messages[1].body)
    assert grouped["count"] == 20
    assert "20 alerts of container-churn" in channel.messages[1].title
    assert await trail.call(lambda t: t.count_alerts()) == 50


async def test_the_rate_limit_holds_messages_back_without_dropping(trail: SQLiteTrail) -> None:
    cfg = config(
        destinations=[
            {"name": "chat", "url": "json://h/x", "min_severity": "info", "rate_limit_per_min": 2}
        ]
    )
    channel = RecordingChannel("chat")
    rules = ["privileged-container", "docker-socket-mount", "sensitive-mount", "host-namespace"]
    async with DeliveryWorker(trail, cfg, host="h1", channels={"chat": channel}) as worker:
        for n, rule in enumerate(rules, start=1):
            await store(trail, cfg, [event(n)], rule=rule)
        worker.wake()
        await wait_until(lambda: len(channel.messages) == 2)
        await asyncio.sleep(0.3)
        assert len(channel.messages) == 2  # the other two wait for the minute to pass
        assert (await counts(trail))["chat"]["pending"] == 2
        flushed = await worker.flush()  # an explicit flush ignores the limit
    assert flushed.of("chat").delivered == 2
    assert len(set(alert_ids(channel))) == 4


async def test_a_slow_destination_does_not_delay_the_others(trail: SQLiteTrail) -> None:
    cfg = config(
        destinations=[
            {"name": "slow", "url": "json://h/x", "min_severity": "info"},
            {"name": "fast", "url": "json://h/y", "min_severity": "info"},
        ]
    )
    slow = RecordingChannel("slow", delay_secs=3)
    fast = RecordingChannel("fast")
    channels = {"slow": slow, "fast": fast}
    async with DeliveryWorker(trail, cfg, host="h1", channels=channels) as worker:
        started = time.monotonic()
        await store(trail, cfg, [event(1)])
        worker.wake()
        await wait_until(lambda: len(fast.messages) == 1)
        assert fast.sent_at[0] - started < 1.0
        assert slow.messages == []


async def test_pending_deliveries_survive_a_restart(tmp_path: Path) -> None:
    cfg = config()
    path = tmp_path / "trail.db"
    async with SQLiteTrail(path) as trail:
        stored = await store(trail, cfg, [event(1), event(2)])
    channel = RecordingChannel("chat")
    trail = SQLiteTrail(path)
    async with trail, DeliveryWorker(trail, cfg, host="h1", channels={"chat": channel}):
        await wait_until(lambda: len(alert_ids(channel)) == 2)
    assert sorted(alert_ids(channel)) == sorted(a.id for a in stored)


async def test_a_claimed_delivery_is_not_sent_by_a_second_worker(trail: SQLiteTrail) -> None:
    cfg = config()
    await store(trail, cfg, [event(1)])
    slow = RecordingChannel("chat", delay_secs=0.5)
    other = RecordingChannel("chat")
    first = DeliveryWorker(trail, cfg, host="h1", channels={"chat": slow})
    second = DeliveryWorker(trail, cfg, host="h1", channels={"chat": other})
    sending = asyncio.create_task(first.flush())
    await asyncio.sleep(0.1)
    await second.flush()
    await sending
    assert len(slow.messages) == 1
    assert other.messages == []
