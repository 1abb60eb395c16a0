"""auditd as a source: which audit events are kept, what they become, live and from files.

**Kept** are events carrying one of the configured keys (`auditd.keys`, the
CIS 1.1 keys `auditd.cis_keys`, and `auditd.cli_key`). With
`auditd.drop_housekeeping` (the default) the daemon's own work is dropped,
recognized only by what the process cannot choose: no audit login (auid unset:
the daemon was started by init, not by someone who logged in) and an executable
that is a daemon binary by its full path (`auditd.daemon_dirs` with
`auditd.daemon_programs`; runc re-executing itself from a memfd shows exe "/"),
reading or running files, or touching only paths under its data and state
roots (`auditd.daemon_roots`; dockerd's own `docker-untar` helpers, chrooted
into an image layer, too). `comm` and argv[0] are the caller's choice and never
count. A write to a daemon configuration file, unit or binary is never
housekeeping, whoever makes it; writes by anyone else, and writes by the daemon
outside its roots, are always kept. A daemon's relative path (an `openat` on a
directory descriptor) is taken to be in its own trees.

**What they become** (`source="auditd"`, id `natural_id("auditd", host, serial,
time_ns)` where host is the record's `node=` if any, so re-reading a log
stores nothing twice):

* `type="docker-cli"`, action = the subcommand (`run`, `rm`, `compose up` …):
  one per docker CLI execution, with argv, cwd and exe in `attributes`, `who`
  straight from the record (`method="auditd"`), and for run/create the
  `ContainerConfig` the argv asks for (`config`, origin argv). Its `CliCall`
  goes to the `Correlator` that attributes the Engine's events.
  `auditd.cli_events` chooses all calls, only those that can change something,
  or none.
* `type="daemon-file"`, action = the operation (write, create, delete, rename,
  attr, exec, read, link): a watch hit on the daemon's files (`-k docker`),
  `actor.name` the path, every PATH item in `attributes.paths`.
* `type="audit-rule"`, action = op (add_rule, remove_rule …): audit rules with
  these keys changed (someone may be blinding the audit).

Names: ``who.login`` and ``who.user`` come from the ENRICHED fields when the
log has them, else from `auditd.passwd_file` (ids stay numbers when neither
knows them).

**Live** (`AuditLogTail`): follows the log like ``tail -F`` by inode. At the
end of a file whose path now names another inode (auditd rotated it), the old
file is drained and the next one in the rotation chain opened. Every batch the
pipeline writes carries the tail's checkpoint (device, inode, offset, line,
last serial) — the start of the oldest event not yet complete, so a restart
re-reads it whole — through `CheckpointedTrail`; events re-read after a restart
have the ids of stored ones and are not stored again. A checkpoint is checked
against the bytes before its offset, so a file that reuses the inode is not
mistaken for it. Where records may have been lost (the checkpointed file is
gone, the log was truncated), a `source="docktrail"`, `type="audit-log"`,
`action="gap"` event says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import os
import posixpath
import shlex
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from config.errors import InputError, SourceError
from config.models import AuditdConfig, InputConfig
from listener import redact
from listener.argv import DockerCall, container_config, exec_options, parse_docker_argv
from listener.bounds import active_limits, bound_event
from listener.correlate import CliCall, Correlator
from listener.coverage import LiveCoverage, SpanCoverage
from listener.model.event import Actor, Event, Who, natural_id
from listener.sources.auditparse import (
    UNSET_ID,
    AuditAssembler,
    AuditEvent,
    AuditRecord,
    Malformed,
    open_audit_text,
    parse_time_ns,
    rotation_order,
)
from listener.sources.lines import Oversized, bounded_lines
from sinks.base import AppendResult, AsyncLifecycle

log = logging.getLogger(__name__)

_NS = 1_000_000_000
_AT_FDCWD = frozenset({"ffffff9c", "ffffffffffffff9c"})  # -100 as int32 or int64
# dockerd re-executes itself under these names to unpack layers chrooted into its
# data root: their absolute paths are inside the chroot.
_DOCKERD_HELPERS = frozenset({"docker-untar", "docker-applyLayer", "docker-tar",
                              "docker-mountfrom"})  # fmt: skip
_AUID_UNSET = frozenset({"4294967295", "-1", "unset"})
_DAEMON_CONFIG_DIRS = ("/etc/docker/", "/etc/containerd/", "/etc/systemd/system/docker.service.d/",
                       "/etc/systemd/system/containerd.service.d/")  # fmt: skip
_DAEMON_CONFIG_FILES = frozenset({
    "/etc/docker", "/etc/containerd", "/etc/default/docker", "/etc/sysconfig/docker",
    "/etc/docker/daemon.json", "/etc/containerd/config.toml",
})  # fmt: skip
_UNIT_DIRS = ("/etc/systemd/system/", "/lib/systemd/system/", "/usr/lib/systemd/system/")
_DOCKER_CLI_PATHS = frozenset({"/usr/bin/docker", "/usr/local/bin/docker"})
_O_WRITE = 0o1 | 0o2 | 0o100 | 0o1000  # O_WRONLY | O_RDWR | O_CREAT | O_TRUNC

# Syscall numbers by audit arch, for logs without ENRICHED names (x86_64, aarch64).
_SYSCALLS: dict[str, dict[str, str]] = {
    "c000003e": {
        "2": "open", "257": "openat", "437": "openat2", "85": "creat", "76": "truncate",
        "77": "ftruncate", "82": "rename", "264": "renameat", "316": "renameat2",
        "87": "unlink", "263": "unlinkat", "84": "rmdir", "83": "mkdir", "258": "mkdirat",
        "86": "link", "265": "linkat", "88": "symlink", "266": "symlinkat", "90": "chmod",
        "91": "fchmod", "268": "fchmodat", "452": "fchmodat2", "92": "chown", "93": "fchown",
        "94": "lchown", "260": "fchownat", "188": "setxattr", "189": "lsetxattr",
        "190": "fsetxattr", "197": "removexattr", "198": "lremovexattr",
        "199": "fremovexattr", "132": "utime", "235": "utimes", "280": "utimensat",
        "261": "futimesat", "59": "execve", "322": "execveat", "133": "mknod",
        "259": "mknodat", "191": "getxattr", "192": "lgetxattr", "193": "fgetxattr",
        "194": "listxattr", "195": "llistxattr", "196": "flistxattr", "4": "stat", "6": "lstat",
        "21": "access", "89": "readlink", "262": "newfstatat", "267": "readlinkat",
        "269": "faccessat", "332": "statx", "439": "faccessat2",
    },
    "c00000b7": {
        "56": "openat", "437": "openat2", "45": "truncate", "46": "ftruncate",
        "38": "renameat", "276": "renameat2", "35": "unlinkat", "34": "mkdirat",
        "37": "linkat", "36": "symlinkat", "52": "fchmod", "53": "fchmodat", "55": "fchown",
        "54": "fchownat", "5": "setxattr", "6": "lsetxattr", "7": "fsetxattr",
        "14": "removexattr", "15": "lremovexattr", "16": "fremovexattr", "88": "utimensat",
        "221": "execve", "281": "execveat", "33": "mknodat", "8": "getxattr",
        "9": "lgetxattr", "10": "fgetxattr", "11": "listxattr", "12": "llistxattr",
        "13": "flistxattr", "48": "faccessat", "78": "readlinkat", "79": "newfstatat",
        "291": "statx", "439": "faccessat2",
    },
}  # fmt: skip
_OPERATIONS = {
    "execve": "exec", "execveat": "exec", "rename": "rename", "renameat": "rename",
    "renameat2": "rename", "unlink": "delete", "unlinkat": "delete", "rmdir": "delete",
    "mkdir": "create", "mkdirat": "create", "mknod": "create", "mknodat": "create",
    "link": "link", "linkat": "link", "symlink": "link", "symlinkat": "link",
    "truncate": "write", "ftruncate": "write", "creat": "write",
}  # fmt: skip
_ATTR_CALLS = ("chmod", "chown", "setxattr", "removexattr", "utime")
# Calls that only look at a file (`ls -l` reads its extended attributes): reads.
_READ_CALLS = frozenset({
    "getxattr", "lgetxattr", "fgetxattr", "listxattr", "llistxattr", "flistxattr",
    "getxattrat", "listxattrat", "stat", "lstat", "fstat", "newfstatat", "fstatat64",
    "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "read", "pread64",
    "readv", "getdents", "getdents64", "chdir", "fchdir", "statfs", "fstatfs",
})  # fmt: skip
_CLI_PROGRAMS = frozenset({"docker", "docker-compose"})
# Calls whose relative path is relative to a directory descriptor, not the cwd.
_AT_CALLS = frozenset({
    "openat", "openat2", "mkdirat", "mknodat", "unlinkat", "renameat", "renameat2", "linkat",
    "symlinkat", "fchmodat", "fchmodat2", "fchownat", "utimensat", "futimesat", "execveat",
})  # fmt: skip


# --------------------------------------------------------------------------- names


class IdNames:
    """uid/gid -> name from passwd/group files; read again when an id is missing and
    the file changed (users are added while the service runs)."""

    def __init__(self, passwd: Path | None, group: Path | None) -> None:
        self._users = _IdFile(passwd)
        self._groups = _IdFile(group)

    def user(self, uid: int | None) -> str | None:
        return self._users.name(uid)

    def group(self, gid: int | None) -> str | None:
        return self._groups.name(gid)


class _IdFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.names: dict[int, str] = {}
        self.mtime_ns: int | None = None

    def name(self, number: int | None) -> str | None:
        if number is None or self.path is None:
            return None
        found = self.names.get(number)
        if found is None and self._changed():
            self.names = _read_id_file(self.path)
            found = self.names.get(number)
        return found

    def _changed(self) -> bool:
        assert self.path is not None
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            mtime = -1
        changed, self.mtime_ns = mtime != self.mtime_ns, mtime
        return changed


def _read_id_file(path: Path) -> dict[int, str]:
    """`name:x:id:…` lines; the first name of an id wins (as getpwuid does)."""
    names: dict[int, str] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        log.warning("cannot read %s for user names: %s", path, exc.strerror or exc)
        return names
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            names.setdefault(int(parts[2]), parts[0])
    return names


# --------------------------------------------------------------------------- conversion


@dataclass(slots=True)
class Converted:
    """What one kept audit event gives: a trail event, and a CLI call for correlation."""

    event: Event | None
    call: CliCall | None = None


class _ParsedCall(NamedTuple):
    call: DockerCall
    cwd: str | None
    command_line: str


_CALL_CACHE_MAX = 1024


@dataclass(slots=True)
class AuditCounters:
    events: int = 0
    kept: int = 0
    housekeeping: int = 0
    calls: int = 0
    malformed: int = 0


class AuditConverter:
    """Filter (kept or not) and conversion of assembled audit events."""

    def __init__(
        self,
        config: AuditdConfig,
        host: str,
        names: IdNames | None = None,
        limits: InputConfig | None = None,
        redactor: redact.Redactor | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.limits = limits or active_limits()
        self.redactor = redactor or redact.active()
        self.names = names or IdNames(config.passwd_file, config.group_file)
        self.keys = frozenset([*config.keys, *config.cis_keys, config.cli_key])
        self._executables = frozenset(
            posixpath.join(d, p) for d in config.daemon_dirs for p in config.daemon_programs
        )
        self._roots = tuple(r.rstrip("/") for r in config.daemon_roots)
        self.counters = AuditCounters()
        # EXECVE and CWD texts -> (call, cwd, command line): a host runs the same few
        # commands over and over (monitoring loops), parsing them once is enough.
        self._calls: dict[tuple[tuple[str | None, ...], str | None], _ParsedCall] = {}

    def convert_bounded(self, event: AuditEvent) -> Converted | None:
        """`convert`, and the trail event bounded (`listener.bounds`), secrets redacted.

        Raises `InputError` with the event's file and first line when a value
        cannot be stored (the event is then counted malformed, not kept).
        """
        converted = self.convert(event)
        if converted is not None and converted.event is not None:
            # argv was redacted before it was parsed (_parsed_call)
            self.redactor.event(converted.event, argv_done=True)
            try:
                bound_event(converted.event, self.limits, surrogates="escape")
            except InputError as exc:
                self.counters.malformed += 1
                raise InputError(exc.reason, path=event.path, line=event.line) from None
        return converted

    def convert(self, event: AuditEvent) -> Converted | None:
        """None when the event is not kept."""
        self.counters.events += 1
        keys = event.all_keys()
        if self.keys.isdisjoint(keys):
            return None
        if event.first("EXECVE") is not None or _exec_with_title_only(event):
            syscall = event.first("SYSCALL")
            if self._is_cli(event, keys, syscall):
                return self._cli(event, keys, syscall)
        if event.first("CONFIG_CHANGE") is not None:
            return self._kept(event, self._rule_change(event, keys))
        return self._file_event(event, keys)

    def _kept(self, event: AuditEvent, trail_event: Event | None) -> Converted:
        self.counters.kept += 1
        return Converted(trail_event)

    def _is_cli(self, event: AuditEvent, keys: frozenset[str], syscall: AuditRecord | None) -> bool:
        success = _field(event, syscall, "success")  # event.success
        if success is not None and success != "yes":
            return False
        if self.config.cli_key in keys:
            return True
        return posixpath.basename(_field(event, syscall, "exe") or "") in _CLI_PROGRAMS

    # -- docker CLI ---------------------------------------------------------

    def _cli(
        self, event: AuditEvent, keys: frozenset[str], syscall: AuditRecord | None
    ) -> Converted:
        parsed = self._parsed_call(event)
        call = parsed.call
        audit_id = _audit_id(event)
        who = self._who_of(event, syscall, parsed.command_line, audit_id)
        event_id = self._id(event)
        cli = CliCall(event.time_ns, audit_id, call, who, event_id)
        self.counters.kept += 1
        self.counters.calls += 1
        wanted = self.config.cli_events
        if wanted == "none" or (wanted == "changes" and call.read_only):
            return Converted(None, cli)
        return Converted(self._cli_event(event, keys, cli, parsed.cwd), cli)

    def _parsed_call(self, event: AuditEvent) -> _ParsedCall:
        """The docker CLI call of an event, parsed once per distinct EXECVE and CWD text."""
        cwd_record = event.first("CWD")
        argv_texts = tuple(r.text for r in event.records if r.type == "EXECVE")
        if not argv_texts:
            argv_texts = ("PROCTITLE", *(r.text for r in event.records if r.type == "PROCTITLE"))
        key = (argv_texts, None if cwd_record is None else cwd_record.text)
        cacheable = None not in key[0] and (cwd_record is None or key[1] is not None)
        parsed = self._calls.get(key) if cacheable else None
        if parsed is None:
            cwd = event.cwd
            # Secrets go before parsing: the call, its command line and the
            # configuration it asks for are all made of the redacted argv.
            argv = event.argv if event.argv is not None else event.proctitle
            call = parse_docker_argv(self.redactor.argv(argv or []), cwd=cwd)
            parsed = _ParsedCall(call, cwd, call.command_line)
            if cacheable:
                if len(self._calls) >= _CALL_CACHE_MAX:
                    self._calls.clear()
                self._calls[key] = parsed
        return parsed

    def _cli_event(
        self, event: AuditEvent, keys: frozenset[str], cli: CliCall, cwd: str | None
    ) -> Event:
        call = cli.call
        config: dict[str, Any] = {}
        container = container_config(call)
        options = exec_options(call)
        if container is not None:
            config = container.as_event_config()
        elif options is not None:
            config = options.model_dump(mode="json")
        attributes: dict[str, Any] = {
            "argv": list(call.argv),
            "cwd": cwd,
            "exe": event.exe,
            "ppid": event.ppid,
            **self._group(event),
            "keys": sorted(keys),
            "audit_id": cli.audit_id,
            **_argv_source(event),
        }
        if call.errors:
            attributes["argv_errors"] = list(call.errors)
        if call.remote:
            attributes["remote_engine"] = True
        return Event(
            id=cli.event_id,
            time_ns=event.time_ns,
            source="auditd",
            host=event.node or self.host,
            type="docker-cli",
            action=call.command or "help",
            actor=Actor(name=_cli_target(call), image=call.image),
            attributes=attributes,
            who=cli.who,
            config=config,
        )

    # -- files and rules ----------------------------------------------------

    def _file_event(self, event: AuditEvent, keys: frozenset[str]) -> Converted | None:
        syscall = _syscall_name(event)
        operation = _operation(event, syscall)
        paths = _paths(event, syscall)
        if self.config.drop_housekeeping and self._housekeeping(event, operation, paths):
            self.counters.housekeeping += 1
            return None
        kind = "daemon-file" if paths else "audit"
        primary = _primary_path(paths)
        attributes = {
            "paths": paths,
            "syscall": syscall,
            "success": event.success,
            "exit": event.field("exit"),
            "comm": event.comm,
            "cwd": event.cwd,
            **self._group(event),
            "keys": sorted(keys),
            "audit_id": _audit_id(event),
        }
        trail_event = Event(
            id=self._id(event),
            time_ns=event.time_ns,
            source="auditd",
            host=event.node or self.host,
            type=kind,
            action=operation,
            actor=Actor(id=primary or "", name=primary),
            attributes=attributes,
            who=self._who(event, command=_title(event)),
        )
        return self._kept(event, trail_event)

    def _rule_change(self, event: AuditEvent, keys: frozenset[str]) -> Event:
        change = event.first("CONFIG_CHANGE")
        assert change is not None
        fields: dict[str, Any] = {
            k: v for k, v in change.fields.items() if k not in ("auid", "ses", "subj")
        }
        fields["keys"] = sorted(keys)
        fields["audit_id"] = _audit_id(event)
        return Event(
            id=self._id(event),
            time_ns=event.time_ns,
            source="auditd",
            host=event.node or self.host,
            type="audit-rule",
            action=change.fields.get("op", "change"),
            actor=Actor(name=", ".join(sorted(keys))),
            attributes=fields,
            who=self._who(event, command=_title(event)),
        )

    def _housekeeping(self, event: AuditEvent, operation: str, paths: list[dict[str, Any]]) -> bool:
        """The daemon's own work, by what its caller cannot choose (not comm, not argv)."""
        if event.field("auid") not in _AUID_UNSET or not self._daemon_process(event):
            return False  # a login's process, whatever it calls itself
        if operation in ("read", "exec"):
            return True
        names = [p["name"] for p in paths if p["resolved"]]
        helper_root = self._helper_root(event)
        if helper_root is not None:
            # Its paths are inside the root it chrooted into: an image layer or build
            # context holds what it holds (docker:dind has /usr/bin/docker). Only a
            # container's own root (`docker cp`) may reach host files through bind mounts.
            container_root = helper_root.endswith("/merged")
            return not (container_root and any(self._daemon_file(n) for n in names))
        if any(self._daemon_file(name) for name in names):
            return False  # the daemon's configuration and binaries: never housekeeping
        return all(self._under_roots(name) for name in names)

    def _helper_root(self, event: AuditEvent) -> str | None:
        """dockerd re-executed as `docker-untar DEST ROOT` (chrooted into ROOT, under its
        data root): ROOT, else None. argv alone proves nothing; with dockerd's own exe and
        no login it is dockerd's choice."""
        title = event.proctitle
        if not title or title[0] not in _DOCKERD_HELPERS or event.exe not in self._executables:
            return None
        root = title[-1].rstrip("/")
        return root if len(title) >= 3 and self._under_roots(root) else None

    def _daemon_process(self, event: AuditEvent) -> bool:
        exe, comm = event.exe or "", event.comm or ""
        if exe in self._executables:
            return True
        # runc re-executes itself from a memfd: exe "/" and comm "runc:[2:INIT]"
        return exe in ("", "/") and comm.startswith("runc")

    def _daemon_file(self, path: str) -> bool:
        """A configuration file, unit or binary of the daemon."""
        if path in self._executables or path in _DOCKER_CLI_PATHS:
            return True
        if path.startswith(_DAEMON_CONFIG_DIRS) or path in _DAEMON_CONFIG_FILES:
            return True
        base = posixpath.basename(path)
        return path.startswith(_UNIT_DIRS) and base.startswith(("docker.", "containerd."))

    def _under_roots(self, path: str) -> bool:
        return any(path == root or path.startswith(root + "/") for root in self._roots)

    # -- who ------------------------------------------------------------------

    def _who(self, event: AuditEvent, *, command: str | None) -> Who:
        return self._who_of(event, event.first("SYSCALL"), command, _audit_id(event))

    def _who_of(
        self, event: AuditEvent, record: AuditRecord | None, command: str | None, audit_id: str
    ) -> Who:
        if record is None:  # user-space records (CONFIG_CHANGE …): any record that has them
            return self._who_from(event.field, event.enriched_field, audit_id, command)
        return self._who_from(record.fields.get, record.enriched.get, audit_id, command)

    def _who_from(
        self,
        raw: Callable[[str], str | None],
        names: Callable[[str], str | None],
        audit_id: str,
        command: str | None,
    ) -> Who:
        auid = _id_number(raw("auid"))
        euid = _id_number(raw("euid"))
        user = _id_name(names("EUID"))
        if euid is None:
            euid, user = _id_number(raw("uid")), _id_name(names("UID"))
        login = _id_name(names("AUID"))
        tty = raw("tty")
        return Who(
            login=login if login is not None else self.names.user(auid),
            auid=auid,
            user=user if user is not None else self.names.user(euid),
            uid=euid,
            pid=_id_number(raw("pid")),
            command=command,
            method="auditd",
            ses=_id_number(raw("ses")),
            tty=None if tty in (None, "(none)", "?") else tty,
            exe=raw("exe"),
            audit_id=audit_id,
        )

    def _group(self, event: AuditEvent) -> dict[str, Any]:
        """The effective group: ENRICHED name, else the group file."""
        gid, name = _id_number(event.field("egid")), _id_name(event.enriched_field("EGID"))
        if gid is None:
            gid, name = _id_number(event.field("gid")), _id_name(event.enriched_field("GID"))
        return {"gid": gid, "group": name or self.names.group(gid)}

    def _id(self, event: AuditEvent) -> str:
        return natural_id("auditd", event.node or self.host, event.serial, event.time_ns)


