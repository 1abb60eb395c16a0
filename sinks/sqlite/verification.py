"""Verification of a trail file, read-only: both chains, the signed checkpoints, the
head seal, the append-only triggers, an auditor's pins and the witness.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlite_utils import Database

import sinks.sqlite.actorcheck as actorcheck
import sinks.sqlite.actors as actors
from config.errors import TamperError, TrailError
from listener.model.event import GENESIS_HASH, chain_hash
from sinks import trailcheck, witness
from sinks.chain import VerifyReport
from sinks.headseal import Heads
from sinks.signing import fingerprint, load_public_key
from sinks.sqlite.chainwalk import ChainWalk, Problem, Progress, first_unheld
from sinks.sqlite.errors import trail_error
from sinks.sqlite.labels import Completeness
from sinks.sqlite.readahead import ReadAhead
from sinks.sqlite.schema import (
    BUSY_TIMEOUT_SECS,
    CACHE_KIB,
    GENESIS_MIGRATIONS,
    LABEL_MIGRATION,
    MIGRATIONS,
    TRIGGERS,
)
from sinks.sqlite.storage import connect_read_only


@dataclass(frozen=True, slots=True)
class Pins:
    """What an auditor pinned: the trail's id, its key's fingerprint, and the witness."""

    trail_id: str | None = None
    key_fingerprint: str | None = None
    witness: Path | None = None


def verify_file(
    path: Path, key_path: Path, pins: Pins = Pins(), on_progress: Progress | None = None
) -> VerifyReport:
    """Verify the trail at `path` read-only: never creates, migrates or writes anything.

    `key_path`: a PEM file (public or private) to check signatures with;
    `on_progress(seq, last_seq)` is called as the events chain is walked.
    """
    try:
        conn = connect_read_only(Path(path), timeout=BUSY_TIMEOUT_SECS)
    except sqlite3.Error as exc:
        raise trail_error(path, "open", exc) from exc
    try:
        with contextlib.closing(conn):
            public = load_public_key(key_path)
            conn.execute("BEGIN")  # one snapshot while the service keeps appending
            return _verify_snapshot(conn, public, key_path, pins, on_progress)
    except sqlite3.Error as exc:
        raise trail_error(path, "verify", exc) from exc


def _verify_snapshot(
    conn: sqlite3.Connection,
    public: Ed25519PublicKey,
    key_path: Path,
    pins: Pins,
    on_progress: Progress | None = None,
) -> VerifyReport:
    applied = trailcheck.applied_migrations(conn)
    key_id = fingerprint(public)
    if applied is None or "0001_tables" not in applied:
        return _not_a_trail(conn, key_id)
    trail_id = _stored_trail_id(conn)
    report = verify_connection(conn, trail_id, public, key_path, applied, on_progress)
    finding = _pin_problem(trail_id, key_id, pins)
    if report.ok and finding is None and pins.witness is not None:
        witnessed = witness.check(pins.witness, conn, trail_id, public)
        if witnessed.finding is not None:
            finding = trailcheck.Finding(
                witnessed.problem or "", witnessed.first_bad_seq, None, witnessed.finding
            )
        else:
            note = f"witness: {witnessed.checked} checkpoints agree"
            if witnessed.ignored:
                note += f" ({witnessed.ignored} lines not signed by this key ignored)"
            report = dataclasses.replace(report, notes=(*report.notes, note))
    if report.ok and finding is not None:
        return _failed(report, finding)
    return report


def _stored_trail_id(conn: sqlite3.Connection) -> str:
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'trail_id'").fetchone()
    except sqlite3.OperationalError:  # meta dropped: reported by the schema check
        return ""
    return "" if row is None else str(row[0])


def _not_a_trail(conn: sqlite3.Connection, key_id: str) -> VerifyReport:
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    what = "the file is empty" if tables == 0 else "the file has no docktrail schema"
    return VerifyReport(
        ok=False,
        events=0,
        checkpoints=0,
        first_bad_seq=1,
        problem=f"no genesis: {what} (emptied, or replaced by another database)",
        unsealed=0,
        key_fingerprint=key_id,
        finding="tampered",
    )


def _pin_problem(trail_id: str, key_id: str, pins: Pins) -> trailcheck.Finding | None:
    if pins.trail_id is not None and pins.trail_id != trail_id:
        return trailcheck.Finding(
            f"this is trail {trail_id or '(none)'}, not the pinned trail {pins.trail_id} "
            "(the file was replaced)",
            1,
        )
    if pins.key_fingerprint is not None and pins.key_fingerprint != key_id:
        return trailcheck.Finding(
            f"verifying key {key_id} is not the pinned key {pins.key_fingerprint} "
            "(the key beside the trail was replaced; verify with the auditor's public key)",
            1,
        )
    return None


def _failed(report: VerifyReport, finding: trailcheck.Finding) -> VerifyReport:
    return dataclasses.replace(
        report,
        ok=False,
        first_bad_seq=finding.seq,
        first_bad_alert_seq=finding.alert_seq,
        problem=finding.problem,
        finding=finding.kind,
        notes=(),
    )


def verify_connection(
    conn: sqlite3.Connection,
    trail_id: str,
    public: Ed25519PublicKey | None,
    key_path: Path,
    applied: Sequence[str] | None = None,
    on_progress: Progress | None = None,
) -> VerifyReport:
    """Every check of one snapshot; the most precise finding first (module docstring)."""
    if applied is None:
        applied = trailcheck.applied_migrations(conn) or []
    expected = trailcheck.expected_schema(MIGRATIONS, applied)
    dropped = trailcheck.missing_tables(conn, expected) or trailcheck.downgrade_problem(
        conn, applied, GENESIS_MIGRATIONS
    )
    if dropped is not None:  # the checks below read every table
        return _failed(_empty_report(public, trail_id), dropped)
    path = _file_of(conn)
    ahead = None if path is None else ReadAhead(Path(path))  # both passes read every page
    labelled, actor_index = LABEL_MIGRATION in applied, actors.MIGRATION in applied
    # The costliest checks, overlapped with the chain walk (`_IntegrityCheck`).
    integrity = _IntegrityCheck(conn, _actor_bounds(conn) if actor_index else None)
    try:
        walk = functools.partial(
            ChainWalk, conn, trail_id, public, key_path, on_progress, labelled, actor_index
        )
        audit = walk(probe_actors=not integrity.screens_actors)
        problem = audit.run()
        if integrity.screens_actors and not integrity.actors_clear():
            # A row the actor index lacks, or the screen could not tell: the walk with the
            # probe in it says which finding is first, as it always has (twice the time).
            audit = walk(probe_actors=True)
            problem = audit.run()
        return _conclude(conn, audit, problem, integrity, applied, expected, public, trail_id)
    finally:
        integrity.stop()
        if ahead is not None:
            ahead.stop()


def _conclude(
    conn: sqlite3.Connection,
    audit: ChainWalk,
    problem: Problem | None,
    integrity: _IntegrityCheck,
    applied: Sequence[str],
    expected: set[trailcheck.SchemaItem],
    public: Ed25519PublicKey | None,
    trail_id: str,
) -> VerifyReport:
    """The checks after the rows, in the order of precision (module docstring)."""
    finding: trailcheck.Finding | None = None
    vouched: Heads | None = None
    if finding is None and problem is None and "0008_head_seal" in applied:
        finding, vouched = trailcheck.seal_problem(conn, trail_id, public, audit.checkpointed())
    if finding is None and problem is None:
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        problem = _trigger_problem(db)
    if finding is None and problem is None:
        finding = (
            trailcheck.schema_problem(conn, expected)
            or integrity.result()
            or _actor_index_problem(integrity, audit)
            or _label_index_problem(audit.labels)
            or trailcheck.delivery_problem(conn)
        )
    report = _audit_report(conn, audit, problem, public, trail_id)
    if finding is not None:
        return _failed(report, finding)
    if not report.ok:
        return report
    notes = (*_tail_notes(report, vouched), *_actor_index_notes(audit))
    return dataclasses.replace(report, notes=notes)


def _actor_bounds(conn: sqlite3.Connection) -> tuple[int, int]:
    """The walk's snapshot's `actors.through_seq` and last seq, for `_IntegrityCheck`."""
    return actors.through_seq(conn), actors.last_event_seq(conn)


class _IntegrityCheck:
    """`PRAGMA integrity_check` of the same file on its own read-only connection, in a
    thread, then the actor index's probe of every event (given `actor_bounds`).

    The integrity check cross-checks every index entry against its row (what stops
    a forged index from hiding rows from queries), which costs as much as the whole
    chain walk; SQLite releases the GIL meanwhile, so both run at once. A later
    snapshot than the walk's (a writer appending meanwhile) is as good: the check is
    of the file's structure. Without a file (or a second connection), it runs inline.

    The probe (`chainwalk.first_unheld`) is the walk's own test, screened here up to
    the walk's last seq and `through_seq` (`_actor_bounds`): the rows of those events
    are the same in a later snapshot, as the writer only adds rows. Only when it finds
    a row lacking, or fails, does the walk probe again itself (`verify_connection`).
    """

    def __init__(
        self, conn: sqlite3.Connection, actor_bounds: tuple[int, int] | None = None
    ) -> None:
        self.conn = conn
        self.other: sqlite3.Connection | None = None
        self.outcome: trailcheck.Finding | BaseException | None = None
        self.thread: threading.Thread | None = None
        self.actor_bounds = actor_bounds
        self._actors_clear = False  # the screen ran and found every row held
        self._first_seqs: tuple[trailcheck.Finding | None] | None = None  # once checked
        path = _file_of(conn)
        if path is None:
            return
        try:
            self.other = connect_read_only(
                Path(path), timeout=BUSY_TIMEOUT_SECS, check_same_thread=False
            )
            # Each row seeks every index: with SQLite's default 2 MiB cache the index
            # leaves come back through the OS at every seek (10M events: 65 s -> 57 s).
            self.other.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        except (sqlite3.Error, TrailError):
            if self.other is not None:
                self.other.close()
                self.other = None
            return
        self.thread = threading.Thread(
            target=self._run, args=(self.other,), name="docktrail-verify-integrity", daemon=True
        )
        self.thread.start()

    def _run(self, other: sqlite3.Connection) -> None:
        try:
            self.outcome = trailcheck.integrity_problem(other)
        except BaseException as exc:  # handed to the verifying thread by result()
            self.outcome = exc
        if self.actor_bounds is not None:
            with contextlib.suppress(sqlite3.Error):  # not clear: the walk probes itself
                self._actors_clear = first_unheld(other, *self.actor_bounds) is None
            with contextlib.suppress(sqlite3.Error):  # unchecked: the verifying thread checks
                self._first_seqs = (actorcheck.first_seq_problem(other),)

    @property
    def screens_actors(self) -> bool:
        """Whether the thread screens the actor index (the walk need not probe it)."""
        return self.thread is not None and self.actor_bounds is not None

    def actors_clear(self) -> bool:
        """Whether the screen found every event's rows in the actor index (waits for it)."""
        if self.thread is not None:
            self.thread.join()
        return self._actors_clear

    def first_seq_problem(self) -> trailcheck.Finding | None:
        """`actorcheck.first_seq_problem`, from the thread when it could tell (it only adds
        rows: a later snapshot's first seqs are the walk's, and the new rows' own)."""
        if self.thread is not None:
            self.thread.join()
        if self._first_seqs is not None:
            return self._first_seqs[0]
        return actorcheck.first_seq_problem(self.conn)

    def result(self) -> trailcheck.Finding | None:
        if self.thread is None:
            return trailcheck.integrity_problem(self.conn)
        self.thread.join()
        if isinstance(self.outcome, BaseException):
            return trailcheck.integrity_problem(self.conn)  # say it again, on the snapshot
        return self.outcome

    def stop(self) -> None:
        """After the verdict (or an early finding): stop the check and close its connection."""
        if self.other is None or self.thread is None:
            return
        self.other.interrupt()
        self.thread.join()
        self.other.close()
        self.other = None


