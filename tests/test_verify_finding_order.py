"""The order of verify's findings when a trail holds more than one, which any
faster verify must keep: the first bad row in seq order, a broken link before an
edited column of the same row, an edited column before a checkpoint problem met
after its row, the counts of a walk that stopped there, and no integrity check
left running after the verdict.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sinks.sqlite import SQLiteTrail, verify_file
from tests.test_trail_tamper import DROP_TRIGGERS, EVENTS, assert_tampered, event, shell, verify

BODY_EDIT = 'UPDATE events SET body = replace(body, \'"action":"start"\', \'"action":"stop"\')'


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "trail.db"
    with SQLiteTrail(path) as trail:
        trail.append([event(n) for n in range(1, EVENTS + 1)])
    return path  # checkpoints at seq 0 and 60


def side_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("docktrail-verify-")]


def test_an_edited_column_before_a_broken_link_is_named(db: Path) -> None:
    shell(
        db,
        DROP_TRIGGERS
        + "UPDATE events SET who_login = 'mallory' WHERE seq = 12;"
        + BODY_EDIT
        + " WHERE seq = 40;",
    )
    report = verify(db)
    assert_tampered(report, 12, "seq 12: column who_login does not match the body (row edited)")
    assert (report.unsealed, report.events) == (11, EVENTS)  # as the walk stopped at 12
    assert side_threads() == []


def test_a_broken_link_before_an_edited_column_is_named(db: Path) -> None:
    shell(
        db,
        DROP_TRIGGERS
        + BODY_EDIT
        + " WHERE seq = 12;"
        + "UPDATE events SET who_login = 'mallory' WHERE seq = 40;",
    )
    assert_tampered(verify(db), 12, "seq 12: hash does not match its content (row edited)")
    assert side_threads() == []


def test_on_the_same_row_the_broken_link_comes_first(db: Path) -> None:
    shell(
        db,
        DROP_TRIGGERS + BODY_EDIT + ", who_login = 'mallory' WHERE seq = 33;",
    )
    assert_tampered(verify(db), 33, "seq 33: hash does not match its content (row edited)")


def test_an_edited_last_row_comes_before_the_checkpoint_met_after_it(db: Path) -> None:
    # The signed checkpoint at seq 60 is met after row 60 passed: the column comes first.
    shell(
        db,
        DROP_TRIGGERS
        + "UPDATE events SET actor_name = 'innocent' WHERE seq = 60;"
        + "UPDATE checkpoints SET hash = '"
        + "0" * 64
        + "' WHERE n = 2;",
    )
    assert_tampered(
        verify(db), 60, "seq 60: column actor_name does not match the body (row edited)"
    )


DROP_ACTOR_TRIGGERS = (
    "DROP TRIGGER actors_append_only_delete; DROP TRIGGER actor_names_append_only_delete;"
)


def test_on_the_same_row_an_edited_column_comes_before_the_actor_index(db: Path) -> None:
    # The index is probed by the copied columns: with one edited, the index seems to lack
    # the forged actor, but the column is what was edited.
    shell(db, DROP_TRIGGERS + "UPDATE events SET actor_id = 'forged' WHERE seq = 12;")
    assert_tampered(verify(db), 12, "seq 12: column actor_id does not match the body (row edited)")


def test_a_row_missing_from_the_actor_index_before_a_later_edited_column(db: Path) -> None:
    shell(
        db,
        DROP_TRIGGERS
        + DROP_ACTOR_TRIGGERS
        + f"DELETE FROM actors WHERE actor_id = '{12:064x}';"
        + "UPDATE events SET who_login = 'mallory' WHERE seq = 40;",
    )
    report = verify(db)
    assert (report.first_bad_seq, report.unsealed) == (12, 11)
    assert report.problem is not None and "the actor index has no row for actor" in report.problem


def test_the_actor_index_of_the_last_row_comes_before_the_checkpoint_met_after_it(
    db: Path,
) -> None:
    shell(
        db,
        DROP_TRIGGERS
        + DROP_ACTOR_TRIGGERS
        + "DELETE FROM actor_names WHERE name = 'web-60';"
        + "UPDATE checkpoints SET hash = '"
        + "0" * 64
        + "' WHERE n = 2;",
    )
    report = verify(db)
    assert report.first_bad_seq == 60
    assert report.problem is not None and "the actor index has no name web-60" in report.problem


def test_the_read_only_verify_finds_an_edited_column(db: Path) -> None:
    shell(db, DROP_TRIGGERS + "UPDATE events SET container = 'elsewhere' WHERE seq = 7;")
    report = verify_file(db, db.with_suffix(".key"))
    assert_tampered(report, 7, "seq 7: column container does not match the body (row edited)")
    assert side_threads() == []


def test_a_body_that_is_not_json_is_named_not_raised(db: Path) -> None:
    shell(db, DROP_TRIGGERS + "UPDATE events SET body = 'not json' WHERE seq = 5;")
    assert_tampered(verify(db), 5, "seq 5: hash does not match its content (row edited)")


def test_an_intact_trail_verifies_with_no_thread_left(db: Path) -> None:
    report = verify(db)
    assert report.ok and report.events == EVENTS
    assert side_threads() == []
