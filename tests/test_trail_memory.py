"""MemoryTrail and the shared trail semantics (sinks.chain, sinks.filtering)."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from config.errors import TrailError
from listener.model.event import (
    GENESIS_HASH,
    Actor,
    Event,
    Who,
    canonical_json,
    chain_hash,
    natural_id,
)
from sinks.base import EventFilter, TrailSink
from sinks.chain import link_problem, split_new
from sinks.filtering import glob_match, glob_prefix
from sinks.memory import MemoryTrail

T0 = 1_795_346_502_000_000_000


def event(n: int, **fields: Any) -> Event:
    base: dict[str, Any] = {
        "id": natural_id("memory", n),
        "time_ns": T0 + n,
        "source": "docker",
        "host": "h1",
        "type": "container",
        "action": "start",
        "actor": Actor(id=f"{n:064x}", name=f"web-{n}", image="nginx:1"),
        "who": Who(login="alice"),
    }
    return Event(**(base | fields))


def test_append_dedupe_and_chain() -> None:
    trail = MemoryTrail()
    events = [event(n) for n in range(1, 6)]
    first = trail.append(events)
    assert [e.seq for e in first.stored] == [1, 2, 3, 4, 5]
    assert trail.append(events).duplicates == 5
    result = trail.append([event(6), event(6), event(1), event(7)])
    assert ([e.seq for e in result.stored], result.duplicates) == ([6, 7], 2)
    prev = GENESIS_HASH
    for stored in trail.query(EventFilter()):
        assert stored.prev_hash == prev
        assert stored.hash == chain_hash(prev, canonical_json(stored.content()))
        prev = stored.hash
    assert trail.head() == (7, prev)
    assert trail.count() == 7
    assert trail.get(7) == result.stored[-1]
    assert trail.get(0) is None and trail.get(8) is None
    assert trail.verify().ok


def test_returned_events_do_not_alias_the_trail() -> None:
    trail = MemoryTrail()
    stored = trail.append([event(1, attributes={"labels": {"a": "b"}})]).stored[0]
    stored.attributes["labels"]["a"] = "edited"
    queried = next(trail.query(EventFilter()))
    queried.attributes["labels"]["a"] = "edited too"
    assert trail.verify().ok


def test_bad_event_stores_nothing() -> None:
    trail = MemoryTrail()
    with pytest.raises(TrailError, match="cannot be stored"):
        trail.append([event(1), event(2, config={"x": object()})])
    assert trail.count() == 0


def test_verify_names_edits() -> None:
    trail = MemoryTrail()
    trail.append([event(n) for n in range(1, 11)])
    trail._events[4].action = "stop"
    report = trail.verify()
    assert (report.ok, report.first_bad_seq) == (False, 5)
    assert report.problem == "seq 5: hash does not match its content (row edited)"


def test_verify_names_deleted_and_reordered() -> None:
    trail = MemoryTrail()
    trail.append([event(n) for n in range(1, 11)])
    saved = list(trail._events)
    del trail._events[3]
    assert trail.verify().problem == "seq 4: missing (seq jumps from 3 to 5)"
    trail._events = [*saved[:6], saved[7], saved[6], *saved[8:]]
    assert trail.verify().problem == "seq 7: missing (seq jumps from 6 to 8)"
    trail._events = [*saved[:6], saved[5], *saved[6:]]
    assert trail.verify().problem == "seq 6: out of order (comes after seq 6)"


def test_link_problem_wording() -> None:
    body = '{"x":1}'
    good = chain_hash(GENESIS_HASH, body)
    assert link_problem(1, 1, GENESIS_HASH, GENESIS_HASH, good, body) is None
    assert link_problem(3, 1, GENESIS_HASH, GENESIS_HASH, good, body) == (
        1,
        "seq 1: missing (trail starts at seq 3)",
    )
    assert link_problem(1, 1, "f" * 64, GENESIS_HASH, good, body) == (
        1,
        "seq 1: prev_hash is not the genesis hash (rows deleted at the start)",
    )


def test_split_new() -> None:
    a, b = event(1), event(2)
    assert split_new([a, b, a], known={b.id}) == ([a], 2)


async def test_async_api_is_a_trail_sink() -> None:
    trail: TrailSink = MemoryTrail()
    async with trail:
        result = await trail.write([event(1), event(2)])
        assert [e.seq for e in result.stored] == [1, 2]
        assert (await trail.write([event(2)])).duplicates == 1


async def test_call_matches_sqlite_trail() -> None:
    async with MemoryTrail() as trail:
        await trail.write([event(1)])
        assert await trail.call(lambda t: t.head()[0]) == 1


GLOB_CASES = [
    ("docker.io/library/*", "docker.io/library/redis:7"),
    ("docker.io/library/*", "docker.io/libraryX"),
    ("*:1.2?", "nginx:1.25"),
    ("*:1.2?", "nginx:1.2"),
    ("*[0-9]", "web-1"),
    ("*[^0-9]", "web-1"),
    ("*[^0-9]", "web-a"),
    ("[]x]*", "]abc"),
    ("a[*", "a[b"),  # unterminated class never matches
    ("*.*", "a.b"),
    ("*.*", "ab"),
    ("A*", "a"),  # case-sensitive
    ("*\\*", "a\\b"),
    ("*", "multi\nline"),
    ("ü*", "über"),
]


@pytest.mark.parametrize(("pattern", "text"), GLOB_CASES)
def test_glob_matches_sqlite(pattern: str, text: str) -> None:
    conn = sqlite3.connect(":memory:")
    expected = bool(conn.execute("SELECT ? GLOB ?", (text, pattern)).fetchone()[0])
    assert glob_match(pattern, text) is expected


def test_glob_prefix() -> None:
    assert glob_prefix("docker.io/library/*") == "docker.io/library/"
    assert glob_prefix("*x") == ""
    assert glob_prefix("a?b[c]*") == "a"
    assert glob_prefix("plain") == "plain"
