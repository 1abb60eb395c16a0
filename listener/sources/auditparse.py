"""Parse raw auditd log lines and assemble them into audit events.

Pure parsing: no daemons, no sockets, stdlib only. The hot path uses ``str.find``
and ``str.split``, no regular expressions: it is benchmarked against
``ausearch -i`` (see ``bench/audit_parse.py``).

Line format and the quirks handled here::

    [node=HOST ]type=TYPE msg=audit(SECONDS.MILLIS:SERIAL): k=v k="v" ...[\\x1dK=V ...]

* ``node=HOST`` prefix (``name_format`` in auditd.conf) is optional; it becomes
  part of the event identity.
* ENRICHED log format: a GS byte (``\\x1d``) separates the raw fields from the
  fields auditd interpreted at write time (``AUID="alice" UID="root"``). They are
  kept apart in ``AuditRecord.enriched``. Never use ``str.splitlines`` on such
  text: it treats ``\\x1d`` as a line boundary.
* Values: ``"quoted"`` values are literal; auditd writes untrusted strings that
  contain spaces, quotes or non-ASCII bytes as unquoted hex instead. Hex is
  decoded (UTF-8, undecodable bytes kept as surrogate escapes) only for fields
  that auditd can encode (``_ENCODED_FIELDS``, EXECVE ``aN``/``aN[i]``), only
  when unquoted and only when the value is valid even-length hex, so ``(null)``
  and ``?`` stay as they are. Plain ``old``/``new`` are deliberately not in the
  set: TIME_ADJNTPVAL writes numbers there (``old=1234`` is not hex text).
* ``key`` may hold several rule keys joined by ``\\x01`` (always hex then).
* ``proctitle`` is NUL-separated argv (hex), or a quoted single string.
* USER_*, SERVICE_*, ... records carry a nested field list in ``msg='...'``; its
  fields are merged into the record's fields (the outer, kernel-written ones win
  on a name clash). Non ``k=v`` words (SELinux ``avc:  denied  { read }``) are
  kept, space-joined, under the ``"_text"`` key.
* Some producers quote every value (``success="yes"``); values may contain ``=``
  (``subj==unconfined`` -> ``"=unconfined"``); names may repeat (the last wins).
* EXECVE: ``argc=N a0=.. a1=..``; a long argument is split into ``aN_len=..
  aN[0]=.. aN[1]=..`` and the pieces, as well as the arguments, may be spread
  over several EXECVE records of one event. ``AuditEvent.argv`` reassembles them.
* Records of one event share ``msg=audit(TIME:SERIAL)`` and may be interleaved
  with other events. EOE closes an event, but auditd often writes none (the
  scenario-a capture has no EOE at all), so events also close when a record
  more than ``window_secs`` newer arrives, on ``flush(older_than_ns)`` (live
  tailing) and on ``flush_all()`` (end of input).
* Records that look standalone are not: the corpus has LOGIN, ANOM_PROMISCUOUS,
  SERVICE_START (a user message), AVC and TIME_ADJNTPVAL each followed by a
  SYSCALL record of the same serial, and the single record usually comes
  *first*. Only DAEMON_* records, which auditd writes itself and the kernel
  never extends, close their event at once.
* Malformed input (no ``type=``, garbled ``msg=audit(...)``, an unterminated
  quote or a second ``msg=audit(`` from a truncated line, NUL bytes, comment
  lines in test corpora, an EOE whose event the window already closed) never
  raises: it becomes a ``Malformed`` entry and the records around it are kept.

Speed: a record's fields are parsed when first asked for (``AuditRecord``): a
filter that drops most events reads a key or two, a docker CLI call needs three
records of six. When a line is fed only its header is read, with
``str.partition``, and its text checked for what would make the parse fail (an
unterminated quote: the line is reported malformed right away, as before).
Fields are split with ``str.split`` and a C-level ``dict(map(...))``; quoted
values with spaces, ``msg='...'``, ``{ ... }`` and unusual EXECVE records go
through an exact but slower scanner. The ENRICHED part, the tail of SYSCALL/PATH
records (``auid= ... key=``, ``dev= ...``), whole CWD/PROCTITLE/EXECVE records
repeat heavily on a host, so each distinct text is parsed once and copied
(bounded module-level caches); ``AuditRecord.get`` answers from a cached tail
without parsing the rest. ``feed_lines`` takes a block of lines at once.

Accounting: for every input, ``records + malformed + blank`` equals the number
of lines fed, and every record ends up in exactly one emitted event.

Ordering: ``AuditAssembler.feed``/``flush``/``flush_all`` return events in the
order they close (window and flush closes come out in audit-time order, EOE
closes as they happen). ``read_audit_file`` re-sequences with ``LineOrder`` so
that events and ``Malformed`` entries come out in file order of their first
line, which is what a caller replaying a log can rely on.
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from listener.sources.lines import Oversized, bounded_lines

__all__ = [
    "UNSET_ID",
    "AuditAssembler",
    "AuditEvent",
    "AuditRecord",
    "LineOrder",
    "Malformed",
    "open_audit_text",
    "parse_time_ns",
    "read_audit_file",
    "read_audit_files",
    "rotation_order",
]

UNSET_ID = 4294967295  # (u32)-1: auid/ses never set, printed as "unset" by ausearch

# Fields that auditd may write as unquoted hex (auparse's AUPARSE_TYPE_ESCAPED
# family plus proctitle). EXECVE arguments are handled separately.
_ENCODED_FIELDS = frozenset(
    {
        "path", "comm", "exe", "file", "name", "watch", "cwd", "cmd", "acct", "dir",
        "key", "vm", "old-chardev", "new-chardev", "old-disk", "new-disk", "old-fs",
        "new-fs", "old-net", "new-net", "device", "cgroup", "apparmor", "operation",
        "denied_mask", "info", "profile", "requested_mask", "old-rng", "new-rng",
        "ocomm", "grp", "new_group", "invalid_context", "sw", "root_dir", "data",
        "proctitle",
    }
)  # fmt: skip

_str_split = str.split
_EQ = itertools.repeat("=")  # endless: map() stops at the shorter input
# Entries per parse cache (a few MB at most); cleared when full, no LRU bookkeeping.
_CACHE_MAX = 2048
# Where the low-cardinality tail of a record starts ("" = the whole body), and
# the cache of parsed tails (keyed by the text after that anchor), see
# _record_fields. Only kernel record types with a fixed field order.
_TAILS: dict[str, tuple[str, dict[str, dict[str, str]]]] = {
    "SYSCALL": (" auid=", {}),
    "PATH": (" dev=", {}),
    "CWD": ("", {}),
    "PROCTITLE": ("", {}),
    "BPRM_FCAPS": ("", {}),
    "SOCKADDR": ("", {}),
}
_EXECVE_ARG = re.compile(r"a(\d+)(?:\[(\d+)\])?")  # EXECVE only, off the hot path
_MALFORMED_TEXT_MAX = 200
_NO_KEYS: frozenset[str] = frozenset()
_READ_HINT = 65536  # characters read_audit_file reads (and feeds) at once
MAX_LINE = 16 * 1024 * 1024  # characters; `input.max_line_bytes`
_MAX_TIME_NS = 7_258_118_400 * 1_000_000_000  # 2200-01-01, as listener.bounds.MAX_TIME_NS
_INT64_MAX = (1 << 63) - 1


class _Truncated(Exception):
    """A quoted value or a brace group never ends: the line was cut."""


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

    __slots__ = ("_cut", "_enriched", "_extra", "_fields", "_raw", "_tail", "line", "type")

    def __init__(
        self,
        type: str,  # "SYSCALL", "EXECVE", "UNKNOWN[1420]", ...
        fields: dict[str, str] | None,
        enriched: dict[str, str] | None,
        line: int,  # 1-based line number in its source
        raw: str | None = None,  # text of the raw fields, parsed into `fields` when None
        extra: str | None = None,  # text after \x1d, parsed into `enriched` when None
        tail: dict[str, str] | None = None,  # the parsed fields of raw[cut:], shared
        cut: int = 0,
    ) -> None:
        self.type = type
        self.line = line
        self._raw = raw
        self._extra = extra
        self._fields = fields
        self._enriched = enriched
        self._tail = tail
        self._cut = cut

    @property
    def fields(self) -> dict[str, str]:
        fields = self._fields
        if fields is None:
            tail, cut, raw = self._tail, self._cut, self._raw or ""
            if tail is None:
                fields = _record_fields(self.type, raw)
            elif cut == 0:
                fields = tail.copy()
            else:
                fields = _fields_fast(raw[:cut])
                if fields is None:
                    fields = _parse_fields(self.type, raw)
                else:
                    fields.update(tail)
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
            enriched = self._enriched = {} if extra is None else _enriched_fields(extra)
        return enriched

    @enriched.setter
    def enriched(self, value: dict[str, str]) -> None:
        self._enriched = value

    @property
    def text(self) -> str | None:
        """The record's raw text after ``msg=audit(...):`` (None if it was built from fields).

        Equal texts give equal ``fields``: a consumer may cache what it derives from them.
        """
        return self._raw

    def get(self, name: str) -> str | None:
        """``fields.get(name)``; without parsing when the text does not name it."""
        fields = self._fields
        if fields is None and name != "_text":  # other names are in the text, before "="
            tail, raw = self._tail, self._raw or ""
            if tail is None:
                if name not in raw:
                    return None
            else:
                cut = self._cut  # the tail has all fields, or the head has not this one:
                if cut == 0 or raw.find(name, 0, cut) < 0:
                    return tail.get(name)
        return self.fields.get(name)

    def enriched_get(self, name: str) -> str | None:
        """``enriched.get(name)``; without parsing when the text does not name it."""
        enriched = self._enriched
        if enriched is None:
            extra = self._extra
            if extra is None or (name not in extra and name != "_text"):
                return None
            known = _ENRICHED_CACHE.get(extra)  # the same text parsed: read, no copy
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
        found: frozenset[str] | set[str] = _NO_KEYS
        for rec in self.records:
            fields = rec._fields
            if fields is not None:
                value = fields.get("key")
            elif "key" in (rec._raw or ""):
                value = rec.get("key")  # from the cached tail of a SYSCALL, no parse
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
        return _assemble_argv(execve) if execve else None

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
        return _as_id(self.field(name))

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


# --------------------------------------------------------------------------- values


def _unhex(value: str) -> str:
    """Decode auditd's hex encoding; anything that is not valid hex stays as is."""
    if len(value) & 1:
        return value
    try:
        return bytes.fromhex(value).decode("utf-8", "surrogateescape")
    except ValueError:
        return value


