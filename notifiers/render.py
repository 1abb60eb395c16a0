"""Alerts rendered into a `Message` for one destination: family, language, time zone, limits.

Templates are Jinja2 files named `<family>.<language>.title.j2` and
`<family>.<language>.body.j2` (family: plain, markdown, dingtalk, html, json;
language: en, zh). The built-in ones live in `notifiers/templates`; a file of
the same name in the configured `notifications.templates_dir` replaces just
that one. A family without its own title template (json) uses the plain one.

Why Jinja2 rather than `string.Template`: a grouped message is a loop over
alerts, optional fields (reason, ticket, suppression, link) need conditionals,
HTML needs autoescaping, and users' templates are configuration, not code, so
they run in Jinja's sandbox with `StrictUndefined` (a misspelt variable is an
error, not an empty string). Autoescaping is on only for HTML bodies: titles
are plain text everywhere (subjects, push titles), and markdown bodies get
values already escaped for markdown (`md_escape`), so a template cannot forget.

What a template sees (strings, already escaped for markdown bodies):
`count` (alerts in the message), `alerts` (the alerts listed; fewer than
`count` when cut to the body limit), `more` (how many were cut), `truncated`,
`alert` (the first one), `duplicates` (identical alerts not sent separately),
`severity`/`severity_label` (the highest), `rule`, `rule_name`, `host`, `span`,
`first_time`, `last_time`, `lookup` (a link or a `docktrail` command), `link`
(or none); bodies also get `title`, and json bodies `payload` (the data to
send). Each alert has the fields of `AlertView`.
"""

# ruff: noqa: RUF001 - the Chinese texts use full-width punctuation on purpose.

from __future__ import annotations

import json
import os
import re
import socket
import stat
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from functools import cache, lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateNotFound,
)
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import escape

from config.errors import ConfigError
from config.models import Severity
from listener.model.alert import Alert
from listener.model.catalogue import HOST_RULES_BY_ID
from listener.model.event import Who, Why, natural_id
from listener.model.finding import SEVERITY_RANK
from listener.safetext import no_mentions, printable
from notifiers.base import (
    NOTIFY_KIND_BY_SEVERITY,
    TRUNCATION_MARKER,
    BodyFormat,
    Family,
    Message,
)

Language = Literal["en", "zh"]

BUILTIN_DIR = Path(__file__).parent / "templates"
FAMILIES: tuple[Family, ...] = ("plain", "markdown", "dingtalk", "html", "json")
LANGUAGES: tuple[Language, ...] = ("en", "zh")
TEMPLATE_NAMES = frozenset(
    f"{family}.{language}.{part}.j2"
    for family in FAMILIES
    for language in LANGUAGES
    for part in ("title", "body")
)
"""Every file name a templates_dir may override (files starting with `_` are partials)."""

BODY_FORMATS: Mapping[Family, BodyFormat] = {
    "plain": "text",
    "markdown": "markdown",
    "dingtalk": "markdown",
    "html": "html",
    "json": "text",
}

SEVERITY_LABELS: Mapping[Language, Mapping[Severity, str]] = {
    "en": {
        "critical": "CRITICAL",
        "high": "HIGH",
        "medium": "MEDIUM",
        "low": "LOW",
        "info": "INFO",
    },
    "zh": {"critical": "严重", "high": "高", "medium": "中", "low": "低", "info": "信息"},
}

