"""`Renderer`: alerts to a `Message` (title, body, format) for one destination."""

# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation on purpose.

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

from jinja2 import Template
from jinja2 import TemplateError as JinjaError
from markupsafe import escape

from listener.model.alert import Alert
from listener.model.event import Why
from listener.model.finding import SEVERITY_RANK
from notifiers.base import (
    NOTIFY_KIND_BY_SEVERITY,
    Family,
    Message,
)
from notifiers.render.templates import (
    body_escape,
    check_templates,
    run_template,
    template_environment,
    template_error,
    title_escape,
)
from notifiers.render.views import (
    Request,
    context_of,
    cut_text,
    fit_body,
    json_alert,
    payload_of,
    views_of,
    zone_named,
)
from notifiers.render.wording import BODY_FORMATS, Language

TEST_TITLE: Mapping[Language, str] = {"en": "[TEST] ", "zh": "【测试】"}
TEST_NOTICE: Mapping[Language, str] = {
    "en": "TEST MESSAGE from `docktrail notify test`: a sample alert, nothing happened.",
    "zh": "测试消息（docktrail notify test）：示例告警，并未发生任何事件。",
}
"""Marks of a test message, added by code so that no template can leave them out."""


class Renderer:
    """Renders alerts with the built-in templates, overridden file by file from templates_dir."""

    def __init__(
        self, templates_dir: Path | None = None, *, link_base_url: str | None = None
    ) -> None:
        user = check_templates(templates_dir) if templates_dir is not None else {}
        self._env = template_environment(
            user
        )  # read once, here: fail at start, not at the first alert
        self._link_base = link_base_url.rstrip("/") if link_base_url else None

    def render(
        self,
        alerts: Sequence[Alert],
        *,
        family: Family,
        language: Language,
        timezone: str,
        whys: Mapping[str, Why] | None = None,
        duplicates: int = 0,
        body_limit: int | None = None,
        title_limit: int | None = None,
        test: bool = False,
    ) -> Message:
        """One message: a single alert, or a grouped one listing several (oldest first).

        `test` marks it as a test in its title and body, whatever the template.
        """
        if not alerts:
            raise ValueError("a message needs at least one alert")
        request = Request(
            alerts=sorted(alerts, key=lambda alert: alert.time_ns),
            family=family,
            language=language,
            zone=zone_named(timezone),
            zone_name=timezone,
            whys=whys or {},
            duplicates=duplicates,
            link_base=self._link_base,
            test=test,
        )
        title = self._title(request)
        notice = _test_notice(request) if test else ""
        room = None if body_limit is None else max(body_limit - len(notice), 0)
        body = _with_notice(self._body(request, title, room), notice, family)
        if title_limit is not None:
            title = cut_text(title, title_limit)
        top = max(request.alerts, key=lambda alert: SEVERITY_RANK.get(alert.severity, 0))
        kind = NOTIFY_KIND_BY_SEVERITY.get(top.severity, "info")
        return Message(title=title, body=body, body_format=BODY_FORMATS[family], notify_kind=kind)

    def _title(self, request: Request) -> str:
        names = [f"{request.family}.{request.language}.title.j2"]
        names.append(f"plain.{request.language}.title.j2")
        esc = title_escape(request.family)
        context = context_of(request, views_of(request, esc), esc)
        title = " ".join(run_template(self._template(names), context).split())
        return TEST_TITLE[request.language] + title if request.test else title

    def _body(self, request: Request, title: str, limit: int | None) -> str:
        esc = body_escape(request.family)
        views = views_of(request, esc)
        context = context_of(request, views, esc) | {"title": esc(title)}
        template = self._template([f"{request.family}.{request.language}.body.j2"])
        json_family = request.family == "json"
        objects = [json_alert(alert, request) for alert in request.alerts] if json_family else []

        @cache
        def render_with(shown: int) -> str:
            part = {
                "alerts": views[:shown],
                "more": len(views) - shown,
                "truncated": shown < len(views),
            }
            if json_family:
                part["payload"] = payload_of(objects[:shown], len(views), title, context, request)
            return run_template(template, context | part)

        return fit_body(render_with, len(views), limit, request.family, title)

    def _template(self, names: list[str]) -> Template:
        try:
            return self._env.select_template(names)
        except JinjaError as exc:
            raise template_error(exc, names[0]) from exc


def _test_notice(request: Request) -> str:
    """The line that opens a test message's body ('' for JSON, which says `"test": true`)."""
    text = TEST_NOTICE[request.language]
    if request.family == "json":
        return ""
    if request.family == "html":
        return f"<p><strong>{escape(text)}</strong></p>\n"
    if request.family in ("markdown", "dingtalk"):
        return f"**{text}**\n\n"
    return text + "\n\n"


def _with_notice(body: str, notice: str, family: Family) -> str:
    if not notice:
        return body
    if family == "html":
        # inside the document: right after <body ...> when the template wrote one
        match = re.search(r"<body[^>]*>", body, re.IGNORECASE)
        if match is not None:
            return body[: match.end()] + "\n" + notice + body[match.end() :]
    return notice + body
