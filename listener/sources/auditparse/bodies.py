"""What `AuditAssembler` keeps of a fed record's text: its fields now (only when they
might not parse, see `parses_later`) or a cached tail to parse the rest from later; and
the cache of whole record texts after the tail anchor that make the quick path.

The quick path (``AuditAssembler.feed_lines``): the text of a record after its tail
anchor, the ENRICHED part included, repeats heavily (the same user, program and
rule key; the same CWD, PROCTITLE). Once such a text was fed and its tail found
cached, it is remembered in `BODIES` with that tail and the ENRICHED text. A later
line whose text after the anchor is a remembered one needs neither the scan of its
whole line for NUL bytes and a second ``msg=audit(`` (the remembered text has
neither, and only its head and stamp are left to look at), nor the split at the
ENRICHED separator, nor the look-ups of its tail and ENRICHED texts: what
`record_parts` would decide for it is known, a lazy record on the remembered tail.
(An anchor is empty or starts with a space and has no ``m``: a ``msg=audit(`` cannot
straddle it, so looking at the head covers what the remembered text does not.)
"""

from __future__ import annotations

from listener.sources.auditparse.fields import (
    CACHE_MAX,
    ENRICHED_CACHE,
    EXECVE_CACHE,
    SAFE_HEADS,
    TAILS,
    enriched_fields,
    execve_fast,
    head_parses_later,
    parses_later,
    record_fields,
)

Fields = dict[str, str]
# (fields parsed now or None, ENRICHED fields parsed now or None, cached tail or None,
# the head: the text before the tail anchor, "" when the tail is all of it)
Parts = tuple[Fields | None, Fields | None, Fields | None, str]
# text after the anchor -> (the tail, the ENRICHED text or None, the text from the anchor on)
Bodies = dict[str, tuple[Fields, str | None, str]]
# Where the cached tail of a record type starts: TAILS's anchors, and EXECVE's whole
# text (EXECVE_CACHE).
ANCHORS: dict[str, str] = {rtype: anchor for rtype, (anchor, _) in TAILS.items()}
ANCHORS["EXECVE"] = ""
# Per record type of ANCHORS: the text after the anchor, ENRICHED part and all, of a
# record that was fed lazily on a cached tail -> (that tail, the ENRICHED text or None,
# the text from the anchor on: what the records of that text keep, one string for all).
BODIES: dict[str, Bodies] = {rtype: {} for rtype in ANCHORS}
# Longer texts are not remembered (real records are far shorter; a crafted log's are
# not kept twice over): they take the slow path every time.
BODY_MAX = 2048


def record_parts(rtype: str, raw: str, extra: str | None) -> Parts:
    """What a record of type `rtype` keeps of its raw text and ENRICHED text `extra`.

    Parses now only what might not parse (rare: see `parses_later`) and EXECVE
    (quick, and wanted by every docker CLI event); the rest waits. Raises
    `Truncated` when the text cannot parse.
    """
    fields = enriched = tail = None
    head, found = "", ""
    spec = TAILS.get(rtype)
    if spec is not None:
        anchor, known = spec
        cut, found, rest = raw.partition(anchor) if anchor else ("", "=", raw)
    if found:
        tail = known.get(rest)  # it parsed before, and plainly: it will again
        if tail is None or (
            cut
            and ('"' in cut or "'" in cut or "{" in cut)
            and cut not in SAFE_HEADS
            and not head_parses_later(cut)
        ):
            fields, tail = record_fields(rtype, raw), None
        else:
            head = cut
    elif rtype == "EXECVE":
        tail = EXECVE_CACHE.get(raw)
        if tail is None:
            fields = execve_fast(raw)
            if fields is not None:
                if len(EXECVE_CACHE) >= CACHE_MAX:
                    EXECVE_CACHE.clear()
                EXECVE_CACHE[raw] = fields.copy()
            elif not parses_later(raw):
                fields = record_fields(rtype, raw)
    elif not parses_later(raw):
        fields = record_fields(rtype, raw)
    if extra is not None and extra not in ENRICHED_CACHE:
        enriched = enriched_fields(extra)
    return fields, enriched, tail, head


def remember_body(rtype: str, body: str, tail: Fields, extra: str | None, head: str) -> str:
    """Remember `body` (a record's whole text, which passed the line checks: no NUL
    byte, no second ``msg=audit(``) as one whose text after the anchor was fed lazily
    on `tail` (`record_parts` found it, and `head` before it); its text after `head`."""
    rest = body[len(head) :] if head else body
    bodies = BODIES.get(rtype)
    if bodies is None or len(rest) > BODY_MAX:
        return rest
    anchor = ANCHORS[rtype]
    key = rest[len(anchor) :] if anchor else rest
    if len(bodies) >= CACHE_MAX:
        bodies.clear()
    bodies[key] = (tail, extra, rest)
    return rest
