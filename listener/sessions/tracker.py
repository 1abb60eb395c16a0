"""Following the process tree of each `docker exec` session through audit records.

How a process is tied to a session (`_new_member`), in order:

1. its parent (ppid) is a member of a session: it is too (pipelines,
   background commands, anything the session's shell starts);
2. its parent is the runtime started for an exec (runc's argv names the exec
   id in `--pid-file …/EXEC_ID.pid`): it is that exec's first process;
3. its pid is the exec's first process id the Engine reported (exec inspect's
   `Pid`), and it ran no earlier than the exec started.

Every record names its process's parent, so a subshell that only forks is
followed by its own fork and exit records (a fork record's child pid is in
the container's pid namespace and names nothing on the host). An exit ends
the membership, so a reused pid is not taken for an old member; a member's pid
seen under a parent outside the session while its parent still lives is a
new process too (the old one's exit was missed). A background command that
outlives the session stays a member until it exits, so what it runs later is
still the session's.

Records arrive in time order but may come before the Engine's word on the
exec: those that link to nothing yet wait (`link_wait_secs`, bounded in
number) and are tried again when an exec's first pid becomes known. Commands
wait for their exit (`exit_wait_secs`) and for the session's owner
(`owner_wait_secs`) before they become `exec-command` events (`due`).
"""

from __future__ import annotations

import itertools
import posixpath
from collections import deque
from dataclasses import dataclass

from config.exec_sessions import ExecSessionsConfig
from listener import redact
from listener.model.event import Actor, Event
from listener.sessions.events import command_event, overflow_event
from listener.sessions.records import Command, ProcessRecord, SessionInfo

_NS = 1_000_000_000
_ROOT_SLACK_NS = 2 * _NS  # the exec's process may run a little before its Engine event's time
_PIPELINE_NS = _NS  # commands a shell starts within this of each other form a pipeline
_TOGETHER_NS = 5_000_000  # … or within this, even when the first one already ended
_MAX_PIPELINE = 16  # peers named per command
_COMM_BYTES = 15  # the kernel's process name is cut to this
_MAX_RUNTIMES = 4096  # runtime processes remembered (each lives milliseconds)
_INIT_PID_SPAN = 16  # the exec's first process is this close after the runtime's init


@dataclass(slots=True)
class _Member:
    exec_id: str
    ppid: int | None
    since_ns: int
    command: Command | None = None
    name: str | None = None  # what its comm should read: its program's, or its parent's


@dataclass(slots=True)
class _Session:
    exec_id: str
    container_id: str | None
    first_ns: int
    info: SessionInfo | None = None
    kept: int = 0
    dropped: int = 0
    members: int = 0
    joined: bool = False  # a process of it was seen (its records may lag its Engine events)
    ended: bool = False
    last_ns: int = 0


@dataclass(slots=True)
class TrackerStats:
    commands: int = 0
    dropped: int = 0  # over a session's max_commands_per_session
    unlinked_expired: int = 0  # records that never tied to a session (the host's own)
    sessions: int = 0