def _exec_with_title_only(event: AuditEvent) -> bool:
    """An exec logged without EXECVE (rules that drop it): PROCTITLE has the argv."""
    return event.first("PROCTITLE") is not None and _syscall_name(event) in _EXEC_CALLS


_EXEC_CALLS = frozenset({"execve", "execveat"})
_PROCTITLE_MAX = 128  # bytes the kernel keeps of a command line in PROCTITLE


def _argv_source(event: AuditEvent) -> dict[str, Any]:
    """Which record gave argv; PROCTITLE's may be cut by the kernel."""
    if event.first("EXECVE") is not None:
        return {"argv_source": "EXECVE"}
    title = event.proctitle or []
    cut = len("\0".join(title).encode("utf-8", "surrogateescape")) >= _PROCTITLE_MAX - 1
    return {"argv_source": "PROCTITLE", "argv_may_be_cut": cut}


def _field(event: AuditEvent, syscall: AuditRecord | None, name: str) -> str | None:
    """``event.field(name)`` when its SYSCALL record is at hand."""
    if syscall is not None and (value := syscall.get(name)) is not None:
        return value
    return event.field(name)


def _id_number(value: str | None) -> int | None:
    """An id field as int; None when absent, garbled, unset ((u32)-1) or beyond 64 bits."""
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return None if number == UNSET_ID or number >= 1 << 63 else number