def _as_id(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return None if number in (UNSET_ID, (1 << 64) - 1) or number > _INT64_MAX else number


def parse_time_ns(stamp_time: str) -> int | None:
    """``"1795346502.569"`` -> ``1795346502569000000`` with integer math; None if garbled."""
    sec, dot, frac = stamp_time.partition(".")
    if not (dot and sec.isascii() and sec.isdigit() and frac.isascii() and frac.isdigit()):
        return None
    if len(frac) > 9 or len(sec) > 11:
        return None
    time_ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0"))
    return time_ns if time_ns < _MAX_TIME_NS else None


# --------------------------------------------------------------------------- fields


def _fields_fast(text: str) -> dict[str, str] | None:
    """Split ``k=v k="v"`` text, unquote and hex-decode it; None when the text needs the slow path.

    Whitespace split + C-level dict build. Quotes stay on the values at first:
    kernel records quote only encodable fields, so the quote test and the hex
    decode share one short loop over the encodable names present. Anything
    unusual (a word without exactly one ``=``, single quotes, braces, spaces or
    stray quotes inside quoted values) returns None.
    """
    if "'" in text or "{" in text:
        return None
    try:
        fields = dict(map(_str_split, text.split(), _EQ))
    except ValueError:  # a bare word, or "=" inside a value
        return None
    quotes = text.count('"')
    if not quotes and _ENCODED_FIELDS.isdisjoint(fields):
        return fields  # the usual SYSCALL head: numbers only
    unquoted = 0
    for key in _ENCODED_FIELDS.intersection(fields):
        value = fields[key]
        if value[:1] == '"':
            if len(value) < 2 or value[-1] != '"':
                return None  # a space inside the quotes split this value
            fields[key] = value[1:-1]
            unquoted += 2
        else:
            fields[key] = _unhex(value)
    if unquoted != quotes and not _unquote_rest(fields):
        return None
    return fields


def _unquote_rest(fields: dict[str, str]) -> bool:
    """Unquote values of non-encodable fields (``success="yes"``); False if one is odd."""
    for key, value in fields.items():
        if '"' in value:
            if len(value) < 2 or value[0] != '"' or value[-1] != '"' or value.count('"') != 2:
                return False
            fields[key] = value[1:-1]
    return True


def _split_fields_slow(text: str) -> tuple[dict[str, str], set[str]]:
    """Exact scanner for quoted values with spaces, ``msg='...'``, ``{ ... }`` and bare words."""
    fields: dict[str, str] = {}
    quoted: set[str] = set()
    words: list[str] = []
    nested: str | None = None
    text = text.strip()  # the line's own "\n" (or "\r\n") is not a value
    pos, size = 0, len(text)
    while pos < size:
        if text[pos] == " ":
            pos += 1
            continue
        space = _find_or_end(text, " ", pos)
        eq = text.find("=", pos, space)
        if eq < 0:  # a bare word
            words.append(text[pos:space])
            pos = space
            continue
        key, start = text[pos:eq], eq + 1
        opener = text[start : start + 1]
        if opener in ('"', "'"):
            end = text.find(opener, start + 1)
            if end < 0 and opener == "'" and key == "msg":
                end = size  # Ubuntu 16.10's systemd leaves msg=' open; ausearch reads on
            elif end < 0:
                raise _Truncated
            value, pos = text[start + 1 : end], end + 1
            if opener == "'" and key == "msg":
                nested = value
                continue
            quoted.add(key)
        elif opener == "{":
            end = text.find("}", start)
            if end < 0:
                raise _Truncated
            value, pos = text[start : end + 1], end + 1
        else:
            value, pos = text[start:space], space
        fields[key] = value
    if words:
        fields["_text"] = " ".join(words)
    if nested is not None:
        _merge_nested(fields, quoted, nested)
    return fields, quoted


def _find_or_end(text: str, sub: str, start: int) -> int:
    found = text.find(sub, start)
    return len(text) if found < 0 else found


def _merge_nested(fields: dict[str, str], quoted: set[str], nested: str) -> None:
    """Merge the fields of ``msg='...'``; keep the text itself only if it was not all k=v."""
    inner, inner_quoted = _split_fields_slow(nested)
    if "_text" in inner:
        del inner["_text"]
        fields["msg"] = nested
    for key, value in inner.items():
        if key not in fields:  # the outer, kernel-written value wins
            fields[key] = value
            if key in inner_quoted:
                quoted.add(key)


def _decode_fields(fields: dict[str, str], quoted: set[str]) -> None:
    for key in _ENCODED_FIELDS.intersection(fields):
        if key not in quoted:
            fields[key] = _unhex(fields[key])


def _decode_execve(fields: dict[str, str], quoted: set[str]) -> None:
    for key, value in fields.items():
        if key not in quoted and _EXECVE_ARG.fullmatch(key):
            fields[key] = _unhex(value)


def _parse_fields(rtype: str, text: str) -> dict[str, str]:
    """Raw fields of one record (the text between ``):`` and ``\\x1d``)."""
    if rtype != "EXECVE":  # EXECVE arguments often hold "=": always exact
        fields = _fields_fast(text)
        if fields is not None:
            return fields
    fields, quoted = _split_fields_slow(text)
    if rtype == "EXECVE":
        _decode_execve(fields, quoted)
    else:
        _decode_fields(fields, quoted)
    return fields


def _parse_enriched(text: str) -> dict[str, str]:
    """ENRICHED fields: quoted literals, never hex, so the quotes can simply go."""
    if '"' in text:
        parts = text.split('"')
        inside = "".join(parts[1::2])
        if len(parts) % 2 == 0 or " " in inside or "\t" in inside:
            return _split_fields_slow(text)[0]
        text = "".join(parts)
    if "'" not in text and "{" not in text:
        try:
            return dict(map(_str_split, text.split(), _EQ))
        except ValueError:
            pass
    return _split_fields_slow(text)[0]


# The ENRICHED part and the tail of SYSCALL/PATH records repeat heavily on a host:
# each distinct text is parsed once (callers get copies they may modify). Shared by
# all assemblers (a record parses its fields whenever it is first asked for them).
_ENRICHED_CACHE: dict[str, dict[str, str]] = {}
# Whole EXECVE texts (a host runs the same commands again and again), see _execve_fast.
_EXECVE_CACHE: dict[str, dict[str, str]] = {}


def _split_tail(anchor: str, text: str) -> tuple[str, str] | None:
    """``(head, rest)`` around the first ``anchor`` (the tail is anchor + rest); None if absent."""
    if not anchor:
        return "", text
    head, found, rest = text.partition(anchor)
    return (head, rest) if found else None


def _record_fields(rtype: str, text: str) -> dict[str, str]:
    """Raw fields; the repetitive tail of common records is parsed once per distinct text.

    A SYSCALL's ``auid= ... key=`` or a PATH's ``dev= ... cap_frootid=`` take
    few distinct values on a host, so only the head (pids, addresses, inode)
    is split every time. Both parts are validated on their own by
    ``_fields_fast``, so a cut inside a quoted value falls back to the exact
    parse of the whole text.
    """
    spec = _TAILS.get(rtype)
    parts = None if spec is None else _split_tail(spec[0], text)
    if spec is None or parts is None:
        return _parse_fields(rtype, text)
    (anchor, cache), (head, rest) = spec, parts
    tail = cache.get(rest)
    if tail is None:
        tail_text = anchor + rest
        tail = _fields_fast(tail_text)
        if tail is None:
            return _parse_fields(rtype, text)
        if _plain(tail_text, tail):
            if len(cache) >= _CACHE_MAX:
                cache.clear()
            cache[rest] = tail
    if not head:
        return tail.copy()
    fields = _fields_fast(head)
    if fields is None:
        return _parse_fields(rtype, text)
    fields.update(tail)
    return fields


def _plain(text: str, fields: dict[str, str]) -> bool:
    """Only single spaces between words, no name twice: the exact scanner reads it alike.

    Then a cached tail's values are the record's values whatever its head holds
    (``AuditRecord.get`` answers from the tail without parsing the head).
    """
    words = text.split()
    return len(words) == len(fields) and [w for w in text.rstrip("\n").split(" ") if w] == words


def _enriched_fields(text: str) -> dict[str, str]:
    """ENRICHED fields (a few users x syscall names: parsed once per distinct text)."""
    cache = _ENRICHED_CACHE
    parsed = cache.get(text)
    if parsed is None:
        parsed = _parse_enriched(text)
        if len(cache) >= _CACHE_MAX:
            cache.clear()
        cache[text] = parsed
    return parsed.copy()


def _parses_later(text: str) -> bool:
    """True when parsing ``text`` can wait: it cannot raise ``_Truncated``.

    Only the exact scanner raises, on a quote or brace that never closes.
    Without single quotes and braces, the double quotes decide: the text is
    safe when they pair up as the scanner reads them, each opening quote right
    after the only ``=`` of its word. Anything else (rare: ``msg='...'``,
    ``{ ... }``, a cut line) is parsed at once, as it always was.
    """
    if "'" in text or "{" in text:
        return False
    find, rfind = text.find, text.rfind
    quote = find('"')
    pos = 0  # where the current word may start: after a space or a closing quote
    while quote >= 0:
        start = rfind(" ", pos, quote) + 1 or pos
        if quote == start or find("=", start, quote) != quote - 1:  # no "=", or two
            return False
        end = find('"', quote + 1)
        if end < 0:
            return False
        pos = end + 1
        quote = find('"', pos)
    return True


# Heads of PATH records (item, name, inode) with quotes that _parses_later accepted:
# the same files come up again and again.
_SAFE_HEADS: set[str] = set()


def _head_parses_later(head: str) -> bool:
    if not _parses_later(head):
        return False
    if len(_SAFE_HEADS) >= _CACHE_MAX:
        _SAFE_HEADS.clear()
    _SAFE_HEADS.add(head)
    return True


def _execve_fast(text: str) -> dict[str, str] | None:
    """EXECVE fields when every word is ``k=v`` or ``k="v"`` (None: use the exact scanner).

    Split on single spaces only, as the exact scanner does: an argument with
    white space or quotes in it is hex anyway, and one with ``=`` goes the slow way.
    """
    if "'" in text or "{" in text:
        return None
    words = text.strip().split(" ")
    try:
        fields = dict(map(_str_split, words, _EQ))
    except ValueError:  # a bare word, "=" inside a value, or two spaces in a row
        return None
    if len(fields) != len(words):
        return None
    for key, value in fields.items():
        if value[:1] == '"':
            if len(value) < 2 or value[-1] != '"' or value.count('"') != 2:
                return None
            fields[key] = value[1:-1]
        elif '"' in value:
            return None
        elif key[:1] == "a" and _EXECVE_ARG.fullmatch(key):
            fields[key] = _unhex(value)
    return fields


# --------------------------------------------------------------------------- argv


def _assemble_argv(records: list[dict[str, str]]) -> list[str]:
    """Reassemble argv from the EXECVE records of one event (split args included)."""
    merged: dict[str, str] = {}
    for fields in records:
        merged.update(fields)
    argc = _as_id(merged.get("argc"))
    argv: list[str] = []
    index = 0
    while argc is None or index < argc:
        arg = _one_arg(merged, index)
        if arg is None:  # lost record or no argc: stop at the first gap
            break
        argv.append(arg)
        index += 1
    return argv


def _one_arg(merged: dict[str, str], index: int) -> str | None:
    whole = merged.get(f"a{index}")
    if whole is not None:
        return whole
    pieces: list[str] = []
    while (piece := merged.get(f"a{index}[{len(pieces)}]")) is not None:
        pieces.append(piece)
    if not pieces:
        return None
    # Pieces are cut at byte boundaries, so a UTF-8 character may straddle two:
    # round-trip through bytes to rejoin it.
    return "".join(pieces).encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- assembly


def _printable(line: str) -> str:
    text = line.rstrip("\r\n")[:_MALFORMED_TEXT_MAX]
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class AuditAssembler:
    """Feed lines, get events. See the module docstring for the closing rules.

    Batch use: ``feed`` every line (or ``feed_lines`` blocks of them), then
    ``flush_all()``; or just ``read_audit_file``.
    Live tailing: ``feed`` new lines as they are written, and every second or so
    ``flush(older_than_ns=time.time_ns() - grace)`` to close EOE-less events that
    no newer record will close. ``feed``/``flush``/``flush_all`` return events in
    the order they close; use ``LineOrder`` with ``oldest_open_line`` for file
    order. A record arriving after its event closed (later than the window) opens
    a new event with the same id. ``malformed`` collects bad lines; a long-running
    caller should ``drain_malformed()`` regularly.
    """

    def __init__(
        self, path: str | None = None, window_secs: float = 2.0, max_line: int = MAX_LINE
    ) -> None:
        self.path = path
        self.max_line = max_line  # longer lines are malformed (characters)
        self.window_ns = round(window_secs * 1_000_000_000)
        self.malformed: list[Malformed] = []
        self.records = 0
        self.events = 0
        self.blank = 0
        # Newest audit time fed: every event older than this minus the window is closed.
        self.newest_ns = 0
        self.malformed_count = 0
        self._open: dict[str, AuditEvent] = {}  # insertion order == first-line order
        # (time_ns, seq, key, event); entries of events closed by EOE go stale and
        # are skipped when popped.
        self._heap: list[tuple[int, int, str, AuditEvent]] = []
        self._seq = itertools.count()

    # -- counters -----------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        return {
            "records": self.records,
            "events": self.events,
            "malformed": self.malformed_count,
            "blank": self.blank,
        }

    @property
    def open_events(self) -> int:
        return len(self._open)

    @property
    def oldest_open_line(self) -> int | None:
        """First line of the earliest-started open event (events before it are final)."""
        for event in self._open.values():
            return event.records[0].line
        return None

    @property
    def oldest_open_ns(self) -> int | None:
        """Audit time of the earliest open event."""
        heap, opened = self._heap, self._open
        while heap and opened.get(heap[0][2]) is not heap[0][3]:
            heapq.heappop(heap)  # closed by EOE: stale
        return heap[0][0] if heap else None

    def drain_malformed(self) -> list[Malformed]:
        """Malformed entries reported since the last drain (keeps a live tail's memory flat)."""
        drained, self.malformed = self.malformed, []
        return drained

    # -- input --------------------------------------------------------------
    def feed(self, line: str, lineno: int) -> list[AuditEvent]:
        """Parse one line (with or without its newline); return the events it closed."""
        return self.feed_lines((line,), lineno)

    def feed_lines(self, lines: Iterable[str], first: int = 1) -> list[AuditEvent]:
        """``feed`` each of ``lines``, numbered from ``first``; the events they closed.

        Per line only the header is read (type, ``msg=audit(TIME:SERIAL)``) and
        the record's text checked: its fields are parsed when first asked for
        (see ``AuditRecord``), so what a consumer drops unread costs little.
        """
        closed: list[AuditEvent] = []
        opened, heap, window = self._open, self._heap, self.window_ns
        newest, records, path = self.newest_ns, 0, self.path
        bad = self._bad
        tails_of, enriched_known, safe_heads = _TAILS.get, _ENRICHED_CACHE, _SAFE_HEADS
        execves = _EXECVE_CACHE.get
        max_line = self.max_line
        lineno = first - 1
        for line in lines:
            lineno += 1
            if len(line) > max_line:
                self.skip_oversized(lineno, Oversized(len(line), max_line))
                continue
            # The header: [node=NODE ]type=TYPE msg=audit(STAMP): ... Partitions are the
            # quick way; any doubt goes through _header, which names what is wrong.
            head, close, body = line.partition("):")
            pre, msg, stamp = head.partition(" msg=audit(")
            if pre[:5] == "type=" and " " not in pre:
                node, rtype = None, pre[5:]
            elif pre[:5] == "node=":
                node, _, rtype = pre.partition(" ")
                node = node[5:]
                if rtype[:5] != "type=" or " " in rtype:
                    msg = ""  # not the quick kind
                rtype = rtype[5:]
            else:
                msg = ""
            if not (close and msg) or "\x00" in line or "msg=audit(" in body:
                parsed_header = self._header(line, lineno)
                if parsed_header is None:
                    continue
                node, rtype, stamp, body = parsed_header
            key = stamp if node is None else f"{node} {stamp}"
            event = opened.get(key)
            if event is None:  # time and serial (as parse_time_ns reads the time)
                seconds, colon, number = stamp.partition(":")
                whole, dot, frac = seconds.partition(".")
                if not (
                    colon
                    and dot
                    and number.isdigit()
                    and whole.isdigit()
                    and frac.isdigit()
                    and len(frac) <= 9
                    and stamp.isascii()
                ):
                    bad(line, lineno, "garbled time or serial in msg=audit(...)")
                    continue
                if len(whole) > 11 or len(number) > 19:  # int() of a huge text is slow
                    bad(line, lineno, "time or serial in msg=audit(...) out of range")
                    continue
                time_ns = int(whole) * 1_000_000_000 + int(frac.ljust(9, "0"))
                serial = int(number)
                if time_ns >= _MAX_TIME_NS or serial > _INT64_MAX:
                    bad(line, lineno, "time or serial in msg=audit(...) out of range")
                    continue
            else:
                time_ns = event.time_ns
            raw, gs, extra_text = body.partition("\x1d")
            extra = extra_text if gs else None
            # Parse now only what might not parse (rare: see _parses_later) and
            # EXECVE (quick, and wanted by every docker CLI event); the rest waits.
            fields = enriched = tail = None
            cut = 0
            try:
                spec = tails_of(rtype)
                found = ""
                if spec is not None:
                    anchor, known = spec
                    head, found, rest = raw.partition(anchor) if anchor else ("", "=", raw)
                if found:
                    tail = known.get(rest)  # it parsed before, and plainly: it will again
                    if tail is None or (
                        head
                        and ('"' in head or "'" in head or "{" in head)
                        and head not in safe_heads
                        and not _head_parses_later(head)
                    ):
                        fields, tail = _record_fields(rtype, raw), None
                    else:
                        cut = len(head)
                elif rtype == "EXECVE":
                    tail = execves(raw)
                    if tail is None:
                        fields = _execve_fast(raw)
                        if fields is not None:
                            if len(_EXECVE_CACHE) >= _CACHE_MAX:
                                _EXECVE_CACHE.clear()
                            _EXECVE_CACHE[raw] = fields.copy()
                        elif not _parses_later(raw):
                            fields = _record_fields(rtype, raw)
                elif not _parses_later(raw):
                    fields = _record_fields(rtype, raw)
                if extra is not None and extra not in enriched_known:
                    enriched = _enriched_fields(extra)
            except _Truncated:
                bad(line, lineno, "unterminated quote (truncated line?)")
                continue
            rec = AuditRecord(rtype, fields, enriched, lineno, raw, extra, tail, cut)
            if time_ns > newest:
                newest = time_ns
            if heap and time_ns - heap[0][0] > window:
                closed += self._expire(time_ns)
            if event is not None:
                records += 1
                event.records.append(rec)
                if rtype == "EOE":
                    closed.append(self._close(key, event))
                continue
            if rtype == "EOE":  # its event was closed by the window already
                bad(line, lineno, "EOE without an open event")
                continue
            records += 1
            event = AuditEvent(time_ns, serial, node, [rec], path)
            if rtype.startswith("DAEMON_"):  # written by auditd itself: never extended
                self.events += 1
                closed.append(event)
                continue
            opened[key] = event
            heapq.heappush(heap, (time_ns, next(self._seq), key, event))
        self.newest_ns, self.records = newest, self.records + records
        return closed

    def _header(self, line: str, lineno: int) -> tuple[str | None, str, str, str] | None:
        """``(node, type, stamp, body)`` of a record line; None (reported) when it is not one."""
        if line.startswith("type="):
            node = None
            rest = line
        elif line.startswith("node="):
            sp = line.find(" ")
            if sp < 0 or not line.startswith("type=", sp + 1):
                self._bad(line, lineno, "node= prefix without type=")
                return None
            node, rest = line[5:sp], line[sp + 1 :]
        else:
            self._not_a_record(line, lineno)
            return None
        sp = rest.find(" ", 5)
        if sp < 0 or not rest.startswith("msg=audit(", sp + 1):
            self._bad(line, lineno, "no msg=audit(...) after type=")
            return None
        close = rest.find("):", sp + 11)
        if close < 0:
            close = _close_without_colon(rest, sp + 11)
        if close < 0:
            self._bad(line, lineno, "msg=audit(...) not closed (truncated line?)")
            return None
        if "\x00" in line:
            self._bad(line, lineno, "NUL bytes in line (binary garbage)")
            return None
        if rest.find("msg=audit(", close) >= 0:  # a cut line ran into the next record
            self._bad(line, lineno, "two records on one line (truncated line?)")
            return None
        return node, rest[5:sp], rest[sp + 11 : close], rest[close + 2 :]

    def _close(self, key: str, event: AuditEvent) -> AuditEvent:
        del self._open[key]
        self.events += 1
        return event

    def _pop_while(self, limit_ns: int) -> list[AuditEvent]:
        """Close open events whose time is below ``limit_ns``, in (time, arrival) order."""
        heap, opened = self._heap, self._open
        closed: list[AuditEvent] = []
        while heap and heap[0][0] < limit_ns:
            _, _, key, event = heapq.heappop(heap)
            if opened.get(key) is event:  # else: stale entry, closed by EOE earlier
                closed.append(self._close(key, event))
        return closed

    def _expire(self, now_ns: int) -> list[AuditEvent]:
        return self._pop_while(now_ns - self.window_ns)

    def flush(self, older_than_ns: int) -> list[AuditEvent]:
        """Close events whose audit time is before ``older_than_ns`` (wall clock, live tail)."""
        return self._pop_while(older_than_ns)

    def flush_all(self) -> list[AuditEvent]:
        """Close every open event (end of input), in audit-time order."""
        closed = self._pop_while(1 << 126)
        self._heap.clear()
        return closed

    # -- bad input ----------------------------------------------------------
    def skip_oversized(self, lineno: int, line: Oversized) -> None:
        """A line too long to read (left unread by ``bounded_lines``, or fed): malformed."""
        self._bad("", lineno, line.reason)

    def feed_block(self, block: list[str | Oversized], first: int) -> list[AuditEvent]:
        """``feed_lines`` of a ``bounded_lines`` block, its oversized lines reported."""
        skipped = [index for index, line in enumerate(block) if type(line) is Oversized]
        if not skipped:
            return self.feed_lines(block, first)  # type: ignore[arg-type]  # all str
        closed: list[AuditEvent] = []
        start = 0
        for index in skipped:
            closed += self.feed_lines(block[start:index], first + start)  # type: ignore[arg-type]
            self.skip_oversized(first + index, block[index])  # type: ignore[arg-type]
            start = index + 1
        closed += self.feed_lines(block[start:], first + start)  # type: ignore[arg-type]
        return closed

    def _not_a_record(self, line: str, lineno: int) -> list[AuditEvent]:
        stripped = line.strip()
        if not stripped:
            self.blank += 1
            return []
        if stripped.startswith("#"):
            return self._bad(line, lineno, "comment line")
        if "type=" in line:
            return self._bad(line, lineno, "garbage before type=")
        return self._bad(line, lineno, "no type= field")

    def _bad(self, line: str, lineno: int, reason: str) -> list[AuditEvent]:
        self.malformed_count += 1
        self.malformed.append(Malformed(self.path, lineno, reason, _printable(line)))
        return []


