"""Rules over what people and the daemon do: execs, churn, sprawl, daemon files,
and changes no login can be tied to.

Windowed rules keep their state in `RuleContext.state`, fed in `seq` order,
so a replay of the trail rebuilds exactly what the live service saw.
"""

from __future__ import annotations

import posixpath
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from listener.event import Event
from listener.rules.base import Finding, RuleContext, RuleMeta, finding
from listener.rules.container import is_root_user

EXEC = RuleMeta(
    "exec-in-container",
    "medium",
    "5.23, 5.24",
    "A process is exec'd into a running container (high when as root, privileged or a shell).",
    actions=frozenset({"exec_start"}),
)
CHURN = RuleMeta(
    "container-churn",
    "medium",
    "6.5",
    "More container creates/destroys per window than usual.",
    actions=frozenset({"create", "destroy"}),
)
SPRAWL = RuleMeta(
    "container-sprawl",
    "low",
    "6.5",
    "Stopped containers exceed running ones by the margin.",
    actions=frozenset({"die", "start", "destroy"}),
)
DAEMON_FILE = RuleMeta(
    "daemon-config-change",
    "high",
    "1.1.x",
    "A Docker daemon file (configuration, unit, binary) was changed.",
    types=frozenset({"daemon-file"}),
)
UNATTRIBUTED = RuleMeta(
    "unattributed-change", "medium", "-", "A container change that no login can be tied to."
)

SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "fish"})
CHURN_ACTIONS = frozenset({"create", "destroy"})
ATTRIBUTABLE_ACTIONS = frozenset(
    {"create", "exec_create", "kill", "stop", "destroy", "rename", "update", "commit", "pause",
     "unpause", "restart"}
)  # fmt: skip
READ_OPERATIONS = frozenset({"read", "open", "execute", "exec"})
DAEMON_FILE_WINDOW_NS = 10 * 1_000_000_000
_NS = 1_000_000_000


@dataclass(slots=True)
class KnownContainer:
    name: str | None
    root: bool
    privileged: bool
    state: str = "created"


@dataclass(slots=True)
class ActivityState:
    containers: dict[str, KnownContainer] = field(default_factory=dict)
    windows: dict[tuple[str, ...], deque[int]] = field(default_factory=dict)
    quiet_until: dict[tuple[str, ...], int] = field(default_factory=dict)
    sprawl_alerted: bool = False


def activity_state(ctx: RuleContext) -> ActivityState:
    state = ctx.state.get("activity")
    if state is None:
        state = ctx.state["activity"] = ActivityState()
    return state


def track_container(event: Event, ctx: RuleContext) -> None:
    """Keep the container table the exec and sprawl rules need; not a rule itself."""
    if event.type != "container":
        return
    state = activity_state(ctx)
    known = state.containers.get(event.actor.id)
    if event.action in ("create", "observed", "posture") and event.config:
        config = event.config
        state.containers[event.actor.id] = KnownContainer(
            name=event.actor.name,
            root=is_root_user(config.get("user")),
            privileged=bool(config.get("privileged")),
            state=known.state if known else "created",
        )
    elif event.action == "create" and known is None:
        state.containers[event.actor.id] = KnownContainer(event.actor.name, True, False)
    elif known is not None:
        if event.action == "start":
            known.state = "running"
        elif event.action == "die":
            known.state = "stopped"
        elif event.action == "destroy":
            del state.containers[event.actor.id]


