"""A session as a transcript: who opened it, when, and each command with its exit.

Used by `docktrail session EXEC_ID` and, under each exec, by `docktrail timeline`.
Lines hold text anyone in a container can choose: callers print them escaped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo

from listener.model.event import Event, format_time_ns
from listener.sessions.records import EXEC_COMMAND, EXEC_OVERFLOW

SESSION_ACTIONS = frozenset({EXEC_COMMAND, EXEC_OVERFLOW})
_ENGINE_EXEC_ACTIONS = ("exec_create", "exec_start", "exec_die")


@dataclass(slots=True)
class Session:
    """The trail's events of one exec: the Engine's and the commands followed."""

    exec_id: str
    engine: list[Event] = field(default_factory=list)
    commands: list[Event] = field(default_factory=list)
    overflow: list[Event] = field(default_factory=list)

    @property
    def started(self) -> Event | None:
        return next((e for e in self.engine if e.action == "exec_start"), None)

    @property
    def died(self) -> Event | None:
        return next((e for e in self.engine if e.action == "exec_die"), None)

    @property
    def owner(self) -> str:
        for event in (self.started, *self.commands):
            if event is not None and event.who.login:
                return event.who.login
        return "unknown"


def sessions_of(events: Iterable[Event]) -> dict[str, Session]:
    """The sessions among `events`, by exec id, commands in the order they ran."""
    found: dict[str, Session] = {}
    for event in events:
        exec_id = event.attributes.get("execID")
        if event.type != "container" or not isinstance(exec_id, str) or not exec_id:
            continue
        session = found.setdefault(exec_id, Session(exec_id))
        if event.action == EXEC_COMMAND:
            session.commands.append(event)
        elif event.action == EXEC_OVERFLOW:
            session.overflow.append(event)
        elif event.action.split(":")[0] in _ENGINE_EXEC_ACTIONS:
            session.engine.append(event)
    for session in found.values():
        session.commands.sort(key=lambda e: (e.time_ns, e.attributes.get("index") or 0))
    return found


def header_lines(session: Session, tz: tzinfo) -> Iterator[str]:
    started = session.started
    first = started or (session.commands[0] if session.commands else None)
    where = first.actor.name or first.actor.id[:12] if first is not None else "?"
    yield f"session {session.exec_id[:12]}  in {where}  owner {session.owner}"
    if started is not None:
        config = started.config
        how = [f"by {_how(started)}"]
        if config.get("user"):
            how.append(f"as {config['user']}")
        if config.get("tty"):
            how.append("tty")
        if config.get("privileged"):
            how.append("privileged")
        detail = started.attributes.get("action_detail") or ""
        yield f"  opened   {format_time_ns(started.time_ns, tz)} {' '.join(how)}  {detail}"


def command_lines(session: Session, tz: tzinfo, indent: str = "  ") -> Iterator[str]:
    for event in session.commands:
        yield indent + command_line(event, tz)
    for note in session.overflow:
        dropped = note.attributes.get("dropped")
        yield f"{indent}… {dropped} more commands not stored (max_commands_per_session)"
    died = session.died
    if died is not None:
        code = died.attributes.get("exitCode")
        yield f"{indent}ended    {format_time_ns(died.time_ns, tz)} exit {code}"


def command_line(event: Event, tz: tzinfo) -> str:
    attributes = event.attributes
    argv = attributes.get("argv")
    text = " ".join(str(a) for a in argv) if isinstance(argv, list) else "?"
    if attributes.get("inferred"):
        text += "  (name only: ran without execve)"
    place = f"uid {attributes.get('uid')} {attributes.get('cwd') or '?'}"
    ended = attributes.get("ended")
    code = attributes.get("exit")
    outcome = f"exit {code}" if ended == "exit" else ("exec'd" if ended == "exec" else "running")
    return f"{format_time_ns(event.time_ns, tz)}  [{place}] $ {text}  -> {outcome}"


def _how(event: Event) -> str:
    who = event.who
    if not who.login:
        return "unknown login" + (f" ({who.method})" if who.method else "")
    return f"{who.login} ({who.method})"