def _close_without_colon(rest: str, start: int) -> int:
    """Where ``msg=audit(...)`` closes when auditd 2.x wrote no colon after it, else -1.

    ``type=DAEMON_CONFIG msg=audit(1490239800.477:34) config changed, auid=0 …``:
    the stamp ends at the first ``)`` followed by a space or the end of the line.
    Returned as the index of a ``):`` would be (the body starts two further on).
    """
    end = rest.find(")", start)
    if end < 0 or rest[end + 1 : end + 2] not in ("", " ", "\n", "\r"):
        return -1
    return end


# --------------------------------------------------------------------------- ordering


class LineOrder:
    """Re-sequence closed events and Malformed entries into first-line order.

    Push what the assembler produced, then ``pop_ready(assembler.oldest_open_line)``:
    everything that starts before the oldest still-open event is final and comes
    out sorted by line. ``pop_ready(None)`` (nothing open) releases everything.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, AuditEvent | Malformed]] = []
        self._seq = itertools.count()

    def push(self, item: AuditEvent | Malformed) -> None:
        line = item.line
        heapq.heappush(self._heap, (line, next(self._seq), item))

    def pop_ready(self, before_line: int | None) -> list[AuditEvent | Malformed]:
        heap = self._heap
        ready: list[AuditEvent | Malformed] = []
        while heap and (before_line is None or heap[0][0] < before_line):
            ready.append(heapq.heappop(heap)[2])
        return ready

    def __len__(self) -> int:
        return len(self._heap)


# --------------------------------------------------------------------------- files


def open_audit_text(path: Path) -> IO[str]:
    """Open plain or gzip (by magic bytes, whatever the name) text that never fails to decode."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="\n")
    # newline="\n": only LF ends a line, so stray CRs in garbage cannot split lines
    return open(path, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 20)