def _actor_index_problem(integrity: _IntegrityCheck, audit: ChainWalk) -> trailcheck.Finding | None:
    # Before the label index's: a first seq too early makes its look-ups miss too.
    return None if audit.actors_through is None else integrity.first_seq_problem()


def _actor_index_notes(audit: ChainWalk) -> tuple[str, ...]:
    if audit.actors_through is None:
        return ()
    note = actorcheck.tail_note(audit.actors_through, audit.last_seq)
    return () if note is None else (note,)


def _label_index_problem(labels: Completeness | None) -> trailcheck.Finding | None:
    missing = None if labels is None else labels.finish()
    if missing is None:
        return None
    actor, key, value = missing
    return trailcheck.Finding(
        f"label index: label {key}={value} of actor {actor or '(none)'} is missing "
        "(rows deleted: query -f label= would not find its events)"
    )


def _file_of(conn: sqlite3.Connection) -> str | None:
    for _, name, path in conn.execute("PRAGMA database_list"):
        if name == "main":
            return str(path) or None
    return None


def _empty_report(public: Ed25519PublicKey | None, trail_id: str) -> VerifyReport:
    return VerifyReport(
        ok=True,
        events=0,
        checkpoints=0,
        first_bad_seq=None,
        problem=None,
        unsealed=0,
        key_fingerprint=None if public is None else fingerprint(public),
        trail_id=trail_id,
    )


