"""What templates see: each alert as display strings, times in the configured zone,
who and what, and the bodies fitted to a channel's size limit.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from markupsafe import escape

from config.errors import ConfigError
from listener.model.alert import Alert
from listener.model.catalogue import HOST_RULES_BY_ID
from listener.model.event import Who, Why
from listener.model.finding import SEVERITY_RANK
from listener.safetext import printable
from notifiers.base import (
    TRUNCATION_MARKER,
    Family,
)
from notifiers.render.wording import HTML_SHELL, NS, RULE_TEXT_ZH, SEVERITY_LABELS, WORDS, Language


@dataclass(frozen=True, slots=True)
class AlertView:
    """One alert as templates see it: every value a display string (or None)."""

    id: str
    time: str  # "2026-11-23 23:04:05 +08:00 Asia/Shanghai"
    clock: str  # "23:04:05" (with the date when the message spans days)
    severity: str
    severity_label: str
    rule: str
    rule_name: str
    cis: str
    description: str
    host: str
    container: str | None
    image: str | None
    target: str  # "container (image)", or whichever is known
    who: str  # "alice (as root)"
    login: str | None
    user: str | None
    method: str
    why: str | None
    ticket: str | None
    summary: str
    suppressed: str | None
    lookup: str
    link: str | None


@dataclass(frozen=True, slots=True)
class Request:
    alerts: Sequence[Alert]  # oldest first
    family: Family
    language: Language
    zone: ZoneInfo
    zone_name: str
    whys: Mapping[str, Why]
    duplicates: int
    link_base: str | None
    test: bool = False


@lru_cache(maxsize=64)
def zone_named(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        message = f"unknown time zone {name!r}: use an IANA name like Asia/Shanghai"
        raise ConfigError(message) from exc


def views_of(request: Request, esc: Callable[[str], str]) -> list[AlertView]:
    clock = _clock_format(request)
    return [_escaped(_view(alert, request, clock), esc) for alert in request.alerts]


def _view(alert: Alert, request: Request, clock: str) -> AlertView:
    name, cis, description = _rule_text(alert.rule, request.language)
    why = request.whys.get(alert.id) or Why()
    lookup, link = _lookup(alert, request.link_base)
    moment = datetime.fromtimestamp(alert.time_ns // NS, request.zone)
    return AlertView(
        id=alert.id, time=_stamp(moment, request.zone_name), clock=moment.strftime(clock),
        severity=alert.severity, severity_label=SEVERITY_LABELS[request.language][alert.severity],
        rule=alert.rule, rule_name=name, cis=cis, description=description, host=alert.host,
        container=alert.container, image=alert.image, target=_target(alert),
        who=_who_text(alert.who, request.language), login=alert.who.login, user=alert.who.user,
        method=alert.who.method, why=why.reason, ticket=why.ticket, summary=alert.summary,
        suppressed=alert.suppressed, lookup=lookup, link=link,
    )  # fmt: skip


def _escaped(view: AlertView, esc: Callable[[str], str]) -> AlertView:
    """Every text on one line (a value cannot start a block), printable and escaped.

    Links stay usable; control characters show as `\\x1b` (a terminal or mail
    client must not act on a container name).
    """
    changes = {
        field.name: esc(printable(" ".join(value.split())))
        for field in fields(view)
        if field.name not in ("id", "link") and isinstance(value := getattr(view, field.name), str)
    }
    return replace(view, **changes)


def context_of(
    request: Request, views: list[AlertView], esc: Callable[[str], str]
) -> dict[str, Any]:
    top = max(views, key=lambda view: SEVERITY_RANK.get(view.severity, 0))
    single = len(views) == 1
    return {
        "count": len(views),
        "duplicates": request.duplicates,
        "severity": top.severity,
        "severity_label": top.severity_label,
        "rule": _joined(view.rule for view in views),
        "rule_name": _joined(view.rule_name for view in views),
        "host": _joined(view.host for view in views),
        "span": _span_text(request),
        "first_time": views[0].time,
        "last_time": views[-1].time,
        "lookup": views[0].lookup if single else esc(_group_lookup(request.alerts)),
        "link": views[0].link if single else None,
        "alert": views[0],
        "alerts": views,
        "more": 0,
        "truncated": False,
    }


def fit_body(
    render_with: Callable[[int], str], count: int, limit: int | None, family: Family, title: str
) -> str:
    """The body within `limit`: fewer alerts listed first, then a cut that keeps it valid."""
    body = render_with(count)
    if limit is None or len(body) <= limit:
        return body
    if family == "json" or count > 1:
        shown = _most_that_fit(render_with, count - 1, limit)
        if shown is not None:
            return render_with(shown)
        body = render_with(0)
    if family == "json":
        return _json_fallback(title, count, limit)
    if family == "html":
        return _html_fallback(title, limit)
    return cut_text(body, limit)


def _most_that_fit(render_with: Callable[[int], str], most: int, limit: int) -> int | None:
    """The largest number of alerts (0..most) whose body fits; None if none does."""
    low, best = 0, None
    while low <= most:
        middle = (low + most) // 2
        if len(render_with(middle)) <= limit:
            best, low = middle, middle + 1
        else:
            most = middle - 1
    return best


def cut_text(text: str, limit: int) -> str:
    """`text` within `limit`, ending with the marker; at a line end when one is near."""
    if len(text) <= limit:
        return text
    room = limit - len(TRUNCATION_MARKER)
    if room <= 0:
        return TRUNCATION_MARKER[: max(limit, 0)]
    head = text[:room]
    newline = head.rfind("\n")
    if newline >= room // 2:  # a whole line less keeps markdown emphasis balanced
        head = head[: newline + 1]
    return head + TRUNCATION_MARKER


def _html_fallback(title: str, limit: int) -> str:
    """A well-formed document holding what fits of the title, when the template's cannot fit."""
    keep = len(title)
    while keep >= 0:
        document = HTML_SHELL.format(str(escape(title[:keep])) + TRUNCATION_MARKER)
        if len(document) <= limit:
            return document
        keep -= len(document) - limit
    return cut_text(HTML_SHELL.format(TRUNCATION_MARKER), limit)