def _id_name(value: str | None) -> str | None:
    """An ENRICHED name; auditd writes "unset" and "unknown(N)" when it has none."""
    if value is None or value in ("unset", "?", "") or value.startswith("unknown("):
        return None
    return value


def _audit_id(event: AuditEvent) -> str:
    return f"{event.node} {event.id}" if event.node else event.id


def _keys(event: AuditEvent) -> frozenset[str]:
    """Keys of every record (a CONFIG_CHANGE carries its key, its SYSCALL none)."""
    return event.all_keys()


def _title(event: AuditEvent) -> str | None:
    title = event.proctitle
    return shlex.join(title) if title else event.comm


def _cli_target(call: Any) -> str | None:
    if call.command == "import":  # `import FILE|URL|- [REPOSITORY[:TAG]]`: the image made
        return str(call.image) if call.image else None
    if call.name:
        return str(call.name)
    if call.compose is not None:
        return str(call.compose.project) if call.compose.project else None
    return str(call.args[0]) if call.args else None


def _syscall_name(event: AuditEvent) -> str:
    name = event.enriched_field("SYSCALL")
    if name:
        return name
    number = event.field("syscall") or "?"
    return _SYSCALLS.get(event.field("arch") or "", {}).get(number, f"syscall {number}")


def _operation(event: AuditEvent, syscall: str) -> str:
    created = any(p.get("nametype") == "CREATE" for p in event.paths)
    if syscall in ("open", "openat", "openat2"):
        flags = event.field("a1" if syscall == "open" else "a2") or ""
        if syscall == "openat2" or not flags:
            return "create" if created else "open"
        try:
            writes = int(flags, 16) & _O_WRITE
        except ValueError:
            return "open"
        if not writes:
            return "read"
        return "create" if created else "write"
    operation = _OPERATIONS.get(syscall)
    if operation is not None:
        return operation
    if syscall in _READ_CALLS:
        return "read"
    if any(part in syscall for part in _ATTR_CALLS):
        return "attr"
    return syscall


