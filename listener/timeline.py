"""`docktrail timeline`: one container's life, from the trail.

Who created it and why, its security configuration, what happened to it
(starts, execs, stops), the alerts on each of those events, and its removal.
A name reused by several containers gives one life per container id.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from listener.intents import intent_lines
from listener.model.alert import Alert
from listener.model.event import Event, container_gone, format_time_ns
from listener.safetext import printable
from listener.sessions.transcript import (
    SESSION_ACTIONS,
    Session,
    command_lines,
    header_lines,
    sessions_of,
)
from sinks.base import EventFilter

CONFIG_HIGHLIGHTS = (
    ("privileged", "privileged"),
    ("cap_add", "cap-add"),
    ("network_mode", "network"),
    ("pid_mode", "pid"),
    ("user", "user"),
    ("read_only_rootfs", "read-only"),
    ("memory_bytes", "memory"),
    ("pids_limit", "pids-limit"),
    ("seccomp", "seccomp"),
    ("apparmor", "apparmor"),
)


@dataclass(slots=True)
class Life:
    container_id: str
    name: str | None
    events: list[Event] = field(default_factory=list)
    alerts: dict[int, list[Alert]] = field(default_factory=dict)

    @property
    def created(self) -> Event | None:
        return next((e for e in self.events if e.action == "create"), None)

    @property
    def removed(self) -> Event | None:
        return next((e for e in self.events if container_gone(e)), None)

    @property
    def names(self) -> list[str]:
        """Every name the container bore, oldest first (a rename adds one)."""
        found: list[str] = []
        for event in self.events:
            old = event.attributes.get("oldName") if event.action == "rename" else None
            for name in (old.lstrip("/") if isinstance(old, str) else None, event.actor.name):
                if event.type == "container" and name and name not in found:
                    found.append(name)
        return found


def build_timelines(trail: Any, container: str) -> list[Life]:
    lives: dict[str, Life] = {}
    for event in trail.query(EventFilter(container=container)):
        key = event.actor.id if event.type == "container" else _attached_to(event)
        life = lives.get(key)
        if life is None:
            life = lives[key] = Life(key, event.actor.name if event.type == "container" else None)
        life.events.append(event)
        if event.seq is not None:
            found = trail.alerts_for_event(event.seq)
            if found:
                life.alerts[event.seq] = found
    return [life for key, life in lives.items() if key != "?"] or list(lives.values())


def _attached_to(event: Event) -> str:
    """The container a network connect/disconnect is about ("?" for anything else)."""
    attached = event.attributes.get("container")
    return attached if isinstance(attached, str) and attached else "?"


def render_text(lives: list[Life], tz: tzinfo) -> str:
    # Every line carries names, labels and commands anyone can choose: shown escaped.
    return "\n".join(
        "\n".join(printable(line) for line in _life_lines(life, tz)) + "\n" for life in lives
    )


def _life_lines(life: Life, tz: tzinfo) -> Iterator[str]:
    created = life.created
    image = created.actor.image if created else None
    names = life.names
    was = f" (was {', '.join(names[:-1])})" if len(names) > 1 else ""
    current = names[-1] if names else life.name
    yield f"{current or '?'}{was}  ({life.container_id[:12]})  image {image or '?'}"
    if created is not None:
        yield f"  created  {format_time_ns(created.time_ns, tz)} by {_who(created)}"
        why = created.why
        if why.reason or why.ticket:
            ticket = f" [{why.ticket}]" if why.ticket else ""
            yield f"  why      {why.reason or ''}{ticket}"
        yield from intent_lines(created)
        config = _config_summary(created.config)
        if config:
            yield f"  config   {config}"
    sessions = sessions_of(life.events)  # each exec's commands, under its exec_start
    for event in life.events:
        if event.action in SESSION_ACTIONS:
            continue
        detail = event.attributes.get("action_detail") or _renamed(event)
        if event.type == "network":
            detail = f"network {event.actor.name or event.actor.id[:12]}"
        line = f"  {format_time_ns(event.time_ns, tz)}  {event.action:12} {_who(event)}"
        yield line + (f"  {detail}" if detail else "")
        yield from _alert_lines(life, event)
        exec_id = event.attributes.get("execID")
        if event.action == "exec_start" and isinstance(exec_id, str) and exec_id in sessions:
            yield from _transcript(life, sessions.pop(exec_id), tz)
    for orphan in sessions.values():  # commands whose exec's Engine event is not here
        if orphan.commands:
            yield from (f"  {line}" for line in header_lines(orphan, tz))
            yield from _transcript(life, orphan, tz)
    removed = life.removed
    if removed is not None and removed.action == "observed":  # removed while nobody listened
        yield f"  removed  before {format_time_ns(removed.time_ns, tz)} (found gone then)"
    elif removed is not None:
        yield f"  removed  {format_time_ns(removed.time_ns, tz)} by {_who(removed)}"
    else:
        yield "  (not removed)"


def _alert_lines(life: Life, event: Event) -> Iterator[str]:
    for alert in life.alerts.get(event.seq or 0, []):
        note = f" (suppressed: {alert.suppressed})" if alert.suppressed else ""
        yield f"      ! {alert.severity:8} {alert.rule}: {alert.summary}{note}"


def _transcript(life: Life, session: Session, tz: tzinfo) -> Iterator[str]:
    """The session's commands (`docktrail session`), each with its alerts."""
    lines = command_lines(session, tz, indent="      ")
    for event in session.commands:
        yield next(lines)
        yield from _alert_lines(life, event)
    yield from lines


def _renamed(event: Event) -> str | None:
    old = event.attributes.get("oldName") if event.action == "rename" else None
    if not isinstance(old, str):
        return None
    return f"{old.lstrip('/')} -> {event.actor.name or '?'}"


def _who(event: Event) -> str:
    who = event.who
    claims = f" (claims {who.claimed})" if who.claimed else ""
    if who.method in ("unknown", "unavailable") and not who.login:
        return "unknown" + claims
    person = who.login or "?"
    if who.user and who.user != who.login:
        person += f" (as {who.user})"
    person += claims
    return person + (f" via `{who.command}`" if who.command and event.action == "create" else "")


def _config_summary(config: dict[str, Any]) -> str:
    parts = []
    for key, label in CONFIG_HIGHLIGHTS:
        value = config.get(key)
        if value in (None, False, [], ""):
            continue
        if key == "memory_bytes":
            value = f"{int(value) // (1 << 20)}m"
        parts.append(label if value is True else f"{label}={_plain(value)}")
    mounts = config.get("mounts") or []
    parts += [f"-v {m.get('source')}:{m.get('destination')}" for m in mounts]
    return ", ".join(parts)


def _plain(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def timeline_json_lines(lives: list[Life], tz: tzinfo) -> Iterator[str]:
    """One JSON object per event, with the alerts on it, in order."""
    for life in lives:
        for event in life.events:
            obj = event.to_json_object(tz)
            obj["alerts"] = [a.to_json_object(tz) for a in life.alerts.get(event.seq or 0, [])]
            yield json.dumps(obj, ensure_ascii=False)
