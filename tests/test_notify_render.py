"""Alert messages rendered per family and language: content, escaping, grouping, limits."""

# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation on purpose.

from __future__ import annotations

import json
import os
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, get_args

import pytest

from config.errors import ConfigError
from listener.model.alert import Alert
from listener.model.event import Who, Why
from listener.rules.fleet import FLEET_RULES_BY_ID
from listener.rules.registry import RULES_BY_ID
from notifiers.base import TRUNCATION_MARKER, Family, Message
from notifiers.render import (
    BUILTIN_DIR,
    RULE_TEXT_ZH,
    TEMPLATE_NAMES,
    Renderer,
    check_templates,
    md_escape,
    sample_alert,
)

FAMILIES: tuple[Family, ...] = get_args(Family)
TEXT_FAMILIES: tuple[Family, ...] = ("plain", "markdown", "dingtalk")
LANGUAGES = ("en", "zh")
T0 = 1_795_446_245_000_000_000  # 2026-11-23T15:04:05Z, 23:04:05 in Shanghai
SECOND = 1_000_000_000


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def sample(**changes: Any) -> Alert:
    return sample_alert(time_ns=T0).model_copy(update=changes)


def churn(count: int, *, every_secs: int = 25, host: str = "host-x") -> list[Alert]:
    """`count` container-churn alerts on one host, `every_secs` apart, the sixth one high."""
    return [
        sample(
            id=f"churn-{i}",
            rule="container-churn",
            severity="high" if i == 5 else "medium",
            container=f"worker-{i}",
            host=host,
            summary=f"container churn on {host}: {20 + i} creates in 60 s",
            time_ns=T0 + i * every_secs * SECOND,
        )
        for i in range(count)
    ]


def render(renderer: Renderer, alerts: list[Alert], family: Family, **kw: Any) -> Message:
    kw.setdefault("language", "en")
    kw.setdefault("timezone", "Asia/Shanghai")
    return renderer.render(alerts, family=family, **kw)


def text_of(message: Message, family: Family) -> str:
    """What a reader sees, for content checks: markdown escapes undone, JSON decoded."""
    if family == "json":
        return json.dumps(json.loads(message.body), ensure_ascii=False)
    return message.body.replace("\\", "")


class _Checker(HTMLParser):
    """Fails on a closing tag that does not match the open one (void elements aside)."""

    VOID = frozenset({"meta", "br"})

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"


def assert_well_formed(document: str) -> None:
    checker = _Checker()
    checker.feed(document)
    checker.close()
    assert checker.open == [], f"unclosed {checker.open}"
    assert document.lstrip().startswith("<!DOCTYPE html>")


# --- content -------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("family", FAMILIES)
def test_single_alert_carries_every_field(
    renderer: Renderer, family: Family, language: str
) -> None:
    alert = sample()
    message = render(renderer, [alert], family, language=language)
    seen = text_of(message, family)
    expected = [
        "privileged-container",
        "5.5",
        alert.host,
        "debug-priv",
        "docker.io/library/ubuntu:24.04",
        "alice",
        "root",
        "+08:00",
        "docktrail timeline debug-priv",
    ]
    for value in expected:
        assert value in seen, f"{value!r} missing from {family}/{language}"
    if family != "json":
        assert "2026-11-23 23:04:05 +08:00 Asia/Shanghai" in seen
        assert "privileged container debug-priv" in seen
    assert "privileged-container" in message.title or "特权容器" in message.title
    formats = {"plain": "text", "markdown": "markdown", "dingtalk": "markdown", "html": "html"}
    assert message.body_format == formats.get(family, "text")


@pytest.mark.parametrize("family", ["plain", "markdown", "dingtalk", "html"])
def test_english_names_the_rule_description_and_effective_user(
    renderer: Renderer, family: Family
) -> None:
    seen = text_of(render(renderer, [sample()], family), family)
    assert "Container runs --privileged." in seen
    assert "alice (as root)" in seen
    assert "CRITICAL" in seen


@pytest.mark.parametrize("family", ["plain", "markdown", "dingtalk", "html"])
def test_chinese_labels_rule_name_and_severity(renderer: Renderer, family: Family) -> None:
    message = render(renderer, [sample()], family, language="zh")
    seen = text_of(message, family)
    labels = ("特权容器", "严重", "规则", "主机", "容器", "镜像", "操作人", "原因", "时间", "查看")
    for label in labels:
        assert label in seen, label
    assert "alice（以 root 身份）" in seen
    assert "privileged container debug-priv" in seen  # the stored summary stays as it is
    assert "特权容器" in message.title and "严重" in message.title


