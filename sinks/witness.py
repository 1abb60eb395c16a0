"""The witness: signed checkpoints copied out of the trail, to detect rollback.

Whoever can write the trail file can replace it with an older copy of itself:
every row and signature in that copy is genuine, so the chain and the
checkpoints verify. Only a record of the heads kept elsewhere tells. Every
checkpoint the writer signs is therefore also appended, after its commit, to
the witness file (`trail.witness_path`) as one JSON line:

    {"alerts_hash": ..., "alerts_seq": ..., "hash": ..., "key_fingerprint": ...,
     "n": ..., "seq": ..., "signature": ..., "time_ns": ..., "trail_id": ...}

`check` compares a trail with a witness: a signed checkpoint the witness holds
but the trail lacks means the trail was ROLLED BACK; one the trail holds
differently means it was FORKED (an older copy that was written to again, or
another file). Lines not signed by the verifying key are ignored and counted,
so whoever can append to the witness cannot raise false alarms with them nor
hide anything. A witness may lag the trail by the checkpoints of a crash
between a commit and its witness line; that is not a finding.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from config.errors import TrailError
from listener.model.event import canonical_json
from sinks.signing import Checkpoint, checkpoint_payload, verify_signature
from sinks.trailfiles import create_private

Finding = Literal["rolled-back", "forked"]
_FIELDS = ("n", "seq", "hash", "time_ns", "alerts_seq", "alerts_hash", "signature")


def append(path: Path, checkpoints: list[Checkpoint], group: str | None = None) -> None:
    """Append the checkpoints' lines to the witness file, created private when missing."""
    if not checkpoints:
        return
    lines = "".join(canonical_json(_line(cp)) + "\n" for cp in checkpoints)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private(path, group)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            os.write(fd, lines.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise TrailError(f"{path}: cannot append to the witness: {exc.strerror}") from exc


def _line(cp: Checkpoint) -> dict[str, Any]:
    return {
        "n": cp.number,
        "trail_id": cp.trail_id,
        "seq": cp.seq,
        "hash": cp.hash,
        "time_ns": cp.time_ns,
        "alerts_seq": cp.alerts_seq,
        "alerts_hash": cp.alerts_hash,
        "key_fingerprint": cp.key_fingerprint,
        "signature": cp.signature,
    }


@dataclass(slots=True)
class WitnessReport:
    """What the witness said: `finding` and `problem` are None when the trail agrees."""

    checked: int = 0  # witnessed checkpoints of this trail compared
    ignored: int = 0  # lines unreadable, or not signed by the verifying key
    other_trails: set[str] = field(default_factory=set)
    finding: Finding | None = None
    problem: str | None = None
    first_bad_seq: int | None = None


def check(
    path: Path, conn: sqlite3.Connection, trail_id: str, public: Ed25519PublicKey
) -> WitnessReport:
    """Compare the trail on `conn` with the witness at `path` (module docstring)."""
    report = WitnessReport()
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise TrailError(f"{path}: cannot read the witness: {exc.strerror}") from exc
    for number, raw in enumerate(text.splitlines(), 1):
        line = _signed_line(raw, public)
        if line is None:
            report.ignored += 1
        elif line["trail_id"] != trail_id:
            report.other_trails.add(str(line["trail_id"]))
        else:
            report.checked += 1
            _compare(report, conn, line, f"{path}:{number}")
            if report.finding is not None:
                return report
    if report.checked == 0 and report.other_trails:
        report.finding = "forked"
        report.problem = (
            f"the witness holds no checkpoint of trail {trail_id}, only of trail(s) "
            f"{', '.join(sorted(report.other_trails))}: this file is not the witnessed trail"
        )
    return report


def _signed_line(raw: str, public: Ed25519PublicKey) -> dict[str, Any] | None:
    try:
        line = json.loads(raw)
        payload = checkpoint_payload(
            line["trail_id"],
            line["seq"],
            line["hash"],
            line["time_ns"],
            line["alerts_seq"],
            line["alerts_hash"],
        )
        signed = verify_signature(public, payload, line["signature"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return line if signed and isinstance(line.get("n"), int) else None


def _compare(
    report: WitnessReport, conn: sqlite3.Connection, line: dict[str, Any], where: str
) -> None:
    row = conn.execute(
        f"SELECT {', '.join(_FIELDS)} FROM checkpoints WHERE n = ?", (line["n"],)
    ).fetchone()
    if row is None:
        last = conn.execute("SELECT max(n), max(seq) FROM checkpoints").fetchone()
        report.finding = "rolled-back"
        report.first_bad_seq = (last[1] or 0) + 1
        report.problem = (
            f"the witness ({where}) holds checkpoint {line['n']} at seq {line['seq']}, "
            f"but this trail's checkpoints end at checkpoint {last[0] or 0} (seq "
            f"{last[1] or 0}): it was replaced by an older copy of itself"
        )
        return
    stored = dict(zip(_FIELDS, row, strict=True))
    if any(stored[name] != line[name] for name in _FIELDS):
        report.finding = "forked"
        before = conn.execute("SELECT seq FROM checkpoints WHERE n = ?", (line["n"] - 1,))
        agreed = before.fetchone()
        report.first_bad_seq = (0 if agreed is None else int(agreed[0])) + 1
        report.problem = (
            f"checkpoint {line['n']} differs from the witness ({where}): the trail has seq "
            f"{stored['seq']} hash {str(stored['hash'])[:16]}…, the witness seq {line['seq']} "
            f"hash {str(line['hash'])[:16]}…: the trail was rolled back and written again, "
            "or replaced"
        )
