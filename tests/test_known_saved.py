"""`run` starts from the saved fold of what the trail knows about its host: the same
state as reading every container event again, from only the events after the save."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import orjson

from listener.model.event import Actor, Event, natural_id
from listener.sources import known_saved
from listener.sources.docker_state import load_known_state
from listener.sources.known_saved import (
    KnownFold,
    horizon_name,
    restore_known,
    resume_point,
    state_name,
)
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.test_rule_state import T0, round_events

NS = 1_000_000_000


def image_event(n: int) -> Event:
    image_id = f"sha256:{n:064x}"
    return Event(
        id=natural_id("known-saved", "image", n),
        time_ns=T0 + n * 30 * NS + 5 * NS,
        source="docker",
        host="h1",
        type="image",
        action="pull" if n % 5 else "delete",
        actor=Actor(id=image_id, name=f"registry.internal/app:{n}"),
        attributes={"image_id": image_id},
    )


def history(first: int, last: int) -> list[Event]:
    events = []
    for r in range(first, last):
        events += round_events(r)
        if r % 7 == 0:
            events.append(image_event(r))
    return events


async def run_for_a_while(path: Path, rounds: range, *, stop_cleanly: bool) -> KnownFold:
    """`run`: restore, then store events through the fold stage; saves at a clean stop."""
    async with SQLiteTrail(path) as trail:
        _known, fold = await trail.call(lambda t: restore_known(t, "h1"))
        events = history(rounds.start, rounds.stop)
        for start in range(0, len(events), 500):
            result = await trail.write(events[start : start + 500])
            await fold.after_write(result.stored)
        if stop_cleanly:
            await fold.save()
        return fold


def reference(path: Path) -> object:
    with SQLiteTrail(path) as trail:
        return load_known_state(trail, "h1")


def restored(path: Path) -> tuple[object, KnownFold]:
    with SQLiteTrail(path) as trail:
        return restore_known(trail, "h1")


async def test_a_restart_restores_what_reading_the_whole_trail_gives(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await run_for_a_while(path, range(0, 900), stop_cleanly=True)
    known, fold = restored(path)
    assert known == reference(path)
    assert known.containers and known.removed and known.images
    with SQLiteTrail(path) as trail:
        assert fold.saved_through == trail.head()[0]  # nothing left to read


async def test_after_a_crash_it_folds_on_from_the_last_save(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    first = await run_for_a_while(path, range(0, 900), stop_cleanly=False)
    assert 0 < first.saved_through < first.folded_through  # saved while running, not at the end
    known, fold = restored(path)
    assert fold.saved_through == first.saved_through
    assert known == reference(path)


async def test_events_another_process_stored_meanwhile_are_folded(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await run_for_a_while(path, range(0, 200), stop_cleanly=True)
    async with SQLiteTrail(path) as trail:
        _known, fold = await trail.call(lambda t: restore_known(t, "h1"))
        await trail.call(lambda t: t.append(history(200, 260)))  # `docktrail ingest`, say
        result = await trail.write(history(260, 300))
        await fold.after_write(result.stored)
        await fold.save()
    assert restored(path)[0] == reference(path)


async def test_a_row_that_does_not_authenticate_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await run_for_a_while(path, range(0, 300), stop_cleanly=True)
    with sqlite3.connect(path) as conn:
        (body,) = conn.execute("SELECT body FROM rule_state WHERE name = ?", (state_name("h1"),))
        state = orjson.loads(body[0])
        state["removed"] = []  # hide removals: a reconciliation would see them "appear"
        state["containers"] = [column[:1] for column in state["containers"]]
        conn.execute("UPDATE rule_state SET body = ?", (orjson.dumps(state),))
    known, _fold = restored(path)
    assert known == reference(path)  # rebuilt, not trusted
    again, fold = restored(path)  # and saved again: the next start restores it
    assert again == known and fold.saved_through == fold.folded_through


async def test_it_saves_while_running(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    fold = await run_for_a_while(path, range(0, 1000), stop_cleanly=False)
    assert fold.folded_through - fold.saved_through < known_saved.SAVE_EVERY_EVENTS


async def test_the_source_and_the_fold_hold_copies_of_their_own(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    await run_for_a_while(path, range(0, 300), stop_cleanly=True)
    known, fold = restored(path)
    assert known == fold.state
    renamed, removed = list(known.containers.values())[:2]
    later = max(c.last_event_ns for c in known.containers.values()) + NS
    known.apply(container_event(renamed.id, "die", later, name="renamed"))
    known.apply(container_event(removed.id, "destroy", later))
    known.apply(image_event(1))  # a pull
    assert (known.containers[renamed.id].state, known.containers[renamed.id].name) == (
        "exited",
        "renamed",
    )
    assert removed.id not in known.containers and removed.id in known.removed
    folded = fold.state.containers[renamed.id]
    assert (folded.state, folded.name) == (renamed.state, renamed.name) != ("exited", "renamed")
    assert removed.id in fold.state.containers and removed.id not in fold.state.removed
    assert f"sha256:{1:064x}" not in fold.state.images
    fold.state.apply(container_event(renamed.id, "start", later + NS))
    assert known.containers[renamed.id].state == "exited"  # and the other way round


def container_event(cid: str, action: str, time_ns: int, name: str | None = None) -> Event:
    return Event(
        id=natural_id("known-saved", cid, action, time_ns),
        time_ns=time_ns,
        source="docker",
        host="h1",
        type="container",
        action=action,
        actor=Actor(id=cid, name=name),
    )


# -- where reading resumes (the saved horizon) ---------------------------------------

DAYS = 86_400 * NS


def _quiet_host_trail(path: Path) -> int:
    """Host h1's last Engine event is 60 days old, and 2,500 audit events came after it:
    beyond the rows and the time windows `last_docker_time_ns` looks at first."""
    long_ago = time.time_ns() - 60 * DAYS
    engine = Event(
        id=natural_id("quiet", "engine"), time_ns=long_ago, source="docker", host="h1",
        type="network", action="connect", actor=Actor(id="n" * 64, name="bridge"),
    )  # fmt: skip
    audits = [
        Event(
            id=natural_id("quiet", n),
            time_ns=long_ago + (n + 1) * NS,
            source="auditd",
            host="h1",
            type="file",
            action="read",
            actor=Actor(id="/var/lib/docker", name="ls"),
        )
        for n in range(2_500)
    ]
    with SQLiteTrail(path) as trail:
        trail.append([engine, *audits])
    return long_ago


class ScanWatch(SQLiteTrail):
    """A trail that notes the Engine-event searches `last_docker_time_ns` falls back to."""

    scans: list[EventFilter]

    def query(self, f: EventFilter) -> Iterator[Event]:
        if f.source == "docker":
            self.scans.append(f)
        return super().query(f)


def _resume_point(path: Path) -> tuple[int | None, list[EventFilter]]:
    with ScanWatch(path) as trail:
        trail.scans = []
        return resume_point(trail, "h1"), trail.scans


async def test_a_quiet_host_resumes_from_its_saved_horizon_without_a_scan(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    long_ago = _quiet_host_trail(path)
    first, scans = _resume_point(path)
    assert first == long_ago and scans  # no saved horizon yet: the trail was searched
    async with SQLiteTrail(path) as trail:  # `run` starts (and saves what it rebuilt)
        known, _fold = await trail.call(lambda t: restore_known(t, "h1"))
    assert known.last_docker_ns == long_ago
    again, scans = _resume_point(path)
    assert again == long_ago and scans == []
    later = Event(
        id=natural_id("quiet", "later"), time_ns=long_ago + 5 * DAYS, source="docker",
        host="h1", type="volume", action="create", actor=Actor(id="v1", name="v1"),
    )  # fmt: skip
    with SQLiteTrail(path) as trail:  # stored after the save, by `docktrail ingest` say
        trail.append([later])
    assert _resume_point(path) == (later.time_ns, [])


def test_a_horizon_row_that_does_not_authenticate_is_not_believed(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    long_ago = _quiet_host_trail(path)
    with SQLiteTrail(path) as trail:
        restore_known(trail, "h1")
    forged = orjson.dumps({"last_docker_ns": time.time_ns() + 30 * DAYS})  # skip a month
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE rule_state SET body = ? WHERE name = ?", (forged, horizon_name("h1")))
    point, scans = _resume_point(path)
    assert point == long_ago and scans  # searched again, not taken from the row
