"""Audit events to trail events: what is kept, what housekeeping is dropped, and what
each kept event becomes (docker CLI calls, daemon-file hits, audit-rule changes).
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from config.errors import InputError
from config.models import AuditdConfig, InputConfig
from listener import redact
from listener.argv import parse_docker_argv
from listener.bounds import active_limits, bound_event, check_time_ns, within_bounds
from listener.correlate import CliCall
from listener.model.event import Actor, Event, Who, time_ordered_id
from listener.sessions import ProcessRecord
from listener.sources.auditd.calls import FrozenConfig, ParsedCall, call_config
from listener.sources.auditd.fields import (
    AUID_UNSET,
    CLI_PROGRAMS,
    DAEMON_CONFIG_DIRS,
    DAEMON_CONFIG_FILES,
    DOCKER_CLI_PATHS,
    DOCKERD_HELPERS,
    UNIT_DIRS,
    argv_source_of,
    cli_target,
    event_audit_id,
    event_field,
    event_operation,
    event_paths,
    event_title,
    exec_with_title_only,
    id_name,
    id_number,
    primary_path,
    syscall_name,
)
from listener.sources.auditd.names import IdNames
from listener.sources.auditd.processes import process_record
from listener.sources.auditd.templates import CliTemplates, Pending, template_key
from listener.sources.auditd.unvalidated import cli_event_model, who_model
from listener.sources.auditparse import (
    AuditEvent,
    AuditRecord,
)
from listener.sources.auditparse.fields import as_id


@dataclass(slots=True)
class Converted:
    """What one kept audit event gives: a trail event, and a CLI call for correlation."""

    event: Event | None
    call: CliCall | None = None
    process: ProcessRecord | None = None  # for exec sessions (auditd.exec_key)
    settled: bool = False  # `event` is redacted and bounded already (made from a template)
    template: Pending | None = None  # the template to make of it once it is settled


_CALL_CACHE_MAX = 1024
_Lookup = Callable[[str], str | None]


def _first_in(values: dict[str, str], otherwise: _Lookup) -> _Lookup:
    """A look-up in `values` (the SYSCALL record's), else `otherwise` (the event's)."""

    def lookup(name: str) -> str | None:
        value = values.get(name)
        return value if value is not None else otherwise(name)

    return lookup


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
        self._calls: dict[tuple[tuple[str | None, ...], str | None], ParsedCall] = {}
        self.templates = CliTemplates()

    def convert_bounded(self, event: AuditEvent) -> Converted | None:
        """`convert`, and the trail event bounded (`listener.bounds`), secrets redacted.

        Raises `InputError` with the event's file and first line when a value
        cannot be stored (the event is then counted malformed, not kept).
        """
        converted = self.convert(event)
        if converted is None or converted.event is None:
            return converted
        trail_event = converted.event
        try:
            if converted.settled:  # from a template: only its time is new
                check_time_ns(trail_event.time_ns)
                return converted
            # argv was redacted before it was parsed (_parsed_call)
            self.redactor.event(trail_event, argv_done=True)
            bound_event(trail_event, self.limits, surrogates="escape")
        except InputError as exc:
            self.counters.malformed += 1
            raise InputError(exc.reason, path=event.path, line=event.line) from None
        if converted.template is not None and self._template_worthy(trail_event.who, trail_event):
            generation = self.names.generation
            self.templates.remember(converted.template, generation, trail_event.who, trail_event)
        return converted

    def _template_worthy(self, who: Who, event: Event | None) -> bool:
        """Nothing bounded, no name to look up again (a user added while running)."""
        users = ((who.auid, who.login), (who.uid, who.user))
        if event is None:
            return self.names.final(users, ())
        attributes = event.attributes
        groups = ((attributes.get("gid"), attributes.get("group")),)
        return self.names.final(users, groups) and within_bounds(event, self.limits)

    def convert(self, event: AuditEvent) -> Converted | None:
        """None when the event is not kept."""
        self.counters.events += 1
        keys = event.all_keys()
        if self.keys.isdisjoint(keys):
            if self.config.exec_key not in keys:
                return None
            if posixpath.basename(event.exe or "") not in CLI_PROGRAMS:
                return self._process(event)
            if event.first("EXECVE") is None:
                return None
            # The exec rules load first: a docker CLI run without a login lands there.
            keys = keys | {self.config.cli_key}
        if event.first("EXECVE") is not None or exec_with_title_only(event):
            syscall = event.first("SYSCALL")
            if self._is_cli(event, keys, syscall):
                return self._cli(event, keys, syscall)
        if event.first("CONFIG_CHANGE") is not None:
            return self._kept(event, self._rule_change(event, keys))
        return self._file_event(event, keys)

    def _process(self, event: AuditEvent) -> Converted | None:
        record = process_record(event)
        return None if record is None else Converted(None, process=record)

    def _kept(self, event: AuditEvent, trail_event: Event | None) -> Converted:
        self.counters.kept += 1
        return Converted(trail_event)

    def _is_cli(self, event: AuditEvent, keys: frozenset[str], syscall: AuditRecord | None) -> bool:
        success = event_field(event, syscall, "success")  # event.success
        if success is not None and success != "yes":
            return False
        if self.config.cli_key in keys:
            return True
        return posixpath.basename(event_field(event, syscall, "exe") or "") in CLI_PROGRAMS

    # -- docker CLI ---------------------------------------------------------

    def _cli(
        self, event: AuditEvent, keys: frozenset[str], syscall: AuditRecord | None
    ) -> Converted:
        parsed = self._parsed_call(event)
        call = parsed.call
        audit_id = event_audit_id(event)
        self.counters.kept += 1
        self.counters.calls += 1
        wanted = self.config.cli_events
        kept = not (wanted == "none" or (wanted == "changes" and call.read_only))
        event_id = self._id(event)
        if syscall is None:
            in_event = (event.field, event.enriched_field)
            who = self._who_from(*in_event, audit_id, parsed.command_line)
            cli = CliCall(event.time_ns, audit_id, call, who, event_id)
            return self._cli_converted(event, keys, parsed, cli, in_event, kept)
        # its dicts, read once (as _who_of reads them; the rest as event.field would)
        fields, enriched = syscall.fields, syscall.enriched
        field = _first_in(fields, event.field)
        names = _first_in(enriched, event.enriched_field)
        lookups = (fields.get, enriched.get, field, names)
        key = template_key(parsed, event.node, keys, lookups)
        pids = (id_number(fields.get("pid")), as_id(field("ppid")))
        ids = (event_id, event.time_ns, audit_id)
        made = self.templates.made(key, self.names.generation, parsed, ids, pids)
        if made is not None:
            who, trail_event = made
            cli = CliCall(event.time_ns, audit_id, call, who, event_id)
            return Converted(trail_event, cli, settled=trail_event is not None)
        who = self._who_from(fields.get, enriched.get, audit_id, parsed.command_line)
        cli = CliCall(event.time_ns, audit_id, call, who, event_id)
        converted = self._cli_converted(event, keys, parsed, cli, (field, names), kept)
        if not self.templates.seen(key, self.names.generation, parsed):
            return converted
        if converted.event is None:  # nothing to redact or bound: the template at once
            if self._template_worthy(who, None):
                self.templates.remember(Pending(key, parsed), self.names.generation, who, None)
        else:
            converted.template = Pending(key, parsed)
        return converted

    def _cli_converted(
        self,
        event: AuditEvent,
        keys: frozenset[str],
        parsed: ParsedCall,
        cli: CliCall,
        lookups: tuple[_Lookup, _Lookup],  # event.field and event.enriched_field
        kept: bool,
    ) -> Converted:
        if not kept:
            return Converted(None, cli)
        return Converted(self._cli_event(event, keys, cli, parsed, lookups), cli)

    def _parsed_call(self, event: AuditEvent) -> ParsedCall:
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
            config = FrozenConfig(call_config(call))
            target, source = cli_target(call), argv_source_of(event)
            parsed = ParsedCall(call, cwd, call.command_line, config, target, source)
            if cacheable:
                if len(self._calls) >= _CALL_CACHE_MAX:
                    self._calls.clear()
                self._calls[key] = parsed
        return parsed

    def _cli_event(
        self,
        event: AuditEvent,
        keys: frozenset[str],
        cli: CliCall,
        parsed: ParsedCall,
        lookups: tuple[_Lookup, _Lookup],  # event.field and event.enriched_field
    ) -> Event:
        call = cli.call
        config = parsed.config.copy()
        field = lookups[0]
        attributes: dict[str, Any] = {
            "argv": list(call.argv),
            "cwd": parsed.cwd,
            "exe": field("exe"),  # event.exe
            "ppid": as_id(field("ppid")),  # event.ppid
            **self._group(*lookups),
            "keys": sorted(keys),
            "audit_id": cli.audit_id,
            **parsed.argv_source,
        }
        if call.errors:
            attributes["argv_errors"] = list(call.errors)
        if call.remote:
            attributes["remote_engine"] = True
        return cli_event_model(
            {  # every field of Event, in its order; the actor's fields, in theirs
                "seq": None,
                "id": cli.event_id,
                "time_ns": event.time_ns,
                "source": "auditd",
                "host": event.node or self.host,
                "type": "docker-cli",
                "action": call.command or "help",
                "actor": {"id": "", "name": parsed.target, "image": call.image},
                "attributes": attributes,
                "who": cli.who,
                "why": None,  # its default
                "config": config,
                "hash": None,
                "prev_hash": None,
            }
        )

    # -- files and rules ----------------------------------------------------

    def _file_event(self, event: AuditEvent, keys: frozenset[str]) -> Converted | None:
        syscall = syscall_name(event)
        operation = event_operation(event, syscall)
        paths = event_paths(event, syscall)
        if self.config.drop_housekeeping and self._housekeeping(event, operation, paths):
            self.counters.housekeeping += 1
            return None
        kind = "daemon-file" if paths else "audit"
        primary = primary_path(paths)
        attributes = {
            "paths": paths,
            "syscall": syscall,
            "success": event.success,
            "exit": event.field("exit"),
            "comm": event.comm,
            "cwd": event.cwd,
            **self._group(event.field, event.enriched_field),
            "keys": sorted(keys),
            "audit_id": event_audit_id(event),
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
            who=self._who(event, command=event_title(event)),
        )
        return self._kept(event, trail_event)

    def _rule_change(self, event: AuditEvent, keys: frozenset[str]) -> Event:
        change = event.first("CONFIG_CHANGE")
        assert change is not None
        fields: dict[str, Any] = {
            k: v for k, v in change.fields.items() if k not in ("auid", "ses", "subj")
        }
        fields["keys"] = sorted(keys)
        fields["audit_id"] = event_audit_id(event)
        return Event(
            id=self._id(event),
            time_ns=event.time_ns,
            source="auditd",
            host=event.node or self.host,
            type="audit-rule",
            action=change.fields.get("op", "change"),
            actor=Actor(name=", ".join(sorted(keys))),
            attributes=fields,
            who=self._who(event, command=event_title(event)),
        )

    def _housekeeping(self, event: AuditEvent, operation: str, paths: list[dict[str, Any]]) -> bool:
        """The daemon's own work, by what its caller cannot choose (not comm, not argv)."""
        if event.field("auid") not in AUID_UNSET or not self._daemon_process(event):
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
        if not title or title[0] not in DOCKERD_HELPERS or event.exe not in self._executables:
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
        if path in self._executables or path in DOCKER_CLI_PATHS:
            return True
        if path.startswith(DAEMON_CONFIG_DIRS) or path in DAEMON_CONFIG_FILES:
            return True
        base = posixpath.basename(path)
        return path.startswith(UNIT_DIRS) and base.startswith(("docker.", "containerd."))

    def _under_roots(self, path: str) -> bool:
        return any(path == root or path.startswith(root + "/") for root in self._roots)

    # -- who ------------------------------------------------------------------

    def _who(self, event: AuditEvent, *, command: str | None) -> Who:
        return self._who_of(event, event.first("SYSCALL"), command, event_audit_id(event))

    def _who_of(
        self, event: AuditEvent, record: AuditRecord | None, command: str | None, audit_id: str
    ) -> Who:
        if record is None:  # user-space records (CONFIG_CHANGE …): any record that has them
            return self._who_from(event.field, event.enriched_field, audit_id, command)
        return self._who_from(record.fields.get, record.enriched.get, audit_id, command)

    def _who_from(
        self,
        raw: _Lookup,
        names: _Lookup,
        audit_id: str,
        command: str | None,
    ) -> Who:
        auid = id_number(raw("auid"))
        euid = id_number(raw("euid"))
        user = id_name(names("EUID"))
        if euid is None:
            euid, user = id_number(raw("uid")), id_name(names("UID"))
        login = id_name(names("AUID"))
        tty = raw("tty")
        values = {  # every field of Who, in its order (as `trusted` wants them)
            "login": login if login is not None else self.names.user(auid),
            "auid": auid,
            "user": user if user is not None else self.names.user(euid),
            "uid": euid,
            "pid": id_number(raw("pid")),
            "command": command,
            "method": "auditd",
            "reason": None,
            "claimed": None,
            "ses": id_number(raw("ses")),
            "tty": None if tty in (None, "(none)", "?") else tty,
            "exe": raw("exe"),
            "audit_id": audit_id,
            "matched_by": None,
            "confidence": None,
            "candidates": None,
        }
        return who_model(values)

    def _group(self, field: _Lookup, names: _Lookup) -> dict[str, Any]:
        """The effective group (`field`, `names`: the event's raw and ENRICHED fields):
        ENRICHED name, else the group file."""
        gid, name = id_number(field("egid")), id_name(names("EGID"))
        if gid is None:
            gid, name = id_number(field("gid")), id_name(names("GID"))
        return {"gid": gid, "group": name or self.names.group(gid)}

    def _id(self, event: AuditEvent) -> str:
        node = event.node or self.host
        return time_ordered_id(event.time_ns, "auditd", node, event.serial, event.time_ns)
