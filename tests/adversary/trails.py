"""Real trail files for the adversary tests, and the attacker's and auditor's tools.

The attacker can write the trail file (the `sqlite3` module here does what the
`sqlite3` shell would) but cannot read the signing key; the auditor runs the
real `docktrail verify` command.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from listener.model.alert import Alert
from listener.model.event import Actor, Event, Who, natural_id
from notifiers.routing import Routing
from sinks.chain import seal, seal_alerts
from sinks.sqlite import SQLiteTrail

REPO = Path(__file__).resolve().parents[2]
T0 = 1_795_346_502_000_000_000
APPEND_ONLY = [
    f"{t}_append_only_{op}"
    for t in ("events", "checkpoints", "alerts")
    for op in ("update", "delete")
]


def event(n: int, action: str = "create") -> Event:
    return Event(
        id=natural_id("adversary", n),
        time_ns=T0 + n,
        source="docker",
        host="docker-01",
        type="container",
        action=action,
        actor=Actor(id=f"{n:064x}", name=f"web-{n}", image="registry.internal/web/nginx:1.25"),
        who=Who(login="alice"),
    )


def alert_on(stored: Event, k: int) -> Alert:
    assert stored.seq is not None
    return Alert(
        id=natural_id("adversary-alert", k),
        time_ns=stored.time_ns,
        rule="privileged-container",
        severity="critical",
        event_seq=stored.seq,
        event_id=stored.id,
        host=stored.host,
        container=stored.actor.name,
        summary=f"privileged container web-{k}",
    )


def build(path: Path, events: int = 40, alerts: int = 4) -> Path:
    """A closed trail: `events` events, `alerts` alerts each with a pending delivery to `chat`."""
    from config.models import NotificationsConfig

    routing = Routing(
        NotificationsConfig.model_validate(
            {
                "destinations": [{"name": "chat", "url": "json://127.0.0.1:9/x"}],
                "dedup_window_secs": 0,
            }
        )
    )
    with SQLiteTrail(path) as trail:
        stored = trail.append([event(n) for n in range(1, events + 1)]).stored
        chosen = [alert_on(stored[k * 5], k) for k in range(alerts)]
        trail.append_alerts(chosen, route=routing.routes)
    return path


def attacker(path: Path, sql: str, *, drop_triggers: bool = True) -> None:
    """Edit the file as someone with write access but no key would."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        if drop_triggers:
            for name in APPEND_ONLY:
                conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.executescript(sql)
    finally:
        conn.close()


def restore_triggers(path: Path) -> None:
    from sinks.sqlite import TRIGGERS

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for name, sql in TRIGGERS.items():
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
            conn.execute(sql)
    finally:
        conn.close()


def quote(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def forged_event_rows(path: Path, numbers: Sequence[int]) -> str:
    """INSERTs of chain-correct events after the stored head (no key needed)."""
    from sinks.sqlite.schema import COPIED_NAMES, copied_values

    conn = sqlite3.connect(path)
    seq, head = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    conn.close()
    sql = ""
    for stored, content, body in seal([event(n) for n in numbers], seq, head):
        columns = ("seq", *COPIED_NAMES, "body", "prev_hash", "hash")
        values = (stored.seq, *copied_values(content), body, stored.prev_hash, stored.hash)
        sql += (
            f"INSERT INTO events ({', '.join(columns)}) VALUES ({', '.join(map(quote, values))});\n"
        )
    return sql


def forged_alert_rows(path: Path, k: int, event_seq: int) -> str:
    from sinks.sqlite.schema import ALERT_COPIED_NAMES, alert_copied_values

    with SQLiteTrail(path) as trail:
        target = trail.get(event_seq)
        alerts_seq, head = trail.alerts_head()
    assert target is not None
    stored, content, body = seal_alerts([alert_on(target, k)], alerts_seq, head)[0]
    columns = ("seq", *ALERT_COPIED_NAMES, "body", "prev_hash", "hash")
    values = (stored.seq, *alert_copied_values(content), body, stored.prev_hash, stored.hash)
    return f"INSERT INTO alerts ({', '.join(columns)}) VALUES ({', '.join(map(quote, values))});\n"


@dataclass(frozen=True)
class Verdict:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def verify(path: Path, *args: str) -> Verdict:
    """`docktrail --db PATH verify ARGS…`, the auditor's command."""
    done = subprocess.run(
        [sys.executable, "-m", "listener", "--db", str(path), "verify", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    return Verdict(done.returncode, done.stdout, done.stderr)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"
