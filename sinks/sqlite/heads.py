"""The writer's signatures over the trail's heads: the signing key, the head seal of
every write, signed checkpoints, and the tail a crashed writer left unsealed.

Apart from `trail` because this is what makes the trail tamper-evident, and each
rule of it is a refusal: never sign rows docktrail did not write (`foreign-rows`,
`sinks.headseal`), never sign with a key other than the one that signed the trail
before (a new key would make every earlier checkpoint fail verification), never
seal a crashed writer's tail without checking that it chains on. `SQLiteTrail`
owns one `Signer` and, through its base `Sealing`, decides when to sign (every
write, every interval, at close) and when to recover (a writer alone on the
trail); the rest of this module says what is signed, and how, inside the
caller's write transaction, on its connection.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.errors import SigningKeyError, TamperError, TrailError
from listener.model.event import GENESIS_HASH, Event, natural_id
from sinks import headseal, trailfiles, witness
from sinks.signing import Checkpoint, checkpoint_payload, fingerprint, load_or_create_key, sign
from sinks.sqlite.schema import immediate
from sinks.sqlite.verification import check_tail

# The trail's logger, as before `Sealing` moved here: the JSON logs name it (`listener.logs`).
log = logging.getLogger("sinks.sqlite.trail")


def head(conn: sqlite3.Connection, table: str = "events") -> tuple[int, str]:
    """(seq, hash) of the last row of `table`'s chain; (0, GENESIS_HASH) when it has none."""
    row = conn.execute(f"SELECT seq, hash FROM {table} ORDER BY seq DESC LIMIT 1").fetchone()
    return (0, GENESIS_HASH) if row is None else (row[0], row[1])


def last_key_fingerprint(conn: sqlite3.Connection) -> str | None:
    """The key that signed the last checkpoint; None before the first."""
    row = conn.execute("SELECT key_fingerprint FROM checkpoints ORDER BY n DESC LIMIT 1").fetchone()
    last: str | None = None if row is None else row[0]
    return last


class Signer:
    """One writer's signatures over a trail's heads, with the trail's signing key.

    The key is loaded (or created, for a trail never signed) on first use and
    kept. The last seal this instance wrote is remembered: its own last write
    needs no signature check.
    """

    def __init__(self, signing_key: Path) -> None:
        self.signing_key = signing_key
        self.key_fingerprint = ""
        self.own_seal: headseal.Seal | None = None  # the last seal this instance wrote
        self._key: Ed25519PrivateKey | None = None

    def key(self, last_fingerprint: str | None) -> Ed25519PrivateKey:
        """The signing key, refusing one that differs from the key of earlier checkpoints.

        A silently created new key would make every earlier checkpoint fail
        verification, so a lost key is an error, not a fresh start.
        """
        if self._key is None:
            if last_fingerprint is not None and not self.signing_key.exists():
                raise SigningKeyError(
                    f"{self.signing_key}: signing key not found, but this trail was signed "
                    f"with key {last_fingerprint}; restore that key"
                )
            key = load_or_create_key(self.signing_key)
            self._key, self.key_fingerprint = key, fingerprint(key.public_key())
        if last_fingerprint is not None and last_fingerprint != self.key_fingerprint:
            raise SigningKeyError(
                f"{self.signing_key}: key {self.key_fingerprint} is not key "
                f"{last_fingerprint} that signed this trail's last checkpoint"
            )
        return self._key

    def check_own_heads(self, conn: sqlite3.Connection, trail_id: str) -> None:
        """Refuse to write after rows docktrail did not write (inside the write transaction)."""
        seal = headseal.read(conn)
        if seal is not None and seal == self.own_seal:
            sealed = seal.heads  # our own last write: its signature was made here
        elif seal is not None:
            key = self.key(seal.key_fingerprint)
            if not headseal.signed(seal, trail_id, key.public_key()):
                raise TamperError(
                    "the head seal's signature is invalid (forged); run docktrail verify"
                )
            sealed = seal.heads
        elif headseal.has_genesis(conn):
            raise TamperError("the head seal is missing (deleted); run docktrail verify")
        else:
            return  # a trail from before head seals: its next write seals it
        stored = headseal.current(conn)
        if stored != sealed:
            bad_seq, bad_alert, message = headseal.foreign_problem(stored, sealed)
            where = "" if bad_seq is not None or bad_alert is None else f"alert seq {bad_alert}: "
            raise TamperError(
                f"{where}foreign rows: {message}; refusing to sign them (run docktrail verify)",
                seq=bad_seq,
            )

    def seal_heads(self, conn: sqlite3.Connection, trail_id: str) -> None:
        """Sign the heads as this write leaves them (inside its transaction)."""
        key = self.key(last_key_fingerprint(conn))
        heads = headseal.current(conn)
        self.own_seal = headseal.write(conn, trail_id, heads, key, self.key_fingerprint)

    def checkpoint(self, conn: sqlite3.Connection, trail_id: str) -> Checkpoint:
        """Sign both heads and store the checkpoint (inside the caller's write transaction)."""
        last = conn.execute(
            "SELECT n, key_fingerprint FROM checkpoints ORDER BY n DESC LIMIT 1"
        ).fetchone()
        key = self.key(None if last is None else last[1])
        seq, digest = head(conn)
        alerts_seq, alerts_hash = head(conn, "alerts")
        now = time.time_ns()
        payload = checkpoint_payload(trail_id, seq, digest, now, alerts_seq, alerts_hash)
        cp = Checkpoint(
            1 if last is None else last[0] + 1,
            trail_id,
            seq,
            digest,
            now,
            self.key_fingerprint,
            sign(key, payload),
            alerts_seq,
            alerts_hash,
        )
        conn.execute(
            "INSERT INTO checkpoints (n, trail_id, seq, hash, time_ns, key_fingerprint, "
            "signature, alerts_seq, alerts_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                cp.number,
                cp.trail_id,
                cp.seq,
                cp.hash,
                cp.time_ns,
                cp.key_fingerprint,
                cp.signature,
                cp.alerts_seq,
                cp.alerts_hash,
            ),
        )
        return cp


