"""The trail events of sessions: `exec-command` (one per command) and `exec-overflow`.

`who` is the session's owner as the exec was attributed (the login that ran
`docker exec`, and how we know); what ran is in `attributes`: `session` (the
exec id, also `execID`), `index` (order in the session), `argv` (secrets
redacted, cut to `max_argv_bytes`), `cwd`, `uid` (inside the container),
`pid`/`ppid` (host), `exe`, `exit` (None when it ran on past the wait or
replaced itself: `ended` says which), `pipeline` (programs started with it by
the same parent), and the session's `tty`, `interactive`, `privileged`, `exec_user` and
`session_command` (the exec's own command line). Strings are bounded as
every input is (`listener.bounds`); bytes that are not UTF-8 become escapes.
"""

from __future__ import annotations

from typing import Any

from listener import redact
from listener.bounds import bound_event
from listener.model.event import Actor, Event, Who, natural_id, time_ordered_id
from listener.sessions.argv import bounded_argv
from listener.sessions.records import EXEC_COMMAND, EXEC_OVERFLOW, Command, SessionInfo


def command_event(
    command: Command,
    info: SessionInfo | None,
    *,
    host: str,
    container: Actor,
    max_argv_bytes: int,
    redactor: redact.Redactor | None,
) -> Event:
    record = command.record
    argv = (redactor or redact.active()).argv(list(record.argv))
    argv, cut = bounded_argv(argv, max_argv_bytes)
    attributes: dict[str, Any] = {
        "execID": command.exec_id,
        "session": command.exec_id,
        "index": command.index,
        "argv": argv,
        "cwd": record.cwd,
        "uid": record.uid,
        "pid": record.pid,
        "ppid": record.ppid,
        "exe": record.exe,
        "exit": command.exit_code,
        "ended": command.ended,
        "audit_id": record.audit_id,
    }
    if cut:
        attributes["argv_truncated"] = cut
    if command.inferred:
        attributes["inferred"] = "comm"
    if command.pipeline:
        attributes["pipeline"] = sorted(set(command.pipeline))
    attributes.update(_session_attributes(info, redactor or redact.active()))
    event = Event(
        id=time_ordered_id(record.time_ns, host, EXEC_COMMAND, command.exec_id, record.audit_id),
        time_ns=record.time_ns,
        source="auditd",
        host=host,
        type="container",
        action=EXEC_COMMAND,
        actor=_actor(info, container),
        attributes=attributes,
        who=_owner(info),
    )
    # Bytes that are not UTF-8 in an argv or path are kept as escapes, as for CLI calls.
    return bound_event(event, surrogates="escape")


def overflow_event(
    exec_id: str,
    info: SessionInfo | None,
    *,
    host: str,
    container: Actor,
    kept: int,
    dropped: int,
    limit: int,
    time_ns: int,
) -> Event:
    return Event(
        id=natural_id(host, EXEC_OVERFLOW, exec_id, kept, dropped),
        time_ns=time_ns,
        source="docktrail",
        host=host,
        type="container",
        action=EXEC_OVERFLOW,
        actor=_actor(info, container),
        attributes={
            "execID": exec_id,
            "session": exec_id,
            "kept": kept,
            "dropped": dropped,
            "max_commands_per_session": limit,
            **_session_attributes(info, redact.active()),
        },
        who=_owner(info),
    )


def _session_attributes(info: SessionInfo | None, redactor: redact.Redactor) -> dict[str, Any]:
    if info is None:
        return {"owner": "unknown: the exec's Engine event was not seen"}
    return {
        "tty": info.tty,
        "interactive": info.interactive,
        "privileged": info.privileged,
        "exec_user": info.user,
        # The Engine's text of the exec's command: redacted as the commands are.
        "session_command": redactor.text(info.command_text),
    }


def _actor(info: SessionInfo | None, container: Actor) -> Actor:
    if info is not None and info.container.id:
        return info.container.model_copy()
    return container


def _owner(info: SessionInfo | None) -> Who:
    if info is None:
        return Who(method="unknown")
    return info.owner.model_copy(deep=True)