def _audit_report(
    conn: sqlite3.Connection,
    audit: ChainWalk,
    problem: Problem | None,
    public: Ed25519PublicKey | None,
    trail_id: str,
) -> VerifyReport:
    events, alerts, checkpoints = (
        int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        for table in ("events", "alerts", "checkpoints")
    )
    bad = None if problem is None else problem[0]
    return VerifyReport(
        ok=problem is None,
        events=events,
        checkpoints=checkpoints,
        first_bad_seq=None if audit.in_alerts else bad,
        problem=None if problem is None else problem[1],
        unsealed=max(audit.last_seq - audit.sealed_seq, 0),
        key_fingerprint=None if public is None else fingerprint(public),
        alerts=alerts,
        first_bad_alert_seq=bad if audit.in_alerts else None,
        unsealed_alerts=max(audit.last_alert_seq - audit.sealed_alert_seq, 0),
        finding=None if problem is None else "tampered",
        trail_id=trail_id,
    )


def _tail_notes(report: VerifyReport, vouched: Heads | None) -> tuple[str, ...]:
    if not (report.unsealed or report.unsealed_alerts):
        return ()
    tail = f"{report.unsealed} events and {report.unsealed_alerts} alerts after the last checkpoint"
    if vouched is None:
        return (f"{tail}, vouched for by the hash chain only",)
    return (
        f"{tail}, sealed by the writer's head seal (a writer is running, or stopped without "
        "its final checkpoint; its next start seals them)",
    )


