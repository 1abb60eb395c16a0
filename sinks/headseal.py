"""The head seal: the writer's signed word on where it left both chains.

Checkpoints are signed every interval, so rows after the last one are vouched
for by nothing but the chain, and anyone who can write the file can append a
chain-correct row there without the key. The writer therefore also signs, in
the same transaction as every write, the heads it leaves: one row,
``head_seal(id = 1, seq, hash, alerts_seq, alerts_hash, time_ns,
key_fingerprint, signature)``, replaced each time (signed bytes:
`sinks.signing.head_payload`). Before each write it checks that the stored
heads are still the sealed ones. Rows past the seal were written by someone
else: `foreign-rows`, never signed, never sent.

A crash cannot separate rows from their seal (one transaction), so after a
crash the unsealed tail is exactly the sealed one: the next writer that finds
itself alone checks its chain and seals it with a checkpoint and a
`trail-recovered` event.

Trails created with a genesis checkpoint (checkpoint 1 at seq 0, alert seq 0)
must have a seal; trails from before head seals get one from their next
writer.
"""

from __future__ import annotations

import sqlite3
import time
from typing import NamedTuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlite_utils import Database

from listener.model.event import GENESIS_HASH
from sinks.signing import head_payload, sign, verify_signature


class Heads(NamedTuple):
    seq: int
    hash: str
    alerts_seq: int
    alerts_hash: str

    def describe(self) -> str:
        return f"seq {self.seq}, alert seq {self.alerts_seq}"


EMPTY = Heads(0, GENESIS_HASH, 0, GENESIS_HASH)


class Seal(NamedTuple):
    heads: Heads
    time_ns: int
    key_fingerprint: str
    signature: str


def migrate(db: Database) -> None:
    """Migration 0008: the head seal (replaced in place, protected by its signature)."""
    db.execute(
        "CREATE TABLE head_seal (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, "
        "hash TEXT NOT NULL, alerts_seq INTEGER NOT NULL, alerts_hash TEXT NOT NULL, "
        "time_ns INTEGER NOT NULL, key_fingerprint TEXT NOT NULL, signature TEXT NOT NULL)"
    )


def current(conn: sqlite3.Connection) -> Heads:
    """The heads as stored now."""
    row = conn.execute(
        "SELECT (SELECT seq FROM events ORDER BY seq DESC LIMIT 1), "
        "(SELECT hash FROM events ORDER BY seq DESC LIMIT 1), "
        "(SELECT seq FROM alerts ORDER BY seq DESC LIMIT 1), "
        "(SELECT hash FROM alerts ORDER BY seq DESC LIMIT 1)"
    ).fetchone()
    return Heads(row[0] or 0, row[1] or GENESIS_HASH, row[2] or 0, row[3] or GENESIS_HASH)


def read(conn: sqlite3.Connection) -> Seal | None:
    row = conn.execute(
        "SELECT seq, hash, alerts_seq, alerts_hash, time_ns, key_fingerprint, signature "
        "FROM head_seal WHERE id = 1"
    ).fetchone()
    return None if row is None else Seal(Heads(*row[:4]), row[4], row[5], row[6])


def write(
    conn: sqlite3.Connection, trail_id: str, heads: Heads, key: Ed25519PrivateKey, key_id: str
) -> Seal:
    """Seal `heads`; inside the caller's write transaction."""
    now = time.time_ns()
    signature = sign(key, head_payload(trail_id, *heads, now))
    conn.execute(
        "INSERT OR REPLACE INTO head_seal (id, seq, hash, alerts_seq, alerts_hash, time_ns, "
        "key_fingerprint, signature) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
        (*heads, now, key_id, signature),
    )
    return Seal(heads, now, key_id, signature)


def signed(seal: Seal, trail_id: str, public: Ed25519PublicKey) -> bool:
    return verify_signature(
        public, head_payload(trail_id, *seal.heads, seal.time_ns), seal.signature
    )


def has_genesis(conn: sqlite3.Connection) -> bool:
    """Whether checkpoint 1 is a genesis (made when the trail was created)."""
    row = conn.execute("SELECT seq, alerts_seq FROM checkpoints WHERE n = 1").fetchone()
    return row is not None and tuple(row) == (0, 0)


def foreign_problem(stored: Heads, sealed: Heads) -> tuple[int | None, int | None, str]:
    """(first foreign seq, first foreign alert seq, message) of heads past the seal."""
    bad_seq = sealed.seq + 1 if stored.seq != sealed.seq or stored.hash != sealed.hash else None
    bad_alert = (
        sealed.alerts_seq + 1
        if stored.alerts_seq != sealed.alerts_seq or stored.alerts_hash != sealed.alerts_hash
        else None
    )
    return (
        bad_seq,
        bad_alert,
        (
            f"the trail's heads ({stored.describe()}) are not where docktrail left them "
            f"({sealed.describe()}): rows written by someone else"
        ),
    )
