"""`notify test` is marked as a test; JSON webhooks get docktrail's object; severity → type."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, get_args
from urllib.parse import parse_qs

import pytest
import yaml
from click.testing import CliRunner

from listener.cli import main
from notifiers.apprise import AppriseChannel
from notifiers.base import Family
from notifiers.render import LANGUAGES, Language, Renderer, sample_alert
from tests.notify_servers import SmtpServer, WebhookServer

T0 = 1_795_346_502_000_000_000
MARKS = {"en": ("[TEST]", "TEST MESSAGE"), "zh": ("【测试】", "测试消息")}


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("family", get_args(Family))
def test_every_family_and_language_marks_a_test(family: Family, language: Language) -> None:
    message = Renderer().render(
        [sample_alert(time_ns=T0)], family=family, language=language, timezone="UTC", test=True
    )
    title_mark, body_mark = MARKS[language]
    assert message.title.startswith(title_mark)
    if family == "json":
        payload = json.loads(message.body)
        assert payload["test"] is True and payload["title"].startswith(title_mark)
    else:
        assert body_mark in message.body
    plain = Renderer().render([sample_alert(time_ns=T0)], family=family, language=language,
                              timezone="UTC")  # fmt: skip
    assert title_mark not in plain.title and body_mark not in plain.body


def test_a_user_template_cannot_drop_the_test_marks(tmp_path: Path) -> None:
    (tmp_path / "plain.en.title.j2").write_text("{{ alert.summary }}\n")
    (tmp_path / "plain.en.body.j2").write_text("{{ alert.summary }}\n")
    message = Renderer(tmp_path).render(
        [sample_alert(time_ns=T0)], family="plain", language="en", timezone="UTC", test=True
    )
    assert message.title.startswith("[TEST]") and message.body.startswith("TEST MESSAGE")


def write_config(tmp_path: Path, destinations: list[dict[str, Any]]) -> Path:
    config = {"notifications": {"destinations": destinations, "timeout_secs": 2}}
    path = tmp_path / "docktrail.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_notify_test_messages_are_marked_everywhere(
    tmp_path: Path, webhook_server: WebhookServer, smtp_server: SmtpServer
) -> None:
    config = write_config(
        tmp_path,
        [
            {"name": "hook", "url": webhook_server.json_url("/hook")},
            {"name": "chat", "url": webhook_server.mattermost_url(), "language": "zh"},
            {"name": "mail", "url": smtp_server.url()},
        ],
    )
    result = CliRunner().invoke(main, ["-c", str(config), "notify", "test"])
    assert result.exit_code == 0, result.output
    assert webhook_server.wait_for(2) and smtp_server.wait_for(1)
    by_path = {item.path: item.json for item in webhook_server.received}
    hook = by_path.pop("/hook")
    assert hook["test"] is True and hook["title"].startswith("[TEST]")
    chat = next(iter(by_path.values()))["text"]
    assert chat.startswith("【测试】") and "测试消息" in chat
    mail = smtp_server.messages[0]
    assert str(mail["Subject"]).startswith("[TEST]")
    html = mail.get_body(("html",))
    assert html is not None and "TEST MESSAGE" in html.get_content()


async def test_json_webhook_receives_the_documented_object(webhook_server: WebhookServer) -> None:
    channel = AppriseChannel("hook", webhook_server.json_url("/alerts"))
    alert = sample_alert(time_ns=T0)
    message = Renderer().render([alert], family="json", language="en", timezone="UTC",
                                body_limit=channel.body_limit)  # fmt: skip
    outcome = await channel.send(message)
    assert outcome.ok, outcome.error
    assert webhook_server.wait_for(1)
    body = webhook_server.received[0].json
    assert {"title", "count", "alerts"} <= set(body)
    assert "message" not in body and "version" not in body  # no apprise envelope
    assert body["count"] == 1 and body["alerts"][0]["id"] == alert.id
    assert body["alerts"][0]["severity"] == "critical"


async def test_json_webhook_failure_names_the_http_status(webhook_server: WebhookServer) -> None:
    webhook_server.plan = ["503"]
    url = webhook_server.json_url("/alerts").replace("json://", "json://ops:Pa55w0rdX@")
    channel = AppriseChannel("hook", url)
    outcome = await channel.send(Renderer().render(
        [sample_alert(time_ns=T0)], family="json", language="en", timezone="UTC"))  # fmt: skip
    assert not outcome.ok and outcome.error is not None
    assert "HTTP 503" in outcome.error and "Pa55w0rdX" not in outcome.error


@pytest.mark.parametrize(
    ("severity", "kind"),
    [("critical", "failure"), ("high", "failure"), ("medium", "warning"), ("low", "info"),
     ("info", "info")],
)  # fmt: skip
def test_severity_sets_the_notification_type(
    webhook_server: WebhookServer, severity: str, kind: str
) -> None:
    # form:// goes through apprise, which posts its notification type as `type`
    url = f"form://127.0.0.1:{webhook_server.port}/form"
    channel = AppriseChannel("form", url, family="plain")
    alert = sample_alert(time_ns=T0).model_copy(update={"severity": severity})
    message = Renderer().render([alert], family="plain", language="en", timezone="UTC")
    assert message.notify_kind == kind
    outcome = asyncio.run(channel.send(message))
    assert outcome.ok, outcome.error
    assert webhook_server.wait_for(1)
    fields = parse_qs(webhook_server.received[0].body.decode())
    assert fields["type"] == [kind]