def test_every_rule_has_a_chinese_name() -> None:
    assert set(RULE_TEXT_ZH) == set(RULES_BY_ID) | set(FLEET_RULES_BY_ID)


def test_unknown_login_and_same_user(renderer: Renderer) -> None:
    nobody = sample(who=Who(user="root"))
    assert "Who:       unknown (as root)" in render(renderer, [nobody], "plain").body
    zh = render(renderer, [nobody], "plain", language="zh").body
    assert "操作人：未知（以 root 身份）" in zh
    root = sample(who=Who(login="root", user="root"))
    assert "Who:       root\n" in render(renderer, [root], "plain").body


def test_why_and_ticket_from_whys(renderer: Renderer) -> None:
    alert = sample()
    whys = {alert.id: Why(reason="debugging a NIC driver", ticket="OPS-42")}
    body = render(renderer, [alert], "plain", whys=whys).body
    assert "Why:       debugging a NIC driver (ticket OPS-42)" in body
    assert "Why:       none declared" in render(renderer, [alert], "plain").body
    payload = json.loads(render(renderer, [alert], "json", whys=whys).body)
    assert payload["alerts"][0]["why"] == {"reason": "debugging a NIC driver", "ticket": "OPS-42"}


def test_utc_time_names_offset_and_zone(renderer: Renderer) -> None:
    body = render(renderer, [sample()], "plain", timezone="UTC").body
    assert "2026-11-23 15:04:05 +00:00 UTC" in body


def test_duplicates_are_mentioned(renderer: Renderer) -> None:
    message = render(renderer, [sample()], "markdown", duplicates=3)
    assert message.title.endswith("(+3 identical)")
    assert "not sent separately:** 3" in message.body
    assert json.loads(render(renderer, [sample()], "json", duplicates=3).body)["duplicates"] == 3


def test_lookup_without_container_lists_the_rule(renderer: Renderer) -> None:
    alert = sample(container=None, rule="untrusted-image", summary="pulled evil.io/x:1")
    assert "docktrail alerts -f rule=untrusted-image" in render(renderer, [alert], "plain").body


@pytest.mark.parametrize("family", FAMILIES)
def test_link_base_url_replaces_the_command(family: Family) -> None:
    alert = sample()
    message = render(Renderer(link_base_url="https://trail.example/"), [alert], family)
    assert f"https://trail.example/alerts/{alert.id}" in message.body
    assert "docktrail timeline" not in message.body


@pytest.mark.parametrize("family", FAMILIES)
def test_suppressed_alert_renders_with_its_reason(renderer: Renderer, family: Family) -> None:
    alert = sample(suppressed="node exporter needs host access")
    assert "node exporter needs host access" in text_of(render(renderer, [alert], family), family)


# --- grouped messages ----------------------------------------------------------------------


def test_grouped_title_counts_spans_and_takes_highest_severity(renderer: Renderer) -> None:
    alerts = churn(12)  # 11 * 25 s = 275 s
    title = render(renderer, alerts, "plain").title
    assert title == "[HIGH] 12 alerts of container-churn on host-x in 5 min"
    zh = render(renderer, alerts, "plain", language="zh").title
    assert zh == "[高] 主机 host-x 上 5 分钟内 12 条 container-churn 告警"


@pytest.mark.parametrize(
    ("every_secs", "span"), [(2, "22 s"), (600, "1 h 50 min"), (720, "2 h 12 min")]
)
def test_grouped_span_units(renderer: Renderer, every_secs: int, span: str) -> None:
    title = render(renderer, churn(12, every_secs=every_secs), "plain").title
    assert title.endswith(f"in {span}")


def test_grouped_body_lists_every_alert(renderer: Renderer) -> None:
    body = render(renderer, churn(4), "plain").body
    assert body.count("\n- 23:0") == 4
    assert "[HIGH]" not in body and "[MEDIUM] worker-0 (docker.io/library/ubuntu:24.04)" in body
    assert "docktrail alerts -f rule=container-churn -f host=host-x --since" in body
    assert "and 0 more" not in body and "more" not in body


@pytest.mark.parametrize("family", ["plain", "markdown", "dingtalk", "html"])
def test_grouped_body_is_cut_to_the_limit_with_and_n_more(
    renderer: Renderer, family: Family
) -> None:
    alerts = churn(40)
    message = render(renderer, alerts, family, body_limit=1500)
    assert len(message.body) <= 1500
    listed = len(re.findall(r"worker-\d+", message.body))
    assert 0 < listed < 40
    assert f"… and {40 - listed} more" in message.body
    assert TRUNCATION_MARKER not in message.body
    if family == "html":
        assert_well_formed(message.body)


