"""Destination secrets never printed or logged (issue 19, item 4)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from listener.cli import main
from listener.logs import setup_logging
from notifiers.apprise import AppriseChannel
from notifiers.base import Message
from tests.notify_servers import WebhookServer

PASSWORD = "Pa55w0rdXyz"
BEARER = "sEcReTbEaReR0ken"
API_KEY = "kEy1234567abcdef"
QUERY_TOKEN = "qq81Zmx0YqTok"
SLACK_TOKEN = "TIiajkdnlazkcOXrIdevi7FQ"
CHAT_TOKEN = "dt4hooKTok3nSecret"
SECRETS = (PASSWORD, BEARER, API_KEY, QUERY_TOKEN, SLACK_TOKEN, CHAT_TOKEN)


def hook_url(server: WebhookServer) -> str:
    return (
        f"json://ops:{PASSWORD}@127.0.0.1:{server.port}/alerts"
        f"?+Authorization=Bearer%20{BEARER}&+X-Api-Key={API_KEY}"
    )


def write_config(tmp_path: Path, destinations: list[dict[str, Any]]) -> Path:
    path = tmp_path / "docktrail.yaml"
    config = {"notifications": {"destinations": destinations, "timeout_secs": 2}}
    path.write_text(yaml.safe_dump(config))
    return path


def cli(config: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["-c", str(config), *args])


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} printed: {text}"


def test_config_show_masks_every_secret_part(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        [
            {"name": "hook", "url": f"json://ops:{PASSWORD}@hooks.example.com/in"
                                    f"?+Authorization=Bearer%20{BEARER}&+X-Api-Key={API_KEY}"},
            {"name": "slack", "url": f"slack://T1JJ3T3L2/A1BRTD4JD/{SLACK_TOKEN}"},
            {"name": "q", "url": f"jsons://hooks.example.com/in?token={QUERY_TOKEN}&to=sec"},
            {"name": "chat", "url": f"mmost://chat.example.com/{CHAT_TOKEN}"},
        ],
    )  # fmt: skip
    result = cli(config, "config", "show")
    assert result.exit_code == 0, result.output
    assert_no_secret(result.output)
    assert "hooks.example.com" in result.output and "****" in result.output


def test_notify_test_prints_no_header_or_password(
    tmp_path: Path, webhook_server: WebhookServer
) -> None:
    config = write_config(tmp_path, [{"name": "hook", "url": hook_url(webhook_server)}])
    result = cli(config, "notify", "test")
    assert result.exit_code == 0, result.output
    assert_no_secret(result.output)
    assert webhook_server.wait_for(1)
    headers = webhook_server.received[0].headers
    assert headers["Authorization"] == f"Bearer {BEARER}"  # still sent, never shown
    assert headers["X-Api-Key"] == API_KEY


def test_validate_masks_a_url_apprise_cannot_load(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, [{"name": "broken", "url": f"json://ops:{PASSWORD}@"}]
    )  # no host
    result = cli(config, "validate")
    assert result.exit_code == 2
    assert "cannot load apprise URL" in result.output
    assert_no_secret(result.output)


@pytest.mark.parametrize("json_lines", [False, True])
def test_debug_logging_masks_apprise_lines(
    webhook_server: WebhookServer, capsys: pytest.CaptureFixture[str], json_lines: bool
) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    setup_logging("debug", json_lines=json_lines)  # binds the captured stderr
    try:
        chat = AppriseChannel("chat", webhook_server.mattermost_url(CHAT_TOKEN))
        hook = AppriseChannel("hook", hook_url(webhook_server))
        for channel in (chat, hook):
            outcome = asyncio.run(channel.send(Message("t", "b", "text")))
            assert outcome.ok, outcome.error
        logging.getLogger("docktrail.test").debug("posting to %s", hook_url(webhook_server))
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    logged = capsys.readouterr().err
    assert "Mattermost webhook POST URL" in logged  # apprise's own debug line, masked
    assert_no_secret(logged)
