"""Audit events of the exec-session rules (key `auditd.exec_key`) to `ProcessRecord`s.

deploy/audit/docktrail-exec.rules records, for processes without a login
(auid unset, as a container's are): execve, fork/clone, exit_group, and every
execve of the runtime (runc). Of the runtime's runs only `runc exec` matters:
its `--pid-file …/EXEC_ID.pid` names the exec, its last argument the
container, and its child is the exec's first process. Threads (a clone with
CLONE_THREAD) share their process's pid and are not followed.
"""

from __future__ import annotations

import posixpath

from listener.sessions import ProcessRecord
from listener.sources.auditd.fields import event_audit_id
from listener.sources.auditparse import AuditEvent

_SYSCALLS = {
    "c000003e": {"59": "execve", "322": "execveat", "56": "clone", "57": "fork",
                 "58": "vfork", "435": "clone3", "231": "exit_group", "60": "exit"},
    "c00000b7": {"221": "execve", "281": "execveat", "220": "clone", "435": "clone3",
                 "94": "exit_group", "93": "exit"},
}  # fmt: skip
_EXECS = frozenset({"execve", "execveat"})
_FORKS = frozenset({"clone", "fork", "vfork", "clone3"})
_EXITS = frozenset({"exit_group"})
_CLONE_THREAD = 0x10000
RUNTIMES = frozenset({"runc", "crun", "youki"})


def process_record(event: AuditEvent) -> ProcessRecord | None:
    """The record of one audit event of the exec rules; None for what is not followed."""
    syscall = _syscall(event)
    pid = event.pid
    if syscall is None or pid is None:
        return None
    if syscall in _EXECS:
        return _exec(event, pid)
    if syscall in _FORKS:
        return _fork(event, pid, syscall)
    if syscall in _EXITS:
        status = _hex(event.field("a0"))
        code = None if status is None else status & 0xFF  # what the parent's wait() sees
        return ProcessRecord(
            "exit", event.time_ns, event_audit_id(event), pid, ppid=event.ppid,
            exit_code=code, comm=event.comm,
        )  # fmt: skip
    return None


def _syscall(event: AuditEvent) -> str | None:
    name = event.enriched_field("SYSCALL")
    if name:
        return name
    return _SYSCALLS.get(event.field("arch") or "", {}).get(event.field("syscall") or "")


def _exec(event: AuditEvent, pid: int) -> ProcessRecord | None:
    if event.field("success") == "no":
        return None
    argv = tuple(event.argv or event.proctitle or ())
    if _is_runtime(event, argv):
        return _runtime(event, pid, argv)
    return ProcessRecord(
        "exec",
        event.time_ns,
        event_audit_id(event),
        pid,
        ppid=event.ppid,
        argv=argv,
        cwd=event.cwd,
        exe=event.exe,
        uid=event.uid,
    )


def _is_runtime(event: AuditEvent, argv: tuple[str, ...]) -> bool:
    exe = posixpath.basename(event.exe or "")
    program = posixpath.basename(argv[0]) if argv else ""
    return exe in RUNTIMES or (program in RUNTIMES and "runc_cloned" in (event.exe or ""))


def _runtime(event: AuditEvent, pid: int, argv: tuple[str, ...]) -> ProcessRecord | None:
    """`runc … exec … --pid-file DIR/EXEC_ID.pid … CONTAINER` and `runc init`; None for
    other runtime runs."""
    if argv[1:2] == ("init",):
        audit_id = event_audit_id(event)
        return ProcessRecord("runtime-init", event.time_ns, audit_id, pid, ppid=event.ppid)
    if "exec" not in argv or len(argv) < 3:
        return None
    pid_file = None
    for position, arg in enumerate(argv[:-1]):
        if arg == "--pid-file":
            pid_file = argv[position + 1]
        elif arg.startswith("--pid-file="):
            pid_file = arg.partition("=")[2]
    if not pid_file or not pid_file.endswith(".pid"):
        return None
    exec_id = posixpath.basename(pid_file).removesuffix(".pid")
    return ProcessRecord(
        "runtime-exec",
        event.time_ns,
        event_audit_id(event),
        pid,
        ppid=event.ppid,
        exec_id=exec_id,
        container_id=argv[-1],
    )


def _fork(event: AuditEvent, pid: int, syscall: str) -> ProcessRecord | None:
    """A process that forks shows its own parent: a subshell is followed by it.

    The child's pid in the record (`exit`) is in the caller's pid namespace, not
    the host's, so it names no process here: the child is found by its own records.
    """
    if event.field("success") == "no":
        return None
    if syscall == "clone":
        flags = _hex(event.field("a0"))
        if flags is not None and flags & _CLONE_THREAD:
            return None
    return ProcessRecord(
        "fork", event.time_ns, event_audit_id(event), pid, ppid=event.ppid, comm=event.comm
    )


def _hex(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value, 16)
    except ValueError:
        return None
