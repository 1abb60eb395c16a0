"""verify() against an attacker with the `sqlite3` shell and write access to the file.

Each test builds a sealed trail of 60 events (and, for the alert cases, 10
alerts on them), closes it, tampers with it the way someone with shell access
would (drop the append-only triggers, then edit), and checks that verify names
the problem and the first bad seq (or alert seq).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from sinks.base import AlertFilter
from sinks.chain import seal, seal_alerts
from sinks.signing import checkpoint_payload, fingerprint, load_or_create_key, sign
from sinks.sqlite import SQLiteTrail, VerifyReport
from tests.shared_data import missing_component

EVENTS = 60
T0 = 1_795_346_502_000_000_000
# named: the alerts head columns (migration 0006) take their defaults
CHECKPOINT_COLUMNS = "n, trail_id, seq, hash, time_ns, key_fingerprint, signature"
DROP_TRIGGERS = "".join(
    f"DROP TRIGGER {table}_append_only_{op};"
    for table in ("events", "checkpoints")
    for op in ("update", "delete")
)
DROP_ALERT_TRIGGERS = (
    "DROP TRIGGER alerts_append_only_update; DROP TRIGGER alerts_append_only_delete;"
)


def event(n: int, action: str = "start") -> Event:
    return Event(
        id=natural_id("tamper", n),
        time_ns=T0 + n,
        source="docker",
        host="docker-01",
        type="container",
        action=action,
        actor=Actor(id=f"{n:064x}", name=f"web-{n}", image="registry.internal/web/nginx:1.25"),
        who=Who(login="alice"),
    )


def shell(db: Path, sql: str) -> None:
    binary = shutil.which("sqlite3") or "/usr/bin/sqlite3"
    if not Path(binary).exists():
        missing_component("the sqlite3 shell is not installed (apt-get install sqlite3)")
    subprocess.run([binary, str(db)], input=sql, text=True, check=True, capture_output=True)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "trail.db"
    with SQLiteTrail(path) as trail:
        trail.append([event(n) for n in range(1, EVENTS + 1)])
    return path  # closed: the genesis checkpoint at seq 0, checkpoint 2 at seq 60


def verify(db: Path, **kwargs: Any) -> VerifyReport:
    with SQLiteTrail(db) as trail:
        return trail.verify(**kwargs)


def key_fingerprint(db: Path) -> str:
    return fingerprint(load_or_create_key(db.with_suffix(".key")).public_key())


def assert_tampered(report: VerifyReport, first_bad_seq: int | None, problem: str) -> None:
    assert not report.ok
    assert report.problem == problem
    assert report.first_bad_seq == first_bad_seq


def test_intact(db: Path) -> None:
    report = verify(db)
    assert (report.ok, report.events, report.checkpoints, report.unsealed) == (True, 60, 2, 0)
    assert (report.first_bad_seq, report.problem) == (None, None)
    assert report.key_fingerprint == key_fingerprint(db)


def test_body_edit(db: Path) -> None:
    shell(
        db,
        DROP_TRIGGERS
        + """
        UPDATE events SET body = replace(body, '"action":"start"', '"action":"stop"')
        WHERE seq = 17;
    """,
    )
    assert_tampered(verify(db), 17, "seq 17: hash does not match its content (row edited)")


def test_body_edit_with_recomputed_hash(db: Path) -> None:
    # the row itself looks consistent now; the next row's link gives it away
    with SQLiteTrail(db) as trail:
        original = trail.get(17)
    assert original is not None and original.prev_hash is not None
    forged = seal([event(17, action="stop")], 16, original.prev_hash)[0]
    shell(
        db,
        DROP_TRIGGERS
        + f"""
        UPDATE events SET body = {quote(forged[2])}, action = 'stop', hash = {quote(forged[0].hash)}
        WHERE seq = 17;
    """,
    )
    assert_tampered(
        verify(db), 18, "seq 18: prev_hash does not match seq 17 (row deleted or reordered)"
    )


def test_copied_column_edit(db: Path) -> None:
    shell(db, DROP_TRIGGERS + "UPDATE events SET actor_name = 'innocent' WHERE seq = 23;")
    assert_tampered(
        verify(db), 23, "seq 23: column actor_name does not match the body (row edited)"
    )


def test_row_deleted_in_the_middle(db: Path) -> None:
    shell(db, DROP_TRIGGERS + "DELETE FROM events WHERE seq = 40;")
    assert_tampered(verify(db), 40, "seq 40: missing (seq jumps from 39 to 41)")


def test_first_row_deleted(db: Path) -> None:
    shell(db, DROP_TRIGGERS + "DELETE FROM events WHERE seq = 1;")
    assert_tampered(verify(db), 1, "seq 1: missing (trail starts at seq 2)")


def test_last_row_deleted(db: Path) -> None:
    # the chain alone cannot see this: the checkpoint at seq 60 can
    shell(db, DROP_TRIGGERS + "DELETE FROM events WHERE seq = 60;")
    assert_tampered(
        verify(db), 60, "checkpoint 2 (seq 60): the trail ends at seq 59 (rows deleted at the end)"
    )


def test_two_rows_swapped(db: Path) -> None:
    shell(
        db,
        DROP_TRIGGERS
        + """
        UPDATE events SET seq = -30 WHERE seq = 30;
        UPDATE events SET seq = 30 WHERE seq = 31;
        UPDATE events SET seq = 31 WHERE seq = -30;
    """,
    )
    assert_tampered(
        verify(db), 30, "seq 30: prev_hash does not match seq 29 (row deleted or reordered)"
    )


def test_whole_database_replaced(db: Path, tmp_path: Path) -> None:
    # A consistent chain of altered events, sealed with the attacker's own key.
    fake = tmp_path / "fake.db"
    with SQLiteTrail(fake, signing_key=tmp_path / "attacker.key") as trail:
        altered = [event(n, action="stop" if n == 30 else "start") for n in range(1, EVENTS + 1)]
        trail.append(altered)
    attacker = fingerprint(load_or_create_key(tmp_path / "attacker.key").public_key())
    shell(db, f".restore {fake}")
    ours = key_fingerprint(db)
    assert_tampered(
        verify(db),
        1,
        f"checkpoint 1 (seq 0): signature invalid for key {ours} "
        f"(database rewritten or another key; it names key {attacker})",
    )


def test_replaced_database_without_checkpoints(db: Path, tmp_path: Path) -> None:
    fake = tmp_path / "fake.db"
    trail = SQLiteTrail(fake, signing_key=tmp_path / "attacker.key")
    trail.open()
    trail.append([event(n) for n in range(1, 11)])
    trail._dirty = False  # not sealed at the end
    trail.close()
    shell(fake, DROP_TRIGGERS + "DELETE FROM checkpoints; DELETE FROM head_seal;")  # nor at all
    shell(db, f".restore {fake}")
    report = verify(db)
    assert not report.ok and report.first_bad_seq == 1
    assert (report.problem or "").startswith("no signed checkpoint")


def test_forged_checkpoint(db: Path, tmp_path: Path) -> None:
    # Five rows appended with a correct chain, sealed with a key that is not ours.
    with SQLiteTrail(db) as trail:
        seq, head = trail.head()
        trail_id = trail.trail_id
    sealed = seal([event(n) for n in range(100, 105)], seq, head)
    forger = load_or_create_key(tmp_path / "forger.key")
    last = sealed[-1][0]
    assert last.seq is not None and last.hash is not None
    signature = sign(forger, checkpoint_payload(trail_id, last.seq, last.hash, T0))
    shell(
        db,
        "".join(insert_event(*s) for s in sealed)
        + f"""
        INSERT INTO checkpoints ({CHECKPOINT_COLUMNS})
        VALUES (3, '{trail_id}', {last.seq}, '{last.hash}', {T0}, '{key_fingerprint(db)}',
                '{signature}');
    """,
    )
    assert_tampered(
        verify(db),
        61,
        f"checkpoint 3 (seq 65): signature invalid for key {key_fingerprint(db)} "
        "(database rewritten or another key)",
    )


def test_checkpoint_from_another_trail(db: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with SQLiteTrail(other, signing_key=db.with_suffix(".key")) as trail:  # same key, even
        trail.append([event(n) for n in range(1, EVENTS + 1)])
        other_id = trail.trail_id
    shell(
        db,
        f"""
        ATTACH '{other}' AS other;
        INSERT INTO checkpoints ({CHECKPOINT_COLUMNS})
        SELECT 3, {CHECKPOINT_COLUMNS.removeprefix("n, ")} FROM other.checkpoints WHERE n = 2;
    """,
    )
    report = verify(db)
    assert not report.ok and report.first_bad_seq == 61
    assert (report.problem or "").startswith(
        f"checkpoint 3 (seq 60): made for trail {other_id}, not this trail"
    )


def test_checkpoint_deleted_in_the_middle(db: Path) -> None:
    with SQLiteTrail(db) as trail:
        for n in (61, 62):
            trail.append([event(n)])
            trail.checkpoint()  # checkpoints 3 and 4
    shell(db, DROP_TRIGGERS + "DELETE FROM checkpoints WHERE n = 3;")
    assert_tampered(
        verify(db), 61, "checkpoint 3: missing (checkpoint numbers jump from 2 to 4; deleted)"
    )


def test_dropped_trigger_alone(db: Path) -> None:
    shell(db, "DROP TRIGGER checkpoints_append_only_delete;")
    assert_tampered(
        verify(db), None, "append-only trigger checkpoints_append_only_delete is missing (dropped)"
    )


def test_altered_trigger(db: Path) -> None:
    shell(
        db,
        """
        DROP TRIGGER events_append_only_update;
        CREATE TRIGGER events_append_only_update BEFORE UPDATE ON events WHEN 0
        BEGIN SELECT RAISE(ABORT, 'docktrail trail is append-only'); END;
    """,
    )
    assert_tampered(verify(db), None, "append-only trigger events_append_only_update was altered")


def quote(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def insert_event(stored: Event, content: dict[str, Any], body: str) -> str:
    columns: Iterable[object] = (
        stored.seq,
        stored.id,
        stored.time_ns,
        stored.source,
        stored.host,
        stored.type,
        stored.action,
        stored.actor.id,
        stored.actor.name,
        stored.actor.image,
        stored.who.login,
        stored.who.user,
        None,
        body,
        stored.prev_hash,
        stored.hash,
    )
    names = (
        "seq, id, time_ns, source, host, type, action, actor_id, actor_name, actor_image, "
        "who_login, who_user, container, body, prev_hash, hash"
    )
    return f"INSERT INTO events ({names}) VALUES ({', '.join(quote(c) for c in columns)});\n"


# -- the alerts chain -----------------------------------------------------------------

ALERTS = 10
SEVERITIES = ("critical", "high", "medium", "low", "info")


def alert_on(stored: Event, k: int, **fields: Any) -> Alert:
    assert stored.seq is not None
    base: dict[str, Any] = {
        "id": natural_id("alert", stored.id, "rule", k),
        "time_ns": stored.time_ns,
        "rule": f"rule-{k}",
        "severity": SEVERITIES[k % 5],
        "event_seq": stored.seq,
        "event_id": stored.id,
        "host": stored.host,
        "container": stored.actor.name,
        "image": stored.actor.image,
        "who": stored.who,
        "summary": f"finding {k}",
        "suppressed": "accepted risk" if k == 2 else None,
    }
    return Alert(**(base | fields))


@pytest.fixture
def alerted(db: Path) -> Path:
    """The 60 events plus alerts 1-10 on events 5, 10, … 50; closed: checkpoint 3 seals both."""
    with SQLiteTrail(db) as trail:
        events = [trail.get(5 * k) for k in range(1, ALERTS + 1)]
        trail.append_alerts([alert_on(e, k) for k, e in enumerate(events, 1) if e is not None])
    return db


def assert_alert_tampered(report: VerifyReport, first_bad_alert_seq: int, problem: str) -> None:
    assert not report.ok
    assert report.problem == problem
    assert (report.first_bad_seq, report.first_bad_alert_seq) == (None, first_bad_alert_seq)


def test_alerts_intact(alerted: Path) -> None:
    report = verify(alerted)
    assert (report.ok, report.events, report.alerts, report.checkpoints) == (True, 60, 10, 3)
    assert (report.unsealed, report.unsealed_alerts, report.first_bad_alert_seq) == (0, 0, None)


def test_alert_body_edit(alerted: Path) -> None:
    shell(
        alerted,
        DROP_ALERT_TRIGGERS
        + """UPDATE alerts SET body = replace(body, '"summary":"finding 7"', '"summary":"ok"')
        WHERE seq = 7;""",
    )
    assert_alert_tampered(
        verify(alerted), 7, "alert seq 7: hash does not match its content (row edited)"
    )


def test_alert_deleted_in_the_middle(alerted: Path) -> None:
    shell(alerted, DROP_ALERT_TRIGGERS + "DELETE FROM alerts WHERE seq = 5;")
    assert_alert_tampered(verify(alerted), 5, "alert seq 5: missing (alert seq jumps from 4 to 6)")


def test_last_alert_deleted(alerted: Path) -> None:
    # the alerts chain alone cannot see this: the checkpoint's alerts head can
    shell(alerted, DROP_ALERT_TRIGGERS + "DELETE FROM alerts WHERE seq = 10;")
    assert_alert_tampered(
        verify(alerted),
        10,
        "checkpoint 3 (alert seq 10): the alerts end at alert seq 9 (rows deleted at the end)",
    )


def test_two_alerts_swapped(alerted: Path) -> None:
    shell(
        alerted,
        DROP_ALERT_TRIGGERS
        + """
        UPDATE alerts SET seq = -3 WHERE seq = 3;
        UPDATE alerts SET seq = 3 WHERE seq = 4;
        UPDATE alerts SET seq = 4 WHERE seq = -3;
    """,
    )
    assert_alert_tampered(
        verify(alerted),
        3,
        "alert seq 3: prev_hash does not match alert seq 2 (row deleted or reordered)",
    )


@pytest.mark.parametrize(
    ("assignment", "seq", "column"),
    [
        ("severity = 'info'", 6, "severity"),  # alert 6 is high: hidden from --min-severity
        ("suppressed = 0", 2, "suppressed"),
        ("event_seq = 1", 4, "event_seq"),
        ("who_login = 'mallory'", 8, "who_login"),
    ],
)
def test_alert_copied_column_edit(alerted: Path, assignment: str, seq: int, column: str) -> None:
    shell(alerted, DROP_ALERT_TRIGGERS + f"UPDATE alerts SET {assignment} WHERE seq = {seq};")
    assert_alert_tampered(
        verify(alerted),
        seq,
        f"alert seq {seq}: column {column} does not match the body (row edited)",
    )


def test_last_alert_rewritten_with_recomputed_hash(alerted: Path) -> None:
    # no later alert links to it: the signed alerts head gives it away
    with SQLiteTrail(alerted) as trail:
        event = trail.get(50)
        previous = trail.alerts_head()
        prev_hash = next(trail.query_alerts(AlertFilter(after_seq=9))).prev_hash
    assert event is not None and prev_hash is not None and previous[0] == 10
    forged = seal_alerts([alert_on(event, 10, severity="info")], 9, prev_hash)[0]
    shell(
        alerted,
        DROP_ALERT_TRIGGERS
        + f"""UPDATE alerts SET body = {quote(forged[2])}, severity = 'info',
        hash = {quote(forged[0].hash)} WHERE seq = 10;""",
    )
    assert_alert_tampered(
        verify(alerted),
        1,
        "checkpoint 3 (alert seq 10): signed alerts hash does not match alert seq 10 "
        "(alerts up to it rewritten)",
    )


def test_forged_checkpoint_over_forged_alerts(alerted: Path, tmp_path: Path) -> None:
    with SQLiteTrail(alerted) as trail:
        (seq, head), (alerts_seq, alerts_head) = trail.head(), trail.alerts_head()
        trail_id = trail.trail_id
        event = trail.get(3)
    assert event is not None
    sealed = seal_alerts([alert_on(event, 11, severity="info")], alerts_seq, alerts_head)
    forged = sealed[0][0]
    assert forged.seq is not None and forged.hash is not None
    forger = load_or_create_key(tmp_path / "forger.key")
    payload = checkpoint_payload(trail_id, seq, head, T0, forged.seq, forged.hash)
    shell(
        alerted,
        insert_alert(*sealed[0])
        + f"""
        INSERT INTO checkpoints VALUES (4, '{trail_id}', {seq}, '{head}', {T0},
            '{key_fingerprint(alerted)}', '{sign(forger, payload)}', {forged.seq}, '{forged.hash}');
    """,
    )
    assert_tampered(
        verify(alerted),
        61,
        f"checkpoint 4 (seq 60): signature invalid for key {key_fingerprint(alerted)} "
        "(database rewritten or another key)",
    )


def test_checkpoint_alerts_head_edited(alerted: Path) -> None:
    # hide the deletion of the last alert by moving the signed head back one alert
    with SQLiteTrail(alerted) as trail:
        ninth = next(trail.query_alerts(AlertFilter(after_seq=8)))
    shell(
        alerted,
        DROP_TRIGGERS
        + DROP_ALERT_TRIGGERS
        + f"""
        DELETE FROM alerts WHERE seq = 10;
        UPDATE checkpoints SET alerts_seq = 9, alerts_hash = '{ninth.hash}' WHERE n = 3;
    """,
    )
    assert_tampered(
        verify(alerted),
        61,
        f"checkpoint 3 (seq 60): signature invalid for key {key_fingerprint(alerted)} "
        "(database rewritten or another key)",
    )


@pytest.mark.parametrize(
    ("points_at", "problem"),
    [
        ({"event_seq": 999}, "alert seq 11: points at event seq 999, which is not stored"),
        ({"event_seq": 7}, "alert seq 11: event seq 7 is event {seven}, not event {three}"),
    ],
)
def test_alert_pointing_at_another_event(
    alerted: Path, points_at: dict[str, int], problem: str
) -> None:
    # appended after the last checkpoint with a correct chain: only the event link is off
    with SQLiteTrail(alerted) as trail:
        three, seven = trail.get(3), trail.get(7)
        alerts_seq, alerts_head = trail.alerts_head()
    assert three is not None and seven is not None
    bad = alert_on(three, 11).model_copy(update=points_at)
    shell(alerted, insert_alert(*seal_alerts([bad], alerts_seq, alerts_head)[0]))
    report = verify(alerted)
    assert_alert_tampered(report, 11, problem.format(seven=seven.id, three=three.id))


def test_dropped_alert_trigger_alone(alerted: Path) -> None:
    shell(alerted, "DROP TRIGGER alerts_append_only_update;")
    assert_tampered(
        verify(alerted), None, "append-only trigger alerts_append_only_update is missing (dropped)"
    )


def insert_alert(stored: Alert, content: dict[str, Any], body: str) -> str:
    columns: Iterable[object] = (
        stored.seq,
        stored.id,
        stored.time_ns,
        stored.rule,
        stored.severity,
        stored.event_seq,
        stored.host,
        stored.container,
        stored.image,
        stored.who.login,
        stored.who.user,
        0 if stored.suppressed is None else 1,
        body,
        stored.prev_hash,
        stored.hash,
    )
    names = (
        "seq, id, time_ns, rule, severity, event_seq, host, container, image, who_login, "
        "who_user, suppressed, body, prev_hash, hash"
    )
    return f"INSERT INTO alerts ({names}) VALUES ({', '.join(quote(c) for c in columns)});\n"