def _json_fallback(title: str, count: int, limit: int) -> str:
    """Valid JSON without alerts and with what fits of the title, when no alert fits."""
    keep = len(title)
    while keep >= 0:
        payload = {"title": cut_text(title, keep), "count": count, "alerts": [], "truncated": True}
        text = json.dumps(payload, ensure_ascii=False)
        if len(text) <= limit:
            return text
        keep -= len(text) - limit
    return cut_text(json.dumps({"count": count, "truncated": True}), limit)


def payload_of(
    objects: list[dict[str, Any]], count: int, title: str, context: Mapping[str, Any],
    request: Request,
) -> dict[str, Any]:  # fmt: skip
    payload: dict[str, Any] = {"title": title, "count": count, "alerts": objects}
    payload.update(lookup=context["lookup"], timezone=request.zone_name)
    if request.test:
        payload["test"] = True
    if request.duplicates:
        payload["duplicates"] = request.duplicates
    if len(objects) < count:
        payload["truncated"] = True
    return payload


def json_alert(alert: Alert, request: Request) -> dict[str, Any]:
    obj = alert.to_json_object(request.zone)
    obj["cis"] = _rule_text(alert.rule, "en")[1]
    why = request.whys.get(alert.id)
    if why is not None:
        obj["why"] = why.model_dump(exclude_none=True)
    return obj


def _rule_text(rule_id: str, language: Language) -> tuple[str, str, str]:
    """(name, CIS item, description) of a rule, in the language when translated."""
    meta = HOST_RULES_BY_ID.get(rule_id)
    cis = meta.cis if meta else "-"
    name, description = rule_id, meta.description if meta else ""
    if language == "zh" and rule_id in RULE_TEXT_ZH:
        name, description = RULE_TEXT_ZH[rule_id]
    return name, cis, description


def _lookup(alert: Alert, link_base: str | None) -> tuple[str, str | None]:
    """(how to look it up, link): the web page when served, else the CLI command."""
    if link_base:
        link = f"{link_base}/alerts/{alert.id}"
        return link, link
    if alert.container:
        return f"docktrail timeline {alert.container}", None
    return f"docktrail alerts -f rule={alert.rule}", None


def _group_lookup(alerts: Sequence[Alert]) -> str:
    """The `docktrail alerts` command listing a grouped message's alerts (and what follows)."""
    words = ["docktrail alerts"]
    if len({alert.rule for alert in alerts}) == 1:
        words.append(f"-f rule={alerts[0].rule}")
    if len({alert.host for alert in alerts}) == 1:
        words.append(f"-f host={alerts[0].host}")
    since = datetime.fromtimestamp(alerts[0].time_ns // NS, UTC)
    words.append(f"--since {since:%Y-%m-%dT%H:%M:%SZ}")
    return " ".join(words)


def _who_text(who: Who, language: Language) -> str:
    """`alice (as root)`: the login (which survives sudo) and, when different, the user."""
    words = WORDS[language]
    login = who.login or words["unknown"]
    # A label's claim is shown beside the evidence, never as the login.
    claims = f" (claims {who.claimed})" if who.claimed else ""
    if who.user and who.user != who.login:
        return words["as"].format(login=login, user=who.user) + claims
    return login + claims


def _target(alert: Alert) -> str:
    if alert.container and alert.image:
        return f"{alert.container} ({alert.image})"
    return alert.container or alert.image or "-"


def _stamp(moment: datetime, zone_name: str) -> str:
    offset = moment.strftime("%z")
    return f"{moment:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:5]} {zone_name}"


def _clock_format(request: Request) -> str:
    """Times of listed alerts: the clock alone, with the date when the message spans days."""
    first, last = (
        datetime.fromtimestamp(alert.time_ns // NS, request.zone).date()
        for alert in (request.alerts[0], request.alerts[-1])
    )
    return "%H:%M:%S" if first == last else "%m-%d %H:%M:%S"


def _span_text(request: Request) -> str:
    """How long the alerts took: `42 s`, `5 min`, `2 h 5 min` (or in Chinese)."""
    words = WORDS[request.language]
    seconds = round((request.alerts[-1].time_ns - request.alerts[0].time_ns) / NS)
    if seconds < 60:
        return f"{seconds} {words['s']}"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} {words['min']}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} {words['h']}" + (f" {minutes} {words['min']}" if minutes else "")


def _joined(values: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(values))
