"""A log whose audit time stands still (crafted, or a broken clock) cannot make the
assembler's memory follow the file: open events and one event's records are bounded,
what is dropped or closed early is reported with its line, and nothing else is lost."""

from __future__ import annotations

from listener.sources.auditparse.assembly import (
    MAX_OPEN_EVENTS,
    MAX_RECORDS_PER_EVENT,
    AuditAssembler,
)

STAMP = "1700000000.000"


def _syscall(serial: int) -> str:
    return f"type=SYSCALL msg=audit({STAMP}:{serial}): arch=c000003e syscall=59 success=yes"


def test_open_events_are_bounded_when_the_time_stands_still_and_none_is_lost() -> None:
    asm = AuditAssembler("crafted.log")
    total = 3 * MAX_OPEN_EVENTS
    closed = []
    for start in range(0, total, 1000):
        lines = [_syscall(serial) for serial in range(start, min(start + 1000, total))]
        closed += asm.feed_lines(lines, start + 1)
        assert asm.open_events <= 2 * MAX_OPEN_EVENTS
        assert len(asm._by_time.in_order) + len(asm._by_time.late) <= 2 * MAX_OPEN_EVENTS + 1
    assert asm.closed_early > 0
    closed += asm.flush_all()
    assert sorted(event.serial for event in closed) == list(range(total))
    notes = [m for m in asm.drain_malformed() if "events open at once" in m.reason]
    assert notes and all(m.line > MAX_OPEN_EVENTS for m in notes)
    assert asm.closed_early == sum(int(m.reason.split("the ")[-1].split()[0]) for m in notes)


def test_entries_of_events_closed_by_eoe_do_not_pile_up_either() -> None:
    asm = AuditAssembler("crafted.log")
    lines = []
    for serial in range(3 * MAX_OPEN_EVENTS):
        lines += [_syscall(serial), f"type=EOE msg=audit({STAMP}:{serial}): "]
    closed = asm.feed_lines(lines)
    assert len(closed) == 3 * MAX_OPEN_EVENTS  # each closed by its EOE, none early
    assert asm.closed_early == 0 and asm.open_events == 0
    assert len(asm._by_time.in_order) + len(asm._by_time.late) <= 2 * MAX_OPEN_EVENTS + 1
    assert asm.drain_malformed() == []


def test_an_event_keeps_at_most_its_bound_of_records_and_reports_the_rest() -> None:
    asm = AuditAssembler("crafted.log")
    path = f'type=PATH msg=audit({STAMP}:7): item=0 name="/x" inode=1'
    lines = [_syscall(7)] + [path] * (MAX_RECORDS_PER_EVENT + 9)
    closed = asm.feed_lines(lines) + asm.flush_all()
    assert len(closed) == 1 and len(closed[0].records) == MAX_RECORDS_PER_EVENT
    dropped = asm.drain_malformed()
    assert [m.line for m in dropped] == list(range(MAX_RECORDS_PER_EVENT + 1, len(lines) + 1))
    assert all(f"more than {MAX_RECORDS_PER_EVENT} records" in m.reason for m in dropped)
