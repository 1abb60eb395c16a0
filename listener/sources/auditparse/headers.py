"""Record headers off the quick path: the prefixes seen before, why a stamp is not one,
and auditd 2.x's header without a colon."""

from __future__ import annotations

from listener.sources.auditparse.bodies import ANCHORS, BODIES, Bodies
from listener.sources.auditparse.fields import CACHE_MAX

# Record prefixes seen before ("type=SYSCALL", "node=web1 type=PATH", without NUL
# bytes) -> (node, type, its anchor, its BODIES entry or None).
PREFIXES: dict[str, tuple[str | None, str, str, Bodies | None]] = {}
GARBLED = "garbled time or serial in msg=audit(...)"
OUT_OF_RANGE = "time or serial in msg=audit(...) out of range"


def remember_prefix(pre: str, node: str | None, rtype: str) -> None:
    """Cache a record prefix of the quick kind (none with a NUL byte: the quick path
    does not look at the prefix again)."""
    if "\x00" in pre:
        return
    if len(PREFIXES) >= CACHE_MAX:
        PREFIXES.clear()
    PREFIXES[pre] = (node, rtype, ANCHORS.get(rtype, ""), BODIES.get(rtype))


def stamp_error(stamp: str) -> str:
    """Why ``TIME:SERIAL`` (as parse_time_ns reads the time) is not a stamp: the first
    check it fails, of those `AuditAssembler.feed_lines` makes."""
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
        return GARBLED
    return OUT_OF_RANGE  # too long, too late, or beyond 64 bits


def close_without_colon(rest: str, start: int) -> int:
    """Where ``msg=audit(...)`` closes when auditd 2.x wrote no colon after it, else -1.

    ``type=DAEMON_CONFIG msg=audit(1490239800.477:34) config changed, auid=0 …``:
    the stamp ends at the first ``)`` followed by a space or the end of the line.
    Returned as the index of a ``):`` would be (the body starts two further on).
    """
    end = rest.find(")", start)
    if end < 0 or rest[end + 1 : end + 2] not in ("", " ", "\n", "\r"):
        return -1
    return end
