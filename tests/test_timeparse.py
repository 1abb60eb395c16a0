from __future__ import annotations

import pytest

from config.errors import InputError
from listener.timeparse import parse_time_ns

NOW = 1_795_346_502_655_545_638


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1795346502", 1_795_346_502_000_000_000),
        ("1795346502.655545638", 1_795_346_502_655_545_638),
        ("1795346502.5", 1_795_346_502_500_000_000),
        ("2026-11-23T10:00:00Z", 1_795_428_000_000_000_000),
        ("2026-11-23T10:00:00.000000001Z", 1_795_428_000_000_000_001),
        ("2026-11-23T18:00:00+08:00", 1_795_428_000_000_000_000),
        ("2026-11-23T18:00:00+0800", 1_795_428_000_000_000_000),
        ("2026-11-23 10:00:00", 1_795_428_000_000_000_000),
        ("2026-11-23", 1_795_392_000_000_000_000),
        ("10m", NOW - 600 * 10**9),
        ("2h", NOW - 7200 * 10**9),
        ("7d", NOW - 7 * 86400 * 10**9),
        ("1h30m", NOW - 5400 * 10**9),
        ("500ms", NOW - 500_000_000),
        ("1.5h", NOW - 5400 * 10**9),
    ],
)
def test_accepted_forms(text: str, expected: int) -> None:
    assert parse_time_ns(text, now_ns=NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "10x", "2026-13-40T00:00:00Z", "1h-"])
def test_unreadable_times_say_what_is_accepted(text: str) -> None:
    with pytest.raises(InputError, match="RFC 3339"):
        parse_time_ns(text, now_ns=NOW)
