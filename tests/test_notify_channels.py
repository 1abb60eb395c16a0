"""AppriseChannel against real local servers: SMTP, a JSON webhook, a Mattermost emulation."""

from __future__ import annotations

import logging
import time

import pytest

from config.errors import ConfigError
from notifiers.apprise import MASK, AppriseChannel, family_for_url, mask_secrets
from notifiers.base import Family, Message
from tests.notify_servers import SmtpServer, WebhookServer

TITLE_ZH = "严重告警：特权容器"  # noqa: RUF001 (a Chinese colon, on purpose)
HTML_BODY = "<p>严重告警：<b>特权容器</b> web-1 在 host-a 上以 --privileged 启动</p>"  # noqa: RUF001
MARKDOWN_BODY = "**critical** `privileged-container`\n\n- container: web-1\n- user: alice"


async def test_email_arrives_as_html_with_chinese_subject(smtp_server: SmtpServer) -> None:
    channel = AppriseChannel("mail", smtp_server.url(to="sec@example.com"), timeout_secs=5)
    assert channel.family == "html"

    outcome = await channel.send(Message(TITLE_ZH, HTML_BODY, "html"))

    assert (outcome.ok, outcome.status, outcome.error) == (True, "SUCCESS", None)
    assert smtp_server.wait_for(1)
    mail = smtp_server.messages[0]
    assert mail["Subject"] == TITLE_ZH
    assert smtp_server.raw[0].isascii()  # subject RFC 2047-encoded, parts transfer-encoded
    assert mail["From"] == "docktrail@example.com"
    assert mail["To"] == "sec@example.com"
    assert smtp_server.envelopes[0] == ("docktrail@example.com", ["sec@example.com"])
    assert mail.get_content_type() == "multipart/alternative"
    html = mail.get_body(preferencelist=("html",))
    plain = mail.get_body(preferencelist=("plain",))
    assert html is not None and plain is not None
    assert html.get_content() == HTML_BODY
    assert TITLE_ZH in plain.get_content()


async def test_json_webhook_gets_the_body_object_itself(webhook_server: WebhookServer) -> None:
    channel = AppriseChannel("hook", webhook_server.json_url("/alerts"), timeout_secs=5)
    assert channel.family == "json"

    outcome = await channel.send(Message(TITLE_ZH, '{"rule": "privileged-container"}', "text"))

    assert outcome.ok and outcome.status == "SUCCESS"
    assert webhook_server.wait_for(1)
    received = webhook_server.received[0]
    assert received.path == "/alerts"
    assert received.headers["Content-Type"] == "application/json"
    assert received.json == {"rule": "privileged-container"}


async def test_mattermost_emulation_gets_markdown_unchanged(webhook_server: WebhookServer) -> None:
    channel = AppriseChannel("mm", webhook_server.mattermost_url("dt4hooKTok3n"), timeout_secs=5)
    assert channel.family == "markdown"

    untitled = await channel.send(Message("", MARKDOWN_BODY, "markdown"))
    titled = await channel.send(Message(TITLE_ZH, MARKDOWN_BODY, "markdown"))

    assert untitled.ok and titled.ok
    assert webhook_server.wait_for(2)
    first, second = webhook_server.received
    assert first.path == "/hooks/dt4hooKTok3n"
    assert first.json["text"] == MARKDOWN_BODY
    # Mattermost has no title (title_maxlen 0): apprise puts it on the body's first line.
    assert second.json["text"] == f"{TITLE_ZH}\r\n{MARKDOWN_BODY}"


async def test_server_down_is_a_masked_refusal(webhook_server: WebhookServer) -> None:
    token = "dt4hooKTok3n"
    channel = AppriseChannel("mm", webhook_server.mattermost_url(token), timeout_secs=2)
    webhook_server.stop()

    outcome = await channel.send(Message("t", "b", "markdown"))

    assert (outcome.ok, outcome.status) == (False, "FAILURE")
    assert outcome.error == f"connection refused by 127.0.0.1:{webhook_server.port}"
    assert token not in channel.safe_url


async def test_smtp_down_is_a_refusal() -> None:
    server = SmtpServer()  # never started: its port refuses connections
    channel = AppriseChannel("mail", server.url(), timeout_secs=2)

    outcome = await channel.send(Message("t", "<p>b</p>", "html"))

    assert (outcome.ok, outcome.status) == (False, "FAILURE")
    assert outcome.error is not None and "refused" in outcome.error


async def test_http_500_is_a_failure_naming_the_status(webhook_server: WebhookServer) -> None:
    url = webhook_server.json_url().replace("json://", "json://ops:Pa55w0rdX@")
    channel = AppriseChannel("hook", url, timeout_secs=2)
    webhook_server.plan = ["500"]

    outcome = await channel.send(Message("t", "b", "text"))

    assert (outcome.ok, outcome.status) == (False, "FAILURE")
    assert outcome.error == f"HTTP 500 from 127.0.0.1:{webhook_server.port}"
    assert webhook_server.attempts == 1 and webhook_server.received == []


async def test_hung_server_times_out_then_recovers(webhook_server: WebhookServer) -> None:
    channel = AppriseChannel("hook", webhook_server.json_url(), timeout_secs=1)
    webhook_server.plan = ["hang"]

    started = time.monotonic()
    hung = await channel.send(Message("t", "b", "text"))
    took = time.monotonic() - started

    assert took < 3
    assert not hung.ok and hung.status in ("TIMEOUT", "FAILURE")
    assert hung.error is not None and "timed out" in hung.error
    assert webhook_server.attempts == 1 and webhook_server.received == []

    recovered = await channel.send(Message("t", "b", "text"))  # plan now empty: "ok"
    assert recovered.ok
    assert len(webhook_server.received) == 1


