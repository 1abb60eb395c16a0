"""An exec session's command (`exec-command` event) as the export formats need it, read
from its stored attributes: a stored body is not trusted to hold the right types, so a
field of another type is left out rather than failing the export."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from listener.sessions.records import EXEC_COMMAND


@dataclass(frozen=True, slots=True)
class SessionCommand:
    exec_id: str | None
    pid: int | None
    ppid: int | None
    uid: int | None  # inside the container
    executable: str | None
    args: list[str]
    cwd: str | None
    exit_code: int | None
    index: int | None  # order in its session

    @property
    def uid_in_session(self) -> str | None:
        """One id per command: the exec's id and the command's order in it."""
        return f"{self.exec_id}:{self.index}" if self.exec_id and self.index is not None else None

    @property
    def name(self) -> str | None:
        return self.executable.rsplit("/", 1)[-1] if self.executable else None

    @property
    def command_line(self) -> str | None:
        return shlex.join(self.args) if self.args else None


def is_process_event(event_type: str, verb: str) -> bool:
    """A process started or ended: a docker CLI call, an exec, a session's command."""
    return event_type == "docker-cli" or verb.startswith("exec_") or verb == EXEC_COMMAND


def session_command(attributes: Mapping[str, Any]) -> SessionCommand:
    argv = attributes.get("argv")
    args = [a for a in argv if isinstance(a, str)] if isinstance(argv, list) else []
    return SessionCommand(
        exec_id=_text(attributes.get("execID")),
        pid=_number(attributes.get("pid")),
        ppid=_number(attributes.get("ppid")),
        uid=_number(attributes.get("uid")),
        executable=_text(attributes.get("exe")),
        args=args,
        cwd=_text(attributes.get("cwd")),
        exit_code=_number(attributes.get("exit")),
        index=_number(attributes.get("index")),
    )


def _number(value: object) -> int | None:
    return value if type(value) is int else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
