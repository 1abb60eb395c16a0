"""Verify's walk over the rows: both hash chains, the signed checkpoints met on the way,
the copied columns, the actor index's rows and the label index's completeness, in one
streaming pass each (`verification` runs it beside the integrity check and concludes).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import sinks.sqlite.actorcheck as actorcheck
import sinks.sqlite.actors as actors
from config.errors import SigningKeyError
from listener.model.event import GENESIS_HASH, chain_hash
from sinks.chain import event_ref_problem, link_problem
from sinks.headseal import Heads
from sinks.signing import checkpoint_payload, fingerprint, verify_signature
from sinks.sqlite.labels import Completeness
from sinks.sqlite.schema import (
    ALERT_COPIED_NAMES,
    COPIED_NAMES,
    FIRST_UNHELD,
    VERIFY_ALERT_ROWS,
    alert_copied_values,
    copied_values,
    verify_event_rows,
)

Progress = Callable[[int, int], None]
"""Called with (seq reached, last seq) while the events chain is walked."""
_PROGRESS_MASK = 4095  # report every 4096 events: a call per row would cost more than it shows

Problem = tuple[int | None, str]
"""(first bad seq or None, what is wrong and where)."""


def first_unheld(conn: sqlite3.Connection, through: int, last_seq: int) -> int | None:
    """The first event up to `last_seq` that the walk's actor probe would stop at (None:
    none); `through`: `actors.through_seq`, as for the probe."""
    row = conn.execute(FIRST_UNHELD, (through, last_seq)).fetchone()
    return None if row is None else int(row[0])


class ChainWalk:
    """One streaming walk over both chains and the checkpoints (`verification`'s docstring
    lists the steps); what it found is read from its fields after `run`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        trail_id: str,
        public: Ed25519PublicKey | None,
        key_path: Path,
        on_progress: Progress | None = None,
        labelled: bool = False,
        actor_index: bool = False,
        probe_actors: bool = True,
    ) -> None:
        self.conn = conn
        # False: the actor index's rows are screened beside the walk (`verification`).
        self.probe_actors = probe_actors
        self.on_progress = on_progress
        self.labels = Completeness(conn, actor_index) if labelled else None
        # The actor index holds the events up to this seq (None: the trail has no index).
        self.actors_through = actors.through_seq(conn) if actor_index else None
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
        progress, last = self.on_progress, actors.last_event_seq(self.conn)
        labels = self.labels
        seen = set() if labels is None else labels.seen  # a local: read on every row
        rows = self._event_rows()
        for seq, prev_hash, digest, body, columns_ok, actor, carried, actors_ok in rows:
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
            if not actors_ok:  # after the columns: the probe is keyed by them
                return seq, actorcheck.row_problem(self.conn, seq, self.actors_through or 0)
            if carried is not None and labels is not None and (actor, carried) not in seen:
                labels.add((actor, carried))
            self.last_seq, expected_seq, expected_prev = seq, seq + 1, digest
            if self.pending is not None and self.pending[2] <= seq:
                problem = self._checkpoints_at(seq, digest)
                if problem is not None:
                    return problem
        return self._finish()

    def _event_rows(self) -> sqlite3.Cursor:
        through = self.actors_through if self.probe_actors else None
        sql = verify_event_rows(self.labels is not None, through is not None)
        return self.conn.execute(sql, () if through is None else (through,))

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
