"""Verification of a trail file, read-only: both chains, the signed checkpoints, the
head seal, the append-only triggers, an auditor's pins and the witness.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlite_utils import Database

from config.errors import SigningKeyError, TamperError, TrailError
from listener.model.event import GENESIS_HASH, chain_hash
from sinks import trailcheck, witness
from sinks.chain import (
    VerifyReport,
    event_ref_problem,
    link_problem,
)
from sinks.headseal import Heads
from sinks.signing import (
    checkpoint_payload,
    fingerprint,
    load_public_key,
    verify_signature,
)
from sinks.sqlite.errors import trail_error
from sinks.sqlite.labels import Completeness
from sinks.sqlite.schema import (
    ALERT_COPIED_NAMES,
    BUSY_TIMEOUT_SECS,
    CACHE_KIB,
    COPIED_NAMES,
    GENESIS_MIGRATIONS,
    LABEL_MIGRATION,
    MIGRATIONS,
    TRIGGERS,
    VERIFY_ALERT_ROWS,
    VERIFY_LABELLED_ROWS,
    VERIFY_ROWS,
    alert_copied_values,
    copied_values,
)
from sinks.sqlite.storage import connect_read_only

Progress = Callable[[int, int], None]
"""Called with (seq reached, last seq) while the events chain is walked."""
_PROGRESS_MASK = 4095  # report every 4096 events: a call per row would cost more than it shows

Problem = tuple[int | None, str]
"""(first bad seq or None, what is wrong and where)."""


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
    integrity = _IntegrityCheck(conn)  # the costliest check: overlapped with the chain walk
    try:
        labelled = LABEL_MIGRATION in applied
        audit = _Audit(conn, trail_id, public, key_path, on_progress, labelled)
        problem = audit.run()
        return _conclude(conn, audit, problem, integrity, applied, expected, public, trail_id)
    finally:
        integrity.stop()


def _conclude(
    conn: sqlite3.Connection,
    audit: _Audit,
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
            or _label_index_problem(audit.labels)
            or trailcheck.delivery_problem(conn)
        )
    report = _audit_report(conn, audit, problem, public, trail_id)
    if finding is not None:
        return _failed(report, finding)
    if not report.ok:
        return report
    return dataclasses.replace(report, notes=_tail_notes(report, vouched))


class _IntegrityCheck:
    """`PRAGMA integrity_check` of the same file on its own read-only connection, in a thread.

    It cross-checks every index entry against its row (what stops a forged index
    from hiding rows from queries), which costs as much as the whole chain walk;
    SQLite releases the GIL meanwhile, so both run at once. A later snapshot
    than the walk's (a writer appending meanwhile) is as good: the check is of
    the file's structure. Without a file (or a second connection), it runs inline.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.other: sqlite3.Connection | None = None
        self.outcome: trailcheck.Finding | BaseException | None = None
        self.thread: threading.Thread | None = None
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
    audit: _Audit,
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


