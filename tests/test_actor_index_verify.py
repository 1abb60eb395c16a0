"""verify checks the actor index (migration 0014, `sinks.sqlite.actorcheck`): a row
missing or a first seq moved later would hide events from `query -f container=`, a
first seq moved earlier would make the label index name another actor. Each is
tampered with on a copy of one sealed trail the way someone with the `sqlite3` shell
would (the index's append-only triggers dropped, then put back as they were), and
verify must name the table, what is missing or wrong, and the seq.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import sinks.sqlite.actorcheck as actorcheck
import sinks.sqlite.actors as actors
import sinks.sqlite.verification as verification
from listener.model.event import Actor, Event, natural_id
from sinks.sqlite import SQLiteTrail, VerifyReport, verify_file
from sinks.sqlite.schema import ACTOR_TRIGGERS, LABEL_TRIGGERS, TRIGGERS
from tests.actor_layouts import trail_before_the_actor_index
from tests.test_trail_tamper import assert_tampered, shell

T0 = 1_767_000_000_000_000_000
CONTAINERS = 10
NETWORK = "6e6574" * 10 + "0001"
HIDES = "query -f container= would not find its events"


def container(number: int) -> str:
    return f"{number:04x}" * 16


def _event(seq: int, actor: str, **fields: Any) -> Event:
    return Event(
        id=natural_id("actor-index-verify", seq),
        time_ns=T0 + seq,
        source="docker",
        host="h1",
        type=fields.pop("type", "container"),
        action=fields.pop("action", "start"),
        actor=Actor(id=actor, name=fields.pop("name", None)),
        **fields,
    )


def own(seq: int, number: int, **fields: Any) -> Event:
    labels = {"project": "shop", "number": str(number)}
    name = fields.pop("name", f"web-{number}")
    return _event(seq, container(number), name=name, attributes={"labels": labels}, **fields)


def connect(seq: int, number: int) -> Event:
    attributes = {"container": container(number)}
    return _event(seq, NETWORK, type="network", action="connect", name="br", attributes=attributes)


def events() -> list[Event]:
    """Seqs 1-20: each container's own event and a network event naming it (the odd
    ones named by the network first); 21-30 each one's stop; 31 container 0 renamed;
    32 an image without a name; 33 container 5 named again."""
    made: list[Event] = []
    for number in range(CONTAINERS):
        pair = [own, connect] if number % 2 == 0 else [connect, own]
        made += [make(len(made) + 1 + k, number) for k, make in enumerate(pair)]
    made += [own(21 + number, number, action="stop") for number in range(CONTAINERS)]
    made.append(own(31, 0, action="rename", name="renamed"))
    made.append(_event(32, "sha256:" + "ab" * 32, type="image", action="pull"))
    made.append(connect(33, 5))
    return made


def first_own_seq(number: int) -> int:
    return 2 * number + 1 if number % 2 == 0 else 2 * number + 2


def first_connect_seq(number: int) -> int:
    return 2 * number + 2 if number % 2 == 0 else 2 * number + 1


@pytest.fixture(scope="module")
def sealed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path: Path = tmp_path_factory.mktemp("actors") / "trail.db"
    made = events()
    with SQLiteTrail(path) as trail:
        for start in range(0, len(made), 7):  # several commits: actors span them
            trail.append(made[start : start + 7])
    return path


@pytest.fixture
def db(sealed: Path, tmp_path: Path) -> Path:
    path = tmp_path / "trail.db"
    shutil.copy(sealed, path)
    shutil.copy(sealed.with_suffix(".key"), path.with_suffix(".key"))
    return path


def verify(db: Path) -> VerifyReport:
    return verify_file(db, db.with_suffix(".key"))


def tamper(db: Path, sql: str, triggers: dict[str, str] = ACTOR_TRIGGERS) -> None:
    """`sql` with the index's append-only triggers out of the way, then put back as they
    were: the schema check, which would find them dropped, has nothing to say."""
    drop = "".join(f"DROP TRIGGER {name};" for name in triggers)
    shell(db, drop + sql + ";" + "".join(f"{text};" for text in triggers.values()))


def edit_row(db: Path, via: str, number: int, change: str) -> None:
    """`change` (an UPDATE's SET, or DELETE) to container `number`'s row through `via`."""
    where = f"WHERE actor_id = '{container(number)}' AND via = '{via}'"
    tamper(
        db,
        f"DELETE FROM actors {where}"
        if change == "DELETE"
        else f"UPDATE actors SET {change} {where}",
    )


def actor_notes(report: VerifyReport) -> list[str]:
    return [note for note in report.notes if "actor index" in note]


def test_the_trail_has_what_the_tampering_below_assumes(sealed: Path) -> None:
    with contextlib.closing(sqlite3.connect(sealed)) as conn:
        assert conn.execute("SELECT max(seq) FROM events").fetchone()[0] == 33
        sql = "SELECT via, first_seq FROM actors WHERE actor_id = ?"
        firsts = dict(conn.execute(sql, (container(3),)))
        names = conn.execute("SELECT count(*) FROM actor_names WHERE name = 'renamed'").fetchone()
        assert actors.through_seq(conn) == 33
    assert firsts == {"actor_id": first_own_seq(3), "container": first_connect_seq(3)}
    assert names == (1,)


def test_intact(db: Path) -> None:
    report = verify(db)
    assert report.ok, report.problem
    assert (report.events, actor_notes(report)) == (33, [])


def test_an_actor_row_deleted(db: Path) -> None:
    edit_row(db, "actor_id", 3, "DELETE")
    assert_tampered(
        verify(db),
        first_own_seq(3),
        f"seq 8: the actor index has no row for actor {container(3)} (actors table edited: "
        f"{HIDES})",
    )


def test_a_container_row_deleted(db: Path) -> None:
    edit_row(db, "container", 5, "DELETE")
    assert_tampered(
        verify(db),
        first_connect_seq(5),
        f"seq 11: the actor index has no row for container {container(5)} (actors table "
        f"edited: {HIDES})",
    )


def test_a_first_seq_moved_later(db: Path) -> None:
    # to a later event of the same actor: its first seq still names it (exact in form)
    edit_row(db, "actor_id", 4, "first_seq = 25")
    assert_tampered(
        verify(db),
        first_own_seq(4),
        f"seq 9: the actor index has actor {container(4)} first at seq 25, after this event "
        f"(actors table edited: {HIDES} before it)",
    )


def test_a_container_first_seq_moved_later(db: Path) -> None:
    edit_row(db, "container", 5, "first_seq = 33")
    assert_tampered(
        verify(db),
        11,
        f"seq 11: the actor index has container {container(5)} first at seq 33, after this "
        f"event (actors table edited: {HIDES} before it)",
    )


def test_a_first_seq_moved_earlier_to_another_actors_event(db: Path) -> None:
    """The label index names container 6 by its first seq: at seq 1, container 0's,
    its look-ups would find container 0. The actor index's finding comes first (the
    label index's check, reading the same first seq, would report a label missing)."""
    edit_row(db, "actor_id", 6, "first_seq = 1")
    assert_tampered(
        verify(db),
        1,
        f"seq 1: the actor index has actor {container(6)} first at this event, which does "
        "not name it (actors table edited: the label index would name another actor by it)",
    )


def test_a_container_first_seq_moved_earlier(db: Path) -> None:
    # seq 2 names container 0: container 7's row would only cost look-ups, but is forged
    edit_row(db, "container", 7, "first_seq = 2")
    assert_tampered(
        verify(db),
        2,
        f"seq 2: the actor index has container {container(7)} first at this event, which "
        "does not name it (actors table edited)",
    )


def test_a_planted_actor_row(db: Path) -> None:
    tamper(db, "INSERT INTO actors VALUES ('ghost', 'actor_id', 0, 99)")
    assert_tampered(
        verify(db),
        None,
        "the actor index has actor ghost first at seq 99, which is no event (actors table edited)",
    )


def test_a_name_row_deleted(db: Path) -> None:
    tamper(db, "DELETE FROM actor_names WHERE name = 'renamed'")
    assert_tampered(
        verify(db),
        31,
        f"seq 31: the actor index has no name renamed (container) for actor {container(0)} "
        f"(actor_names table edited: {HIDES} by that name)",
    )


def test_the_first_problem_in_seq_order_is_named(db: Path) -> None:
    edit_row(db, "container", 9, "DELETE")
    tamper(db, "DELETE FROM actor_names WHERE name = 'renamed'")
    assert verify(db).first_bad_seq == first_connect_seq(9)


def test_a_lowered_through_seq_is_a_note_not_a_finding(db: Path) -> None:
    """Events past it are read directly by queries: nothing is hidden."""
    shell(db, f"UPDATE meta SET value = '10' WHERE key = '{actors.THROUGH_KEY}'")
    report = verify(db)
    assert report.ok, report.problem
    assert actor_notes(report) == [
        "23 events after seq 10 are not in the actor index yet (stored by an older "
        "docktrail); the next writer adds them"
    ]


def test_a_through_seq_past_the_head_is_harmless(db: Path) -> None:
    shell(db, f"UPDATE meta SET value = '1000' WHERE key = '{actors.THROUGH_KEY}'")
    report = verify(db)
    assert report.ok and actor_notes(report) == []


def test_a_lowered_through_seq_does_not_excuse_a_late_first_seq(db: Path) -> None:
    # A row past it may be missing, not wrong: the writer adds rows with their events.
    edit_row(db, "actor_id", 8, "first_seq = 25")
    shell(db, f"UPDATE meta SET value = '5' WHERE key = '{actors.THROUGH_KEY}'")
    report = verify(db)
    assert report.first_bad_seq == first_own_seq(8)
    assert report.problem is not None and "first at seq 25, after this event" in report.problem


def test_an_older_writers_tail_verifies_then_the_next_writer_adds_it(db: Path) -> None:
    """As an older docktrail leaves the trail: its events past the through seq have no
    rows in the index (its label rows name their actors by their first events)."""
    tamper(
        db,
        "DELETE FROM actors WHERE first_seq > 20;"
        "DELETE FROM actor_names WHERE name = 'renamed';"
        f"UPDATE meta SET value = '20' WHERE key = '{actors.THROUGH_KEY}'",
    )
    # the image's row gone: the only actor first seen after 20
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM actors").fetchone()[0] == 2 * CONTAINERS + 1
    report = verify(db)
    assert report.ok, report.problem
    assert actor_notes(report) == [
        "13 events after seq 20 are not in the actor index yet (stored by an older "
        "docktrail); the next writer adds them"
    ]
    with SQLiteTrail(db) as trail:
        trail.append([own(34, CONTAINERS, action="create")])
    report = verify(db)
    assert report.ok and actor_notes(report) == []


def test_a_labelled_actor_of_an_older_writers_tail(db: Path) -> None:
    """The label index's check finds the first seq of an actor the index lacks."""
    with SQLiteTrail(db) as trail:
        trail.append([own(34, CONTAINERS), own(35, CONTAINERS, action="stop")])
    tamper(
        db,
        f"DELETE FROM actors WHERE actor_id = '{container(CONTAINERS)}';"
        f"DELETE FROM actor_names WHERE actor_id = '{container(CONTAINERS)}';"
        f"UPDATE meta SET value = '33' WHERE key = '{actors.THROUGH_KEY}'",
    )
    assert verify(db).ok
    tamper(db, "DELETE FROM label_actors WHERE actor_seq = 34", LABEL_TRIGGERS)
    report = verify(db)
    assert not report.ok and report.problem is not None
    assert report.problem.startswith("label index: label ")
    assert f"of actor {container(CONTAINERS)} is missing" in report.problem


def test_a_dropped_bucket_index_is_found_by_the_schema_check(db: Path) -> None:
    shell(db, "DROP INDEX events_bucket_actor")
    assert_tampered(verify(db), None, "schema: index events_bucket_actor is missing (dropped)")


def test_dropped_index_triggers_are_found_by_the_schema_check(db: Path) -> None:
    shell(db, "DROP TRIGGER actors_append_only_delete")
    assert_tampered(
        verify(db), None, "schema: trigger actors_append_only_delete is missing (dropped)"
    )


@pytest.mark.parametrize("migrated", [True, False])
def test_the_label_check_with_and_without_the_actor_index(db: Path, migrated: bool) -> None:
    """Before migration 0014 the label index's check reads first seqs from the events."""
    if not migrated:
        trail_before_the_actor_index(db)
    assert verify(db).ok
    tamper(db, f"DELETE FROM label_actors WHERE actor_seq = {first_own_seq(6)}", LABEL_TRIGGERS)
    report = verify(db)
    assert not report.ok and report.problem is not None
    assert report.problem.startswith("label index: label ")
    assert f"of actor {container(6)} is missing" in report.problem


class _Walks:
    """Records each chain walk verify makes: whether it probed the actor index itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.probed: list[bool] = []
        real = verification.ChainWalk
        record = self.probed

        class Recorded(real):  # type: ignore[misc, valid-type]
            def __init__(self, *args: Any, probe_actors: bool = True, **kwargs: Any) -> None:
                record.append(probe_actors)
                super().__init__(*args, probe_actors=probe_actors, **kwargs)

        monkeypatch.setattr(verification, "ChainWalk", Recorded)


def _probed_in_the_walk(db: Path, monkeypatch: pytest.MonkeyPatch) -> VerifyReport:
    """verify as before the screen: the walk probes every row itself."""
    with monkeypatch.context() as patch:
        patch.setattr(verification._IntegrityCheck, "screens_actors", property(lambda _: False))
        return verify(db)


def test_an_intact_index_is_screened_beside_the_walk(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    walks = _Walks(monkeypatch)
    screened: list[int | None] = []
    real = verification.first_unheld
    monkeypatch.setattr(verification, "first_unheld", lambda *a: screened.append(real(*a)))
    report = verify(db)
    assert report.ok, report.problem
    assert (walks.probed, screened) == ([False], [None])


EDITS = {
    "an actor row": f"DELETE FROM actors WHERE actor_id = '{container(3)}' AND via = 'actor_id'",
    "a name row": "DELETE FROM actor_names WHERE name = 'renamed'",
    "a first seq later": f"UPDATE actors SET first_seq = 30 WHERE actor_id = '{container(6)}'",
    "a column before the row": "UPDATE events SET action = 'kill' WHERE seq = 2; "
    f"DELETE FROM actors WHERE actor_id = '{container(3)}' AND via = 'actor_id'",
    "a column at the row": "UPDATE events SET actor_name = 'x' WHERE seq = 31",
    "a column after the row": "UPDATE events SET action = 'kill' WHERE seq = 20; "
    f"DELETE FROM actors WHERE actor_id = '{container(3)}' AND via = 'actor_id'",
    "a checkpoint after the row": "UPDATE checkpoints SET hash = 'x' WHERE n = 2; "
    f"DELETE FROM actors WHERE actor_id = '{container(9)}' AND via = 'container'",
}


@pytest.mark.parametrize("edit", EDITS)
def test_what_the_screen_finds_is_reported_as_the_walk_would(
    db: Path, monkeypatch: pytest.MonkeyPatch, edit: str
) -> None:
    """The screen only says that something is wrong: the walk then probes each row
    itself, so the finding, its seq and the counts are what they always were, whichever
    of a column, a checkpoint or the index comes first."""
    tamper(db, EDITS[edit], {**ACTOR_TRIGGERS, **TRIGGERS})
    expected = _probed_in_the_walk(db, monkeypatch)
    walks = _Walks(monkeypatch)
    report = verify(db)
    assert not report.ok
    assert report == expected
    assert walks.probed == [False, True]


def test_a_screen_that_fails_leaves_the_probe_to_the_walk(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails(*_: Any) -> None:
        raise sqlite3.OperationalError("interrupted")

    monkeypatch.setattr(verification, "first_unheld", fails)
    walks = _Walks(monkeypatch)
    assert verify(db).ok
    assert walks.probed == [False, True]
    edit_row(db, "actor_id", 3, "DELETE")
    assert verify(db) == _probed_in_the_walk(db, monkeypatch)
    assert not verify(db).ok


def test_first_seqs_checked_on_the_thread_or_else_by_verify_itself(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first seqs are checked on the integrity check's connection; when that fails,
    verify checks them itself, and finds the same."""
    edit_row(db, "actor_id", 6, "first_seq = 1")
    real = actorcheck.first_seq_problem
    threads: list[str] = []

    def once_failing(conn: sqlite3.Connection) -> Any:
        threads.append(threading.current_thread().name)
        if len(threads) == 1:
            raise sqlite3.OperationalError("interrupted")
        return real(conn)

    monkeypatch.setattr(actorcheck, "first_seq_problem", once_failing)
    report = verify(db)
    assert threads == ["docktrail-verify-integrity", threading.main_thread().name]
    assert (report.first_bad_seq, report.problem) == (
        1,
        f"seq 1: the actor index has actor "
        f"{container(6)} first at this event, which does not name it (actors table edited: "
        "the label index would name another actor by it)",
    )
    monkeypatch.setattr(actorcheck, "first_seq_problem", real)
    assert verify(db) == report