RULE_TEXT_ZH: Mapping[str, tuple[str, str]] = {
    "privileged-container": ("特权容器", "容器以特权模式（--privileged）运行。"),
    "docker-socket-mount": (
        "挂载 Docker 套接字",
        "容器挂载了 Docker 或 containerd 套接字，可借此控制整台主机。",
    ),
    "sensitive-mount": ("挂载主机敏感目录", "主机的敏感目录（如 /、/etc、/proc）被挂载到容器中。"),
    "dangerous-capability": (
        "添加高危 Linux 能力",
        "容器通过 --cap-add 添加了高危的 Linux 能力（capability），如 SYS_ADMIN。",
    ),
    "host-namespace": ("共享主机命名空间", "容器与主机共享网络、进程等命名空间。"),
    "security-profile-disabled": (
        "安全配置被禁用",
        "容器禁用了 seccomp、AppArmor 或 SELinux 安全配置。",
    ),
    "untrusted-image": (
        "不受信任的镜像",
        "拉取、导入、加载、打标签或运行了可信镜像仓库之外的镜像。",
    ),
    "exec-in-container": (
        "在容器内执行命令",
        "通过 docker exec 在运行中的容器内执行了命令（以 root 身份、在特权容器内或打开 shell 时"
        "级别更高）。",
    ),
    "container-churn": ("容器频繁创建与销毁", "单位时间内容器的创建和销毁次数明显高于平时。"),
    "container-sprawl": (
        "已停止容器堆积",
        "已停止的容器比运行中的容器多出的数量超过了设定的阈值。",
    ),
    "daemon-config-change": (
        "Docker 守护进程文件被修改",
        "Docker 守护进程的文件（配置文件、systemd unit、可执行程序）被修改。",
    ),
    "no-resource-limits": ("未设置资源限制", "容器未设置内存或进程数（pids）限制。"),
    "writable-rootfs": ("根文件系统可写", "根文件系统不是只读的。"),
    "runs-as-root": ("以 root 运行", "容器进程以 root 身份运行。"),
    "unattributed-change": ("无法归属的变更", "无法追溯到任何登录用户的容器变更。"),
    "attribution-mismatch": (
        "归属声明不符",
        "audit.who 标签声称的人与 auditd 记录的登录用户不符。",
    ),
    "host-chain-broken": ("主机审计链断裂", "主机发布的审计链出现缺口、分叉、回退或签名无效。"),
    "fleet-churn": ("集群容器频繁创建销毁", "多台主机上容器创建/销毁总数超出阈值。"),
    "fleet-untrusted-image": ("多台主机使用不受信任的镜像", "同一不受信任的镜像出现在多台主机上。"),
    "intent-mismatch": ("部署人与声明不符", "与已声明部署意图匹配的容器由另一登录用户创建。"),
    "expired-deployment": ("部署已过期", "容器在声明的到期时间之后仍在运行。"),
    "undeclared-deployment": ("未声明的部署", "创建的容器没有匹配的部署意图，也没有 why 标签。"),
}
"""Chinese name and description of every rule id (the summary itself stays as stored)."""

_WORDS: Mapping[Language, Mapping[str, str]] = {
    "en": {"unknown": "unknown", "as": "{login} (as {user})", "s": "s", "min": "min", "h": "h"},
    "zh": {
        "unknown": "未知",
        "as": "{login}（以 {user} 身份）",
        "s": "秒",
        "min": "分钟",
        "h": "小时",
    },
}

