"""Dedup folds only the same subject; a digest names every distinct one (issue 18, items 5, 8)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from config.models import NotificationsConfig
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from notifiers.routing import Routing
from notifiers.worker import DeliveryWorker
from sinks.sqlite import SQLiteTrail
from tests.notify_servers import WebhookServer

T0 = 1_795_346_502_000_000_000
S = 1_000_000_000
ALICE = Who(login="alice", user="alice", uid=1000, method="auditd-cli")


def notifications(url: str) -> NotificationsConfig:
    return NotificationsConfig.model_validate(
        {
            "destinations": [{"name": "chat", "url": url, "min_severity": "info"}],
            "dedup_window_secs": 600,
            "group_window_secs": 60,  # what is due together goes out together
            "timeout_secs": 2,
            "poll_interval_secs": 0.05,
        }
    )


def event(n: int, *, kind: str = "container", name: str | None = None) -> Event:
    return Event(
        id=natural_id("dedup", n),
        time_ns=T0 + n * S,
        source="docker" if kind == "container" else "auditd",
        host="prod-1",
        type=kind,
        action="create" if kind == "container" else "write",
        actor=Actor(id=f"{n:064x}", name=name or f"run-{n}", image="local/tool:dev"),
        who=ALICE,
    )


def finding(ev: Event, rule: str, summary: str, **details: Any) -> Alert:
    assert ev.seq is not None
    is_container = ev.type == "container"
    return Alert(
        id=natural_id("alert", ev.id, rule, 0),
        time_ns=ev.time_ns,
        rule=rule,
        severity="high",
        event_seq=ev.seq,
        event_id=ev.id,
        host=ev.host,
        container=ev.actor.name if is_container else None,
        image=ev.actor.image if is_container else None,
        who=ev.who,
        summary=summary,
        details=details,
    )


@pytest.fixture
async def trail(tmp_path: Path) -> Any:
    t = SQLiteTrail(tmp_path / "trail.db", durability="normal")
    async with t:
        yield t


async def deliver(
    trail: SQLiteTrail, config: NotificationsConfig, alerts: list[Alert], server: WebhookServer
) -> list[str]:
    routing = Routing(config)
    stored = await trail.write_alerts(alerts, route=lambda a: routing.routes(a))
    assert len(stored) == len(alerts)  # the trail keeps every finding
    async with DeliveryWorker(trail, config, host="prod-1") as worker:
        worker.wake()
        assert await asyncio.to_thread(server.wait_for, 1, 10)
        await asyncio.sleep(0.3)  # anything more would have been sent by now
    return [item.json["text"] for item in server.received]


async def test_thirty_runs_of_one_untrusted_image_are_one_message_with_the_count(
    trail: SQLiteTrail, webhook_server: WebhookServer
) -> None:
    config = notifications(webhook_server.mattermost_url())
    events = (await trail.write([event(n) for n in range(1, 31)])).stored
    details = {"reference": "local/tool:dev", "normalized": "docker.io/local/tool:dev"}
    alerts = [
        finding(e, "untrusted-image", "untrusted image local/tool:dev (run)", **details)
        for e in events
    ]
    texts = await deliver(trail, config, alerts, webhook_server)
    assert len(texts) == 1
    assert "(+29 identical)" in texts[0]  # the count: one sent, 29 folded into it
    assert await trail.call(lambda t: t.count_alerts()) == 30


async def test_different_daemon_files_are_each_named(
    trail: SQLiteTrail, webhook_server: WebhookServer
) -> None:
    config = notifications(webhook_server.mattermost_url())
    paths = ["/etc/docker/daemon.json", "/usr/bin/dockerd", "/etc/default/docker",
             "/lib/systemd/system/docker.service"]  # fmt: skip
    events = (await trail.write([event(n, kind="daemon-file") for n in range(1, 5)])).stored
    alerts = [
        finding(e, "daemon-config-change", f"{path}: write by alice", path=path, operation="write")
        for e, path in zip(events, paths, strict=True)
    ]
    texts = await deliver(trail, config, alerts, webhook_server)
    assert len(texts) == 1
    assert "identical" not in texts[0]
    for path in paths:
        assert path.replace("_", "\\_") in texts[0]


async def test_privileged_exec_is_not_folded_into_a_plain_one(
    trail: SQLiteTrail, webhook_server: WebhookServer
) -> None:
    config = notifications(webhook_server.mattermost_url())
    events = (await trail.write([event(n, name="web-1") for n in (1, 2, 3)])).stored
    plain = {"command": "ls", "risks": [], "user": "app", "privileged": False}
    root = {"command": "sh", "risks": ["root", "privileged"], "user": "0", "privileged": True}
    alerts = [
        finding(events[0], "exec-in-container", "exec into web-1: ls", **plain),
        finding(events[1], "exec-in-container", "exec into web-1: sh (privileged)", **root),
        finding(events[2], "exec-in-container", "exec into web-1: ls", **plain),
    ]
    texts = await deliver(trail, config, alerts, webhook_server)
    assert len(texts) == 1
    assert "exec into web-1: sh (privileged)" in texts[0]
    assert "1 identical" in texts[0]  # the repeated plain exec, counted


async def test_repeats_after_the_message_went_out_reach_the_channel_with_their_count(
    trail: SQLiteTrail, webhook_server: WebhookServer
) -> None:
    """Live, the first alert leaves at once: the repeats that follow are not only in
    `notify status`; one more message, at the end of the first one's window, counts them."""
    config = notifications(webhook_server.mattermost_url()).model_copy(
        update={"dedup_window_secs": 2, "group_window_secs": 1}
    )
    routing = Routing(config)
    details = {"reference": "local/tool:dev", "normalized": "docker.io/local/tool:dev"}
    events = (await trail.write([event(n) for n in range(1, 12)])).stored
    alerts = [
        finding(e, "untrusted-image", "untrusted image local/tool:dev (run)", **details)
        for e in events
    ]
    # 0.1 s apart in alert time: all inside the first one's window
    alerts = [a.model_copy(update={"time_ns": T0 + (a.time_ns - T0) // 10}) for a in alerts]
    async with DeliveryWorker(trail, config, host="prod-1") as worker:
        await trail.write_alerts(alerts[:1], route=lambda a: routing.routes(a))
        worker.wake()
        assert await asyncio.to_thread(webhook_server.wait_for, 1, 10)
        await trail.write_alerts(alerts[1:], route=lambda a: routing.routes(a))
        worker.wake()
        await asyncio.sleep(0.5)
        assert len(webhook_server.received) == 1  # held: the window is not over
        assert await asyncio.to_thread(webhook_server.wait_for, 2, 10)
    texts = [item.json["text"] for item in webhook_server.received]
    assert len(texts) == 2
    assert "identical" not in texts[0]
    assert "(+9 identical)" in texts[1]  # the first repeat, and the nine after it counted