async def test_debug_lines_stay_out_of_the_application_logs(
    webhook_server: WebhookServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The channel reads apprise's DEBUG lines for its error text; the
    # application (root at WARNING here) must see only what it saw before.
    # (json:// is posted by docktrail itself; a chat webhook goes through apprise)
    channel = AppriseChannel("chat", webhook_server.mattermost_url(), timeout_secs=2)
    webhook_server.stop()

    outcome = await channel.send(Message("t", "b", "text"))

    assert outcome.error is not None and "refused" in outcome.error
    apprise_records = [r for r in caplog.records if r.name.startswith("apprise")]
    assert apprise_records and all(r.levelno >= logging.WARNING for r in apprise_records)


async def test_tags_route_to_the_channel(webhook_server: WebhookServer) -> None:
    channel = AppriseChannel("hook", webhook_server.json_url(), tags=["secops", "oncall"])
    assert (await channel.send(Message("t", "b", "text"))).ok
    assert webhook_server.wait_for(1)


def test_mask_secrets_hides_password_token_and_url() -> None:
    url = "json://ops:Pa55w0rdX@hooks.example.com/v1/a8F3kQ9zLm2Xw7Rt?token=qq81Zmx0Y&to=sec"
    text = (
        f"POST to {url} failed; login ops/Pa55w0rdX refused; "
        "GET /v1/a8F3kQ9zLm2Xw7Rt?token=qq81Zmx0Y: 401"
    )

    masked = mask_secrets(text, url)

    for secret in ("Pa55w0rdX", "a8F3kQ9zLm2Xw7Rt", "qq81Zmx0Y"):
        assert secret not in masked
    assert url not in masked
    assert MASK in masked and "hooks.example.com" in masked and ": 401" in masked


def test_mask_secrets_uses_what_apprise_knows_is_private() -> None:
    # "tok3nABC" looks like an ordinary word; apprise's Mattermost plugin marks it private.
    url = "mmost://chat.example.com/tok3nABC"
    masked = mask_secrets("POST https://chat.example.com/hooks/tok3nABC: 404", url)
    assert masked == f"POST https://chat.example.com/hooks/{MASK}: 404"


@pytest.mark.parametrize(
    "url",
    [
        "nosuchservice://ops:Pa55w0rdX@example.com/a8F3kQ9zLm2Xw7Rt",
        "mailto://ops:Pa55w0rdX@127.0.0.1?from=not-an-address",
        "json://ops:Pa55w0rdX@127.0.0.1/a json://127.0.0.1/b",
    ],
)
def test_unloadable_url_is_a_config_error_without_secrets(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        AppriseChannel("bad-one", url)
    message = str(caught.value)
    assert message.startswith("notifications.destinations[bad-one]: ")
    assert "Pa55w0rdX" not in message and "a8F3kQ9zLm2Xw7Rt" not in message


def test_safe_url_masks_the_password() -> None:
    channel = AppriseChannel("hook", "json://ops:Pa55w0rdX@127.0.0.1:9/hook")
    assert "Pa55w0rdX" not in channel.safe_url
    assert channel.safe_url.startswith("json://ops:****@127.0.0.1:9/hook")


@pytest.mark.parametrize(
    ("url", "family"),
    [
        ("mailto://u:p@example.com", "html"),
        ("mailtos://u:p@example.com", "html"),
        ("dingtalk://token/", "dingtalk"),
        ("slack://a/b/c", "markdown"),
        ("msteams://a/b/c", "markdown"),
        ("feishu://token", "markdown"),
        ("lark://token", "markdown"),
        ("mmost://host/token", "markdown"),
        ("mmosts://host/token", "markdown"),
        ("rocket://u:p@host/room", "markdown"),
        ("rockets://u:p@host/room", "markdown"),
        ("discord://id/token", "markdown"),
        ("wecombot://key", "markdown"),
        ("matrix://u:p@host/#room", "markdown"),
        ("matrixs://u:p@host/#room", "markdown"),
        ("zulip://bot@org/token", "markdown"),
        ("json://host/path", "json"),
        ("jsons://host/path", "json"),
        ("form://host", "json"),
        ("forms://host", "json"),
        ("xml://host", "json"),
        ("xmls://host", "json"),
        ("MMOST://host/token", "markdown"),
        ("ntfy://topic", "plain"),
        ("tgram://bot/chat", "plain"),
        ("https://hooks.slack.com/services/a/b/c", "plain"),
        ("not a url", "plain"),
    ],
)
def test_family_for_url(url: str, family: Family) -> None:
    assert family_for_url(url) == family


def test_explicit_family_overrides_the_scheme() -> None:
    assert AppriseChannel("hook", "json://127.0.0.1:9/h", family="markdown").family == "markdown"


@pytest.mark.parametrize(
    ("url", "limits"),
    [
        ("mailto://127.0.0.1:9?mode=insecure&from=a@example.com&to=b@example.com", (32768, 250)),
        ("json://127.0.0.1:9/hook", (32768, 250)),
        ("mmost://127.0.0.1:9/tok3nABC", (4000, None)),  # no title: folded into the body
    ],
)
def test_limits_are_what_apprise_reports(url: str, limits: tuple[int, int | None]) -> None:
    channel = AppriseChannel("x", url)
    assert (channel.body_limit, channel.title_limit) == limits
