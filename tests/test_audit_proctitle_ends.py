"""Where an audit event ends: at its EOE, live and offline; PROCTITLE does not end it
(auditd 3 writes no EOE after it, but taking it as the end lost records of busybox
subshells' commands in exec sessions: tests/test_exec_sessions_live.py)."""

from __future__ import annotations

import time
from pathlib import Path

from listener.sources.auditd.reader import LiveReader
from listener.sources.auditparse import AuditAssembler
from tests.test_audit_barrier import stamp
from tests.test_auditd import append, cli_lines, converter, tail_config


def reader_on(log: Path) -> LiveReader:
    reader = LiveReader(tail_config(log, audit_lag_secs=30.0), converter())
    reader.follower.open(None, "start")
    return reader


def test_offline_assembly_keeps_an_event_open_after_its_proctitle() -> None:
    assembler = AuditAssembler("audit.log")
    assert assembler.feed_lines(cli_lines("8.000:1", ["docker", "rm", "web"])) == []
    assert len(assembler.flush_all()) == 1


def test_a_log_line_that_ends_its_event_is_not_held_back(tmp_path: Path) -> None:
    """EOE at the end of the log (a log without PROCTITLE): the event is complete."""
    log = tmp_path / "audit.log"
    call = stamp(time.time_ns(), 12)
    lines = cli_lines(call, ["docker", "rm", "web"])[:-1]  # PROCTITLE left out by a rule
    append(log, [*lines, f"type=EOE msg=audit({call}): "])
    cycle = reader_on(log).cycle()
    assert [c.call.command for c in cycle.converted if c.call] == ["rm"]


def test_live_an_event_is_still_open_after_its_proctitle(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    call = stamp(time.time_ns(), 13)
    append(log, cli_lines(call, ["docker", "rm", "web"]))
    reader = reader_on(log)
    assert reader.cycle().converted == []  # one read, no quiet poll yet: still waited for
    assert reader.assembler.open_events + len(reader._held) > 0
