"""Rules over what people and the daemon do: execs, churn, sprawl, daemon files,
and changes no login can be tied to.

Windowed rules keep their state in `RuleContext.state`, fed in `seq` order,
so a replay of the trail rebuilds exactly what the live service saw.

container-churn's rule is `listener.rules.churn`; its state (`ChurnBaseline`, the
windows in `ActivityState`) stays here, where saved rule state names its classes.

The container table also remembers, per container, the fingerprint of the
last configuration the container-config rules judged (`config_fingerprint`),
so that the engine does not repeat their findings for a configuration
already judged (`already_judged`).
"""

from __future__ import annotations

import math
import posixpath
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from config.models import ContainerChurnRule
from listener.model.catalogue import ATTRIBUTION_MISMATCH as MISMATCH
from listener.model.catalogue import CONFIG_ACTIONS, DAEMON_FILE, EXEC, SPRAWL, UNATTRIBUTED
from listener.model.event import Event, container_gone, observed_change
from listener.rules.base import Finding, RuleContext, finding
from listener.rules.container import is_root_user
from listener.rules.fingerprint import config_fingerprint
from listener.rules.image import is_build_step

# How `who` was found from evidence (auditd records), as opposed to unknown/unavailable.
EVIDENCE_METHODS = frozenset({"auditd-cli", "auditd", "peer"})
SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "ksh", "fish"})
CHURN_ACTIONS = frozenset({"create", "destroy"})
ATTRIBUTABLE_ACTIONS = frozenset(
    {"create", "start", "exec_create", "kill", "stop", "destroy", "rename", "update", "commit",
     "pause", "unpause", "restart"}
)  # fmt: skip
# A restart policy starts again a container that exited by itself (a die with no stop
# after it), after a back-off of at most a minute: that start is the daemon's, nobody's.
# Per container: (running | exited | stopped, since when, its restart policy).
_RESTART_POLICIES = frozenset({"always", "unless-stopped", "on-failure"})
_POLICY_RESTART_NS = 90 * 1_000_000_000
_LIVES_STATE = "unattributed-change/lives"
_OBSERVED_LIVES = {"running": "running", "exited": "exited"}  # a reconciliation's `state`
_LIFE_AFTER = {"die": "exited", "stop": "stopped", "start": "running"}
# Operations that read or run a daemon file: not changes (auditd's `-p wa` watches
# still log them when rules add `r`/`x`, and `ls -l` reads extended attributes).
READ_OPERATIONS = frozenset({"read", "open", "execute", "exec", "stat"})
DAEMON_FILE_WINDOW_NS = 10 * 1_000_000_000
_DAEMON_FILES_KEPT = 1_024  # changed daemon files remembered before those past the window go
# Config actions that may show a configuration judged before (a create is a new container).
REJUDGED_ACTIONS = CONFIG_ACTIONS - {"create"}
# A reconciliation's `state` (docker_state._listed_state) -> the table's.
_OBSERVED_STATES = {"running": "running", "exited": "stopped", "created": "created"}
# Closed windows a learned churn baseline keeps per scope (halved, older ones weighing
# less, beyond this); the scopes kept are bounded in `listener.rules.churn`.
_BASELINE_MAX_WINDOWS = 10_000
# Churn scopes (host, image, user) held before those gone quiet are swept away.
SCOPES_SWEPT_FROM = 4_096


@dataclass(slots=True)
class KnownContainer:
    name: str | None
    root: bool
    privileged: bool
    state: str = "created"
    judged: str | None = None  # fingerprint of the last configuration the config rules judged
    healthcheck: str | None = None  # its health check's command line (from inspect)


