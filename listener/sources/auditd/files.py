"""Captured audit logs (plain or .gz) read in rotation order, for `docktrail ingest`."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from config.errors import InputError, SourceError
from listener.bounds import KeptErrors, active_limits
from listener.coverage import SpanCoverage
from listener.sources.auditd.convert import AuditConverter, Converted
from listener.sources.auditd.fields import NS, malformed_error
from listener.sources.auditparse import (
    AuditAssembler,
    AuditEvent,
    open_audit_text,
    rotation_order,
)
from listener.sources.lines import Oversized, bounded_lines

_FOREVER = 1 << 62


class AuditLogFiles:
    """Captured audit logs for `ingest`: kept events in (near) time order.

    Files are read oldest first (`rotation_order`) through one assembler, so an
    event cut by a rotation is joined again. `watermark_ns` says how far the
    reading got: every audit event older than it has been yielded (auditd's
    event timeout, `event_timeout_secs`, bounds how late a record may come).
    Bad lines are collected in `malformed` as `InputError`s with file and line.
    """

    def __init__(
        self,
        paths: Iterable[Path],
        converter: AuditConverter,
        *,
        window_secs: float = 2.0,
        max_line: int | None = None,
    ) -> None:
        self.paths = rotation_order(paths)
        self.max_line = max_line or active_limits().max_line_bytes
        self.converter = converter
        self.window_ns = round(window_secs * NS)
        self.watermark_ns = -1
        self.malformed = KeptErrors()  # counted; the first kept
        self.records = 0
        self.span = SpanCoverage(converter.host)  # what attribution can rely on

    def __iter__(self) -> Iterator[Converted]:
        assembler = AuditAssembler(None, self.window_ns / NS, self.max_line)
        for path in self.paths:
            assembler.path = str(path)
            yield from self._file(path, assembler)
        yield from self._converted(assembler.flush_all())
        self.records = assembler.records
        self.watermark_ns = _FOREVER

    def _file(self, path: Path, assembler: AuditAssembler) -> Iterator[Converted]:
        lineno = 0
        try:
            with open_audit_text(path) as stream:
                for block in bounded_lines(stream, self.max_line):
                    for line in block:
                        lineno += 1
                        if isinstance(line, Oversized):
                            assembler.skip_oversized(lineno, line)
                            self._collect(assembler)
                            continue
                        self.watermark_ns = assembler.newest_ns - self.window_ns
                        closed = assembler.feed(line, lineno)
                        if assembler.malformed:
                            self._collect(assembler)
                        if closed:
                            yield from self._converted(closed)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            reason = f"compressed data is damaged: {exc}"
            self.malformed.append(InputError(reason, path=str(path), line=lineno + 1))
        except OSError as exc:
            raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        self._collect(assembler)

    def _collect(self, assembler: AuditAssembler) -> None:
        for bad in assembler.drain_malformed():
            self.malformed.append(malformed_error(bad))
            self.converter.counters.malformed += 1

    def _converted(self, events: Iterable[AuditEvent]) -> Iterator[Converted]:
        for event in events:
            self.span.add(event.time_ns, event.node)
            try:
                converted = self.converter.convert_bounded(event)
            except InputError as exc:
                self.malformed.append(exc)
                continue
            if converted is not None:
                yield converted