_MAX_TEMPLATE_BYTES = 256 * 1024
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~])")
_NS = 1_000_000_000
_HTML_SHELL = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body><p>{}</p></body></html>\n'
)


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
class _Request:
    alerts: Sequence[Alert]  # oldest first
    family: Family
    language: Language
    zone: ZoneInfo
    zone_name: str
    whys: Mapping[str, Why]
    duplicates: int
    link_base: str | None
    test: bool = False


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
        self._env = _environment(user)  # read once, here: fail at start, not at the first alert
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
        request = _Request(
            alerts=sorted(alerts, key=lambda alert: alert.time_ns),
            family=family,
            language=language,
            zone=_zone(timezone),
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
            title = _cut(title, title_limit)
        top = max(request.alerts, key=lambda alert: SEVERITY_RANK.get(alert.severity, 0))
        kind = NOTIFY_KIND_BY_SEVERITY.get(top.severity, "info")
        return Message(title=title, body=body, body_format=BODY_FORMATS[family], notify_kind=kind)

    def _title(self, request: _Request) -> str:
        names = [f"{request.family}.{request.language}.title.j2"]
        names.append(f"plain.{request.language}.title.j2")
        esc = _title_escape(request.family)
        context = _context(request, _views(request, esc), esc)
        title = " ".join(_run(self._template(names), context).split())
        return TEST_TITLE[request.language] + title if request.test else title

    def _body(self, request: _Request, title: str, limit: int | None) -> str:
        esc = _body_escape(request.family)
        views = _views(request, esc)
        context = _context(request, views, esc) | {"title": esc(title)}
        template = self._template([f"{request.family}.{request.language}.body.j2"])
        json_family = request.family == "json"
        objects = [_json_alert(alert, request) for alert in request.alerts] if json_family else []

        @cache
        def render_with(shown: int) -> str:
            part = {
                "alerts": views[:shown],
                "more": len(views) - shown,
                "truncated": shown < len(views),
            }
            if json_family:
                part["payload"] = _payload(objects[:shown], len(views), title, context, request)
            return _run(template, context | part)

        return _fit(render_with, len(views), limit, request.family, title)

    def _template(self, names: list[str]) -> Template:
        try:
            return self._env.select_template(names)
        except JinjaError as exc:
            raise _template_error(exc, names[0]) from exc


def _test_notice(request: _Request) -> str:
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


def check_templates(templates_dir: Path) -> dict[str, tuple[str, str]]:
    """The user's templates by name (source, file), read once; ConfigError for a bad one.

    A template is refused when it resolves outside `templates_dir` (a symlink
    to /etc/shadow, say) or is not a regular file: a template is configuration,
    and whoever can write the directory must not be able to read the host.
    """
    if not templates_dir.is_dir():
        raise ConfigError(f"notifications.templates_dir: {templates_dir} is not a directory")
    env = _environment({})
    sources: dict[str, tuple[str, str]] = {}
    root = templates_dir.resolve()
    for path in sorted(templates_dir.glob("*.j2")):
        if not path.name.startswith("_") and path.name not in TEMPLATE_NAMES:
            raise ConfigError(
                f"{path}: not a template name docktrail uses; expected "
                "<family>.<language>.<title|body>.j2 (or a partial starting with _)"
            )
        source = _read_template(path, root)
        _check_syntax(env, path, source)
        sources[path.name] = (source, str(path))
    return sources


def _read_template(path: Path, root: Path) -> str:
    real = path.resolve()
    if not real.is_relative_to(root):
        raise ConfigError(f"{path}: resolves to {real}, outside notifications.templates_dir")
    try:
        # O_NOFOLLOW: a symlink swapped in after the check is not followed either
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise ConfigError(f"{path}: not a regular file")
            data = file.read(_MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read template: {exc.strerror or exc}") from exc
    if len(data) > _MAX_TEMPLATE_BYTES:
        raise ConfigError(f"{path}: larger than {_MAX_TEMPLATE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: cannot read template: {exc}") from exc


def sample_alert(*, time_ns: int | None = None) -> Alert:
    """A realistic alert for `docktrail notify test`: alice ran a privileged container via sudo."""
    when = time.time_ns() if time_ns is None else time_ns
    event_id = natural_id("docktrail-sample", when)
    command = "docker run -it --privileged --name debug-priv docker.io/library/ubuntu:24.04 bash"
    who = Who(login="alice", auid=1000, user="root", uid=0, pid=31337, command=command,
              method="auditd-cli", ses=3, tty="pts0", exe="/usr/bin/docker",
              matched_by="name", confidence="high")  # fmt: skip
    return Alert(
        id=natural_id("alert", event_id, "privileged-container", 0),
        time_ns=when,
        rule="privileged-container",
        severity="critical",
        event_seq=1,
        event_id=event_id,
        host=socket.gethostname(),
        container="debug-priv",
        image="docker.io/library/ubuntu:24.04",
        who=who,
        summary="privileged container debug-priv",
    )


def md_escape(text: str) -> str:
    """Backslash-escape what markdown (and DingTalk's subset) would read as formatting."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def _plain(text: str) -> str:
    return text


def _md_chat(text: str) -> str:
    return no_mentions(md_escape(text))


def _body_escape(family: Family) -> Callable[[str], str]:
    """How values are escaped in a body: markup and chat mentions are the sender's, not theirs."""
    if family in ("markdown", "dingtalk"):
        return _md_chat
    return no_mentions if family == "plain" else _plain  # html autoescapes; json is exact


def _title_escape(family: Family) -> Callable[[str], str]:
    """Titles are plain text everywhere; in chat they must not mention anyone either."""
    return _plain if family in ("html", "json") else no_mentions


class _ReadOnce(BaseLoader):
    """Templates read at start: (source, file name for error messages) by template name."""

    def __init__(self, sources: Mapping[str, tuple[str, str]]) -> None:
        self._sources = dict(sources)

    def get_source(
        self, environment: Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool] | None]:
        if template not in self._sources:
            raise TemplateNotFound(template)
        source, filename = self._sources[template]
        return source, filename, lambda: True

    def list_templates(self) -> list[str]:
        return sorted(self._sources)


def _environment(user_templates: Mapping[str, tuple[str, str]]) -> SandboxedEnvironment:
    # The user's templates come from memory (read once, checked): an include
    # cannot reach a file the check did not see; the built-in ones from disk.
    loaders: list[BaseLoader] = [_ReadOnce(user_templates)] if user_templates else []
    loaders.append(FileSystemLoader(BUILTIN_DIR))
    env = SandboxedEnvironment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    # Keep the payload's key order and Chinese text readable (and short: limits count chars).
    env.policies["json.dumps_kwargs"] = {"sort_keys": False, "ensure_ascii": False}
    return env


def _autoescape(name: str | None) -> bool:
    """HTML bodies and their partials (`_x.html.j2`); never titles, which are plain text."""
    parts = (name or "").split(".")
    return "html" in parts and "title" not in parts


def _check_syntax(env: SandboxedEnvironment, path: Path, source: str) -> None:
    try:
        env.parse(source, name=path.name, filename=str(path))
    except JinjaError as exc:
        raise _template_error(exc, str(path)) from exc


def _run(template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except Exception as exc:  # a template is configuration: any failure in it is a config error
        raise _template_error(exc, template.filename or template.name or "?") from exc


def _template_error(exc: Exception, name: str) -> ConfigError:
    """ConfigError naming the template file and line where `exc` happened."""
    line: int | None = getattr(exc, "lineno", None)
    where = getattr(exc, "filename", None) or name
    if line is None:  # runtime errors: Jinja puts the template's lines in the traceback
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
        if frames:
            where, line = frames[-1].filename, frames[-1].lineno
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    return ConfigError(f"template {where}:{line if line is not None else '?'}: {message}")


@lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        message = f"unknown time zone {name!r}: use an IANA name like Asia/Shanghai"
        raise ConfigError(message) from exc


def _views(request: _Request, esc: Callable[[str], str]) -> list[AlertView]:
    clock = _clock_format(request)
    return [_escaped(_view(alert, request, clock), esc) for alert in request.alerts]


def _view(alert: Alert, request: _Request, clock: str) -> AlertView:
    name, cis, description = _rule_text(alert.rule, request.language)
    why = request.whys.get(alert.id) or Why()
    lookup, link = _lookup(alert, request.link_base)
    moment = datetime.fromtimestamp(alert.time_ns // _NS, request.zone)
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


def _context(
    request: _Request, views: list[AlertView], esc: Callable[[str], str]
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


def _fit(
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
    return _cut(body, limit)


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


def _cut(text: str, limit: int) -> str:
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
        document = _HTML_SHELL.format(str(escape(title[:keep])) + TRUNCATION_MARKER)
        if len(document) <= limit:
            return document
        keep -= len(document) - limit
    return _cut(_HTML_SHELL.format(TRUNCATION_MARKER), limit)


def _json_fallback(title: str, count: int, limit: int) -> str:
    """Valid JSON without alerts and with what fits of the title, when no alert fits."""
    keep = len(title)
    while keep >= 0:
        payload = {"title": _cut(title, keep), "count": count, "alerts": [], "truncated": True}
        text = json.dumps(payload, ensure_ascii=False)
        if len(text) <= limit:
            return text
        keep -= len(text) - limit
    return _cut(json.dumps({"count": count, "truncated": True}), limit)


def _payload(
    objects: list[dict[str, Any]], count: int, title: str, context: Mapping[str, Any],
    request: _Request,
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


def _json_alert(alert: Alert, request: _Request) -> dict[str, Any]:
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
    since = datetime.fromtimestamp(alerts[0].time_ns // _NS, UTC)
    words.append(f"--since {since:%Y-%m-%dT%H:%M:%SZ}")
    return " ".join(words)


def _who_text(who: Who, language: Language) -> str:
    """`alice (as root)`: the login (which survives sudo) and, when different, the user."""
    words = _WORDS[language]
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


def _clock_format(request: _Request) -> str:
    """Times of listed alerts: the clock alone, with the date when the message spans days."""
    first, last = (
        datetime.fromtimestamp(alert.time_ns // _NS, request.zone).date()
        for alert in (request.alerts[0], request.alerts[-1])
    )
    return "%H:%M:%S" if first == last else "%m-%d %H:%M:%S"


def _span_text(request: _Request) -> str:
    """How long the alerts took: `42 s`, `5 min`, `2 h 5 min` (or in Chinese)."""
    words = _WORDS[request.language]
    seconds = round((request.alerts[-1].time_ns - request.alerts[0].time_ns) / _NS)
    if seconds < 60:
        return f"{seconds} {words['s']}"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} {words['min']}"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} {words['h']}" + (f" {minutes} {words['min']}" if minutes else "")


def _joined(values: Iterable[str]) -> str:
    return ", ".join(dict.fromkeys(values))