class SessionTracker:
    """Process records and Engine execs in, `exec-command` events out (`due`, `flush`)."""

    def __init__(
        self,
        config: ExecSessionsConfig,
        host: str,
        redactor: redact.Redactor | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.redactor = redactor
        self.stats = TrackerStats()
        self._members: dict[int, _Member] = {}
        self._runtimes: dict[int, ProcessRecord] = {}
        self._inits: dict[int, int] = {}  # runtime pid -> its init's pid
        self._rooted: dict[str, None] = {}  # execs whose first process is known (oldest first)
        self._roots: dict[int, tuple[str, int]] = {}  # first pid -> (exec id, exec time)
        self._sessions: dict[str, _Session] = {}
        self._held: list[Command] = []
        self._siblings: dict[tuple[str, int | None], list[Command]] = {}  # by (exec, parent)
        self._unlinked: deque[ProcessRecord] = deque()
        self._exit_wait_ns = round(config.exit_wait_secs * _NS)
        self._owner_wait_ns = round(config.owner_wait_secs * _NS)
        self._link_wait_ns = round(config.link_wait_secs * _NS)

    # ------------------------------------------------------------------ inputs

    def add(self, record: ProcessRecord) -> None:
        """One process record, in the audit log's order."""
        if not self._link(record):
            self._unlinked.append(record)
            if len(self._unlinked) > self.config.max_pending_records:
                self._unlinked.popleft()
                self.stats.unlinked_expired += 1

    def open(self, info: SessionInfo) -> None:
        """The Engine started an exec; its owner is known (or known to be unknown)."""
        session = self._session(info.exec_id, info.container.id or None, info.time_ns)
        session.info = info
        if info.root_pid and info.root_pid not in self._members:
            self._roots[info.root_pid] = (info.exec_id, info.time_ns)
            if len(self._roots) > self.config.max_sessions:  # pids never seen (no rules)
                del self._roots[next(iter(self._roots))]
            self._retry_unlinked(info.root_pid)

    def ended(self, exec_id: str) -> None:
        """The exec's first process ended (`exec_die`): what it left running is still followed."""
        session = self._sessions.get(exec_id)
        if session is not None:
            session.ended = True

    # ------------------------------------------------------------------ outputs

    def due(self, now_ns: int) -> list[Event]:
        """The commands ready to be stored at `now_ns` (and notes of sessions that overflowed)."""
        ready, waiting = [], []
        for command in self._held:
            if self._ready(command, now_ns):
                ready.append(command)
            else:
                waiting.append(command)
        self._held = waiting
        events = [self._event(command) for command in ready]
        self._expire_unlinked(now_ns)
        self._forget_siblings(now_ns)
        events += self._close_sessions(now_ns, everything=False)
        return events

    def flush(self) -> list[Event]:
        """Everything held, as it is (at the end of an ingest, or on shutdown)."""
        events = [self._event(command) for command in self._held]
        self._held = []
        self._siblings.clear()
        events += self._close_sessions(0, everything=True)
        return events

    @property
    def held(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------------ linking

    def _link(self, record: ProcessRecord) -> bool:
        if record.kind == "runtime-exec":
            self._runtimes[record.pid] = record
            if len(self._runtimes) > _MAX_RUNTIMES:
                del self._runtimes[next(iter(self._runtimes))]
            return True
        if record.kind == "runtime-init":
            if record.ppid in self._runtimes:
                self._inits[record.ppid] = record.pid
                if len(self._inits) > _MAX_RUNTIMES:
                    del self._inits[next(iter(self._inits))]
            return True
        member = self._current_member(record)
        if record.kind == "exit":
            return self._exit(record, member)
        if member is None:
            member = self._new_member(record)
            if member is None:
                return False
        if record.kind == "exec":
            self._command(member, record)
            member.name = _program(record)[:_COMM_BYTES]
        elif member.name is None:
            member.name = record.comm
        return True

    def _current_member(self, record: ProcessRecord) -> _Member | None:
        """The membership of the record's pid, unless the pid was reused since.

        A member whose parent still lives has no reason to change parents: a record
        of its pid under a parent outside the session is a new process (the old
        one's exit was missed). A member whose parent died was reparented: kept.
        """
        member = self._members.get(record.pid)
        if member is None or record.ppid in (None, member.ppid) or record.ppid in self._members:
            return member
        if member.ppid in self._members:
            self._left(self._members.pop(record.pid))
            return None
        return member

    def _exit(self, record: ProcessRecord, member: _Member | None) -> bool:
        if member is None:  # a subshell of a member, seen only as it ends
            parent = self._members.get(record.ppid) if record.ppid is not None else None
            if parent is None:
                return False
            self._in_process(parent.exec_id, parent.name, record)
            return True
        del self._members[record.pid]
        self._in_process(member.exec_id, member.name, record)
        command = member.command
        if command is not None and command.ended is None and self._in_wait(command, record):
            command.exit_code, command.ended = record.exit_code, "exit"
        self._left(member)
        return True

    def _in_wait(self, command: Command, record: ProcessRecord) -> bool:
        """Whether `record` (its end) came within the command's exit wait.

        A later end is not recorded, whether or not the command is still held: live
        and ingest then store the same event however fast each read the log.
        """
        return record.time_ns <= command.record.time_ns + self._exit_wait_ns

    def _in_process(self, exec_id: str, expected: str | None, record: ProcessRecord) -> None:
        """A program run without an execve: busybox's shell runs many applets in the
        shell's own process (`ls`, `id` …); only the name at exit tells. Its arguments
        are unknown: the command is the name alone, marked `inferred`."""
        if not record.comm or not expected or record.comm == expected:
            return
        member = _Member(exec_id, record.ppid, record.time_ns)
        inferred = ProcessRecord(
            "exec", record.time_ns, record.audit_id, record.pid, ppid=record.ppid,
            argv=(record.comm,), comm=record.comm,
        )  # fmt: skip
        self._command(member, inferred, seen_by_name=True)
        if member.command is not None:
            member.command.exit_code, member.command.ended = record.exit_code, "exit"

    def _new_member(self, record: ProcessRecord) -> _Member | None:
        ppid = record.ppid
        parent = self._members.get(ppid) if ppid is not None else None
        if parent is not None:
            return self._join(record.pid, ppid, parent.exec_id, record.time_ns)
        runtime = self._runtimes.get(ppid) if ppid is not None else None
        if runtime is not None and runtime.exec_id and record.kind == "exec":
            self._session(runtime.exec_id, runtime.container_id, runtime.time_ns)
            return self._join(record.pid, ppid, runtime.exec_id, record.time_ns)
        root = self._roots.get(record.pid)
        if (
            root is not None
            and record.kind == "exec"
            and record.time_ns >= root[1] - _ROOT_SLACK_NS
        ):
            del self._roots[record.pid]
            return self._join(record.pid, ppid, root[0], record.time_ns)
        runtime = self._orphaned_root(record)
        if runtime is not None and runtime.exec_id:
            self._session(runtime.exec_id, runtime.container_id, runtime.time_ns)
            return self._join(record.pid, ppid, runtime.exec_id, record.time_ns)
        return None

    def _orphaned_root(self, record: ProcessRecord) -> ProcessRecord | None:
        """The exec whose first process this is, when the runtime exited before it ran
        (with a terminal it often does): it is then the shim's child, and the runtime's
        init made it a few pids after its own (pids are handed out in order)."""
        if record.kind != "exec" or record.ppid is None:
            return None
        found = [
            runtime
            for runtime in self._runtimes.values()
            if runtime.ppid == record.ppid
            and runtime.exec_id not in self._rooted
            and -_ROOT_SLACK_NS <= record.time_ns - runtime.time_ns <= _ROOT_SLACK_NS
            and 0 < record.pid - self._inits.get(runtime.pid, record.pid) <= _INIT_PID_SPAN
        ]
        return found[0] if len(found) == 1 else None

    def _join(self, pid: int, ppid: int | None, exec_id: str, time_ns: int) -> _Member:
        stale = self._members.get(pid)
        if stale is not None:
            self._left(stale)
        member = self._members[pid] = _Member(exec_id, ppid, time_ns)
        self._rooted[exec_id] = None
        if len(self._rooted) > self.config.max_sessions:
            del self._rooted[next(iter(self._rooted))]
        session = self._sessions.get(exec_id)
        if session is not None:
            session.members += 1
            session.joined = True
        if len(self._members) > self.config.max_processes:
            oldest = next(iter(self._members))
            self._left(self._members.pop(oldest))
        return member

    def _left(self, member: _Member) -> None:
        session = self._sessions.get(member.exec_id)
        if session is not None:
            session.members -= 1

    def _retry_unlinked(self, root_pid: int) -> None:
        """Links what waited, from the root's first record on (the rest cannot link now)."""
        waiting = self._unlinked
        start = next((i for i, r in enumerate(waiting) if r.pid == root_pid), None)
        if start is None:
            return  # its record is yet to come: it links when it does
        self._unlinked = deque(itertools.islice(waiting, start))
        for record in itertools.islice(waiting, start, None):
            if not self._link(record):
                self._unlinked.append(record)

    def _expire_unlinked(self, now_ns: int) -> None:
        unlinked, horizon = self._unlinked, now_ns - self._link_wait_ns
        while unlinked and unlinked[0].time_ns < horizon:
            unlinked.popleft()
            self.stats.unlinked_expired += 1

    # ------------------------------------------------------------------ commands

    def _command(self, member: _Member, record: ProcessRecord, seen_by_name: bool = False) -> None:
        previous = member.command
        if previous is not None and previous.ended is None and self._in_wait(previous, record):
            previous.ended = "exec"
        session = self._session(member.exec_id, None, record.time_ns)
        session.last_ns = max(session.last_ns, record.time_ns)
        if session.kept >= self.config.max_commands_per_session:
            session.dropped += 1
            self.stats.dropped += 1
            member.command = None
            return
        command = Command(record, member.exec_id, session.kept, inferred=seen_by_name)
        session.kept += 1
        if not seen_by_name:
            self._pair_pipeline(command)
        member.command = command
        self._held.append(command)

    def _pair_pipeline(self, command: Command) -> None:
        """Commands one parent runs side by side (`wget -O- … | sh`) name each other.

        Side by side: started within `_PIPELINE_NS` of each other with the earlier
        one still running, or within `_TOGETHER_NS` (a short first stage may end
        before the next one's execve); at most `_MAX_PIPELINE` peers are named.
        """
        record = command.record
        key = (command.exec_id, record.ppid)
        recent = self._siblings.setdefault(key, [])
        horizon, together = record.time_ns - _PIPELINE_NS, record.time_ns - _TOGETHER_NS
        recent[:] = [
            c
            for c in recent
            if c.record.time_ns >= together or (c.ended is None and c.record.time_ns >= horizon)
        ]
        name = _program(record)
        for other in recent[-_MAX_PIPELINE:]:
            if other.record.pid != record.pid:
                other.pipeline.append(name)
                command.pipeline.append(_program(other.record))
        recent.append(command)

    def _forget_siblings(self, now_ns: int) -> None:
        horizon = now_ns - _PIPELINE_NS
        for key in [k for k, v in self._siblings.items() if v[-1].record.time_ns < horizon]:
            del self._siblings[key]

    def _ready(self, command: Command, now_ns: int) -> bool:
        started = command.record.time_ns
        if command.ended is None and now_ns < started + self._exit_wait_ns:
            return False
        session = self._sessions.get(command.exec_id)
        known = session is not None and session.info is not None
        return known or now_ns >= started + self._owner_wait_ns

    def _event(self, command: Command) -> Event:
        session = self._sessions.get(command.exec_id)
        info = session.info if session is not None else None
        container = session.container_id if session is not None else None
        self.stats.commands += 1
        return command_event(
            command,
            info,
            host=self.host,
            container=Actor(id=container or ""),
            max_argv_bytes=self.config.max_argv_bytes,
            redactor=self.redactor,
        )

    # ------------------------------------------------------------------ sessions

    def _session(self, exec_id: str, container_id: str | None, time_ns: int) -> _Session:
        session = self._sessions.get(exec_id)
        if session is None:
            session = self._sessions[exec_id] = _Session(exec_id, container_id, time_ns)
            session.last_ns = time_ns
            self.stats.sessions += 1
        elif container_id and not session.container_id:
            session.container_id = container_id
        return session

    def _close_sessions(self, now_ns: int, *, everything: bool) -> list[Event]:
        """Forgets finished sessions; a session that overflowed gets its note."""
        held = {command.exec_id for command in self._held}
        idle_ns = now_ns - max(self._owner_wait_ns, self._exit_wait_ns, self._link_wait_ns)
        events = []
        for exec_id, session in list(self._sessions.items()):
            done = session.ended and session.joined
            finished = session.members <= 0 and (done or session.last_ns < idle_ns)
            crowded = len(self._sessions) > self.config.max_sessions
            if everything or crowded or (finished and exec_id not in held):
                del self._sessions[exec_id]
                if session.dropped:
                    events.append(self._overflow(session))
        return events

    def _overflow(self, session: _Session) -> Event:
        return overflow_event(
            session.exec_id,
            session.info,
            host=self.host,
            container=Actor(id=session.container_id or ""),
            kept=session.kept,
            dropped=session.dropped,
            limit=self.config.max_commands_per_session,
            time_ns=session.last_ns,
        )


def _program(record: ProcessRecord) -> str:
    name = record.argv[0] if record.argv else (record.exe or "?")
    return posixpath.basename(name)
