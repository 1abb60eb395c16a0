"""Whole audit logs: file order of events (`LineOrder`), plain or gzip files, and
rotation order.
"""

from __future__ import annotations

import gzip
import heapq
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from listener.sources.auditparse.assembly import AuditAssembler
from listener.sources.auditparse.records import AuditEvent, Malformed
from listener.sources.lines import bounded_lines

_READ_HINT = 65536  # characters read_audit_file reads (and feeds) at once


class LineOrder:
    """Re-sequence closed events and Malformed entries into first-line order.

    Push what the assembler produced, then ``pop_ready(assembler.oldest_open_line)``:
    everything that starts before the oldest still-open event is final and comes
    out sorted by line. ``pop_ready(None)`` (nothing open) releases everything.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, AuditEvent | Malformed]] = []
        self._seq = itertools.count()

    def push(self, item: AuditEvent | Malformed) -> None:
        line = item.line
        heapq.heappush(self._heap, (line, next(self._seq), item))

    def pop_ready(self, before_line: int | None) -> list[AuditEvent | Malformed]:
        heap = self._heap
        ready: list[AuditEvent | Malformed] = []
        while heap and (before_line is None or heap[0][0] < before_line):
            ready.append(heapq.heappop(heap)[2])
        return ready

    def __len__(self) -> int:
        return len(self._heap)


# --------------------------------------------------------------------------- files


def open_audit_text(path: Path) -> IO[str]:
    """Open plain or gzip (by magic bytes, whatever the name) text that never fails to decode."""
    with open(path, "rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape", newline="\n")
    # newline="\n": only LF ends a line, so stray CRs in garbage cannot split lines
    return open(path, encoding="utf-8", errors="surrogateescape", newline="\n", buffering=1 << 20)


def read_audit_file(
    path: str | Path, window_secs: float = 2.0, assembler: AuditAssembler | None = None
) -> Iterator[AuditEvent | Malformed]:
    """Events and Malformed entries of one file, in file order of their first line.

    Pass ``assembler`` to read its counters afterwards; it must be fresh. Lines
    longer than its ``max_line`` are skipped unread (bounded memory) and reported.
    """
    path = Path(path)
    asm = assembler if assembler is not None else AuditAssembler(str(path), window_secs)
    order = LineOrder()
    push = order.push
    lineno = 1
    with open_audit_text(path) as stream:
        # About 1 MB of lines at a time (the order of what comes out is the same:
        # LineOrder releases everything sorted by first line).
        for lines in bounded_lines(stream, asm.max_line, _READ_HINT):
            closed = asm.feed_block(lines, lineno)
            lineno += len(lines)
            malformed = asm.drain_malformed()
            if not malformed and not order and _in_order_before(closed, asm.oldest_open_line):
                yield from closed  # the usual case: what LineOrder would give, without a heap
                continue
            for bad in malformed:
                push(bad)
            for event in closed:
                push(event)
            yield from order.pop_ready(asm.oldest_open_line)
    for event in asm.flush_all():
        push(event)
    for bad in asm.drain_malformed():
        push(bad)
    yield from order.pop_ready(None)


def _in_order_before(events: list[AuditEvent], before_line: int | None) -> bool:
    """Events sorted by first line, all before ``before_line`` (None: nothing is open)."""
    last = 0
    for event in events:
        line = event.records[0].line
        if line < last:
            return False
        last = line
    return before_line is None or last < before_line


_ROTATED = re.compile(r"^(?P<base>.*?)(?:\.(?P<num>\d+))?(?P<gz>\.gz)?$")


def rotation_order(paths: Iterable[str | Path]) -> list[Path]:
    """Oldest first: ``audit.log.3, audit.log.2, audit.log.1, audit.log`` (``.gz`` allowed)."""

    def key(path: Path) -> tuple[str, int]:
        match = _ROTATED.match(path.name)
        assert match is not None  # the pattern matches any name
        num = match.group("num")
        return (str(path.parent / match.group("base")), -int(num) if num else 0)

    return sorted((Path(p) for p in paths), key=key)


def read_audit_files(
    paths: Iterable[str | Path] | str | Path, window_secs: float = 2.0
) -> Iterator[AuditEvent | Malformed]:
    """A rotated set, oldest file first, each file with its own line numbers.

    ``paths`` may be a directory (its ``audit.log*`` files are taken). An event
    cut by a rotation comes out as two events with the same id, one per file.
    """
    if isinstance(paths, str | Path):
        root = Path(paths)
        paths = sorted(root.glob("audit.log*")) if root.is_dir() else [root]
    for path in rotation_order(paths):
        yield from read_audit_file(path, window_secs)
