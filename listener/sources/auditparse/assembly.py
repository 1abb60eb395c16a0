"""`AuditAssembler`: lines to records to events, closed by EOE, by time window or by flush."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from listener.sources.auditparse.bodies import record_parts, remember_body
from listener.sources.auditparse.fields import (
    INT64_MAX,
    LATEST_TIME_NS,
    MALFORMED_TEXT_MAX,
    MAX_LINE,
    SAFE_HEADS,
    Truncated,
    head_parses_later,
)
from listener.sources.auditparse.headers import (
    PREFIXES,
    close_without_colon,
    remember_prefix,
    stamp_error,
)
from listener.sources.auditparse.records import AuditEvent, AuditRecord, Malformed
from listener.sources.lines import Oversized

# Bounds for a log whose audit time stands still (a crafted or broken file given to
# `ingest`): the window then closes nothing, and memory would follow the file.
# The kernel's own logs stay far below both: at 1,000 docker CLI calls a second a
# 2 s window holds about 2,000 events, and an event has a few records, one per path.
# At twice MAX_OPEN_EVENTS entries by time, the oldest open events beyond it are closed
# early (the entries are compacted then: O(1) a record, amortized).
MAX_OPEN_EVENTS = 16_384
MAX_RECORDS_PER_EVENT = 1_024  # beyond: the record is reported malformed, not kept


def _printable(line: str) -> str:
    text = line.rstrip("\r\n")[:MALFORMED_TEXT_MAX]
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


class AuditAssembler:
    """Feed lines, get events. See the module docstring for the closing rules.

    Batch use: ``feed`` every line (or ``feed_lines`` blocks of them), then
    ``flush_all()``; or just ``read_audit_file``.
    Live tailing: ``feed`` new lines as they are written, and every second or so
    ``flush(older_than_ns=time.time_ns() - grace)`` to close EOE-less events that
    no newer record will close. ``feed``/``flush``/``flush_all`` return events in
    the order they close; use ``LineOrder`` with ``oldest_open_line`` for file
    order. A record arriving after its event closed (later than the window) opens
    a new event with the same id. ``malformed`` collects bad lines; a long-running
    caller should ``drain_malformed()`` regularly.
    """

    def __init__(
        self, path: str | None = None, window_secs: float = 2.0, max_line: int = MAX_LINE
    ) -> None:
        self.path = path
        self.max_line = max_line  # longer lines are malformed (characters)
        self.window_ns = round(window_secs * 1_000_000_000)
        self.malformed: list[Malformed] = []
        self.records = 0
        self.events = 0
        self.blank = 0
        # Newest audit time fed: every event older than this minus the window is closed.
        self.newest_ns = 0
        self.malformed_count = 0
        self.closed_early = 0  # events closed by MAX_OPEN_EVENTS (reported as malformed)
        self._open: dict[str, AuditEvent] = {}  # insertion order == first-line order
        # Open events by (time_ns, seq): entries (time_ns, seq, key, event) of events
        # closed by EOE go stale and are skipped when popped.
        self._by_time = _ByTime()
        self._seq = itertools.count()

    # -- counters -----------------------------------------------------------
    @property
    def counters(self) -> dict[str, int]:
        return {
            "records": self.records,
            "events": self.events,
            "malformed": self.malformed_count,
            "blank": self.blank,
        }

    @property
    def open_events(self) -> int:
        return len(self._open)

    @property
    def oldest_open_line(self) -> int | None:
        """First line of the earliest-started open event (events before it are final)."""
        for event in self._open.values():
            return event.records[0].line
        return None

    @property
    def oldest_open_ns(self) -> int | None:
        """Audit time of the earliest open event."""
        by_time, opened = self._by_time, self._open
        while (oldest := by_time.oldest()) is not None and opened.get(oldest[2]) is not oldest[3]:
            by_time.pop()  # closed by EOE: stale
        return None if oldest is None else oldest[0]

    def drain_malformed(self) -> list[Malformed]:
        """Malformed entries reported since the last drain (keeps a live tail's memory flat)."""
        drained, self.malformed = self.malformed, []
        return drained

    # -- input --------------------------------------------------------------
    def feed(self, line: str, lineno: int) -> list[AuditEvent]:
        """Parse one line (with or without its newline); return the events it closed."""
        return self.feed_lines((line,), lineno)

    def feed_lines(self, lines: Iterable[str], first: int = 1) -> list[AuditEvent]:
        """``feed`` each of ``lines``, numbered from ``first``; the events they closed.

        Per line only the header is read (type, ``msg=audit(TIME:SERIAL)``) and
        the record's text checked: its fields are parsed when first asked for
        (see ``AuditRecord``), so what a consumer drops unread costs little.
        A line whose text after its tail anchor was fed before (see `bodies`)
        takes the quick path: only its head is left to check.
        """
        closed: list[AuditEvent] = []
        opened, window = self._open, self.window_ns
        in_order, late = self._by_time.in_order, self._by_time.late
        newest, records, path = self.newest_ns, 0, self.path
        bad = self._bad
        prefixes, safe_heads = PREFIXES, SAFE_HEADS
        max_line = self.max_line
        new_record = object.__new__
        lineno = first - 1
        # The event of the record before, while it is open: the next record of the
        # same event (the usual case) needs no look-up and no window check.
        last_key: str | None = None
        last_event: AuditEvent | None = None
        # The time part of the last valid stamp, and its time: the events of one moment.
        known_seconds: str | None = None
        known_ns = 0
        for line in lines:
            lineno += 1
            if len(line) > max_line:
                self.skip_oversized(lineno, Oversized(len(line), max_line))
                continue
            # The header: [node=NODE ]type=TYPE msg=audit(STAMP): ... Partitions are the
            # quick way; any doubt goes through _line_header, then _header.
            head, close, body = line.partition("):")
            pre, msg, stamp = head.partition(" msg=audit(")
            prefix = prefixes.get(pre) if close and msg else None
            hit = None
            if prefix is not None:
                node, rtype, anchor, bodies = prefix
                if bodies is not None:
                    cut, found, rest = body.partition(anchor) if anchor else ("", "=", body)
                    hit = bodies.get(rest) if found else None
                    # The rest is known clean; the head must be too (a NUL byte, the
                    # ENRICHED separator, a second record or an unsafe quote: slow path).
                    if (
                        hit is not None
                        and cut
                        and (
                            "\x00" in cut
                            or "\x1d" in cut
                            or ("(" in cut and "msg=audit(" in cut)
                            or (
                                ('"' in cut or "'" in cut or "{" in cut)
                                and cut not in safe_heads
                                and not head_parses_later(cut)
                            )
                        )
                    ):
                        hit = None
            if hit is None:
                header = self._line_header(line, lineno, pre, bool(close and msg), stamp, body)
                if header is None:
                    continue
                node, rtype, stamp, body = header
            key = stamp if node is None else f"{node} {stamp}"
            same = key == last_key
            event = last_event if same else opened.get(key)
            if event is None:  # time and serial (as parse_time_ns reads the time)
                seconds, colon, number = stamp.partition(":")
                if seconds != known_seconds:  # a new moment (the events of one share it)
                    whole, dot, frac = seconds.partition(".")
                    known_seconds = None
                    if (
                        dot
                        and whole.isdigit()
                        and frac.isdigit()
                        and len(frac) <= 9
                        and len(whole) <= 11  # int() of a huge text is slow
                        and seconds.isascii()
                    ):
                        known_ns = int(whole) * 1_000_000_000 + int(frac.ljust(9, "0"))
                        if known_ns < LATEST_TIME_NS:
                            known_seconds = seconds
                if not (
                    seconds == known_seconds
                    and colon
                    and number.isdigit()
                    and number.isascii()
                    and len(number) <= 19
                    and (serial := int(number)) <= INT64_MAX
                ):
                    self._bad_stamp(line, lineno, stamp)
                    continue
                time_ns = known_ns
            else:
                time_ns = event.time_ns
            if hit is not None:  # AuditRecord(rtype, None, None, lineno, rest, extra, tail, cut)
                rec = new_record(AuditRecord)  # without the call to __init__: a third of its cost
                rec.type, rec.line, rec._rest, rec._head = rtype, lineno, hit[2], cut
                rec._tail, rec._extra, rec._fields, rec._enriched = hit[0], hit[1], None, None
            else:
                raw, gs, extra_text = body.partition("\x1d")
                extra = extra_text if gs else None
                try:
                    fields, enriched, tail, cut = record_parts(rtype, raw, extra)
                except Truncated:
                    bad(line, lineno, "unterminated quote (truncated line?)")
                    continue
                rest = body if tail is None else remember_body(rtype, body, tail, extra, cut)
                rec = AuditRecord(rtype, fields, enriched, lineno, rest, extra, tail, cut)
            if not same:  # (the record before did both with this time: nothing would change)
                if time_ns > newest:
                    newest = time_ns
                if (in_order and time_ns - in_order[0][0] > window) or (
                    late and time_ns - late[0][0] > window
                ):
                    closed += self._expire(time_ns)
                last_key = None  # set again below when this record's event stays open
            if event is not None:
                if len(event.records) >= MAX_RECORDS_PER_EVENT:
                    bad(line, lineno, f"more than {MAX_RECORDS_PER_EVENT} records in one event")
                    continue
                records += 1
                event.records.append(rec)
                if rtype == "EOE":
                    closed.append(self._close(key, event))
                    last_key = None
                else:
                    last_key, last_event = key, event
                continue
            if rtype == "EOE":  # its event was closed by the window already
                bad(line, lineno, "EOE without an open event")
                continue
            records += 1
            event = AuditEvent(time_ns, serial, node, [rec], path)
            if rtype.startswith("DAEMON_"):  # written by auditd itself: never extended
                self.events += 1
                closed.append(event)
                continue
            opened[key] = event
            if not in_order or time_ns >= in_order[-1][0]:
                in_order.append((time_ns, next(self._seq), key, event))
            else:  # older than an event already open: out of order
                heapq.heappush(late, (time_ns, next(self._seq), key, event))
            last_key, last_event = key, event
            if len(in_order) + len(late) > 2 * MAX_OPEN_EVENTS:  # rare: see MAX_OPEN_EVENTS
                closed += self._bound_open(lineno)
                in_order, late, last_key = self._by_time.in_order, self._by_time.late, None
        self.newest_ns, self.records = newest, self.records + records
        return closed

    def _line_header(
        self, line: str, lineno: int, pre: str, closed: bool, stamp: str, body: str
    ) -> tuple[str | None, str, str, str] | None:
        """``(node, type, stamp, body)`` of a line off the quick path, from its partitions
        when they are sound (`closed`: ``):`` and `` msg=audit(`` were found); None
        (reported) when it is not a record."""
        prefix = PREFIXES.get(pre)
        node: str | None = None
        if prefix is not None:
            node, rtype = prefix[0], prefix[1]
        elif pre[:5] == "type=" and " " not in pre:
            rtype = pre[5:]
            remember_prefix(pre, None, rtype)
        elif pre[:5] == "node=":
            node, _, rtype = pre.partition(" ")
            node = node[5:]
            if rtype[:5] != "type=" or " " in rtype:
                closed = False  # not the quick kind
            else:
                remember_prefix(pre, node, rtype[5:])
            rtype = rtype[5:]
        else:
            closed = False
        if not closed or "\x00" in line or "msg=audit(" in body:
            return self._header(line, lineno)
        return node, rtype, stamp, body

    def _bad_stamp(self, line: str, lineno: int, stamp: str) -> None:
        if "\x00" in stamp:  # (a quick path line): what the header check says first
            self._header(line, lineno)
        else:
            self._bad(line, lineno, stamp_error(stamp))

    def _header(self, line: str, lineno: int) -> tuple[str | None, str, str, str] | None:
        """``(node, type, stamp, body)`` of a record line; None (reported) when it is not one."""
        if line.startswith("type="):
            node = None
            rest = line
        elif line.startswith("node="):
            sp = line.find(" ")
            if sp < 0 or not line.startswith("type=", sp + 1):
                self._bad(line, lineno, "node= prefix without type=")
                return None
            node, rest = line[5:sp], line[sp + 1 :]
        else:
            self._not_a_record(line, lineno)
            return None
        sp = rest.find(" ", 5)
        if sp < 0 or not rest.startswith("msg=audit(", sp + 1):
            self._bad(line, lineno, "no msg=audit(...) after type=")
            return None
        close = rest.find("):", sp + 11)
        if close < 0:
            close = close_without_colon(rest, sp + 11)
        if close < 0:
            self._bad(line, lineno, "msg=audit(...) not closed (truncated line?)")
            return None
        if "\x00" in line:
            self._bad(line, lineno, "NUL bytes in line (binary garbage)")
            return None
        if rest.find("msg=audit(", close) >= 0:  # a cut line ran into the next record
            self._bad(line, lineno, "two records on one line (truncated line?)")
            return None
        return node, rest[5:sp], rest[sp + 11 : close], rest[close + 2 :]

    def _close(self, key: str, event: AuditEvent) -> AuditEvent:
        del self._open[key]
        self.events += 1
        return event

    def _pop_while(self, limit_ns: int) -> list[AuditEvent]:
        """Close open events whose time is below ``limit_ns``, in (time, arrival) order."""
        by_time, opened = self._by_time, self._open
        closed: list[AuditEvent] = []
        in_order = by_time.in_order
        if not by_time.late:  # the usual case, times in order: the deque alone
            while in_order and in_order[0][0] < limit_ns:
                _, _, key, event = in_order.popleft()
                if opened.get(key) is event:  # else: stale entry, closed by EOE earlier
                    del opened[key]
                    closed.append(event)
            self.events += len(closed)
            return closed
        while (oldest := by_time.oldest()) is not None and oldest[0] < limit_ns:
            _, _, key, event = by_time.pop()
            if opened.get(key) is event:
                closed.append(self._close(key, event))
        return closed

    def _bound_open(self, lineno: int) -> list[AuditEvent]:
        """Close the oldest open events beyond `MAX_OPEN_EVENTS` (reported once, at
        `lineno`), and drop the entries of events closed by EOE meanwhile (they pile
        up too while the time stands still)."""
        opened = self._open
        closed: list[AuditEvent] = []
        by_time = self._by_time
        while len(opened) > MAX_OPEN_EVENTS and by_time.oldest() is not None:
            _, _, key, event = by_time.pop()
            if opened.get(key) is event:
                closed.append(self._close(key, event))
        if closed:
            self.closed_early += len(closed)
            reason = (
                f"more than {MAX_OPEN_EVENTS} events open at once (the audit time stands "
                f"still?): the {len(closed)} oldest closed early"
            )
            self._bad("", lineno, reason)
        live = [entry for entry in by_time.in_order if opened.get(entry[2]) is entry[3]]
        by_time.in_order = deque(live)
        by_time.late = [entry for entry in by_time.late if opened.get(entry[2]) is entry[3]]
        heapq.heapify(by_time.late)
        return closed

    def _expire(self, now_ns: int) -> list[AuditEvent]:
        return self._pop_while(now_ns - self.window_ns)

    def flush(self, older_than_ns: int) -> list[AuditEvent]:
        """Close events whose audit time is before ``older_than_ns`` (wall clock, live tail)."""
        return self._pop_while(older_than_ns)

    def flush_all(self) -> list[AuditEvent]:
        """Close every open event (end of input), in audit-time order."""
        closed = self._pop_while(1 << 126)
        self._by_time = _ByTime()
        return closed

    # -- bad input ----------------------------------------------------------
    def skip_oversized(self, lineno: int, line: Oversized) -> None:
        """A line too long to read (left unread by ``bounded_lines``, or fed): malformed."""
        self._bad("", lineno, line.reason)

    def feed_block(self, block: list[str | Oversized], first: int) -> list[AuditEvent]:
        """``feed_lines`` of a ``bounded_lines`` block, its oversized lines reported."""
        skipped = [index for index, line in enumerate(block) if type(line) is Oversized]
        if not skipped:
            return self.feed_lines(block, first)  # type: ignore[arg-type]  # all str
        closed: list[AuditEvent] = []
        start = 0
        for index in skipped:
            closed += self.feed_lines(block[start:index], first + start)  # type: ignore[arg-type]
            self.skip_oversized(first + index, block[index])  # type: ignore[arg-type]
            start = index + 1
        closed += self.feed_lines(block[start:], first + start)  # type: ignore[arg-type]
        return closed

    def _not_a_record(self, line: str, lineno: int) -> list[AuditEvent]:
        stripped = line.strip()
        if not stripped:
            self.blank += 1
            return []
        if stripped.startswith("#"):
            return self._bad(line, lineno, "comment line")
        if "type=" in line:
            return self._bad(line, lineno, "garbage before type=")
        return self._bad(line, lineno, "no type= field")

    def _bad(self, line: str, lineno: int, reason: str) -> list[AuditEvent]:
        self.malformed_count += 1
        self.malformed.append(Malformed(self.path, lineno, reason, _printable(line)))
        return []


_Entry = tuple[int, int, str, AuditEvent]  # (time_ns, seq, key, event)


class _ByTime:
    """Entries in (time_ns, seq) order: a deque while times come in order (the usual
    case: no heap work), a heap for the few that arrive later than newer ones."""

    __slots__ = ("in_order", "late")

    def __init__(self) -> None:
        self.in_order: deque[_Entry] = deque()  # sorted: appended only in order
        self.late: list[_Entry] = []  # a heap

    def oldest(self) -> _Entry | None:
        in_order, late = self.in_order, self.late
        if in_order and (not late or in_order[0] < late[0]):  # seq differs: no key compared
            return in_order[0]
        return late[0] if late else None

    def pop(self) -> _Entry:
        in_order, late = self.in_order, self.late
        if in_order and (not late or in_order[0] < late[0]):
            return in_order.popleft()
        return heapq.heappop(late)