def test_grouped_chinese_and_n_more(renderer: Renderer) -> None:
    body = render(renderer, churn(40), "markdown", language="zh", body_limit=1500).body
    listed = len(re.findall(r"worker-\d+", body))
    assert f"… 另有 {40 - listed} 条" in body


# --- limits --------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("family", TEXT_FAMILIES)
@pytest.mark.parametrize("limit", [40, 120, 333])
def test_text_bodies_and_titles_never_exceed_their_limits(
    renderer: Renderer, family: Family, language: str, limit: int
) -> None:
    alert = sample(summary="privileged container debug-priv " + "x" * 500)
    message = render(
        renderer, [alert], family, language=language, body_limit=limit, title_limit=limit // 2
    )
    assert len(message.body) <= limit and message.body.endswith(TRUNCATION_MARKER)
    assert len(message.title) <= limit // 2 and message.title.endswith(TRUNCATION_MARKER)


def test_cut_body_ends_at_a_line(renderer: Renderer) -> None:
    body = render(renderer, [sample()], "markdown", body_limit=300).body
    assert body.endswith("\n" + TRUNCATION_MARKER)
    for line in body.splitlines()[:-1]:
        assert line.count("**") % 2 == 0  # no emphasis left open


def test_short_enough_messages_are_not_cut(renderer: Renderer) -> None:
    message = render(renderer, [sample()], "plain", body_limit=10_000, title_limit=500)
    assert TRUNCATION_MARKER not in message.body + message.title


@pytest.mark.parametrize("limit", [250, 700])
def test_html_stays_well_formed_when_cut(renderer: Renderer, limit: int) -> None:
    alert = sample(summary="privileged container <b>debug-priv</b> " + "y" * 2000)
    body = render(renderer, [alert], "html", body_limit=limit).body
    assert len(body) <= limit
    assert TRUNCATION_MARKER in body
    assert_well_formed(body)


@pytest.mark.parametrize("limit", [900, 2500, 6000])
def test_json_drops_trailing_alerts_and_stays_valid(renderer: Renderer, limit: int) -> None:
    message = render(renderer, churn(30), "json", body_limit=limit)
    assert len(message.body) <= limit
    payload = json.loads(message.body)
    assert payload["count"] == 30 and payload["truncated"] is True
    kept = [alert["id"] for alert in payload["alerts"]]
    assert kept == [f"churn-{i}" for i in range(len(kept))]


def test_json_holds_the_alert_objects(renderer: Renderer) -> None:
    alert = sample()
    payload = json.loads(render(renderer, [alert], "json", language="zh").body)
    assert payload["count"] == 1 and "truncated" not in payload
    assert payload["title"].startswith("[严重]")
    assert payload["lookup"] == "docktrail timeline debug-priv"
    assert payload["timezone"] == "Asia/Shanghai"
    obj = payload["alerts"][0]
    assert obj["id"] == alert.id and obj["cis"] == "5.5"
    assert obj["time"] == "2026-11-23T23:04:05.000000000+08:00"
    assert obj["who"]["login"] == "alice" and obj["who"]["user"] == "root"


def test_json_of_one_alert_too_long_drops_it(renderer: Renderer) -> None:
    alert = sample(summary="z" * 3000)
    body = render(renderer, [alert], "json", body_limit=800).body
    payload = json.loads(body)
    assert len(body) <= 800
    assert payload["alerts"] == [] and payload["truncated"] is True and payload["count"] == 1
    assert payload["title"].endswith(TRUNCATION_MARKER)


# --- escaping ------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["markdown", "dingtalk"])
def test_markdown_escapes_user_text(renderer: Renderer, family: Family) -> None:
    alert = sample(container="evil*_name[x]", summary="privileged `evil*_name[x]` <b>|#~")
    body = render(renderer, [alert], family).body
    assert "evil*_name[x]" not in body
    assert r"evil\*\_name\[x\]" in body
    assert r"\`evil\*\_name\[x\]\` \<b\>\|\#\~" in body
    grouped = render(renderer, [alert, sample(id="second", time_ns=T0 + SECOND)], family).body
    assert "evil*_name[x]" not in grouped


def test_markdown_values_cannot_start_a_line(renderer: Renderer) -> None:
    alert = sample(summary="harmless\n# HEADING\n- item")
    body = render(renderer, [alert], "markdown").body
    assert "\n# HEADING" not in body and "\n- item" not in body
    assert r"harmless \# HEADING - item" in body


def test_md_escape() -> None:
    assert md_escape(r"a\b*c_d[e]f`g") == r"a\\b\*c\_d\[e\]f\`g"
    assert md_escape("docker.io/library/nginx:1.25-alpine") == "docker.io/library/nginx:1.25-alpine"


