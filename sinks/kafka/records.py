"""The records a host publishes: one Kafka message per trail row.

Key: the publishing host's name (UTF-8), so each host's records stay in one
partition, in trail order. Value: one JSON object,

``{"v": 1, "kind": "event", "host", "trail_id", "seq", "prev_hash", "hash", "body"}``
    one event row; ``body`` is the stored canonical event (the DESIGN.md
    event object without ``hash``/``prev_hash``), so the consumer recomputes
    ``hash = sha256(prev_hash ‖ canonical(body))`` itself.
``{"v": 1, "kind": "alert", …, "event_hash"}``
    one alert row, with the hash of the event it points at (the consumer finds
    that event in the central trail by it).
``{"v": 1, "kind": "checkpoint", "host", "trail_id", "seq": n, "body"}``
    one signed checkpoint (both chain heads), with ``body.public_key``: the
    raw Ed25519 public key, base64, that the signature verifies under.

Events and alerts are encoded by concatenating the stored canonical text:
no parse and re-dump per row (it is the producer's largest cost otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from config.errors import InputError

VERSION = 1
Kind = Literal["event", "alert", "checkpoint"]
KINDS: tuple[Kind, ...] = ("event", "alert", "checkpoint")
_HEX64 = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded message; `body` is untrusted input until the chain check accepts it."""

    kind: Kind
    host: str
    trail_id: str
    seq: int
    body: dict[str, Any]
    prev_hash: str = ""
    hash: str = ""
    event_hash: str = ""


def row_prefix(kind: Kind, host: str, trail_id: str) -> bytes:
    """The constant start of every value of one kind from one trail."""
    head = {"v": VERSION, "kind": kind, "host": host, "trail_id": trail_id}
    return orjson.dumps(head)[:-1]


def encode_row(
    prefix: bytes, seq: int, body: str, prev_hash: str, digest: str, event_hash: str | None = None
) -> bytes:
    """Value of an event (or, with `event_hash`, alert) row; `body` is stored canonical JSON."""
    tail = b'"}' if event_hash is None else b'","event_hash":"' + event_hash.encode() + b'"}'
    return b"".join(
        (
            prefix,
            b',"seq":',
            str(seq).encode(),
            b',"prev_hash":"',
            prev_hash.encode(),
            b'","body":',
            body.encode(),
            b',"hash":"',
            digest.encode(),
            tail,
        )
    )


def encode_checkpoint(prefix: bytes, number: int, body: dict[str, Any]) -> bytes:
    return prefix + b',"seq":' + str(number).encode() + b',"body":' + orjson.dumps(body) + b"}"


def decode(value: bytes | None, where: str, max_bytes: int) -> Record:
    """Parse and shape-check one message value; raises `InputError` naming `where`."""
    if value is None:
        raise InputError("empty record (tombstone)", path=where)
    if len(value) > max_bytes:
        raise InputError(f"record of {len(value)} bytes exceeds {max_bytes}", path=where)
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InputError(f"not JSON: {exc}", path=where) from None
    if not isinstance(obj, dict) or obj.get("v") != VERSION:
        raise InputError(f"not a docktrail v{VERSION} record", path=where)
    kind, host, trail_id = obj.get("kind"), obj.get("host"), obj.get("trail_id")
    seq, body = obj.get("seq"), obj.get("body")
    if kind not in KINDS:
        raise InputError(f"unknown kind {kind!r}", path=where)
    if not _name(host) or not _name(trail_id):
        raise InputError("host and trail_id must be short non-empty strings", path=where)
    if type(seq) is not int or not 0 < seq < 2**63 or not isinstance(body, dict):
        raise InputError("seq must be a positive 64-bit integer and body an object", path=where)
    hashes = {name: obj.get(name, "") for name in ("prev_hash", "hash", "event_hash")}
    needed = {"event": ("prev_hash", "hash"), "alert": ("prev_hash", "hash", "event_hash")}
    for name in needed.get(kind, ()):
        if not _is_hash(hashes[name]):
            raise InputError(f"{name} must be 64 hex digits", path=where)
    return Record(kind, host, trail_id, seq, body, **hashes)  # type: ignore[arg-type]


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 255


def _is_hash(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and set(value) <= _HEX64
