"""Rules over the commands of `docker exec` sessions (`exec-command` events).

Each alert names the session's owner (the event's `who`) and the session.

Severity is chosen against false pages: the Engine's own health check (the
exec is exactly the container's health check, no terminal) is `info`
whatever it runs, so a check that reads a file every 10 s pages nobody;
reading credentials is `high` only at a terminal (someone typing), `medium`
from a script. `/etc/passwd` is no credential and is not flagged. Code fetch
and root shells fire once per session: one incident, one alert (every command
stays in the trail).
"""

from __future__ import annotations

import posixpath
import re
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from config.models import Severity
from listener.model import catalogue
from listener.model.event import Event
from listener.rules.activity import SHELLS, activity_state
from listener.rules.base import Finding, RuleContext, finding

_ONCE_STATE = "exec-session-once"
_ONCE_MAX = 10_000

FETCHERS = frozenset({"curl", "wget", "fetch", "aria2c"})
INTERPRETERS = SHELLS | {"python", "python3", "perl", "ruby", "node", "php"}
_SHELL_NAMES = r"(?:sudo\s+)?(?:/\S*/)?(?:ba|da|z|k|a)?sh|python3?|perl|ruby|node|php"
# A fetcher where a command starts (not `echo curl`).
_FETCH_COMMAND = r"(?:^|[;&|(`]\s*|\$\(\s*)(?:sudo\s+)?(?:\S*/)?(?:curl|wget|fetch)\b"
_PIPE_TO_SHELL = re.compile(rf"{_FETCH_COMMAND}[^|;&]*\|\s*(?:{_SHELL_NAMES})\b")
_SUBST_RUN = re.compile(
    rf"(?:{_SHELL_NAMES}|eval|source|\.)\s+(?:-c\s+)?[\"']?(?:\$\(|`|<\(\s*)\s*(?:curl|wget)\b"
)
_FETCH_THEN_RUN = re.compile(
    rf"{_FETCH_COMMAND}[^;|&]*?(?:-o|-O|--output)\s*(\S+)[^|]*?(?:&&|;)\s*"
    r"(?:chmod\s+\+?[0-7x]+\s+\S+\s*(?:&&|;)\s*)?(?:sh\s+|bash\s+|\./)"
)

PACKAGE_MANAGERS: dict[str, frozenset[str]] = {
    "apt": frozenset({"install", "upgrade", "dist-upgrade", "full-upgrade", "remove", "purge"}),
    "apt-get": frozenset({"install", "upgrade", "dist-upgrade", "remove", "purge"}),
    "aptitude": frozenset({"install", "upgrade", "remove"}),
    "apk": frozenset({"add", "del", "upgrade", "fix"}),
    "yum": frozenset({"install", "update", "upgrade", "remove", "erase", "localinstall"}),
    "dnf": frozenset({"install", "update", "upgrade", "remove", "erase"}),
    "microdnf": frozenset({"install", "update", "upgrade", "remove"}),
    "zypper": frozenset({"in", "install", "up", "update", "rm", "remove"}),
    "pip": frozenset({"install", "uninstall"}),
    "pip3": frozenset({"install", "uninstall"}),
    "npm": frozenset({"i", "install", "uninstall"}),
    "gem": frozenset({"install", "uninstall"}),
    "dpkg": frozenset({"-i", "--install", "-r", "--remove", "-P", "--purge"}),
    "rpm": frozenset({"-i", "-U", "-e", "--install", "--upgrade", "--erase", "-ivh", "-Uvh"}),
}

CREDENTIAL_PATHS = re.compile(
    r"(?:^|[\s='\"])(?:"
    r"/etc/(?:g?shadow-?|sudoers)\b"
    r"|\S*/\.ssh/(?:id_\w+|\w*_key)\b"
    r"|/etc/ssh/ssh_host_\w+_key\b"
    r"|\S*/\.aws/credentials\b"
    r"|\S*/\.docker/config\.json\b"
    r"|\S*/\.kube/config\b"
    r"|\S*/\.(?:git-credentials|netrc|pgpass|my\.cnf)\b"
    r"|/(?:var/)?run/secrets/\S+"
    r"|/proc/\w+/environ\b"
    r")"
)

BINARY_DIRS = (
    "/bin/", "/sbin/", "/usr/bin/", "/usr/sbin/", "/usr/local/bin/", "/usr/local/sbin/",
    "/lib/", "/lib64/", "/usr/lib/", "/usr/lib64/", "/usr/libexec/",
)  # fmt: skip
_DEST_WRITERS = frozenset({"cp", "mv", "install", "ln", "rsync"})
_ANY_WRITERS = frozenset(
    {"rm", "unlink", "chmod", "chown", "truncate", "tee", "patch", "vi", "vim", "nano", "ed",
     "shred", "touch", "setcap"}
)  # fmt: skip