@dataclass(slots=True)
class ChurnBaseline:
    """What one scope's history says about its churn: peak count per window -> windows.

    Windows are fixed buckets of `window_secs`; a window's count is the highest
    sliding-window count reached in it, the number the threshold is compared
    with. Windows without creates/destroys are not counted.
    """

    bucket: int = -1  # the window being counted
    peak: int = 0  # its highest count so far
    histogram: dict[int, int] = field(default_factory=dict)
    windows: int = 0  # closed windows in the histogram
    learned: int | None = None  # the learned threshold, once there are enough windows

    def observe(self, bucket: int, count: int, settings: ContainerChurnRule) -> None:
        if bucket > self.bucket:
            if self.peak:
                self._close(settings)
            self.bucket, self.peak = bucket, 0
        if count > self.peak:  # max(), without the call
            self.peak = count

    def _close(self, settings: ContainerChurnRule) -> None:
        self.histogram[self.peak] = self.histogram.get(self.peak, 0) + 1
        self.windows += 1
        if self.windows > max(_BASELINE_MAX_WINDOWS, 2 * settings.baseline_min_windows + 2):
            # Older windows weigh less: halve them all, so the histogram stays bounded
            # and the baseline follows a host whose work changes.
            self.histogram = {n: w // 2 for n, w in self.histogram.items() if w // 2}
            self.windows = sum(self.histogram.values())
        self.learned = None
        if self.windows >= settings.baseline_min_windows:
            typical = _percentile(self.histogram, self.windows, settings.baseline_percentile)
            self.learned = math.ceil(typical * settings.baseline_factor)


def _percentile(histogram: Mapping[int, int], total: int, percentile: float) -> int:
    """Nearest-rank percentile of the counts in `histogram` (count -> how often)."""
    rank = max(1, math.ceil(percentile / 100 * total))
    seen = 0
    for count in sorted(histogram):
        seen += histogram[count]
        if seen >= rank:
            return count
    return max(histogram)


@dataclass(slots=True)
class ActivityState:
    containers: dict[str, KnownContainer] = field(default_factory=dict)
    windows: dict[tuple[str, ...], deque[int]] = field(default_factory=dict)
    quiet_until: dict[tuple[str, ...], int] = field(default_factory=dict)
    baselines: OrderedDict[tuple[str, ...], ChurnBaseline] = field(default_factory=OrderedDict)
    sprawl_alerted: bool = False
    # How many known containers are in each state, kept with the table: container-sprawl
    # reads it on every start/die/destroy, which must not cost a scan of every container.
    states: Counter[str] = field(default_factory=Counter)
    sweep_scopes_at: int = SCOPES_SWEPT_FROM  # churn scopes held when the next sweep runs

    def put(self, container_id: str, known: KnownContainer) -> None:
        self.drop(container_id)
        self.containers[container_id] = known
        self.states[known.state] += 1

    def drop(self, container_id: str) -> None:
        old = self.containers.pop(container_id, None)
        if old is not None:
            self.states[old.state] -= 1

    def move(self, known: KnownContainer, new_state: str) -> None:
        self.states[known.state] -= 1
        self.states[new_state] += 1
        known.state = new_state


def activity_state(ctx: RuleContext) -> ActivityState:
    state = ctx.state.get("activity")
    if state is None:
        state = ctx.state["activity"] = ActivityState()
    return state


def track_container(event: Event, ctx: RuleContext) -> None:
    """Keep the container table the exec and sprawl rules need; not a rule itself."""
    if event.type != "container":
        return
    state = ctx.state.get("activity") or activity_state(ctx)  # the call only to create it
    cid = event.actor.id
    known = state.containers.get(cid)
    if event.action in CONFIG_ACTIONS and event.config:
        known = _configured(event, known)
        state.put(cid, known)
    elif known is None:
        if not _adds_unknown(event):
            return
        known = KnownContainer(event.actor.name, True, False)
        state.put(cid, known)
    _follow_lifecycle(event, state, cid, known)


def _adds_unknown(event: Event) -> bool:
    """A create, or a container a reconciliation found (without a configuration when its
    inspect failed: counted as root, as a create without one is)."""
    if event.action == "create":
        return True
    return observed_change(event) is not None and not container_gone(event)


def _configured(event: Event, known: KnownContainer | None) -> KnownContainer:
    config = event.config
    return KnownContainer(
        name=event.actor.name,
        root=is_root_user(config.get("user")),
        privileged=bool(config.get("privileged")),
        state=known.state if known else "created",
        judged=config_fingerprint(config),
        healthcheck=config.get("healthcheck") or (known.healthcheck if known else None),
    )


def _follow_lifecycle(event: Event, state: ActivityState, cid: str, known: KnownContainer) -> None:
    action = event.action
    if action == "start":
        state.move(known, "running")
    elif action == "die":
        state.move(known, "stopped")
    elif action == "destroy":
        state.drop(cid)
    elif action == "observed" and observed_change(event) is not None:
        # What a reconciliation found while nobody listened: without it, a container
        # stopped or removed meanwhile stayed counted (container-sprawl) as it was.
        if container_gone(event):
            state.drop(cid)
            return
        observed = _OBSERVED_STATES.get(str(event.attributes.get("state")))
        if observed is not None and observed != known.state:
            state.move(known, observed)


def already_judged(event: Event, ctx: RuleContext) -> bool:
    """Whether the config rules judged this container's configuration before.

    True for an `observed` or `posture` event whose configuration has the
    fingerprint of the last one judged for the same container (a create, an
    observation, a posture sweep): its findings were alerted then. Call it
    before the event is evaluated (evaluating it records its fingerprint).
    """
    if event.type != "container" or event.action not in REJUDGED_ACTIONS or not event.config:
        return False
    known = activity_state(ctx).containers.get(event.actor.id)
    return known is not None and known.judged == config_fingerprint(event.config)


def is_health_check(event: Event, ctx: RuleContext) -> bool:
    """The Engine's own health-check exec: exactly the health check the container was
    created with (inspect), as the Engine runs it (no terminal, not privileged).

    Anyone may run that same command by hand: it is the container's own check.
    """
    if event.action not in ("exec_create", "exec_start"):
        return False
    known = activity_state(ctx).containers.get(event.actor.id)
    command = str(event.attributes.get("action_detail") or "")
    if known is None or not known.healthcheck or command != known.healthcheck:
        return False
    config = event.config
    return not (config.get("privileged") or config.get("tty") or config.get("interactive"))


def check_exec(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action != "exec_start":
        return
    command = str(event.attributes.get("action_detail") or "")
    if is_health_check(event, ctx):
        return
    known = activity_state(ctx).containers.get(event.actor.id)
    reasons = _exec_risks(command, event.config, known)
    yield finding(
        EXEC,
        event,
        f"exec into {event.actor.name or event.actor.id[:12]}: {command or '?'}"
        + (f" ({', '.join(reasons)})" if reasons else ""),
        severity="high" if reasons else None,
        command=command,
        risks=reasons,
        exec_id=event.attributes.get("execID"),
        # The subject the channel dedups on: who the exec runs as, and with what power.
        user=_exec_user(event.config, known),
        privileged="privileged" in reasons,
    )


def _exec_user(config: dict[str, Any], known: KnownContainer | None) -> str:
    user = config.get("user")
    if user:
        return str(user)
    if known is not None and not known.root:
        return "container user"
    return "root"


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
    if config.get("tty") and config.get("interactive") and "interactive shell" not in risks:
        risks.append("interactive terminal")
    return risks


def check_sprawl(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if event.type != "container" or event.action not in ("die", "start", "destroy"):
        return
    state = ctx.state.get("activity") or activity_state(ctx)  # the call only to create it
    # Created-but-never-started containers are a passing state of every `run`: not counted.
    stopped, running = state.states["stopped"], state.states["running"]
    margin = ctx.rules.container_sprawl.margin
    excess = stopped - running
    if excess <= margin:
        # Hysteresis: re-arm only once clearly below the margin, so a host
        # hovering at the margin does not alert on every start and stop.
        fifth = margin // 5  # below by max(1, margin // 5), without the builtin's call
        if excess <= margin - (fifth if fifth > 1 else 1):
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
    if len(changes) > _DAEMON_FILES_KEPT:  # a directory watch sees any number of paths
        oldest = event.time_ns - DAEMON_FILE_WINDOW_NS
        for stale in [p for p, (when, _) in changes.items() if when < oldest]:
            del changes[stale]
    return None


def check_unattributed(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    if not ctx.attribution_available or event.type != "container":
        return
    if event.action == "observed" and observed_change(event) is not None:
        _follow_observed_life(event, ctx)
        return
    if event.source != "docker" or not _attributable(event, ctx):
        return
    if event.who.method != "unknown":
        return  # attributed, or no audit source covered it (`unavailable`)
    if is_build_step(event, ctx) or is_health_check(event, ctx):
        return  # a build's step (the build call is its own event), the Engine's health check
    claimed = event.who.claimed
    yield finding(
        UNATTRIBUTED,
        event,
        f"{event.action} of {event.actor.name or event.actor.id[:12]} by no known login"
        + (f" (label claims {claimed})" if claimed else ""),
        action=event.action,
        claimed=claimed,
    )


def check_attribution_mismatch(event: Event, ctx: RuleContext) -> Iterator[Finding]:
    """The audit.who label names someone else than the login the evidence found."""
    who = event.who
    if event.source != "docker" or not who.claimed or who.method not in EVIDENCE_METHODS:
        return
    if who.claimed == who.login:
        return
    # No login at all (auid unset: a service, cron) disagrees with a claim of a person too.
    seen = who.login or (f"auid {who.auid}" if who.auid is not None else "no login")
    yield finding(
        MISMATCH,
        event,
        f"{event.actor.name or event.actor.id[:12]}: label claims {who.claimed}, auditd saw {seen}",
        claimed=who.claimed,
        login=who.login,
        method=who.method,
    )


def _follow_observed_life(event: Event, ctx: RuleContext) -> None:
    """A reconciliation's finding: a container stopped while nobody listened and started
    later is a change someone asked for, not the daemon restoring a running one."""
    lives: dict[str, tuple[str, int, str]] = ctx.state.setdefault(_LIVES_STATE, {})
    container_id = event.actor.id
    if container_gone(event):
        lives.pop(container_id, None)
        return
    state = _OBSERVED_LIVES.get(str(event.attributes.get("state")))
    if state is None:
        return
    before = lives.get(container_id)
    policy = str(event.config.get("restart_policy") or "") or (before[2] if before else "")
    # "exited", not "stopped": when it ended is not known, so a restart policy's start
    # soon after the reconciliation stays the daemon's own.
    lives[container_id] = (state, event.time_ns, policy)


def _attributable(event: Event, ctx: RuleContext) -> bool:
    """A change some login must have asked for. Not the daemon's own starts: a restart
    policy's soon after the container exited by itself (a die with no stop after it),
    or the start of a container whose exit was never seen (a daemon restart: the old
    daemon's last events are lost, the new one starts the containers it restores)."""
    lives: dict[str, tuple[str, int, str]] | None = ctx.state.get(_LIVES_STATE)
    if lives is None:
        lives = ctx.state[_LIVES_STATE] = {}
    container_id, action = event.actor.id, event.action
    policy = str(event.config.get("restart_policy") or "")
    before = lives.get(container_id)
    if action in ("die", "stop", "start"):
        known_policy = policy or (before[2] if before else "")
        state = _LIFE_AFTER[action]
        lives[container_id] = (state, event.time_ns, known_policy)
    elif action == "destroy":
        lives.pop(container_id, None)
    if action == "start" and before is not None:
        state, since_ns, known_policy = before
        policy = policy or known_policy
        if state == "running":
            return False
        soon = event.time_ns - since_ns <= _POLICY_RESTART_NS
        if state == "exited" and soon and policy.partition(":")[0] in _RESTART_POLICIES:
            return False
    return action in ATTRIBUTABLE_ACTIONS