class _Audit:
    """One streaming verify over both chains and the checkpoints (module docstring)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        trail_id: str,
        public: Ed25519PublicKey | None,
        key_path: Path,
        on_progress: Progress | None = None,
        labelled: bool = False,
    ) -> None:
        self.conn = conn
        self.on_progress = on_progress
        self.labels = Completeness(conn) if labelled else None
        self.trail_id = trail_id
        self.public = public
        self.key_path = key_path
        self.fingerprint = "" if public is None else fingerprint(public)
        self.checkpoints = conn.cursor().execute(
            "SELECT n, trail_id, seq, hash, time_ns, key_fingerprint, signature, alerts_seq, "
            "alerts_hash FROM checkpoints ORDER BY n"
        )
        self.pending: tuple[Any, ...] | None = self.checkpoints.fetchone()
        self.last_n = 0
        self.last_cp_seq = 0
        self.last_cp_alert_seq = 0
        self.sealed_seq = 0  # seq of the last valid checkpoint
        self.last_seq = 0
        self.in_alerts = False  # the problem found (if any) is in the alerts chain
        self.sealed_alert_seq = 0
        self.last_alert_seq = 0
        self.valid_checkpoints = 0
        self.sealed_hash = GENESIS_HASH
        self.sealed_alert_hash = GENESIS_HASH

    def checkpointed(self) -> Heads:
        """The heads of the last valid checkpoint (after `run`)."""
        return Heads(
            self.sealed_seq, self.sealed_hash, self.sealed_alert_seq, self.sealed_alert_hash
        )

    def run(self) -> Problem | None:
        problem = self._events_pass()
        if problem is None:
            self.in_alerts = True
            problem = self._alerts_pass()
        return problem

    # -- events and the checkpoints' signatures (steps 1-5) ---------------------

    def _events_pass(self) -> Problem | None:
        problem = self._checkpoints_at(0, GENESIS_HASH)
        if problem is not None:
            return problem
        expected_seq, expected_prev = 1, GENESIS_HASH
        progress, last = self.on_progress, self._last_event_seq()
        labels = self.labels
        seen = set() if labels is None else labels.seen  # a local: read on every row
        rows = self.conn.execute(VERIFY_ROWS if labels is None else VERIFY_LABELLED_ROWS)
        for seq, prev_hash, digest, body, columns_ok, actor, carried in rows:
            if progress is not None and not seq & _PROGRESS_MASK:
                progress(seq, last)
            # the fast path holds for intact rows; link_problem says what is wrong otherwise
            if not (
                seq == expected_seq
                and prev_hash == expected_prev
                and chain_hash(prev_hash, body) == digest
            ):
                return link_problem(seq, expected_seq, prev_hash, expected_prev, digest, body)
            if not columns_ok:
                return seq, self._column_problem("seq", seq, body)
            if carried is not None and labels is not None and (actor, carried) not in seen:
                labels.add((actor, carried))
            self.last_seq, expected_seq, expected_prev = seq, seq + 1, digest
            if self.pending is not None and self.pending[2] <= seq:
                problem = self._checkpoints_at(seq, digest)
                if problem is not None:
                    return problem
        return self._finish()

    def _last_event_seq(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def _checkpoints_at(self, seq: int, digest: str | None) -> Problem | None:
        while self.pending is not None and self.pending[2] <= seq:
            problem = self._checkpoint_problem(self.pending, digest)
            if problem is not None:
                return problem
            self.sealed_seq, self.sealed_hash = self.pending[2], self.pending[3]
            self.valid_checkpoints += 1
            self.pending = self.checkpoints.fetchone()
        return None

    def _checkpoint_problem(self, row: tuple[Any, ...], digest: str | None) -> Problem | None:
        """Problem of one checkpoint; `digest` is the hash of its row, None when missing."""
        n, trail_id, seq, signed_hash, time_ns, claimed_key, signature, alert_seq, alert_hash = row
        where = f"checkpoint {n} (seq {seq})"
        bad = self.sealed_seq + 1  # everything after the last good checkpoint is suspect
        if n != self.last_n + 1:
            return bad, (
                f"checkpoint {self.last_n + 1}: missing (checkpoint numbers jump "
                f"from {self.last_n} to {n}; deleted)"
            )
        if seq < self.last_cp_seq:
            return bad, f"{where}: out of order (checkpoint {n - 1} is at seq {self.last_cp_seq})"
        if alert_seq < self.last_cp_alert_seq:
            return bad, (
                f"{where}: out of order (alert seq {alert_seq}; checkpoint {n - 1} is at "
                f"alert seq {self.last_cp_alert_seq})"
            )
        if trail_id != self.trail_id:
            return bad, (
                f"{where}: made for trail {trail_id}, not this trail {self.trail_id} "
                "(copied from another trail)"
            )
        if self.public is None:
            raise SigningKeyError(
                f"{self.key_path}: no key to check checkpoint signatures with; "
                "pass the auditor's public key file"
            )
        payload = checkpoint_payload(trail_id, seq, signed_hash, time_ns, alert_seq, alert_hash)
        if not verify_signature(self.public, payload, signature):
            claimed = "" if claimed_key == self.fingerprint else f"; it names key {claimed_key}"
            return bad, (
                f"{where}: signature invalid for key {self.fingerprint} "
                f"(database rewritten or another key{claimed})"
            )
        if digest is None:
            return self.last_seq + 1, (
                f"{where}: the trail ends at seq {self.last_seq} (rows deleted at the end)"
            )
        if signed_hash != digest:
            return bad, f"{where}: signed hash does not match seq {seq} (rows up to it rewritten)"
        self.last_n, self.last_cp_seq, self.last_cp_alert_seq = n, seq, alert_seq
        return None

    def _finish(self) -> Problem | None:
        if self.pending is not None:  # a checkpoint beyond the last row
            return self._checkpoint_problem(self.pending, None)
        if self.valid_checkpoints == 0:
            return 1, (
                f"no signed checkpoint: not even the genesis checkpoint; none of the "
                f"{self.last_seq} events is sealed (an emptied or replaced database looks "
                "like this)"
            )
        return None

    # -- alerts against the (now validated) checkpoints (steps 1-4, 6, 7) -------

    def _alerts_pass(self) -> Problem | None:
        # Every checkpoint passed the events pass: numbered, in order, signed.
        self.alert_checkpoints = self.conn.cursor().execute(
            "SELECT n, alerts_seq, alerts_hash FROM checkpoints ORDER BY n"
        )
        self.alert_pending: tuple[Any, ...] | None = self.alert_checkpoints.fetchone()
        problem = self._alert_checkpoints_at(0, GENESIS_HASH)
        if problem is not None:
            return problem
        expected_seq, expected_prev = 1, GENESIS_HASH
        for row in self.conn.execute(VERIFY_ALERT_ROWS):
            seq, prev_hash, digest, body, columns_ok, event_seq, event_ok = row
            label = "alert seq"
            if not (
                seq == expected_seq
                and prev_hash == expected_prev
                and chain_hash(prev_hash, body) == digest
            ):
                return link_problem(
                    seq, expected_seq, prev_hash, expected_prev, digest, body, label
                )
            if not columns_ok:
                return seq, self._column_problem(label, seq, body)
            if not event_ok:
                return seq, self._event_problem(seq, event_seq, body)
            self.last_alert_seq, expected_seq, expected_prev = seq, seq + 1, digest
            if self.alert_pending is not None and self.alert_pending[1] <= seq:
                problem = self._alert_checkpoints_at(seq, digest)
                if problem is not None:
                    return problem
        if self.alert_pending is not None:  # a checkpoint beyond the last alert
            n, alert_seq, _ = self.alert_pending
            return self.last_alert_seq + 1, (
                f"checkpoint {n} (alert seq {alert_seq}): the alerts end at alert seq "
                f"{self.last_alert_seq} (rows deleted at the end)"
            )
        return None

    def _alert_checkpoints_at(self, seq: int, digest: str) -> Problem | None:
        # Alert seqs are contiguous and checkpoints in order (both checked), so each
        # checkpoint is met exactly at its alerts seq.
        while self.alert_pending is not None and self.alert_pending[1] <= seq:
            n, alert_seq, signed_hash = self.alert_pending
            if signed_hash != digest:
                return self.sealed_alert_seq + 1, (
                    f"checkpoint {n} (alert seq {alert_seq}): signed alerts hash does not match "
                    f"alert seq {alert_seq} (alerts up to it rewritten)"
                )
            self.sealed_alert_seq, self.sealed_alert_hash = alert_seq, signed_hash
            self.alert_pending = self.alert_checkpoints.fetchone()
        return None

    def _event_problem(self, seq: int, event_seq: int, body: str) -> str:
        row = self.conn.execute("SELECT id FROM events WHERE seq = ?", (event_seq,)).fetchone()
        try:
            event_id = json.loads(body).get("event_id")
        except (ValueError, AttributeError):
            event_id = None
        where = f"alert seq {seq}"
        problem = event_ref_problem(
            where, event_seq, str(event_id), None if row is None else row[0]
        )
        return problem or f"{where}: does not point at its event (row edited)"

    # -- copied columns (step 4), the slow path that names the column ----------

    def _column_problem(self, label: str, seq: int, body: str) -> str:
        alerts = label != "seq"
        table, names = ("alerts", ALERT_COPIED_NAMES) if alerts else ("events", COPIED_NAMES)
        values = alert_copied_values if alerts else copied_values
        try:
            content = json.loads(body)
            expected = (content["seq"], *values(content))
        except (ValueError, KeyError, TypeError, AttributeError):
            return (
                f"{label} {seq}: body is not a valid {'alert' if alerts else 'event'} (row edited)"
            )
        stored = self.conn.execute(
            f"SELECT seq, {', '.join(names)} FROM {table} WHERE seq = ?", (seq,)
        ).fetchone()
        for name, want, have in zip(("seq", *names), expected, stored, strict=True):
            if want != have or type(want) is not type(have):
                return f"{label} {seq}: column {name} does not match the body (row edited)"
        return f"{label} {seq}: copied columns do not match the body (row edited)"


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