def is_empty(conn: sqlite3.Connection) -> bool:
    """Whether the trail was never signed: no checkpoint, no seal, no rows."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM checkpoints), (SELECT count(*) FROM head_seal)"
    ).fetchone()
    return tuple(row) == (0, 0) and headseal.current(conn) == headseal.EMPTY


def moved_since_checkpoint(conn: sqlite3.Connection) -> bool:
    """Whether either chain's head is past the one the last checkpoint signed."""
    last = conn.execute(
        "SELECT seq, hash, alerts_seq, alerts_hash FROM checkpoints ORDER BY n DESC LIMIT 1"
    ).fetchone()
    heads = (*head(conn), *head(conn, "alerts"))
    return heads != (tuple(last) if last is not None else (0, GENESIS_HASH, 0, GENESIS_HASH))


class UnsealedTail(NamedTuple):
    """What a crashed writer left after the last checkpoint, and the event that says so."""

    recovered: Event  # the `trail-recovered` event to store and seal with the tail
    since_seq: int  # the last checkpoint's seq
    events: int  # events after it
    alerts: int  # alerts after the last checkpoint's alert seq


def unsealed_tail(conn: sqlite3.Connection, trail_id: str, host: str) -> UnsealedTail | None:
    """The tail after the last checkpoint (None: there is none), its chains checked.

    A crash cannot separate rows from their head seal, so the tail is exactly
    what the crashed writer sealed; it must still chain on from the last
    checkpoint (`TamperError` otherwise), since nothing else vouches for it.
    """
    last = conn.execute(
        "SELECT seq, alerts_seq, time_ns FROM checkpoints ORDER BY n DESC LIMIT 1"
    ).fetchone()
    since_seq, since_alert_seq, since_ns = (0, 0, None) if last is None else tuple(last)
    heads = headseal.current(conn)
    unsealed, unsealed_alerts = heads.seq - since_seq, heads.alerts_seq - since_alert_seq
    if unsealed <= 0 and unsealed_alerts <= 0:
        return None
    check_tail(conn, "events", since_seq)
    check_tail(conn, "alerts", since_alert_seq)
    now = time.time_ns()
    attributes: dict[str, Any] = {
        "unsealed_events": unsealed,
        "unsealed_alerts": unsealed_alerts,
        "first_unsealed_seq": since_seq + 1,
        "first_unsealed_alert_seq": since_alert_seq + 1,
        "last_checkpoint_ns": since_ns,
        "reason": "the previous writer stopped without its final checkpoint (a crash)",
    }
    recovered = Event(
        id=natural_id("docktrail", "trail-recovered", trail_id, heads.seq, heads.alerts_seq),
        time_ns=now,
        source="docktrail",
        host=host,
        type="trail",
        action="trail-recovered",
        attributes=attributes,
    )
    return UnsealedTail(recovered, since_seq, unsealed, unsealed_alerts)


