"""The fields of one record: values, the fast path, the slow path for quoting and
nesting, ENRICHED fields, EXECVE arguments, and the bounded caches that keep it fast.
"""

from __future__ import annotations

import itertools
import re

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
# ASCII bytes but "=" and what str.split() splits at (see _pairs).
_NOT_SEPARATORS = bytes(c for c in range(128) if c != ord("=") and not chr(c).isspace())
# Entries per parse cache (a few MB at most); cleared when full, no LRU bookkeeping.
CACHE_MAX = 2048
# PATH heads (item, name, inode: a few hundred bytes each) are more varied: a busy
# Docker host touches thousands of overlay paths again and again.
HEAD_CACHE_MAX = 8192
# Where the low-cardinality tail of a record starts ("" = the whole body), and
# the cache of parsed tails (keyed by the text after that anchor), see
# record_fields. Only kernel record types with a fixed field order.
TAILS: dict[str, tuple[str, dict[str, dict[str, str]]]] = {
    "SYSCALL": (" auid=", {}),
    "PATH": (" dev=", {}),
    "CWD": ("", {}),
    "PROCTITLE": ("", {}),
    "BPRM_FCAPS": ("", {}),
    "SOCKADDR": ("", {}),
}
_EXECVE_ARG = re.compile(r"a(\d+)(?:\[(\d+)\])?")  # EXECVE only, off the hot path
MALFORMED_TEXT_MAX = 200
NO_KEYS: frozenset[str] = frozenset()
MAX_LINE = 16 * 1024 * 1024  # characters; `input.max_line_bytes`
LATEST_TIME_NS = 7_258_118_400 * 1_000_000_000  # 2200-01-01, as listener.bounds.MAX_TIME_NS
INT64_MAX = (1 << 63) - 1


class Truncated(Exception):
    """A quoted value or a brace group never ends: the line was cut."""


# --------------------------------------------------------------------------- values


def _unhex(value: str) -> str:
    """Decode auditd's hex encoding; anything that is not valid hex stays as is."""
    if len(value) & 1:
        return value
    try:
        return bytes.fromhex(value).decode("utf-8", "surrogateescape")
    except ValueError:
        return value


def as_id(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()) or len(value) > 19:
        return None
    number = int(value)
    return None if number in (UNSET_ID, (1 << 64) - 1) or number > INT64_MAX else number


def parse_time_ns(stamp_time: str) -> int | None:
    """``"1795346502.569"`` -> ``1795346502569000000`` with integer math; None if garbled."""
    sec, dot, frac = stamp_time.partition(".")
    if not (dot and sec.isascii() and sec.isdigit() and frac.isascii() and frac.isdigit()):
        return None
    if len(frac) > 9 or len(sec) > 11:
        return None
    time_ns = int(sec) * 1_000_000_000 + int(frac.ljust(9, "0"))
    return time_ns if time_ns < LATEST_TIME_NS else None


# --------------------------------------------------------------------------- fields


def fields_fast(text: str) -> dict[str, str] | None:
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
        fields = _pairs(text)
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


def _pairs(text: str) -> dict[str, str]:
    """``dict(map(str.split, text.split(), repeat("=")))``, ValueError included.

    A plain text, `` k=v k=v``, with its separators in that order and nothing but
    single spaces between words, is split in two C calls instead of one per word.
    """
    if text[:1] == " " and text.isascii():
        separators = text.encode().translate(None, _NOT_SEPARATORS)
        if separators == b" =" * (len(separators) >> 1):
            words = iter(text.replace(" ", "=").split("="))
            next(words)  # "": before the first space
            return dict(zip(words, words, strict=True))  # (pairs: the separators said so)
    return dict(map(_str_split, text.split(), _EQ))


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
                raise Truncated
            value, pos = text[start + 1 : end], end + 1
            if opener == "'" and key == "msg":
                nested = value
                continue
            quoted.add(key)
        elif opener == "{":
            end = text.find("}", start)
            if end < 0:
                raise Truncated
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


def parse_fields(rtype: str, text: str) -> dict[str, str]:
    """Raw fields of one record (the text between ``):`` and ``\\x1d``)."""
    if rtype != "EXECVE":  # EXECVE arguments often hold "=": always exact
        fields = fields_fast(text)
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
ENRICHED_CACHE: dict[str, dict[str, str]] = {}
# Whole EXECVE texts (a host runs the same commands again and again), see execve_fast.
EXECVE_CACHE: dict[str, dict[str, str]] = {}


def _split_tail(anchor: str, text: str) -> tuple[str, str] | None:
    """``(head, rest)`` around the first ``anchor`` (the tail is anchor + rest); None if absent."""
    if not anchor:
        return "", text
    head, found, rest = text.partition(anchor)
    return (head, rest) if found else None


def record_fields(rtype: str, text: str) -> dict[str, str]:
    """Raw fields; the repetitive tail of common records is parsed once per distinct text.

    A SYSCALL's ``auid= ... key=`` or a PATH's ``dev= ... cap_frootid=`` take
    few distinct values on a host, so only the head (pids, addresses, inode)
    is split every time. Both parts are validated on their own by
    ``fields_fast``, so a cut inside a quoted value falls back to the exact
    parse of the whole text.
    """
    spec = TAILS.get(rtype)
    parts = None if spec is None else _split_tail(spec[0], text)
    if spec is None or parts is None:
        return parse_fields(rtype, text)
    (anchor, cache), (head, rest) = spec, parts
    tail = cache.get(rest)
    if tail is None:
        tail_text = anchor + rest
        tail = fields_fast(tail_text)
        if tail is None:
            return parse_fields(rtype, text)
        if _plain(tail_text, tail):
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[rest] = tail
    if not head:
        return tail.copy()
    fields = fields_fast(head)
    if fields is None:
        return parse_fields(rtype, text)
    fields.update(tail)
    return fields


def _plain(text: str, fields: dict[str, str]) -> bool:
    """Only single spaces between words, no name twice: the exact scanner reads it alike.

    Then a cached tail's values are the record's values whatever its head holds
    (``AuditRecord.get`` answers from the tail without parsing the head).
    """
    words = text.split()
    return len(words) == len(fields) and [w for w in text.rstrip("\n").split(" ") if w] == words


def enriched_fields(text: str) -> dict[str, str]:
    """ENRICHED fields (a few users x syscall names: parsed once per distinct text)."""
    cache = ENRICHED_CACHE
    parsed = cache.get(text)
    if parsed is None:
        parsed = _parse_enriched(text)
        if len(cache) >= CACHE_MAX:
            cache.clear()
        cache[text] = parsed
    return parsed.copy()


def parses_later(text: str) -> bool:
    """True when parsing ``text`` can wait: it cannot raise ``Truncated``.

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


# Heads of PATH records (item, name, inode) with quotes that parses_later accepted:
# the same files come up again and again.
SAFE_HEADS: set[str] = set()


def head_parses_later(head: str) -> bool:
    if not parses_later(head):
        return False
    if len(SAFE_HEADS) >= HEAD_CACHE_MAX:
        SAFE_HEADS.clear()
    SAFE_HEADS.add(head)
    return True


def execve_fast(text: str) -> dict[str, str] | None:
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


def assemble_argv(records: list[dict[str, str]]) -> list[str]:
    """Reassemble argv from the EXECVE records of one event (split args included)."""
    merged: dict[str, str] = {}
    for fields in records:
        merged.update(fields)
    argc = as_id(merged.get("argc"))
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
