"""The live tail takes PROCTITLE, the kernel's last record of a syscall event (auditd 3
does not write the EOE after it), as the end of its event: a docker CLI call is handed
to the correlator on the read that brings it, without waiting for a quiet poll.
Offline assembly keeps its rules (EOE, the window, the end of input)."""

from __future__ import annotations

import time
from pathlib import Path

from listener.sources.auditd.tail import _LiveReader
from listener.sources.auditparse import AuditAssembler
from tests.test_audit_barrier import stamp
from tests.test_auditd import append, cli_lines, converter, tail_config


def reader_on(log: Path) -> _LiveReader:
    reader = _LiveReader(tail_config(log, audit_lag_secs=30.0), converter())
    reader.follower.open(None, "start")
    return reader


def test_a_call_is_complete_at_its_proctitle_on_the_read_that_brings_it(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    call = stamp(time.time_ns(), 10)
    append(log, cli_lines(call, ["docker", "rm", "web"]))
    reader = reader_on(log)
    cycle = reader.cycle()  # one read: no quiet poll, no newer record
    assert [c.call.command for c in cycle.converted if c.call] == ["rm"]
    assert reader.assembler.open_events == 0
    append(log, [f"type=EOE msg=audit({call}): "])  # a log that has EOE: no complaint
    assert reader.cycle().malformed == []


def test_an_event_before_its_proctitle_is_still_waited_for(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    call = stamp(time.time_ns(), 11)
    lines = cli_lines(call, ["docker", "rm", "web"])
    append(log, lines[:-1])  # its PROCTITLE not written yet
    reader = reader_on(log)
    first = reader.cycle()
    assert first.converted == []
    assert first.watermark_ns < int(call.split(":")[0].replace(".", "")) * 1_000_000
    append(log, lines[-1:])
    assert [c.call.command for c in reader.cycle().converted if c.call] == ["rm"]


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