class Sealing:
    """When `SQLiteTrail` signs: its base, for the checkpoints and the writer's own heads.

    Every write checks the heads it finds (`_check_own_heads`) and seals those it
    leaves (`_seal_heads`); a checkpoint is signed when asked, when due (an
    interval, a number of events) and at close; the first write seals a new
    trail or a crashed writer's tail (`_ensure_writer`). Apart from `SQLiteTrail`
    because this is one concern, the writer's signing, with its own counters and
    the witness; the trail still owns the connection and the transactions, and
    its state used here is declared below as `reading.TrailReader` declares its own.
    """

    path: Path
    host: str
    group: str | None
    witness_path: Path | None
    checkpoint_interval_secs: float
    checkpoint_every_events: int
    recovered: Event | None  # the trail-recovered event this writer stored
    _conn: sqlite3.Connection | None
    _trail_id: str
    _signer: Signer
    _writer_lock: trailfiles.WriterLock
    _writer: bool  # checked the trail's tail and holds the writers' lock
    _dirty: bool  # this instance stored events that no checkpoint covers yet
    _since_checkpoint: int  # events stored since this instance's last checkpoint
    _unwitnessed: list[Checkpoint]
    _last_checkpoint: float
    # The trail's connection, its errors and its insert of events (`SQLiteTrail`).
    _connection: Callable[[], sqlite3.Connection]
    _errors: Callable[[str], AbstractContextManager[None]]
    _insert_events: Callable[[sqlite3.Connection, Sequence[Event]], object]

    # -- checkpoints ----------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        """Sign the current heads of both chains and store the signature.

        Refuses (`TamperError`) when the heads are not the ones this writer (or
        another docktrail writer) sealed: foreign rows are never signed.
        """
        conn = self._connection()
        self._ensure_writer()
        self._unwitnessed.clear()
        with self._errors("checkpoint"), immediate(conn):
            self._check_own_heads(conn)
            cp = self._checkpoint_in(conn)
        self._checkpointed()
        return cp

    def _checkpoint_in(self, conn: sqlite3.Connection) -> Checkpoint:
        """Sign the heads inside the caller's write transaction."""
        cp = self._signer.checkpoint(conn, self._trail_id)
        self._unwitnessed.append(cp)
        return cp

    def _checkpointed(self) -> None:
        """After a commit that stored checkpoints: reset the counters, tell the witness."""
        self._dirty = False
        self._last_checkpoint = time.monotonic()
        self._since_checkpoint = 0
        made, self._unwitnessed = self._unwitnessed, []
        if self.witness_path is None:
            return
        try:
            witness.append(self.witness_path, made, self.group)
        except TrailError as exc:
            # the checkpoint is committed; the witness lags until the next one succeeds
            log.error("checkpoint %s not witnessed: %s", made[-1].number if made else "?", exc)

    def _checkpoint_if_moved(self, conn: sqlite3.Connection) -> None:
        with self._errors("checkpoint"):
            moved = moved_since_checkpoint(conn)
        if moved:
            self.checkpoint()
        else:
            self._dirty = False

    # -- the writer's own heads (sinks.headseal, `Signer`) -------------------

    def _ensure_writer(self) -> None:
        """Before this instance's first write: seal a new trail, or check and recover its tail.

        A new trail gets its genesis checkpoint. Otherwise the stored heads must
        be the sealed ones (`_check_own_heads`), and a writer alone on the
        trail seals the tail a crashed writer left (`_recover`).
        """
        if self._writer:
            return
        conn = self._connection()
        alone = self._writer_lock.acquire()
        try:
            self._unwitnessed.clear()
            with self._errors("open for writing"), immediate(conn):
                if is_empty(conn):
                    self._seal_genesis(conn)
                else:
                    self._check_own_heads(conn)
                    if alone:
                        self._recover(conn)
            if self._unwitnessed:
                self._checkpointed()
        except BaseException:
            self._writer_lock.release()
            raise
        self._writer_lock.share()
        self._writer = True

    def _seal_genesis(self, conn: sqlite3.Connection) -> None:
        """Seal and sign a new trail's empty heads: a trail is never unsigned."""
        self._seal_heads(conn)
        self._checkpoint_in(conn)

    def _check_own_heads(self, conn: sqlite3.Connection) -> None:
        """Refuse to write after rows docktrail did not write (inside the write transaction)."""
        self._signer.check_own_heads(conn, self._trail_id)

    def _seal_heads(self, conn: sqlite3.Connection) -> None:
        """Sign the heads as this write leaves them (inside its transaction)."""
        self._signer.seal_heads(conn, self._trail_id)

    def _recover(self, conn: sqlite3.Connection) -> None:
        """Seal what a crashed writer left after the last checkpoint, saying so in the trail."""
        tail = unsealed_tail(conn, self._trail_id, self.host)
        if tail is None:
            return
        self._insert_events(conn, [tail.recovered])
        self._seal_heads(conn)
        self._checkpoint_in(conn)
        self.recovered = tail.recovered
        log.warning(
            "trail %s: sealed %d events and %d alerts left unsealed by a crash (since seq %d)",
            self.path,
            tail.events,
            tail.alerts,
            tail.since_seq + 1,
        )

    def _periodic_checkpoint(self) -> None:
        """Checkpoint when due. Never raises: the append it follows has committed."""
        if not self._dirty or self._conn is None:
            return
        if (
            time.monotonic() - self._last_checkpoint < self.checkpoint_interval_secs
            and self._since_checkpoint < self.checkpoint_every_events
        ):
            return
        try:
            self.checkpoint()
        except TrailError as exc:
            self._last_checkpoint = time.monotonic()  # retry next interval, not every append
            log.error(
                "trail checkpoint failed (retrying in %ss): %s", self.checkpoint_interval_secs, exc
            )
