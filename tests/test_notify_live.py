"""Notifications end to end with real servers (issue 6's acceptance).

The alerts are stored in a real SQLite trail; the delivery worker sends them
through the real apprise channel to an aiosmtpd server and local HTTP servers
(tests/notify_servers.py). The last test runs `docktrail run` against the
private dockerd and kills it with SIGKILL while deliveries are pending.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from config.models import NotificationsConfig
from listener.cli import main
from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from notifiers.worker import LEASE_MARGIN_SECS, DeliveryWorker
from sinks.sqlite import SQLiteTrail
from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.notify_servers import SmtpServer, WebhookServer
from tests.shared_data import DATA
from tests.test_outbox import store

T0 = 1_795_346_502_000_000_000
S = 1_000_000_000


def notifications(*destinations: dict[str, Any], **fields: Any) -> NotificationsConfig:
    base: dict[str, Any] = {
        "destinations": list(destinations),
        "dedup_window_secs": 0,
        "group_window_secs": 0,
        "timeout_secs": 1,
        "retry_initial_secs": 0.1,
        "retry_max_secs": 0.4,
        "poll_interval_secs": 0.05,
    }
    return NotificationsConfig.model_validate(base | fields)


def make_event(n: int, name: str = "debug-priv") -> Event:
    return Event(
        id=natural_id("notify-live", n),
        time_ns=T0 + n * S,
        source="docker",
        host="prod-1",
        type="container",
        action="create",
        actor=Actor(id=f"{n:064x}", name=name, image="ubuntu:24.04"),
        who=Who(login="alice", user="root", method="auditd-cli"),
    )


async def store_alerts(
    trail: SQLiteTrail,
    config: NotificationsConfig,
    count: int,
    *,
    rule: str = "privileged-container",
    first: int = 1,
) -> list[Alert]:
    events = [make_event(n, f"c-{n}") for n in range(first, first + count)]
    return await store(trail, config, events, rule)


def json_alert_ids(server: WebhookServer) -> list[str]:
    """Alert ids in the json:// messages the server accepted (docktrail's own object)."""
    ids = []
    for item in server.received:
        if "alerts" not in item.json:
            continue  # a chat webhook's message
        ids += [alert["id"] for alert in item.json["alerts"]]
    return ids


@pytest.fixture
async def trail(tmp_path: Path) -> Any:
    t = SQLiteTrail(tmp_path / "trail.db", durability="normal")
    async with t:
        yield t


async def test_email_in_chinese_with_an_html_part(
    trail: SQLiteTrail, smtp_server: SmtpServer
) -> None:
    config = notifications(
        {
            "name": "mail",
            "url": smtp_server.url(to="secops@example.com"),
            "language": "zh",
            "timezone": "Asia/Shanghai",
        }
    )
    async with DeliveryWorker(trail, config, host="prod-1") as worker:
        await store_alerts(trail, config, 1)
        worker.wake()
        assert await asyncio.to_thread(smtp_server.wait_for, 1, 10)
    message = smtp_server.messages[0]
    assert "特权容器" in str(message["subject"])
    assert "严重" in str(message["subject"])
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    html_text = html.get_content()
    assert "特权容器" in html_text
    assert "+08:00" in html_text
    assert "docktrail timeline c-1" in html_text
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    assert "alice" in plain.get_content()


async def test_json_webhook_and_chat_webhook_markdown(
    trail: SQLiteTrail, webhook_server: WebhookServer
) -> None:
    config = notifications(
        {"name": "hook", "url": webhook_server.json_url("/alerts")},
        {"name": "chat", "url": webhook_server.mattermost_url()},
    )
    async with DeliveryWorker(trail, config, host="prod-1") as worker:
        stored = await store_alerts(trail, config, 1)
        worker.wake()
        assert await asyncio.to_thread(webhook_server.wait_for, 2, 10)
    by_path = {item.path: item for item in webhook_server.received}
    hook = by_path["/alerts"].json
    assert [a["id"] for a in hook["alerts"]] == [stored[0].id]
    assert hook["alerts"][0]["who"]["login"] == "alice"
    chat = next(item for path, item in by_path.items() if path.startswith("/hooks/"))
    text = chat.json["text"]
    assert "**CRITICAL**" in text
    assert "privileged-container" in text
    assert "docktrail timeline c-1" in text


