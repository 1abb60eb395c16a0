"""A docker CLI event reads its SYSCALL record's fields once; what that record lacks
comes from the event's other records, as `AuditEvent.field` and `enriched_field` give."""

from __future__ import annotations

from pathlib import Path

from config.models import AuditdConfig
from listener.sources.auditd.convert import AuditConverter
from listener.sources.auditparse import AuditAssembler, AuditEvent

GS = "\x1d"
STAMP = "1700000000.000:7"


def event_of(syscall_fields: str, other_fields: str) -> AuditEvent:
    raw, gs, names = syscall_fields.partition(GS)
    lines = [
        f"type=SYSCALL msg=audit({STAMP}): arch=c000003e syscall=59 success=yes exit=0 "
        f'{raw} key="docker-cli"{gs}{names}',
        f'type=EXECVE msg=audit({STAMP}): argc=2 a0="docker" a1="ps"',
        f"type=PATH msg=audit({STAMP}): item=0 name=/usr/bin/docker {other_fields}",
    ]
    asm = AuditAssembler("t")
    (event,) = asm.feed_lines(lines) + asm.flush_all()
    return event


def converted(syscall_fields: str, other_fields: str) -> tuple[dict[str, object], AuditEvent]:
    config = AuditdConfig(log_file=Path("/nonexistent"), passwd_file=None, group_file=None)
    item = AuditConverter(config, "h1").convert(event_of(syscall_fields, other_fields))
    assert item is not None and item.event is not None
    return item.event.attributes, event_of(syscall_fields, other_fields)


def test_what_the_syscall_record_has_comes_from_it() -> None:
    syscall = f"ppid=10 pid=11 auid=1000 uid=0 gid=5 euid=0 egid=6 exe=/usr/bin/docker{GS}EGID=g6"
    attributes, event = converted(syscall, f"ppid=20 exe=/other egid=7{GS}EGID=g7")
    assert (attributes["exe"], attributes["ppid"]) == ("/usr/bin/docker", 10) == (event.exe, 10)
    assert (attributes["gid"], attributes["group"]) == (6, "g6")


def test_what_it_lacks_comes_from_the_other_records() -> None:
    attributes, event = converted("pid=11 auid=1000 uid=0", f"ppid=20 exe=/other egid=7{GS}EGID=g7")
    assert (attributes["exe"], attributes["ppid"]) == ("/other", 20) == (event.exe, event.ppid)
    assert (attributes["gid"], attributes["group"]) == (7, "g7")
    attributes, _ = converted("pid=11 auid=1000 uid=0 egid=4294967295 gid=3", f"x=1{GS}GID=g3")
    assert (attributes["gid"], attributes["group"]) == (3, "g3")