def read_audit_file(
    path: str | Path, window_secs: float = 2.0, assembler: AuditAssembler | None = None
) -> Iterator[AuditEvent | Malformed]:
    """Events and Malformed entries of one file, in file order of their first line.

    Pass ``assembler`` to read its counters afterwards; it must be fresh. Lines
    longer than its ``max_line`` are skipped unread (bounded memory) and reported.
    """
    path = Path(path)
    asm = assembler if assembler is not None else AuditAssembler(str(path), window_secs)
    order = LineOrder()
    push = order.push
    lineno = 1
    with open_audit_text(path) as stream:
        # About 1 MB of lines at a time (the order of what comes out is the same:
        # LineOrder releases everything sorted by first line).
        for lines in bounded_lines(stream, asm.max_line, _READ_HINT):
            closed = asm.feed_block(lines, lineno)
            lineno += len(lines)
            for bad in asm.drain_malformed():
                push(bad)
            for event in closed:
                push(event)
            yield from order.pop_ready(asm.oldest_open_line)
    for event in asm.flush_all():
        push(event)
    for bad in asm.drain_malformed():
        push(bad)
    yield from order.pop_ready(None)


_ROTATED = re.compile(r"^(?P<base>.*?)(?:\.(?P<num>\d+))?(?P<gz>\.gz)?$")


def rotation_order(paths: Iterable[str | Path]) -> list[Path]:
    """Oldest first: ``audit.log.3, audit.log.2, audit.log.1, audit.log`` (``.gz`` allowed)."""

    def key(path: Path) -> tuple[str, int]:
        match = _ROTATED.match(path.name)
        assert match is not None  # the pattern matches any name
        num = match.group("num")
        return (str(path.parent / match.group("base")), -int(num) if num else 0)

    return sorted((Path(p) for p in paths), key=key)


def read_audit_files(
    paths: Iterable[str | Path] | str | Path, window_secs: float = 2.0
) -> Iterator[AuditEvent | Malformed]:
    """A rotated set, oldest file first, each file with its own line numbers.

    ``paths`` may be a directory (its ``audit.log*`` files are taken). An event
    cut by a rotation comes out as two events with the same id, one per file.
    """
    if isinstance(paths, str | Path):
        root = Path(paths)
        paths = sorted(root.glob("audit.log*")) if root.is_dir() else [root]
    for path in rotation_order(paths):
        yield from read_audit_file(path, window_secs)
