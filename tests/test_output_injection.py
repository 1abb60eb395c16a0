"""Hostile names and labels reach people escaped: terminal, spreadsheet, chat and mail."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from listener.cli import main
from listener.model.alert import Alert
from listener.model.event import Who
from notifiers.apprise import AppriseChannel
from notifiers.render import Renderer
from tests.notify_servers import SmtpServer, WebhookServer, smtp_server, webhook_server

__all__ = ["smtp_server", "webhook_server"]

HOSTILE_NAME = "\x1b[31mred\x1b]0;pwned\x07"
HOSTILE_WHY = "\x1b[2Jcleared \u202egnp.exe"
FORMULA_NAME = '=HYPERLINK("http://evil","x")'
T = 1795346502_000000000


def _create(name: str, cid: str, seq: int, labels: dict[str, str]) -> str:
    attributes = {"name": name, "image": "registry.internal/app:1", **labels}
    return json.dumps(
        {
            "Type": "container",
            "Action": "create",
            "Actor": {"ID": cid, "Attributes": attributes},
            "scope": "local",
            "time": T // 10**9 + seq,
            "timeNano": T + seq * 10**9,
        }
    )


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("hostile")
    events = tmp / "events.jsonl"
    lines = [
        _create(HOSTILE_NAME, "a" * 64, 1, {"audit.why": HOSTILE_WHY}),
        _create(FORMULA_NAME, "b" * 64, 2, {}),
    ]
    events.write_text("\n".join(lines) + "\n")
    (tmp / "docktrail.yaml").write_text("auditd:\n  enabled: false\n")
    result = run(tmp, "ingest", "--docker-events", str(events))
    assert result.exit_code == 0, result.output
    return tmp


def run(tmp: Path, *args: str) -> Result:
    command = ["-c", str(tmp / "docktrail.yaml"), "--db", str(tmp / "t.db"), *args]
    return CliRunner().invoke(main, command, catch_exceptions=False)


def assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text


def test_query_table_shows_control_characters_escaped(trail: Path) -> None:
    result = run(trail, "query")
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "\\x1b[31mred" in result.stdout


def test_alerts_table_shows_control_characters_escaped(trail: Path) -> None:
    result = run(trail, "alerts")
    assert result.exit_code == 0, result.output
    assert "\\x1b" in result.stdout  # the hostile container's alerts are listed
    assert_inert(result.stdout)


def test_timeline_shows_name_and_why_escaped(trail: Path) -> None:
    result = run(trail, "timeline", "a" * 12)
    assert result.exit_code == 0, result.output
    assert_inert(result.stdout)
    assert "\\x1b[31mred\\x1b]0;pwned\\x07" in result.stdout
    assert "\\x1b[2Jcleared \\u202egnp.exe" in result.stdout


def test_json_output_stays_exact(trail: Path) -> None:
    objects = [
        json.loads(line)
        for line in run(trail, "query", "--format", "json").stdout.split("\n")
        if line
    ]
    assert HOSTILE_NAME in {obj["actor"]["name"] for obj in objects}
    timeline = run(trail, "timeline", "a" * 12, "--format", "json").stdout
    assert json.loads(timeline.splitlines()[0])["why"]["reason"] == HOSTILE_WHY


@pytest.mark.parametrize("command", ["query", "alerts"])
def test_csv_cells_cannot_run_as_formulas(trail: Path, command: str) -> None:
    result = run(trail, command, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert rows
    for row in rows:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@")), value
            assert_inert(value)
    names = {row.get("actor_name") or row.get("container") for row in rows}
    assert "'" + FORMULA_NAME in names


def hostile_alert() -> Alert:
    return Alert(
        id="alert-hostile",
        time_ns=T,
        rule="privileged-container",
        severity="critical",
        event_seq=1,
        event_id="ev-1",
        host="host-x",
        container="<!channel> @here \x1b[2J [click](http://evil.example) <b>x</b>",
        image="registry.internal/app:1",
        who=Who(login="alice", method="auditd-cli"),
        summary="privileged container <!here> @channel \x1b]0;pwned\x07",
    )


def send(url: str, family: str | None = None) -> None:
    channel = AppriseChannel("dest", url)
    message = Renderer().render(
        [hostile_alert()], family=channel.family, language="en", timezone="UTC",
        body_limit=channel.body_limit, title_limit=channel.title_limit,
    )  # fmt: skip
    outcome = asyncio.run(channel.send(message))
    assert outcome.ok, outcome.error


def test_chat_message_mentions_nobody_and_links_nowhere(webhook_server: WebhookServer) -> None:
    send(webhook_server.mattermost_url())
    assert webhook_server.wait_for(1)
    text = webhook_server.received[0].json["text"]
    assert_inert(text)
    for mention in ("<!channel>", "<!here>", "@here", "@channel"):
        assert mention not in text
    assert "[click](" not in text.replace("\\[click\\](", "")  # only the escaped form
    assert "<b>" not in text
    assert "\\\\x1b" in text  # shown escaped (and markdown-escaped)


def test_email_escapes_html_and_control_characters(smtp_server: SmtpServer) -> None:
    send(smtp_server.url())
    assert smtp_server.wait_for(1)
    message = smtp_server.messages[0]
    assert_inert(str(message["Subject"]))
    html = message.get_body(("html",)).get_content()
    assert_inert(html)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html


def test_notify_status_shows_control_characters_escaped(tmp_path: Path) -> None:
    (tmp_path / "docktrail.yaml").write_text(
        "auditd:\n  enabled: false\nnotifications:\n  timeout_secs: 1\n  destinations:\n"
        "    - {name: down, url: 'json://127.0.0.1:9/x', min_severity: info}\n"
    )
    events = tmp_path / "events.jsonl"
    events.write_text(_create(HOSTILE_NAME, "c" * 64, 1, {}) + "\n")
    run(tmp_path, "ingest", "--docker-events", str(events), "--notify", "live")
    result = run(tmp_path, "notify", "status")
    assert "\\x1b[31mred" in result.stdout  # the pending delivery is listed
    assert_inert(result.stdout)
