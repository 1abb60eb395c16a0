"""Detections harness: scenarios of captured inputs and the alerts they must (not) raise.

A `Scenario` is what a host produced — raw Engine `/events` objects and
audit.log lines, exactly as dockerd and auditd write them — plus what
docktrail must make of it: the alerts it must raise, each as (rule, subject,
severity, who), and the silence it must keep: no other alert above `low`.
`run_offline` feeds a scenario through `docktrail ingest`'s pipeline
(`listener.ingest.ingest_files`) into a real SQLite trail and returns what was
stored, so the table runs in CI without a daemon.

The builders write the records the way the real programs do: `engine_event`
the Engine's JSON (API 1.41), `audit_cli` the docker CLI's execve event and
`audit_file` a watch hit (SYSCALL, CWD, PATH…, PROCTITLE, with auditd's
ENRICHED names after the 0x1d separator).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from config.models import DocktrailConfig
from listener.ingest import ingest_files
from listener.model.alert import Alert
from listener.model.event import Event
from sinks.base import AlertFilter, EventFilter
from sinks.sqlite import SQLiteTrail

HOST = "detections"
NS = 1_000_000_000
UNSET = 4294967295
USERS = {0: "root", 1001: "alice", 1002: "bob", 1003: "carol", UNSET: "unset"}
# A severity above which every alert must be expected.
QUIET_ABOVE = "low"
RANK = {"info": 0, "low": 1, "medium": 2, "high": 3, "critical": 4}
Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Expect:
    """One alert a scenario must raise. `who` is the login (None: no login known)."""

    rule: str
    subject: str
    severity: str
    who: str | None


@dataclass(slots=True)
class Scenario:
    name: str
    docker: list[Json] = field(default_factory=list)
    audit: list[str] = field(default_factory=list)
    expect: list[Expect] = field(default_factory=list)
    rules: Json = field(default_factory=dict)  # rule settings (docktrail.yaml `rules:`)
    why: str = ""  # the issue item it reproduces
    captured: Path | None = None  # a real capture: events.jsonl and audit.log(.gz) in it


@dataclass(slots=True)
class Outcome:
    events: list[Event]
    alerts: list[Alert]

    def loud(self) -> list[Alert]:
        """Alerts above `low`, not suppressed: what reaches a channel by default."""
        return [
            a for a in self.alerts if RANK[a.severity] > RANK[QUIET_ABOVE] and a.suppressed is None
        ]

    def found(self) -> set[Expect]:
        return {Expect(a.rule, subject(a), a.severity, a.who.login) for a in self.loud()}


def subject(alert: Alert) -> str:
    """What an alert is about, as a person names it: the file, container or image."""
    details = alert.details
    if isinstance(details.get("path"), str):
        return str(details["path"])
    return alert.container or alert.image or "?"


def problems(scenario: Scenario, outcome: Outcome) -> list[str]:
    """What differs from the scenario's expectations (empty: it passed)."""
    found = outcome.found()
    wanted = set(scenario.expect)
    missing = [f"missed {e}" for e in sorted(wanted - found, key=str)]
    extra = [f"unexpected {e}" for e in sorted(found - wanted, key=str)]
    return missing + extra


def run_offline(scenario: Scenario, tmp: Path) -> Outcome:
    """The scenario's files through `docktrail ingest` into a fresh SQLite trail."""
    events_file = tmp / "events.jsonl"
    events_file.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in scenario.docker))
    audit_files: list[Path] = []
    if scenario.captured is not None:
        events_file = scenario.captured / "events.jsonl"
        audit_files = sorted(scenario.captured.glob("audit.log*"))
    if scenario.audit:
        audit_file = tmp / "audit.log"
        audit_file.write_text("".join(line + "\n" for line in scenario.audit))
        audit_files.append(audit_file)
    config = DocktrailConfig.model_validate(
        {
            "host": HOST,
            "trail": {"path": str(tmp / "trail.db")},
            "auditd": {"passwd_file": None, "group_file": None},  # the log's own names
            "rules": scenario.rules,
        }
    )
    asyncio.run(
        ingest_files(
            config,
            docker_events=[events_file] if scenario.docker or scenario.captured else [],
            audit_logs=audit_files,
            host=HOST,
        )
    )
    with SQLiteTrail(tmp / "trail.db") as trail:
        return Outcome(list(trail.query(EventFilter())), list(trail.query_alerts(AlertFilter())))


# ---------------------------------------------------------------------- Engine events


def engine_event(
    time_s: float,
    type_: str,
    action: str,
    actor_id: str,
    **attributes: str,
) -> Json:
    """A raw Engine event (`GET /events`, API 1.41)."""
    time_ns = round(time_s * NS)
    return {
        "Type": type_,
        "Action": action,
        "Actor": {"ID": actor_id, "Attributes": attributes},
        "scope": "local",
        "time": time_ns // NS,
        "timeNano": time_ns,
    }


def container_id(n: int) -> str:
    return f"{n:02x}" * 32