def check_tail(conn: sqlite3.Connection, table: str, after_seq: int) -> None:
    """The rows after `after_seq` must chain on from it (a crashed writer's tail)."""
    row = conn.execute(f"SELECT hash FROM {table} WHERE seq = ?", (after_seq,)).fetchone()
    expected_seq, expected_prev = after_seq + 1, GENESIS_HASH if row is None else row[0]
    rows = conn.execute(
        f"SELECT seq, prev_hash, hash, body FROM {table} WHERE seq > ? ORDER BY seq", (after_seq,)
    )
    for seq, prev_hash, digest, body in rows:
        if (
            seq != expected_seq
            or prev_hash != expected_prev
            or chain_hash(prev_hash, body) != digest
        ):
            label = "seq" if table == "events" else "alert seq"
            raise TamperError(
                f"the unsealed tail does not chain on from the last checkpoint at {label} {seq}; "
                "run docktrail verify"
            )
        expected_seq, expected_prev = seq + 1, digest


def _trigger_problem(db: Database) -> Problem | None:
    present = db.triggers_dict
    for name, sql in TRIGGERS.items():
        if name not in present:
            return None, f"append-only trigger {name} is missing (dropped)"
        if _squash(present[name]) != _squash(sql):
            return None, f"append-only trigger {name} was altered"
    return None


def _squash(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).strip()
