"""Templates: the user's checked and read once, the sandboxed Jinja environment, and
the escaping each family needs.
"""

from __future__ import annotations

import os
import socket
import stat
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

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

from config.errors import ConfigError
from listener.model.alert import Alert
from listener.model.event import Who, natural_id
from listener.safetext import no_mentions
from notifiers.base import Family
from notifiers.render.wording import BUILTIN_DIR, MAX_TEMPLATE_BYTES, MD_SPECIAL, TEMPLATE_NAMES


def check_templates(templates_dir: Path) -> dict[str, tuple[str, str]]:
    """The user's templates by name (source, file), read once; ConfigError for a bad one.

    A template is refused when it resolves outside `templates_dir` (a symlink
    to /etc/shadow, say) or is not a regular file: a template is configuration,
    and whoever can write the directory must not be able to read the host.
    """
    if not templates_dir.is_dir():
        raise ConfigError(f"notifications.templates_dir: {templates_dir} is not a directory")
    env = template_environment({})
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
            data = file.read(MAX_TEMPLATE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read template: {exc.strerror or exc}") from exc
    if len(data) > MAX_TEMPLATE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_TEMPLATE_BYTES} bytes")
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
    return MD_SPECIAL.sub(r"\\\1", text)


def _plain(text: str) -> str:
    return text


def _md_chat(text: str) -> str:
    return no_mentions(md_escape(text))


def body_escape(family: Family) -> Callable[[str], str]:
    """How values are escaped in a body: markup and chat mentions are the sender's, not theirs."""
    if family in ("markdown", "dingtalk"):
        return _md_chat
    return no_mentions if family == "plain" else _plain  # html autoescapes; json is exact


def title_escape(family: Family) -> Callable[[str], str]:
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


def template_environment(user_templates: Mapping[str, tuple[str, str]]) -> SandboxedEnvironment:
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
        raise template_error(exc, str(path)) from exc


def run_template(template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except Exception as exc:  # a template is configuration: any failure in it is a config error
        raise template_error(exc, template.filename or template.name or "?") from exc


def template_error(exc: Exception, name: str) -> ConfigError:
    """ConfigError naming the template file and line where `exc` happened."""
    line: int | None = getattr(exc, "lineno", None)
    where = getattr(exc, "filename", None) or name
    if line is None:  # runtime errors: Jinja puts the template's lines in the traceback
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith(".j2")]
        if frames:
            where, line = frames[-1].filename, frames[-1].lineno
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    return ConfigError(f"template {where}:{line if line is not None else '?'}: {message}")
