"""The inputs of session tracking: process records from auditd, sessions from the Engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from listener.model.event import Actor, Who

EXEC_COMMAND = "exec-command"
"""Action of a command run inside an exec session (type `container`)."""
EXEC_OVERFLOW = "exec-overflow"
"""Action of the note that a session ran more commands than were kept."""

ProcessKind = Literal["exec", "fork", "exit", "runtime-exec", "runtime-init"]


@dataclass(slots=True, frozen=True)
class ProcessRecord:
    """One audit event about a process, reduced to what following a tree needs.

    `exec`: `pid` ran `argv`. `fork`: `pid` made a child (which shows up by its own
    records). `exit`: `pid` ended with `exit_code`. Each names its parent then
    (`ppid`) and the process's name (`comm`, 15 bytes). `runtime-exec`: the runtime
    (runc) was started as `pid` to run `exec_id` in `container_id`; its children
    are the exec. `runtime-init`: the runtime's init (`runc init`, `pid`) that
    starts the exec's first process, a few pids after its own.
    """

    kind: ProcessKind
    time_ns: int
    audit_id: str
    pid: int
    ppid: int | None = None
    argv: tuple[str, ...] = ()
    cwd: str | None = None
    exe: str | None = None
    comm: str | None = None
    uid: int | None = None
    exit_code: int | None = None
    exec_id: str | None = None
    container_id: str | None = None


@dataclass(slots=True)
class SessionInfo:
    """What the Engine and attribution say about one exec: where, as whom, opened by whom."""

    exec_id: str
    container: Actor
    host: str
    owner: Who = field(default_factory=Who)
    time_ns: int = 0
    root_pid: int | None = None  # the exec's first process (exec inspect's `Pid`)
    user: str | None = None
    tty: bool = False
    interactive: bool = False
    privileged: bool = False
    command: list[str] = field(default_factory=list)
    command_text: str = ""  # the exec's command as its Engine event names it (redacted)


@dataclass(slots=True)
class Command:
    """A command of a session, held until its exit (or the wait) and its owner are known."""

    record: ProcessRecord
    exec_id: str
    index: int
    exit_code: int | None = None
    ended: str | None = None  # "exit" (exit code known) or "exec" (it ran another program)
    pipeline: list[str] = field(default_factory=list)
    inferred: bool = False  # seen only by its name at exit (no execve)
