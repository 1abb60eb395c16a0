"""Audit records and events: what one log line and one assembled event hold, parsed
lazily.
"""

from __future__ import annotations

from dataclasses import dataclass

from listener.sources.auditparse.fields import (
    ENRICHED_CACHE,
    NO_KEYS,
    as_id,
    assemble_argv,
    enriched_fields,
    parse_fields,
    record_fields,
)
from listener.sources.auditparse.heads import merged_fields, path_fields


class AuditRecord:
    """One record (line) of an event.

    ``fields`` are the raw fields, unquoted, hex decoded where applicable;
    ``enriched`` the fields after ``\\x1d`` (ENRICHED format), else empty. The
    assembler hands out records whose fields are parsed on first access (most
    records of most events are never looked at: a filter drops the event, or
    the consumer needs three records of seven); that the text parses at all is
    checked when the line is fed, so a bad line is still reported right away.
    ``get``/``enriched_get`` answer for a missing name without parsing.
    """

    __slots__ = ("_enriched", "_extra", "_fields", "_head", "_rest", "_tail", "line", "type")

    def __init__(
        self,
        type: str,  # "SYSCALL", "EXECVE", "UNKNOWN[1420]", ...
        fields: dict[str, str] | None,
        enriched: dict[str, str] | None,
        line: int,  # 1-based line number in its source
        rest: str | None = None,  # text after msg=audit(...): and `head`, ENRICHED part and all
        extra: str | None = None,  # its text after \x1d, parsed into `enriched` when None
        tail: dict[str, str] | None = None,  # the parsed fields of `rest`, shared
        head: str = "",  # the text before the tail ("": the tail has every field)
    ) -> None:
        self.type = type
        self.line = line
        self._rest = rest  # (shared by the records of equal texts: see bodies.BODIES)
        self._extra = extra
        self._fields = fields
        self._enriched = enriched
        self._tail = tail
        self._head = head

    @property
    def fields(self) -> dict[str, str]:
        fields = self._fields
        if fields is None:
            tail, head = self._tail, self._head
            if tail is None:
                fields = record_fields(self.type, self._raw())
            elif not head:
                fields = tail.copy()
            elif self.type == "PATH":
                fields = path_fields(head, tail)
            else:
                fields = merged_fields(head, tail)
            if fields is None:  # the head needs the exact scanner
                fields = parse_fields(self.type, self._raw())
            self._fields = fields
        return fields

    @fields.setter
    def fields(self, value: dict[str, str]) -> None:
        self._fields = value

    @property
    def enriched(self) -> dict[str, str]:
        enriched = self._enriched
        if enriched is None:
            extra = self._extra
            if extra is None:
                enriched = {}
            else:  # enriched_fields(extra), the usual cache hit without a call
                known = ENRICHED_CACHE.get(extra)
                enriched = enriched_fields(extra) if known is None else known.copy()
            self._enriched = enriched
        return enriched

    @enriched.setter
    def enriched(self, value: dict[str, str]) -> None:
        self._enriched = value

    def _raw(self) -> str:
        """The text of the raw fields: head and rest, before the ENRICHED part."""
        return self.text or ""

    @property
    def text(self) -> str | None:
        """The record's raw text after ``msg=audit(...):`` (None if it was built from fields).

        Equal texts give equal ``fields``: a consumer may cache what it derives from them.
        """
        rest, extra = self._rest, self._extra
        if rest is None:
            return None
        if extra is not None:
            rest = rest[: len(rest) - len(extra) - 1]
        return self._head + rest if self._head else rest

    def get(self, name: str) -> str | None:
        """``fields.get(name)``; without parsing when the text does not name it."""
        fields = self._fields
        if fields is None and name != "_text":  # other names are in the text, before "="
            tail = self._tail
            if tail is None:  # (then there is no head: the rest is the whole text)
                rest, extra = self._rest or "", self._extra
                end = len(rest) if extra is None else len(rest) - len(extra) - 1
                if rest.find(name, 0, end) < 0:
                    return None
            else:
                head = self._head  # the tail has all fields, or the head has not this one:
                if not head or name not in head:
                    return tail.get(name)
        return (self.fields if fields is None else fields).get(name)

    def enriched_get(self, name: str) -> str | None:
        """``enriched.get(name)``; without parsing when the text does not name it."""
        enriched = self._enriched
        if enriched is None:
            extra = self._extra
            if extra is None or (name not in extra and name != "_text"):
                return None
            known = ENRICHED_CACHE.get(extra)  # the same text parsed: read, no copy
            enriched = self.enriched if known is None else known
        return enriched.get(name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AuditRecord):
            return NotImplemented
        return (self.type, self.line, self.fields, self.enriched) == (
            other.type,
            other.line,
            other.fields,
            other.enriched,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it was

    def __repr__(self) -> str:
        return (
            f"AuditRecord(type={self.type!r}, fields={self.fields!r}, "
            f"enriched={self.enriched!r}, line={self.line!r})"
        )


@dataclass(slots=True)
class AuditEvent:
    """The records sharing one ``msg=audit(TIME:SERIAL)`` (and node).

    Helpers are computed on each access (slots leave no room for caching and
    most events are only looked at once).
    """

    time_ns: int
    serial: int
    node: str | None
    records: list[AuditRecord]
    path: str | None = None

    @property
    def id(self) -> str:
        """The event id as auditd prints it, e.g. ``"1795346502.569:15428"``."""
        sec, ns = divmod(self.time_ns, 1_000_000_000)
        return f"{sec}.{ns // 1_000_000:03d}:{self.serial}"

    @property
    def line(self) -> int:
        """Line of the first record: the event's position in its file."""
        return self.records[0].line

    @property
    def sort_key(self) -> tuple[int, int]:
        return (self.time_ns, self.serial)

    @property
    def types(self) -> list[str]:
        return [r.type for r in self.records]

    def first(self, rtype: str) -> AuditRecord | None:
        for rec in self.records:
            if rec.type == rtype:
                return rec
        return None

    def all(self, rtype: str) -> list[AuditRecord]:
        return [r for r in self.records if r.type == rtype]

    def field(self, name: str) -> str | None:
        """A raw field, from the SYSCALL record if it has it, else the first record that does."""
        rec = self.first("SYSCALL")
        if rec is not None and (value := rec.get(name)) is not None:
            return value
        for rec in self.records:
            if (value := rec.get(name)) is not None:
                return value
        return None

    def enriched_field(self, name: str) -> str | None:
        """An interpreted (ENRICHED) field, SYSCALL record first."""
        rec = self.first("SYSCALL")
        if rec is not None and (value := rec.enriched_get(name)) is not None:
            return value
        for rec in self.records:
            if (value := rec.enriched_get(name)) is not None:
                return value
        return None

    @property
    def syscall(self) -> dict[str, str] | None:
        rec = self.first("SYSCALL")
        return None if rec is None else rec.fields

    @property
    def key(self) -> list[str]:
        """Audit rule keys; a key field may hold several joined by \\x01."""
        value = self.field("key")
        if value is None or value in ("(null)", ""):
            return []
        return [k for k in value.split("\x01") if k]

    def all_keys(self) -> frozenset[str]:
        """The rule keys of every record (``key`` reads one record: SYSCALL's, else the first).

        A CONFIG_CHANGE carries its key, its SYSCALL none. Parses only records
        whose text has a ``key`` (cheap: a filter asks this of every event).
        """
        found: frozenset[str] | set[str] = NO_KEYS
        for rec in self.records:
            fields, tail = rec._fields, rec._tail
            if fields is not None:
                value = fields.get("key")
            elif tail is not None:  # as get("key") answers, without its call when it can
                value = tail.get("key") if "key" not in rec._head else rec.get("key")
            elif "key" in (rec._rest or ""):  # (the ENRICHED part too: get decides)
                value = rec.get("key")
            else:
                continue
            if not value or value == "(null)":
                continue
            keys = {k for k in value.split("\x01") if k} if "\x01" in value else {value}
            found = keys if not found else {*found, *keys}
        return frozenset(found)

    @property
    def argv(self) -> list[str] | None:
        execve = [r.fields for r in self.records if r.type == "EXECVE"]
        return assemble_argv(execve) if execve else None

    @property
    def proctitle(self) -> list[str] | None:
        rec = self.first("PROCTITLE")
        if rec is None or "proctitle" not in rec.fields:
            return None
        value = rec.fields["proctitle"]
        if value in ("(null)", "?"):
            return None
        return value.rstrip("\x00").split("\x00")

    @property
    def paths(self) -> list[dict[str, str]]:
        return [r.fields for r in self.records if r.type == "PATH"]

    @property
    def cwd(self) -> str | None:
        rec = self.first("CWD")
        return None if rec is None else rec.fields.get("cwd")

    @property
    def exe(self) -> str | None:
        return self.field("exe")

    @property
    def comm(self) -> str | None:
        return self.field("comm")

    @property
    def success(self) -> bool | None:
        value = self.field("success")
        return None if value is None else value == "yes"

    def id_field(self, name: str) -> int | None:
        """An id field (auid, uid, ses, pid ...) as int; None if absent, unset or garbled."""
        return as_id(self.field(name))

    @property
    def auid(self) -> int | None:
        return self.id_field("auid")

    @property
    def uid(self) -> int | None:
        return self.id_field("uid")

    @property
    def euid(self) -> int | None:
        return self.id_field("euid")

    @property
    def gid(self) -> int | None:
        return self.id_field("gid")

    @property
    def ses(self) -> int | None:
        return self.id_field("ses")

    @property
    def pid(self) -> int | None:
        return self.id_field("pid")

    @property
    def ppid(self) -> int | None:
        return self.id_field("ppid")

    @property
    def tty(self) -> str | None:
        value = self.field("tty")
        return None if value in (None, "(none)", "?") else value

    def name_field(self, name: str) -> str | None:
        """A user/group name from the ENRICHED part (``AUID="alice"``); None if unset.

        auditd writes ``unknown(1234)`` for an id its host could not resolve: no name.
        """
        value = self.enriched_field(name)
        if value is None or value in ("unset", "?", "") or value.startswith("unknown("):
            return None
        return value

    @property
    def auid_name(self) -> str | None:
        return self.name_field("AUID")

    @property
    def uid_name(self) -> str | None:
        return self.name_field("UID")

    @property
    def euid_name(self) -> str | None:
        return self.name_field("EUID")


@dataclass(slots=True, frozen=True)
class Malformed:
    path: str | None
    line: int
    reason: str
    text: str  # the offending line, printable, cut to ~200 characters