def image_id(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


# ---------------------------------------------------------------------- audit records

_serial = [1000]


def _next_serial() -> int:
    _serial[0] += 1
    return _serial[0]


def _auid(auid: int | None) -> int:
    return UNSET if auid is None else auid


def _syscall_line(
    stamp: str,
    *,
    number: int,
    name: str,
    auid: int | None,
    uid: int,
    exe: str,
    comm: str,
    key: str,
    items: int,
    a2: str = "0",
) -> str:
    login = USERS.get(_auid(auid), str(auid))
    user = USERS.get(uid, str(uid))
    ses = UNSET if auid is None else 7
    return (
        f"type=SYSCALL msg=audit({stamp}): arch=c000003e syscall={number} success=yes exit=0 "
        f"a0=ffffff9c a1=7ffd0000 a2={a2} a3=0 items={items} ppid=100 pid=4242 "
        f"auid={_auid(auid)} uid={uid} gid=0 euid={uid} suid={uid} fsuid={uid} egid=0 sgid=0 "
        f'fsgid=0 tty=pts0 ses={ses} comm="{comm}" exe="{exe}" key="{key}"'
        f'\x1dARCH=x86_64 SYSCALL={name} AUID="{login}" UID="{user}" GID="root" '
        f'EUID="{user}" SUID="{user}" FSUID="{user}" EGID="root" SGID="root" FSGID="root"'
    )


def _proctitle(stamp: str, argv: Sequence[str]) -> str:
    return f"type=PROCTITLE msg=audit({stamp}): proctitle=" + "\0".join(argv).encode().hex().upper()


def audit_cli(time_s: float, auid: int | None, argv: Sequence[str], *, uid: int = 0) -> list[str]:
    """The audit event of one docker CLI execution (execve rule `-k docker-cli`)."""
    stamp = f"{time_s:.3f}:{_next_serial()}"
    args = " ".join(f'a{i}="{arg}"' for i, arg in enumerate(argv))
    return [
        _syscall_line(
            stamp,
            number=59,
            name="execve",
            auid=auid,
            uid=uid,
            exe="/usr/bin/docker",
            comm="docker",
            key="docker-cli",
            items=1,
        ),
        f"type=EXECVE msg=audit({stamp}): argc={len(argv)} {args}",
        f'type=CWD msg=audit({stamp}): cwd="/root"',
        f'type=PATH msg=audit({stamp}): item=0 name="/usr/bin/docker" inode=10 dev=fe:00 '
        "mode=0100755 ouid=0 ogid=0 rdev=00:00 nametype=NORMAL",
        _proctitle(stamp, argv),
    ]


# syscall name -> (x86_64 number, a2 flags of an open)
SYSCALLS = {
    "openat-write": (257, "241"),  # O_WRONLY|O_CREAT|O_TRUNC
    "openat-read": (257, "0"),
    "lgetxattr": (192, "0"),
    "getxattr": (191, "0"),
    "listxattr": (194, "0"),
    "llistxattr": (195, "0"),
    "utimensat": (280, "0"),
    "newfstatat": (262, "0"),
    "renameat": (264, "0"),
    "mkdirat": (258, "0"),
}


def audit_file(
    time_s: float,
    auid: int | None,
    call: str,
    path: str,
    *,
    uid: int = 0,
    exe: str = "/usr/bin/touch",
    comm: str | None = None,
    argv: Sequence[str] | None = None,
    created: bool = False,
) -> list[str]:
    """A watch hit (`-w PATH -k docker`) of one syscall on `path`."""
    number, a2 = SYSCALLS[call]
    name = call.split("-")[0]
    stamp = f"{time_s:.3f}:{_next_serial()}"
    parent = path.rsplit("/", 1)[0] + "/"
    nametype = "CREATE" if created else "NORMAL"
    return [
        _syscall_line(
            stamp,
            number=number,
            name=name,
            auid=auid,
            uid=uid,
            exe=exe,
            comm=comm or exe.rsplit("/", 1)[-1],
            key="docker",
            items=2,
            a2=a2,
        ),
        f'type=CWD msg=audit({stamp}): cwd="/"',
        f'type=PATH msg=audit({stamp}): item=0 name="{parent}" inode=20 dev=fe:00 mode=040755 '
        "ouid=0 ogid=0 rdev=00:00 nametype=PARENT",
        f'type=PATH msg=audit({stamp}): item=1 name="{path}" inode=21 dev=fe:00 mode=0100644 '
        f"ouid=0 ogid=0 rdev=00:00 nametype={nametype}",
        _proctitle(stamp, argv or [exe.rsplit("/", 1)[-1], path]),
    ]


def audit_noise(time_s: float) -> list[str]:
    """An unrelated kept record: marks the audit log's span (dockerd in its data root)."""
    return audit_file(
        time_s,
        None,
        "mkdirat",
        "/var/lib/docker/tmp/x",
        exe="/usr/sbin/dockerd",
        comm="dockerd",
        created=True,
    )