def _paths(event: AuditEvent, syscall: str) -> list[dict[str, Any]]:
    """PATH items; `resolved` is False for a name relative to a directory descriptor
    (the kernel then logs the PARENT as "/", which means nothing either)."""
    cwd = event.cwd or ""
    records = [
        r.fields for r in event.all("PATH") if r.fields.get("name", "") not in ("", "(null)")
    ]
    dirfd = syscall in _AT_CALLS and event.field("a0") not in _AT_FDCWD
    dirfd = dirfd and any(not f["name"].startswith("/") for f in records)
    items = []
    for fields in records:
        name = fields["name"]
        resolved = not dirfd and (name.startswith("/") or cwd.startswith("/"))
        if resolved and not name.startswith("/"):
            name = posixpath.normpath(posixpath.join(cwd, name))
        items.append(
            {
                "name": name,
                "resolved": resolved,
                "nametype": fields.get("nametype"),
                "inode": fields.get("inode"),
                "mode": fields.get("mode"),
                "ouid": fields.get("ouid"),
            }
        )
    return items


def _primary_path(paths: list[dict[str, Any]]) -> str | None:
    """The object of the operation: the first item that is not a parent directory."""
    for item in paths:
        if item["nametype"] != "PARENT":
            return str(item["name"])
    return str(paths[0]["name"]) if paths else None


