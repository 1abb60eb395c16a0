"""Parsing of `--since` / `--until` values, as `docker events` accepts them.

Accepted: RFC 3339 (`2026-11-23T10:00:00Z`, fractional seconds up to ns,
offsets, or a bare date), unix seconds with an optional fraction
(`1795346502.65`), and durations before now (`10m`, `2h`, `7d`, `1h30m`,
`500ms`). Results are integer UTC nanoseconds, computed without floats so that
nanosecond timestamps round-trip exactly.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from config.errors import InputError

_NS = 1_000_000_000
_MIN_NS, _MAX_NS = -(2**63), 2**63 - 1
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": _NS,
    "m": 60 * _NS,
    "h": 3600 * _NS,
    "d": 86400 * _NS,
    "w": 7 * 86400 * _NS,
}
_MAX_TEXT = 100  # no real time or duration is longer; int() of huge digit strings is slow
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d|w)")
_UNIX = re.compile(r"(\d+)(?:\.(\d{1,9}))?")
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})(?:[Tt ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,9}))?)?"
    r"\s*([Zz]|[+-]\d{2}:?\d{2})?"
)


def parse_time_ns(text: str, *, now_ns: int | None = None) -> int:
    """One `--since`/`--until` value as UTC nanoseconds; `InputError` when unreadable."""
    value = text.strip()
    now_ns = time.time_ns() if now_ns is None else now_ns
    if len(value) > _MAX_TEXT:
        raise InputError(f"cannot read time {text[:40]!r}…: {len(text)} characters is too long")
    for parser in (_parse_unix, _parse_duration, _parse_rfc3339):
        result = parser(value, now_ns)
        if result is not None:
            return _in_range(text, result)
    raise InputError(
        f"cannot read time {text!r}: use RFC 3339 (2026-11-23T10:00:00Z), "
        "unix seconds (1795346502.5) or a duration before now (10m, 2h, 7d)"
    )


def _in_range(text: str, result: int) -> int:
    """Times are stored as signed 64-bit nanoseconds: 1677-09-21 to 2262-04-11."""
    if not _MIN_NS <= result <= _MAX_NS:
        raise InputError(
            f"time {text!r} is out of range: docktrail stores times between "
            "1677-09-21 and 2262-04-11 (UTC)"
        )
    return result


def _parse_unix(value: str, now_ns: int) -> int | None:
    match = _UNIX.fullmatch(value)
    if match is None:
        return None
    seconds, fraction = match.groups()
    return int(seconds) * _NS + int((fraction or "0").ljust(9, "0"))


def _parse_duration(value: str, now_ns: int) -> int | None:
    if not value or _DURATION.sub("", value):
        return None
    total = 0
    for amount, unit in _DURATION.findall(value):
        whole, _, fraction = amount.partition(".")
        scale = _UNIT_NS[unit]
        total += int(whole) * scale + int(fraction or "0") * scale // 10 ** len(fraction or "0")
    return now_ns - total


def _parse_rfc3339(value: str, now_ns: int) -> int | None:
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    day, clock, fraction, zone = match.groups()
    clock = clock or "00:00:00"
    if clock.count(":") == 1:
        clock += ":00"
    zone = zone or "Z"
    if zone in ("Z", "z"):
        zone = "+00:00"
    elif ":" not in zone:
        zone = zone[:3] + ":" + zone[3:]
    try:
        moment = datetime.fromisoformat(f"{day}T{clock}{zone}")
        seconds = int(moment.astimezone(UTC).timestamp())
    except (ValueError, OverflowError):  # no such date, or beyond year 1..9999 in UTC
        return None
    return seconds * _NS + int((fraction or "0").ljust(9, "0"))
