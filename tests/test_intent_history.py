"""`run` tries on a create only the intents that ended less than a week ago
(`ENDED_TRIED_NS`), so a host that declares an intent per deploy matches creates
against the last week's and not its whole history; `ingest` tries them all."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from listener.intents import (
    ENDED_TRIED_NS,
    IntentBook,
    IntentSpec,
    IntentStage,
    close_event,
    declare_event,
)
from listener.model.event import Actor, Event, Who, natural_id
from sinks.sqlite import SQLiteTrail

_DAY = 24 * 3600 * 1_000_000_000


def _declared(name: str, at_ns: int, expires: str | None = None) -> Event:
    spec = IntentSpec(name=name, who="deploy", why=f"rollout of {name}", expires=expires)
    return declare_event(spec, host="h", declared_by=Who(), via="cli", now_ns=at_ns)


def _create(name: str, at_ns: int) -> Event:
    return Event(
        id=natural_id("create", name, at_ns),
        time_ns=at_ns,
        source="docker",
        host="h",
        type="container",
        action="create",
        actor=Actor(id=f"{abs(hash(name)):064x}", name=name, image="reg/app:1"),
    )


def _stamped(path: Path, intents: list[Event], creates: list[Event], *, live: bool) -> list[str]:
    """The intent id each create got (or "-") from a stage over a trail holding `intents`."""

    async def go() -> list[str]:
        async with SQLiteTrail(path) as trail:
            await trail.call(lambda t: t.append(intents))
            stage = IntentStage(trail, IntentBook(), live=live)
            await stage.before_write(creates)
        return [str((e.attributes.get("intent") or {}).get("id", "-")) for e in creates]

    return asyncio.run(go())


def test_run_skips_intents_that_ended_over_a_week_ago_ingest_does_not(tmp_path: Path) -> None:
    now = time.time_ns()
    long_ago = now - 30 * _DAY
    old = _declared("web-*", long_ago, expires="2d")  # ended 28 days ago
    recent = _declared("api-*", now - 10 * _DAY)
    closed_recently = close_event(recent.actor.id, host="h", closed_by=Who(), via="cli",
                                  now_ns=now - 3 * _DAY)  # fmt: skip
    # Creates from when each intent was open: a capture, or the Engine's replay.
    creates = [_create("web-1", long_ago + _DAY), _create("api-1", now - 5 * _DAY)]
    intents = [old, recent, closed_recently]

    assert _stamped(tmp_path / "ingest.db", intents, creates, live=False) == [
        old.actor.id,
        recent.actor.id,
    ]
    creates = [_create("web-1", long_ago + _DAY), _create("api-1", now - 5 * _DAY)]
    assert _stamped(tmp_path / "run.db", intents, creates, live=True) == ["-", recent.actor.id]


def test_a_close_read_later_drops_the_intent_once_a_week_has_passed() -> None:
    now = time.time_ns()
    book = IntentBook(ended_before_ns=now - ENDED_TRIED_NS)
    declared = _declared("db-*", now - 20 * _DAY)
    book.apply(declared)
    create = _create("db-1", now - 15 * _DAY)
    found = book.match(create)
    assert found is not None and found.id == declared.actor.id  # open then, and not ended
    book.apply(close_event(declared.actor.id, host="h", closed_by=Who(), via="cli",
                           now_ns=now - 10 * _DAY))  # fmt: skip
    assert book.match(create) is None  # ended ten days ago: no longer tried

    book.ended_before_ns = None  # as ingest: every intent is tried
    found = book.match(create)
    assert found is not None and found.id == declared.actor.id


def test_an_intent_is_dropped_when_the_floor_passes_its_end_and_newest_still_wins() -> None:
    now = time.time_ns()
    book = IntentBook(ended_before_ns=now - ENDED_TRIED_NS)
    older = _declared("svc-*", now - 9 * _DAY)
    newer = _declared("svc-*", now - 8 * _DAY, expires="2d")  # ends 6 days ago
    for event in (older, newer):
        book.apply(event)
    create = _create("svc-1", now - 7 * _DAY)
    found = book.match(create)
    assert found is not None and found.id == newer.actor.id  # the newest open one
    book.ended_before_ns = now  # a week later
    found = book.match(create)
    assert found is not None and found.id == older.actor.id  # never ends: still tried


def test_a_start_primes_the_deadlines_of_recent_intents_containers_still_there(
    tmp_path: Path,
) -> None:
    from listener.expiry import ExpiryWatch, prime_expiry
    from listener.intents import load_book

    now = time.time_ns()
    old = _declared("old-*", now - 60 * _DAY, expires="2d")  # passed 58 days ago
    current = _declared("web-*", now - 2 * _DAY, expires="7d")
    events = [old, _create("old-1", now - 59 * _DAY), current]
    events += [_create("web-1", now - _DAY), _create("web-2", now - _DAY)]
    for event in events[3:] + events[1:2]:  # stamped as the intent stage would
        intent = old if event.actor.name == "old-1" else current
        event.attributes = {"intent": {"id": intent.actor.id, "expires_ns": now}}
    removed = _create("web-2", now - _DAY // 2).model_copy(update={"action": "destroy"})
    removed.id = natural_id("destroy", "web-2")
    with SQLiteTrail(tmp_path / "t.db") as trail:
        trail.append([*events, removed])
        watch = ExpiryWatch("h")
        prime_expiry(trail, load_book(trail), watch, now_ns=now)
    web_1 = events[3].actor.id
    assert set(watch.deadlines) == {web_1}  # not the removed web-2, not the old intent's
    assert watch.deadlines[web_1].intent_id == current.actor.id