def check_code_fetch(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    argv = _argv(event)
    how = _code_fetch(argv, event.attributes.get("pipeline"))
    if how is None or not _first_in_session(ctx, event, catalogue.EXEC_CODE_FETCH.id):
        return
    yield _finding(
        catalogue.EXEC_CODE_FETCH,
        event,
        ctx,
        f"{_owner(event)} fetched and ran code in {_where(event)}: {_line(argv)}",
        how=how,
    )


def check_package_manager(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    argv = _argv(event)
    program = _program(argv)
    verbs = PACKAGE_MANAGERS.get(program)
    if verbs is None or verbs.isdisjoint(argv[1:]):
        return
    yield _finding(
        catalogue.EXEC_PACKAGE_MANAGER,
        event,
        ctx,
        f"{_owner(event)} ran a package manager in running {_where(event)}: {_line(argv)}",
        program=program,
    )


def check_credential_read(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    argv = _argv(event)
    found = CREDENTIAL_PATHS.search(" " + " ".join(argv[1:]))
    if found is None:
        return
    path = found.group(0).strip(" ='\"")
    interactive = bool(event.attributes.get("tty"))
    yield _finding(
        catalogue.EXEC_CREDENTIAL_READ,
        event,
        ctx,
        f"{_owner(event)} touched credentials in {_where(event)}: {_line(argv)}",
        severity=None if interactive else "medium",
        path=path,
    )


def check_binary_edit(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    argv = _argv(event)
    target = _binary_target(argv)
    if target is None:
        return
    yield _finding(
        catalogue.EXEC_BINARY_EDIT,
        event,
        ctx,
        f"{_owner(event)} changed a binary by hand in {_where(event)}: {_line(argv)}",
        path=target,
    )


def check_root_shell(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    attributes = event.attributes
    argv = _argv(event)
    if not (attributes.get("tty") and attributes.get("uid") == 0 and _bare_shell(argv)):
        return
    if not _first_in_session(ctx, event, catalogue.EXEC_ROOT_SHELL.id):
        return
    yield _finding(
        catalogue.EXEC_ROOT_SHELL,
        event,
        ctx,
        f"{_owner(event)} opened an interactive root shell in {_where(event)}: {_line(argv)}",
    )


# ---------------------------------------------------------------------- what matches


def _code_fetch(argv: list[str], pipeline: Any) -> str | None:
    script = _script(argv)
    if script is not None:
        for how, pattern in (
            ("pipe to interpreter", _PIPE_TO_SHELL),
            ("run fetched output", _SUBST_RUN),
            ("download and run", _FETCH_THEN_RUN),
        ):
            if pattern.search(script):
                return how
    peers = set(pipeline) if isinstance(pipeline, list) else set()
    if _program(argv) in INTERPRETERS and script is None and not peers.isdisjoint(FETCHERS):
        return "pipe to interpreter"
    return None


def _script(argv: list[str]) -> str | None:
    """The script of `sh -c SCRIPT` (or `bash -lc`, `python -c` …); None without one."""
    if _program(argv) not in INTERPRETERS:
        return None
    for position, arg in enumerate(argv[1:-1], start=1):
        if arg.startswith("-") and not arg.startswith("--") and arg.endswith("c"):
            return argv[position + 1]
    return None


def _bare_shell(argv: list[str]) -> bool:
    """A shell reading its terminal: no script, no script file."""
    if _program(argv) not in SHELLS:
        return False
    return all(arg.startswith("-") and not arg.endswith("c") for arg in argv[1:])


def _binary_target(argv: list[str]) -> str | None:
    program = _program(argv)
    paths = [a for a in argv[1:] if not a.startswith("-")]
    if program in _DEST_WRITERS:
        candidates = paths[-1:] if len(paths) >= 2 else []
    elif program in _ANY_WRITERS or (program == "sed" and any(_sed_in_place(a) for a in argv)):
        candidates = paths
    elif program == "dd":
        candidates = [a[3:] for a in argv[1:] if a.startswith("of=")]
    elif program in ("curl", "wget"):
        flags = ("-o", "--output") if program == "curl" else ("-O", "--output-document")
        candidates = [argv[i + 1] for i in range(1, len(argv) - 1) if argv[i] in flags]
    else:
        return None
    return next((p for p in candidates if p.startswith(BINARY_DIRS)), None)


def _sed_in_place(arg: str) -> bool:
    return arg.startswith("-i") or arg == "--in-place" or arg.startswith("--in-place=")


# ---------------------------------------------------------------------- helpers


def _finding(
    meta: Any, event: Event, ctx: RuleContext, summary: str, *, severity: Severity | None = None,
    **details: Any,
) -> Finding:  # fmt: skip
    attributes = event.attributes
    if _health_check(event, ctx):
        severity = "info"  # the container's own check: nobody typed it
    return finding(
        meta,
        event,
        summary,
        severity=severity,
        session=attributes.get("session"),
        command=_line(_argv(event)),
        login=event.who.login,
        **details,
    )


def _health_check(event: Event, ctx: RuleContext) -> bool:
    attributes = event.attributes
    known = activity_state(ctx).containers.get(event.actor.id)
    command = attributes.get("session_command")
    if known is None or not known.healthcheck or command != known.healthcheck:
        return False
    return not (
        attributes.get("tty") or attributes.get("interactive") or attributes.get("privileged")
    )


def _first_in_session(ctx: RuleContext, event: Event, rule_id: str) -> bool:
    """True the first time `rule_id` fires in the event's session (replay rebuilds it)."""
    seen: OrderedDict[tuple[str, str], None] = ctx.state.setdefault(_ONCE_STATE, OrderedDict())
    key = (rule_id, str(event.attributes.get("session") or event.id))
    if key in seen:
        return False
    seen[key] = None
    if len(seen) > _ONCE_MAX:
        seen.popitem(last=False)
    return True


def _argv(event: Event) -> list[str]:
    argv = event.attributes.get("argv")
    return [str(a) for a in argv] if isinstance(argv, list) else []


def _program(argv: list[str]) -> str:
    return posixpath.basename(argv[0]) if argv else ""


def _line(argv: list[str]) -> str:
    text = " ".join(argv)
    return text if len(text) <= 200 else text[:199] + "…"


def _owner(event: Event) -> str:
    return event.who.login or "an unknown login"


def _where(event: Event) -> str:
    return event.actor.name or event.actor.id[:12] or "a container"
