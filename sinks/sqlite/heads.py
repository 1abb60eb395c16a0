"""The writer's signatures over the trail's heads: the signing key, the head seal of
every write, signed checkpoints, and the tail a crashed writer left unsealed.

Apart from `trail` because this is what makes the trail tamper-evident, and each
rule of it is a refusal: never sign rows docktrail did not write (`foreign-rows`,
`sinks.headseal`), never sign with a key other than the one that signed the trail
before (a new key would make every earlier checkpoint fail verification), never
seal a crashed writer's tail without checking that it chains on. `SQLiteTrail`
owns one `Signer` and decides when to sign (every write, every interval, at close)
and when to recover (a writer alone on the trail); this module says what is
signed, and how, inside the caller's write transaction, on its connection.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any, NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from config.errors import SigningKeyError, TamperError
from listener.model.event import GENESIS_HASH, Event, natural_id
from sinks import headseal
from sinks.signing import Checkpoint, checkpoint_payload, fingerprint, load_or_create_key, sign
from sinks.sqlite.verification import check_tail


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