def _malformed_error(
    bad: Malformed, path: str | None = None, line: int | None = None
) -> InputError:
    where = path if path is not None else bad.path
    return InputError(bad.reason, path=where, line=line if line is not None else bad.line)


# --------------------------------------------------------------------------- files


_FOREVER = 1 << 62


class AuditLogFiles:
    """Captured audit logs for `ingest`: kept events in (near) time order.

    Files are read oldest first (`rotation_order`) through one assembler, so an
    event cut by a rotation is joined again. `watermark_ns` says how far the
    reading got: every audit event older than it has been yielded (auditd's
    event timeout, `event_timeout_secs`, bounds how late a record may come).
    Bad lines are collected in `malformed` as `InputError`s with file and line.
    """

    def __init__(
        self,
        paths: Iterable[Path],
        converter: AuditConverter,
        *,
        window_secs: float = 2.0,
        max_line: int | None = None,
    ) -> None:
        self.paths = rotation_order(paths)
        self.max_line = max_line or active_limits().max_line_bytes
        self.converter = converter
        self.window_ns = round(window_secs * _NS)
        self.watermark_ns = -1
        self.malformed: list[InputError] = []
        self.records = 0
        self.span = SpanCoverage(converter.host)  # what attribution can rely on

    def __iter__(self) -> Iterator[Converted]:
        assembler = AuditAssembler(None, self.window_ns / _NS, self.max_line)
        for path in self.paths:
            assembler.path = str(path)
            yield from self._file(path, assembler)
        yield from self._converted(assembler.flush_all())
        self.records = assembler.records
        self.watermark_ns = _FOREVER

    def _file(self, path: Path, assembler: AuditAssembler) -> Iterator[Converted]:
        lineno = 0
        try:
            with open_audit_text(path) as stream:
                for block in bounded_lines(stream, self.max_line):
                    for line in block:
                        lineno += 1
                        if isinstance(line, Oversized):
                            assembler.skip_oversized(lineno, line)
                            self._collect(assembler)
                            continue
                        self.watermark_ns = assembler.newest_ns - self.window_ns
                        closed = assembler.feed(line, lineno)
                        if assembler.malformed:
                            self._collect(assembler)
                        if closed:
                            yield from self._converted(closed)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            reason = f"compressed data is damaged: {exc}"
            self.malformed.append(InputError(reason, path=str(path), line=lineno + 1))
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        self._collect(assembler)

    def _collect(self, assembler: AuditAssembler) -> None:
        for bad in assembler.drain_malformed():
            self.malformed.append(_malformed_error(bad))
            self.converter.counters.malformed += 1

    def _converted(self, events: Iterable[AuditEvent]) -> Iterator[Converted]:
        for event in events:
            self.span.add(event.time_ns, event.node)
            try:
                converted = self.converter.convert_bounded(event)
            except InputError as exc:
                self.malformed.append(exc)
                continue
            if converted is not None:
                yield converted


# --------------------------------------------------------------------------- live


class _FileId(NamedTuple):
    dev: int
    ino: int
    path: str


class _Batch:
    """Consecutive complete lines of one file, as one read returned them."""

    __slots__ = ("ascii", "file", "lines", "number", "start")

    def __init__(self, file: _FileId, start: int, number: int, lines: list[str], ascii: bool):
        self.file = file
        self.start = start  # byte offset of lines[0] in its file
        self.number = number  # line number of lines[0] in its file (1-based)
        self.lines = lines  # decoded (surrogateescape), without their "\n"
        self.ascii = ascii  # then characters are bytes

    def offset(self, index: int) -> int:
        """Byte offset of lines[index] in the file (worked out only for a checkpoint)."""
        before = self.lines[:index]
        if self.ascii:
            return self.start + sum(map(len, before)) + index
        encoded = (
            len(line)
            if type(line) is _SkippedLine
            else len(line.encode("utf-8", "surrogateescape"))
            for line in before
        )
        return self.start + sum(encoded) + index


class _SkippedLine(str):
    """A line longer than `input.max_line_bytes`, skipped unread by the live tail.

    Its text is empty but `len()` is the line's size in bytes: byte offsets of
    the lines after it stay right, and the assembler, which refuses lines
    longer than its cap, reports it as one malformed line with that size.
    """

    size: int

    def __new__(cls, size: int) -> _SkippedLine:
        line = super().__new__(cls, "")
        line.size = size
        return line

    def __len__(self) -> int:
        return self.size


# Lines lo..hi-1 of a batch; and, once fed, the global line number of lines[lo].
_Span = tuple[_Batch, int, int]
_FedSpan = tuple[int, _Batch, int, int]