async def test_outage_then_every_alert_arrives_exactly_once(
    trail: SQLiteTrail, webhook_server: WebhookServer, smtp_server: SmtpServer
) -> None:
    config = notifications(
        {"name": "hook", "url": webhook_server.json_url()},
        {"name": "mail", "url": smtp_server.url()},
    )
    webhook_server.stop()  # connection refused first
    async with DeliveryWorker(trail, config, host="prod-1") as worker:
        started = time.monotonic()
        stored = await store_alerts(trail, config, 5)
        worker.wake()
        assert await asyncio.to_thread(smtp_server.wait_for, 5, 10)
        mail_delay = time.monotonic() - started
        await asyncio.sleep(0.5)  # several refused attempts
        refused = await trail.call(lambda t: t.outbox.attempts("hook"))
        assert refused and not any(a.ok for a in refused)
        assert "refused" in (refused[0].error or "").lower()
        webhook_server.plan = ["500", "hang"]
        webhook_server.hang_secs = 20
        webhook_server.start()
        more = await store_alerts(trail, config, 3, first=10)  # arrive during the outage
        worker.wake()
        await asyncio.to_thread(webhook_server.wait_for, 1, 20)
        await asyncio.sleep(1.0)  # a duplicate would show up by now
    assert mail_delay < 3  # the dead webhook did not hold the email back
    assert webhook_server.attempts >= 3  # 500, the hang, then success
    statuses = {a.status for a in await trail.call(lambda t: t.outbox.attempts("hook"))}
    assert {"FAILURE", "SUCCESS"} <= statuses
    wanted = sorted(a.id for a in stored + more)
    assert sorted(json_alert_ids(webhook_server)) == wanted
    assert Counter(json_alert_ids(webhook_server)).most_common(1)[0][1] == 1
    assert len(smtp_server.messages) == 8
    assert (await trail.call(lambda t: t.outbox.counts()))["hook"]["pending"] == 0


async def test_a_burst_of_50_churn_alerts_makes_at_most_two_messages(
    trail: SQLiteTrail, webhook_server: WebhookServer
) -> None:
    config = notifications(
        {"name": "chat", "url": webhook_server.mattermost_url(), "min_severity": "high"},
        {"name": "hook", "url": webhook_server.json_url(), "min_severity": "high"},
        group_window_secs=5,
        dedup_window_secs=300,
    )
    async with DeliveryWorker(trail, config, host="prod-1") as worker:
        alerts: list[Alert] = []
        for n in range(1, 51):
            alerts += await store_alerts(trail, config, 1, rule="container-churn", first=n)
            worker.wake()
        started = time.monotonic()
        while len(json_alert_ids(webhook_server)) < 50 and time.monotonic() - started < 20:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
    chat = [item.json["text"] for item in webhook_server.received if item.path.startswith("/hooks")]
    # the first alert(s) at once, then one digest of the rest at the window's end
    assert len(chat) == 2
    first = 1 if "alerts of" not in chat[0] else int(chat[0].split(" alerts of")[0].split()[-1])
    assert f"{50 - first} alerts of container-churn on prod-1" in chat[1]
    # JSON webhooks get whole alert objects, 20 per message at most: every one arrives once
    assert sorted(json_alert_ids(webhook_server)) == sorted(a.id for a in alerts)
    assert len(webhook_server.received) - len(chat) <= 4
    assert await trail.call(lambda t: t.count_alerts()) == 50


# -- the CLI ------------------------------------------------------------------------


def write_config(tmp_path: Path, destinations: list[dict[str, Any]], **fields: Any) -> Path:
    config = {
        "trail": {"path": str(tmp_path / "trail.db")},
        "rules": {"untrusted-image": {"trusted": ["registry.internal/*"]}},
        "notifications": {
            "destinations": destinations,
            "timeout_secs": 1,
            "group_window_secs": 0,
            "dedup_window_secs": 0,
        }
        | fields,
    }
    path = tmp_path / "docktrail.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def cli(config: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["-c", str(config), *args], catch_exceptions=False)


def test_notify_test_reports_each_destination(
    tmp_path: Path, webhook_server: WebhookServer, smtp_server: SmtpServer
) -> None:
    down = WebhookServer()  # never started: refused
    config = write_config(
        tmp_path,
        [
            {"name": "hook", "url": webhook_server.json_url()},
            {"name": "mail", "url": smtp_server.url()},
            {"name": "down", "url": down.json_url()},
        ],
    )
    result = cli(config, "notify", "test")
    assert result.exit_code == 1
    lines = {line.split()[1]: line for line in result.output.splitlines()}
    assert lines["hook"].startswith("ok ")
    assert lines["mail"].startswith("ok ")
    assert lines["down"].startswith("FAIL")
    assert "refused" in lines["down"].lower()
    assert len(webhook_server.received) == 1
    assert smtp_server.wait_for(1, 5)
    only = cli(config, "notify", "test", "--destination", "hook")
    assert only.exit_code == 0
    assert cli(config, "notify", "test", "--destination", "nope").exit_code == 2