def check_exec(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action != "exec_start":
        return
    command = str(event.attributes.get("action_detail") or "")
    known = activity_state(ctx).containers.get(event.actor.id)
    reasons = _exec_risks(command, event.config, known)
    yield finding(
        EXEC,
        event,
        f"exec into {event.actor.name or event.actor.id[:12]}: {command or '?'}",
        severity="high" if reasons else None,
        command=command,
        risks=reasons,
        exec_id=event.attributes.get("execID"),
    )


def _exec_risks(command: str, config: dict[str, Any], known: KnownContainer | None) -> list[str]:
    words = command.split()
    risks = []
    if words and posixpath.basename(words[0]) in SHELLS and "-c" not in words[1:2]:
        risks.append("interactive shell")
    exec_user = config.get("user")
    if exec_user is not None:
        if is_root_user(exec_user):
            risks.append("as root")
    elif known is None or known.root:
        risks.append("as root")
    if config.get("privileged") or (known is not None and known.privileged):
        risks.append("privileged")
    return risks


def check_churn(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action not in CHURN_ACTIONS:
        return
    settings = ctx.rules.container_churn
    window_ns = settings.window_secs * _NS
    state = activity_state(ctx)
    crossed = []
    keys = _churn_keys(event)
    for key in keys:
        times = state.windows.setdefault(key, deque())
        times.append(event.time_ns)
        while times and times[0] <= event.time_ns - window_ns:
            times.popleft()
        quiet = state.quiet_until.get(key, 0)
        if len(times) > settings.threshold and event.time_ns >= quiet:
            crossed.append((key, len(times)))
    if not crossed:
        return
    # One alert per burst: every scope this event counts in goes quiet for a window,
    # not only those that crossed (the image and user windows of the same burst
    # would otherwise cross a few events later and alert again).
    for key in keys:
        state.quiet_until[key] = event.time_ns + window_ns
    scope, count = crossed[0]
    yield finding(
        CHURN,
        event,
        f"{count} container creates/destroys in {settings.window_secs}s ({_scope_text(scope)})",
        window_secs=settings.window_secs,
        threshold=settings.threshold,
        scopes={_scope_text(key): n for key, n in crossed},
    )


def _churn_keys(event: Event) -> list[tuple[str, ...]]:
    keys: list[tuple[str, ...]] = [("host", event.host)]
    if event.actor.image:
        keys.append(("image", event.host, event.actor.image))
    if event.who.login:
        keys.append(("user", event.host, event.who.login))
    return keys


def _scope_text(key: tuple[str, ...]) -> str:
    kind, *values = key
    return f"{kind} {'/'.join(values)}"


def check_sprawl(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action not in ("die", "start", "destroy"):
        return
    state = activity_state(ctx)
    # Created-but-never-started containers are a passing state of every `run`: not counted.
    stopped = sum(c.state == "stopped" for c in state.containers.values())
    running = sum(c.state == "running" for c in state.containers.values())
    margin = ctx.rules.container_sprawl.margin
    excess = stopped - running
    if excess <= margin:
        # Hysteresis: re-arm only once clearly below the margin, so a host
        # hovering at the margin does not alert on every start and stop.
        if excess <= margin - max(1, margin // 5):
            state.sprawl_alerted = False
        return
    if state.sprawl_alerted:
        return
    state.sprawl_alerted = True
    yield finding(
        SPRAWL,
        event,
        f"{stopped} stopped containers vs {running} running on {event.host}",
        stopped=stopped,
        running=running,
        margin=margin,
    )


def check_daemon_file(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "daemon-file" or event.action in READ_OPERATIONS:
        return
    path = event.actor.name or str(event.attributes.get("path") or "?")
    who = event.who.login or event.who.user or "unknown"
    repeat_of = _recent_change(event, path, ctx)
    yield finding(
        DAEMON_FILE,
        event,
        f"{path}: {event.action} by {who}" + (" (follow-up change)" if repeat_of else ""),
        # An edit is often several syscalls (create, write, rename) or an undo right
        # after it; one alert per change of mind is noise. Only a follow-up by the
        # same login or by no login at all is lowered: another person is news.
        severity="info" if repeat_of else None,
        path=path,
        operation=event.action,
        follow_up_of=repeat_of,
    )


def _recent_change(event: Event, path: str, ctx: RuleContext) -> str | None:
    """The login of an alerted change of `path` within the window, if this one follows it."""
    changes: dict[str, tuple[int, str | None]] = ctx.state.setdefault("daemon-files", {})
    previous = changes.get(path)
    login = event.who.login
    recent = previous is not None and event.time_ns - previous[0] <= DAEMON_FILE_WINDOW_NS
    if previous is not None and recent and login in (None, previous[1]):
        return previous[1] or "no login"
    changes[path] = (event.time_ns, login)
    return None


def check_unattributed(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if not ctx.attribution_available or event.source != "docker":
        return
    if event.type != "container" or event.action not in ATTRIBUTABLE_ACTIONS:
        return
    if event.who.method != "unknown":
        return
    yield finding(
        UNATTRIBUTED,
        event,
        f"{event.action} of {event.actor.name or event.actor.id[:12]} by no known login",
        action=event.action,
    )