class _Follower:
    """`tail -F` by inode over one log path and its rotated names (path.1, path.2 …)."""

    def __init__(self, path: Path, chunk: int = 1 << 20, max_line: int | None = None) -> None:
        self.path = path
        self.chunk = chunk
        self.max_line = max_line or active_limits().max_line_bytes
        self._skipped = -1  # bytes so far of a line too long to hold, else -1
        self.fd: int | None = None
        self.file: _FileId | None = None
        self.offset = 0  # after the last complete line handed out
        self.line = 0  # lines handed out from this file
        self._rest = b""
        self.gap: str | None = None  # why records may have been missed, once

    # -- opening -----------------------------------------------------------

    def open(self, checkpoint: Mapping[str, Any] | None, start_at: str) -> None:
        if checkpoint and self._resume(checkpoint):
            return
        if checkpoint:
            oldest = self._chain()
            self.gap = (
                f"checkpointed audit log (inode {checkpoint.get('ino')}, "
                f"{checkpoint.get('path')}) is gone: reading from the oldest log kept"
            )
            if oldest:
                self._open_file(oldest[0], 0, 0)
            return
        if not self.path.exists():
            return  # opened from its start when it appears
        size = self.path.stat().st_size
        if start_at == "end":
            self._open_file(self._id_of(self.path), size, _count_lines(self.path, size))
        else:
            self._open_file(self._id_of(self.path), 0, 0)

    def _resume(self, checkpoint: Mapping[str, Any]) -> bool:
        want = (checkpoint.get("dev"), checkpoint.get("ino"))
        offset = int(checkpoint.get("offset", 0))
        for file in self._chain():
            if (file.dev, file.ino) != want:
                continue
            before = checkpoint.get("before")  # None: not known when it was written
            if before is not None and _fingerprint(file.path, offset) != before:
                return False  # the inode was reused for another file
            self._open_file(file, offset, int(checkpoint.get("line", 0)))
            return True
        return False

    def fingerprint(self, file: _FileId, offset: int) -> str | None:
        """Of the bytes before `offset` in `file`, if it is the one open (else None)."""
        if self.fd is None or self.file != file:
            return None
        return _digest(os.pread(self.fd, _FINGERPRINT, max(0, offset - _FINGERPRINT)), offset)

    def _chain(self) -> list[_FileId]:
        """The log and its rotated copies (not compressed ones), oldest first."""
        names = [self.path, *self.path.parent.glob(self.path.name + ".*")]
        found = []
        for name in rotation_order(names):
            if name.suffix == ".gz":
                continue
            with contextlib.suppress(OSError):
                found.append(self._id_of(name))
        return found

    @staticmethod
    def _id_of(path: Path) -> _FileId:
        st = path.stat()
        return _FileId(st.st_dev, st.st_ino, str(path))

    def _open_file(self, file: _FileId, offset: int, line: int) -> None:
        self.close()
        fd = os.open(file.path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        self.fd, self.file = fd, _FileId(st.st_dev, st.st_ino, file.path)
        self.offset, self.line, self._rest, self._skipped = offset, line, b"", -1
        os.lseek(fd, offset, os.SEEK_SET)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    # -- reading -----------------------------------------------------------

    def read(self) -> tuple[_Batch | None, bool]:
        """Complete new lines, and whether the end of the log was reached."""
        if self.fd is None:
            if self.path.exists():
                with contextlib.suppress(OSError):
                    self._open_file(self._id_of(self.path), 0, 0)
            return None, True
        data = os.read(self.fd, self.chunk)
        if data:
            return self._lines(data), len(data) < self.chunk
        if self._rotated():
            return self._switch(), False
        self._check_truncated()
        return None, True

    def _lines(self, data: bytes, final: bool = False) -> _Batch | None:
        """Split off complete lines (`final`: the unterminated rest too, at a rotation).

        The whole block is decoded and split at once (surrogateescape maps bytes
        one to one and never joins a byte with a following newline, so this is
        what decoding line by line gives); byte offsets are worked out only when
        a checkpoint needs one.
        """
        skipped: list[str] = []
        skipped_bytes = 0
        if self._skipped >= 0:  # the rest of a line too long to hold: drop it unread
            end = data.find(b"\n")
            if end < 0 and not final:
                self._skipped += len(data)
                return None
            size = self._skipped + (len(data) if end < 0 else end)
            skipped, skipped_bytes = [_SkippedLine(size)], size + (end >= 0)
            data, self._skipped = (b"" if end < 0 else data[end + 1 :]), -1
        buffer = self._rest + data
        cut = len(buffer) if final else buffer.rfind(b"\n") + 1
        self._rest = buffer[cut:]
        if len(self._rest) > self.max_line:
            self._skipped, self._rest = len(self._rest), b""
        if cut == 0 and not skipped:
            return None
        body = buffer[:cut]
        lines = body.decode("utf-8", "surrogateescape").split("\n") if cut else [""]
        if body.endswith(b"\n") or not cut:
            lines.pop()  # the empty piece after the last newline
        assert self.file is not None
        batch = _Batch(self.file, self.offset, self.line + 1, skipped + lines, body.isascii())
        self.offset += skipped_bytes + cut
        self.line += len(batch.lines)
        return batch

    def _rotated(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False  # mid-rotation: the new file is not there yet
        assert self.file is not None
        return (st.st_dev, st.st_ino) != (self.file.dev, self.file.ino)

    def _switch(self) -> _Batch | None:
        """Our file was rotated away and is complete: hand out its tail, open the next."""
        tail = self._lines(b"", final=True) if self._rest or self._skipped >= 0 else None
        assert self.file is not None
        chain = self._chain()
        ids = [(f.dev, f.ino) for f in chain]
        here = (self.file.dev, self.file.ino)
        if here in ids and ids.index(here) + 1 < len(chain):
            self._open_file(chain[ids.index(here) + 1], 0, 0)
        elif self.path.exists():
            if here not in ids:
                self.gap = f"{self.file.path} vanished while being read"
            self._open_file(self._id_of(self.path), 0, 0)
        return tail

    def _check_truncated(self) -> None:
        assert self.fd is not None
        if os.fstat(self.fd).st_size < self.offset:  # copytruncate
            assert self.file is not None
            self.gap = f"{self.file.path} was truncated"
            self._open_file(self.file, 0, 0)


def _count_lines(path: Path, size: int) -> int:
    count = 0
    with open(path, "rb") as stream:
        while stream.tell() < size:
            block = stream.read(min(1 << 20, size - stream.tell()))
            if not block:
                break
            count += block.count(b"\n")
    return count


_FINGERPRINT = 64  # bytes before a checkpoint's offset that identify the file


def _fingerprint(path: str, offset: int) -> str | None:
    """The digest `_Follower.fingerprint` stored, computed on `path`; "" when unreadable."""
    try:
        with open(path, "rb") as stream:
            if os.fstat(stream.fileno()).st_size < offset:
                return ""
            start = max(0, offset - _FINGERPRINT)
            stream.seek(start)
            return _digest(stream.read(offset - start), offset)
    except OSError:
        return ""


def _digest(data: bytes, offset: int) -> str | None:
    """A file reused under the same inode will not have these bytes right there."""
    if offset == 0:
        return None
    if not data.endswith(b"\n"):
        return ""  # not a line boundary: never matches a stored fingerprint
    return hashlib.sha256(data).hexdigest()[:16]


def _stamp_of(text: str) -> str | None:
    start = text.find("msg=audit(")
    end = text.find("):", start)
    return text[start + 10 : end] if start >= 0 and end > start else None


@dataclass(slots=True)
class _Cycle:
    converted: list[Converted] = field(default_factory=list)
    malformed: list[InputError] = field(default_factory=list)
    checkpoint: dict[str, Any] | None = None
    watermark_ns: int = -1
    idle: bool = False
    gap: str | None = None
    open: bool = False  # the log is open: the records read cover the time read through
    auditing: str | None = None  # "stopped"/"started": auditd or its CLI rule went or came


class _LiveReader:
    """One read cycle of the live tail (runs in a worker thread)."""

    def __init__(self, config: AuditdConfig, converter: AuditConverter) -> None:
        # A cancelled asyncio.to_thread does not stop its thread: close() waits for
        # the cycle in progress before the file descriptor goes away.
        self._lock = threading.Lock()
        self.follower = _Follower(config.log_file)
        self.converter = converter
        self.assembler = AuditAssembler(
            str(config.log_file), config.event_timeout_secs, active_limits().max_line_bytes
        )
        self.lag_ns = round(config.audit_lag_secs * _NS)
        self.busy_grace_ns = 200_000_000  # interleaved records of one event come within this
        self._held: list[_Span] = []  # the last event's lines, not fed yet
        self._empty_reads = 0
        self._fed: deque[_FedSpan] = deque()  # fed since the oldest open event began
        self._global = 0  # lines fed so far: the assembler's line numbers
        self._serial = 0
        self._time_ns = 0

    def cycle(self) -> _Cycle:
        with self._lock:
            return self._cycle()

    def _cycle(self) -> _Cycle:
        started = time.time_ns()
        batch, at_eof = self.follower.read()
        closed: list[AuditEvent] = []
        if batch is not None:
            # A read that reached the end counts as the first quiet look: the
            # cycle sleeps a poll interval instead of reading again at once (an
            # empty read costs a whole cycle), and an event held back is still
            # fed after one quiet interval, as before.
            self._empty_reads = 1 if at_eof else 0
            pending = [*self._held, (batch, 0, len(batch.lines))]
            ready, self._held = _hold_last_event(pending)
            closed += self._feed(ready)
            closed += self.assembler.flush(self.assembler.newest_ns - self.busy_grace_ns)
        else:
            # Quiet for a whole poll interval (two empty reads in a row): whatever is
            # open or held back is complete, auditd writes an event's records at once.
            self._empty_reads += 1
            if self._empty_reads >= 2:
                closed += self._feed(self._held)
                self._held = []
                closed += self.assembler.flush_all()
        result = _Cycle(idle=at_eof, gap=self.follower.gap, open=self.follower.fd is not None)
        self.follower.gap = None
        result.malformed = self._malformed()
        convert, converted = self.converter.convert_bounded, result.converted
        result.auditing = _auditing_change(closed, self.converter.config.cli_key)
        for event in closed:
            try:
                item = convert(event)
            except InputError as exc:
                result.malformed.append(exc)
                continue
            if item is not None:
                converted.append(item)
        if closed:
            self._serial, self._time_ns = closed[-1].serial, closed[-1].time_ns
        result.checkpoint = self._checkpoint()
        result.watermark_ns = self._watermark(started, result.idle)
        return result

    def _feed(self, spans: list[_Span]) -> list[AuditEvent]:
        closed: list[AuditEvent] = []
        feed_lines, fed = self.assembler.feed_lines, self._fed
        for batch, lo, hi in spans:
            if lo < hi:
                fed.append((self._global + 1, batch, lo, hi))
                closed += feed_lines(batch.lines[lo:hi], self._global + 1)
                self._global += hi - lo
        return closed

    def _malformed(self) -> list[InputError]:
        if not self.assembler.malformed:
            return []
        errors = []
        for bad in self.assembler.drain_malformed():
            for first, batch, lo, hi in self._fed:
                if first <= bad.line < first + hi - lo:
                    number = batch.number + lo + bad.line - first
                    errors.append(_malformed_error(bad, batch.file.path, number))
                    break
            else:
                errors.append(_malformed_error(bad))
        self.converter.counters.malformed += len(errors)
        return errors

    def _checkpoint(self) -> dict[str, Any] | None:
        """Where a restart must begin so that no event is lost: the oldest incomplete one."""
        oldest = self.assembler.oldest_open_line
        fed = self._fed
        if oldest is not None:
            while fed and fed[0][0] + fed[0][3] - fed[0][2] <= oldest:
                fed.popleft()  # every line of it is before the oldest open event
            if fed:
                first, batch, lo, hi = fed[0]
                if first < oldest:
                    lo, first = lo + oldest - first, oldest
                    fed[0] = (first, batch, lo, hi)
                return self._position(batch.file, batch.offset(lo), batch.number + lo - 1)
        fed.clear()
        if self._held:
            batch, lo, _ = self._held[0]
            return self._position(batch.file, batch.offset(lo), batch.number + lo - 1)
        follower = self.follower
        if follower.file is None:
            return None
        return self._position(follower.file, follower.offset, follower.line)

    def _position(self, file: _FileId, offset: int, line: int) -> dict[str, Any]:
        return {
            "dev": file.dev,
            "ino": file.ino,
            "offset": offset,
            "line": line,
            "before": self.follower.fingerprint(file, offset),
            "path": file.path,
            "serial": self._serial,
            "time_ns": self._time_ns,
        }

    def _watermark(self, started_ns: int, idle: bool) -> int:
        """Audit time before which every record has been read and its event emitted."""
        if idle and not self._held and self.assembler.open_events == 0:
            return started_ns - self.lag_ns
        bounds = [started_ns - self.lag_ns]
        oldest = self.assembler.oldest_open_ns
        if oldest is not None:
            bounds.append(oldest - 1)
        if self._held:
            batch, lo, _ = self._held[0]
            held = _stamp_time(batch.lines[lo])
            if held is not None:
                bounds.append(held - 1)
        return min(bounds)

    def close(self) -> None:
        with self._lock:
            self.follower.close()


def _auditing_change(events: Sequence[AuditEvent], cli_key: str) -> str | None:
    """ "stopped" when auditd's log says it stopped or was disabled, or that the docker CLI
    rule was removed (nothing more is recorded); "started" when it says the opposite."""
    change = None
    for event in events:
        kind = event.records[0].type
        if kind in ("DAEMON_END", "DAEMON_ABORT"):
            change = "stopped"
        elif kind in ("DAEMON_START", "DAEMON_RESUME"):
            change = "started"
        elif kind == "CONFIG_CHANGE":
            change = _config_change(event.records[0].fields, cli_key) or change
    return change


def _config_change(fields: Mapping[str, str], cli_key: str) -> str | None:
    enabled = fields.get("audit_enabled")
    if enabled is not None:
        return "stopped" if enabled == "0" else "started"
    if fields.get("key") == cli_key:
        return {"remove_rule": "stopped", "add_rule": "started"}.get(fields.get("op", ""))
    return None


def _hold_last_event(spans: list[_Span]) -> tuple[list[_Span], list[_Span]]:
    """Split off the trailing run of lines of the last record's event: ``(ready, held)``.

    Those lines are held back until more data or an idle poll: the rest of
    their event may still be on its way.
    """
    batch, lo, hi = spans[-1]
    stamp = _stamp_of(batch.lines[hi - 1]) if hi > lo else None
    if stamp is None:
        return spans, []
    for index in range(len(spans) - 1, -1, -1):
        batch, lo, hi = spans[index]
        lines, cut = batch.lines, hi
        while cut > lo and _stamp_of(lines[cut - 1]) == stamp:
            cut -= 1
        if cut > lo or index == 0:  # the run starts in this span
            ready = [*spans[:index], (batch, lo, cut)]
            held = [(batch, cut, hi)] if cut < hi else []
            return ready, held + spans[index + 1 :]
    raise AssertionError("unreachable")


def _stamp_time(text: str) -> int | None:
    stamp = _stamp_of(text)
    return parse_time_ns(stamp.partition(":")[0]) if stamp else None


_END = object()
_RETRY_SECS = 5.0


class AuditLogTail(AsyncLifecycle):
    """Live source: follows the audit log, yields kept events, feeds the correlator.

    ``async with AuditLogTail(config, host, correlator=c, checkpoint=cp) as tail:
    async for event in tail: await pipeline.put(event)``. Every event handed out
    must be put into the pipeline, in order: the checkpoint of a written batch
    (`state_for`) is only as far as the events it contains.
    """

    name = "auditd"

    def __init__(
        self,
        config: AuditdConfig,
        host: str,
        *,
        correlator: Correlator | None = None,
        checkpoint: Mapping[str, Any] | None = None,
        names: IdNames | None = None,
        coverage: LiveCoverage | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.correlator = correlator
        self.coverage = coverage
        self.converter = AuditConverter(config, host, names)
        self._checkpoint = dict(checkpoint) if checkpoint else None
        self._reader = _LiveReader(config, self.converter)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=100_000)
        self._task: asyncio.Task[None] | None = None
        self._handed: deque[tuple[str | None, dict[str, Any] | None]] = deque()
        self.malformed = 0
        self.failed: BaseException | None = None

    def queue_depth(self) -> int:
        """Audit events read and not yet handed on."""
        return self._queue.qsize()

    async def start(self) -> None:
        """Opens the log (a missing or unreadable one is retried: it never stops `run`)."""
        if self._task is not None:
            return
        try:
            await asyncio.to_thread(
                self._reader.follower.open, self._checkpoint, self.config.start_at
            )
        except OSError as exc:
            self._failing(exc)
        self._task = asyncio.create_task(self._pump(), name="auditd-tail")

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.to_thread(self._reader.close)
        if self.correlator is not None:
            self.correlator.close()
        while self._queue.full():  # not handed out, not checkpointed: read again next time
            self._queue.get_nowait()
        self._queue.put_nowait(_END)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        handed = self._handed
        while True:
            item = await self._queue.get()
            if item is _END:
                self._queue.put_nowait(_END)  # for other iterators
                return
            event, checkpoint = item
            if event is None:
                if handed and handed[-1][0] is None:
                    handed.pop()  # consecutive checkpoints: the newer one says it all
                handed.append((None, checkpoint))
                continue
            handed.append((event.id, None))
            yield event

    def state_for(self, batch: Sequence[Event]) -> dict[str, Any] | None:
        """The checkpoint to commit with `batch`: as far as every handed-out event is in it."""
        ids = {e.id for e in batch if e.source == "auditd"}
        handed, state = self._handed, None
        while handed:
            event_id, checkpoint = handed[0]
            if event_id is not None and event_id not in ids:
                break
            handed.popleft()
            if checkpoint is not None:
                state = checkpoint
        return state

    async def _pump(self) -> None:
        poll = self.config.poll_interval_secs
        while True:
            try:
                cycle = await asyncio.to_thread(self._reader.cycle)
            except Exception as exc:  # must not stop the service, nor hold Docker events
                self._failing(exc)
                await asyncio.sleep(_RETRY_SECS)
                continue
            self.failed = None
            await self._deliver(cycle)
            if cycle.idle:
                await asyncio.sleep(poll)

    def _failing(self, exc: Exception) -> None:
        if repr(exc) != repr(self.failed):
            log.error("cannot read the audit log %s: %s", self.config.log_file, exc)
        self.failed = exc
        if self.coverage is not None:
            self.coverage.lost(f"cannot read the audit log {self.config.log_file}: {exc}")
        if self.correlator is not None:  # nothing comes until the retry: do not make events wait
            self.correlator.advance(time.time_ns() + round((_RETRY_SECS + 1) * _NS))

    async def _deliver(self, cycle: _Cycle) -> None:
        for error in cycle.malformed:
            self.malformed += 1
            log.warning("skipped: %s", error)
        if cycle.gap is not None:
            await self._queue.put((self._gap_event(cycle.gap), None))
        for item in cycle.converted:
            if item.call is not None and self.correlator is not None:
                self.correlator.add_call(item.call)
            if item.event is not None:
                await self._queue.put((item.event, None))
        if cycle.checkpoint is not None:
            await self._queue.put((None, cycle.checkpoint))
        if self.correlator is not None:
            self.correlator.advance(cycle.watermark_ns)
        self._cover(cycle)

    def _cover(self, cycle: _Cycle) -> None:
        coverage = self.coverage
        if coverage is None:
            return
        if not cycle.open:
            coverage.lost(f"audit log {self.config.log_file} does not exist or is not readable")
            return
        if cycle.auditing == "stopped":
            coverage.halt("auditd stopped, or its docker CLI rule was removed (its log says so)")
        elif cycle.auditing == "started":
            coverage.resume()
        # A first open resumes at the checkpoint: records from its time on are read again.
        first = coverage.read_through_ns < 0
        resumed = self._checkpoint.get("time_ns") if self._checkpoint and first else None
        since = resumed if isinstance(resumed, int) and resumed > 0 else None
        coverage.reading(since_ns=since, read_through_ns=cycle.watermark_ns)
        if cycle.gap is not None:
            coverage.broken()  # records may be missing up to here

    def _gap_event(self, reason: str) -> Event:
        log.warning("audit records may be missing: %s", reason)
        now = time.time_ns()
        return Event(
            id=natural_id("docktrail", "audit-log", "gap", self.host, now),
            time_ns=now,
            source="docktrail",
            host=self.host,
            type="audit-log",
            action="gap",
            attributes={"reason": reason, "log_file": str(self.config.log_file)},
        )


# --------------------------------------------------------------------------- checkpoints


class StatefulTrail(Protocol):
    """What `CheckpointedTrail` needs from a trail sink: state committed with the batch."""

    async def write(
        self, batch: Sequence[Event], *, source_state: Mapping[str, Mapping[str, Any]] | None = None
    ) -> AppendResult: ...


class CheckpointSource(Protocol):
    name: str

    def state_for(self, batch: Sequence[Event]) -> dict[str, Any] | None: ...


class CheckpointedTrail(AsyncLifecycle):
    """A TrailSink wrapper: every write also commits the sources' checkpoints for that batch.

    The checkpoints go into the same transaction as the events (the trail's
    `write(batch, source_state=…)`), so after a crash a source resumes exactly
    where the stored events end.
    """

    def __init__(self, trail: StatefulTrail, sources: Sequence[CheckpointSource]) -> None:
        self.trail = trail
        self.sources = list(sources)

    async def write(self, batch: Sequence[Event]) -> AppendResult:
        state = {}
        for source in self.sources:
            checkpoint = source.state_for(batch)
            if checkpoint is not None:
                state[source.name] = checkpoint
        if state:
            return await self.trail.write(batch, source_state=state)
        return await self.trail.write(batch)

    async def start(self) -> None:
        start = getattr(self.trail, "start", None)
        if start is not None:
            await start()

    async def aclose(self) -> None:
        close = getattr(self.trail, "aclose", None)
        if close is not None:
            await close()