def test_ingest_notify_live_then_status_and_flush(
    tmp_path: Path, webhook_server: WebhookServer
) -> None:
    config = write_config(
        tmp_path,
        [{"name": "hook", "url": webhook_server.json_url(), "min_severity": "high"}],
        retry_initial_secs=60,
    )
    events = str(DATA / "scenario-a" / "events.jsonl")
    audit = str(DATA / "scenario-a" / "audit.log.gz")
    webhook_server.plan = ["500"] * 100  # down during the ingest
    ingested = cli(
        config, "ingest", "--docker-events", events, "--audit-log", audit, "--notify", "live"
    )
    assert ingested.exit_code == 0, ingested.output
    assert "notifications: hook: 0 messages" in ingested.output
    status = cli(config, "notify", "status", "--format", "json")
    assert status.exit_code == 0
    lines = [json.loads(line) for line in status.output.splitlines()]
    pending = lines[0]["destinations"]["hook"]["pending"]
    assert pending >= 6  # the high and critical findings of scenario-a
    assert {row["rule"] for row in lines[1:]} >= {"privileged-container", "docker-socket-mount"}
    assert all("500" in row["last_error"] for row in lines[1:])
    webhook_server.plan = []
    flushed = cli(config, "notify", "flush")
    assert flushed.exit_code == 0, flushed.output
    assert "pending after flush: 0" in flushed.output
    assert len(json_alert_ids(webhook_server)) == pending
    again = cli(config, "ingest", "--docker-events", events, "--notify", "live")
    assert again.exit_code == 0
    assert len(json_alert_ids(webhook_server)) == pending  # nothing new, nothing resent


def test_ingest_without_notify_sends_nothing(tmp_path: Path, webhook_server: WebhookServer) -> None:
    config = write_config(tmp_path, [{"name": "hook", "url": webhook_server.json_url()}])
    events = str(DATA / "scenario-a" / "events.jsonl")
    assert cli(config, "ingest", "--docker-events", events).exit_code == 0
    assert webhook_server.attempts == 0
    assert "outbox empty" in cli(config, "notify", "status").output


def test_replay_notify_live_sends_the_new_findings(
    tmp_path: Path, webhook_server: WebhookServer
) -> None:
    config = write_config(
        tmp_path, [{"name": "hook", "url": webhook_server.json_url(), "min_severity": "info"}]
    )
    events = str(DATA / "scenario-a" / "events.jsonl")
    assert cli(config, "ingest", "--docker-events", events).exit_code == 0
    strict = tmp_path / "strict.yaml"
    strict.write_text("rules:\n  untrusted-image:\n    trusted: ['registry.internal/web/*']\n")
    replayed = cli(config, "replay", "--rules", str(strict), "--notify", "live", "--format", "json")
    assert replayed.exit_code == 0, replayed.output
    found = [json.loads(line) for line in replayed.output.splitlines() if line.startswith("{")]
    assert found
    assert sorted(json_alert_ids(webhook_server)) == sorted(a["id"] for a in found)


# -- kill -9 of the service -----------------------------------------------------------


class NotifyingService:
    """`docktrail run` with one json:// destination, against the private dockerd."""

    def __init__(self, tmp_path: Path, daemon: Dockerd, hook_url: str) -> None:
        from tests.test_run_live import Service

        self.service = Service(tmp_path, daemon)
        with self.service.config.open("a") as config:
            config.write(
                "notifications:\n"
                "  destinations:\n"
                f"    - name: hook\n      url: {hook_url}\n      min_severity: critical\n"
                "  group_window_secs: 0\n  timeout_secs: 1\n"
                "  retry_initial_secs: 0.2\n  retry_max_secs: 0.5\n  poll_interval_secs: 0.1\n"
            )

    def pending(self) -> int:
        with SQLiteTrail(self.service.trail_path) as trail:
            return trail.outbox.counts().get("hook", {}).get("pending", 0)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[[Dockerd, str], NotifyingService]]:
    made: list[NotifyingService] = []

    def make(daemon: Dockerd, url: str) -> NotifyingService:
        made.append(NotifyingService(tmp_path, daemon, url))
        return made[-1]

    yield make
    for item in made:
        if item.service.process is not None and item.service.process.poll() is None:
            item.service.stop()


def test_kill_9_with_pending_deliveries_then_restart_delivers_them(
    dockerd: Dockerd, services: Callable[[Dockerd, str], NotifyingService]
) -> None:
    hook = WebhookServer()  # down: not started yet
    first = services(dockerd, hook.json_url())
    first.service.start()
    names = [f"notify-kill-{n}" for n in range(3)]
    for name in names:
        dockerd.docker("create", "--privileged", "--name", name, BUSYBOX_REF, "true")
    assert wait_until(lambda: first.pending() == 3, 20), first.service.log_text()
    first.service.signal(signal.SIGKILL)
    assert first.service.process is not None
    first.service.process.wait(10)
    hook.start()
    try:
        second = services(dockerd, hook.json_url())
        second.service.start()
        # A kill that lands while a send is claimed leaves that delivery leased by the
        # dead process: it is due again when the lease runs out (send timeout + margin).
        due = 1 + LEASE_MARGIN_SECS + 20
        assert hook.wait_for(1, due), second.service.log_text()
        assert wait_until(lambda: len(json_alert_ids(hook)) >= 3, due), second.service.log_text()
        time.sleep(1)  # a repeat would arrive by now
        assert second.service.stop() == 0
    finally:
        hook.stop()
        for name in names:
            dockerd.docker("rm", "-f", name, check=False)
    containers = Counter(
        alert["container"] for item in hook.received for alert in item.json["alerts"]
    )
    assert sorted(containers) == sorted(names)
    assert set(containers.values()) == {1}