def test_plain_keeps_text_as_is(renderer: Renderer) -> None:
    alert = sample(container="evil*_name[x]")
    assert "Container: evil*_name[x]" in render(renderer, [alert], "plain").body


def test_html_escapes_values(renderer: Renderer) -> None:
    alert = sample(container="<script>alert(1)</script>", summary="a & b <script>")
    message = render(renderer, [alert], "html")
    assert "<script>" not in message.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in message.body
    assert "a &amp; b &lt;script&gt;" in message.body
    assert "a & b <script>" in message.title  # the subject is plain text
    assert_well_formed(message.body)


# --- templates -----------------------------------------------------------------------------


def test_built_in_templates_cover_every_family_and_language() -> None:
    check_templates(BUILTIN_DIR)
    shipped = {path.name for path in BUILTIN_DIR.glob("*.j2")}
    assert shipped == TEMPLATE_NAMES - {"json.en.title.j2", "json.zh.title.j2"}


def test_user_template_overrides_just_one(renderer: Renderer, tmp_path: Path) -> None:
    (tmp_path / "plain.en.body.j2").write_text("CUSTOM {{ alert.rule }} for {{ alert.who }}\n")
    custom = Renderer(tmp_path)
    message = render(custom, [sample()], "plain")
    assert message.body == "CUSTOM privileged-container for alice (as root)"
    assert message.title == render(renderer, [sample()], "plain").title
    assert custom.render([sample()], family="markdown", language="en", timezone="UTC") == (
        renderer.render([sample()], family="markdown", language="en", timezone="UTC")
    )


def test_user_title_template_for_json(tmp_path: Path) -> None:
    (tmp_path / "json.en.title.j2").write_text("docktrail: {{ count }} alert(s)")
    message = render(Renderer(tmp_path), [sample()], "json")
    assert message.title == "docktrail: 1 alert(s)"
    assert json.loads(message.body)["title"] == "docktrail: 1 alert(s)"


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "markdown.zh.body.j2"
    path.write_text("line one\n{{ alert.rule }}\n{% if count %}never closed\n")
    with pytest.raises(ConfigError, match=r"markdown\.zh\.body\.j2:3"):
        check_templates(tmp_path)
    with pytest.raises(ConfigError, match=r"markdown\.zh\.body\.j2:3"):
        Renderer(tmp_path)


def test_render_error_names_template_and_line(tmp_path: Path) -> None:
    (tmp_path / "plain.en.body.j2").write_text("fine\n{{ alert.rule }}\n{{ no_such_thing }}\n")
    with pytest.raises(ConfigError, match=r"plain\.en\.body\.j2:3: 'no_such_thing' is undefined"):
        render(Renderer(tmp_path), [sample()], "plain")


def test_user_templates_are_read_once_at_start(tmp_path: Path) -> None:
    # A template changed after start (or swapped for a symlink) is not read: a
    # fixed template takes effect at the next start, after `validate`.
    path = tmp_path / "plain.en.body.j2"
    path.write_text("first {{ alert.rule }}")
    custom = Renderer(tmp_path)
    path.write_text("changed {{ alert.rule }}")
    os.utime(path, (path.stat().st_atime, path.stat().st_mtime + 5))
    assert render(custom, [sample()], "plain").body == "first privileged-container"


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    (tmp_path / "plain.en.body.j2").write_text("{{ ''.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(ConfigError, match=r"plain\.en\.body\.j2:1"):
        render(Renderer(tmp_path), [sample()], "plain")


def test_unknown_template_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "_macros.j2").write_text("{% macro x() %}x{% endmacro %}")  # partials are fine
    check_templates(tmp_path)
    (tmp_path / "markdwon.en.body.j2").write_text("typo")
    with pytest.raises(ConfigError, match=r"markdwon\.en\.body\.j2"):
        check_templates(tmp_path)


def test_missing_templates_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        Renderer(tmp_path / "nope")


@pytest.mark.parametrize("zone", ["Mars/Olympus", "", "Asia", "../etc/passwd"])
def test_invalid_timezone(renderer: Renderer, zone: str) -> None:
    with pytest.raises(ConfigError, match="time zone"):
        render(renderer, [sample()], "plain", timezone=zone)


def test_no_alerts_is_a_programming_error(renderer: Renderer) -> None:
    with pytest.raises(ValueError):
        render(renderer, [], "plain")


def test_sample_alert_is_realistic() -> None:
    alert = sample_alert()
    assert alert.rule == "privileged-container" and alert.severity == "critical"
    assert alert.container == "debug-priv" and alert.image
    assert (alert.who.login, alert.who.user, alert.who.method) == ("alice", "root", "auditd-cli")
    assert alert.host
