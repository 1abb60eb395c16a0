"""`docktrail export`: the trail's events and alerts in the forms SIEMs read.

Every format module exposes `FORMAT` (its name) and `Writer`, which takes
records one at a time (`write_event`, `write_alert`) and is closed once.
Records come in trail order, each alert right after the event that raised
it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TextIO

from listener.model.alert import Alert
from listener.model.event import Event

if TYPE_CHECKING:
    from sinks.sqlite import SQLiteTrail

FORMATS = ("jsonl", "ocsf", "ecs", "csv")


class Writer(Protocol):
    def write_event(self, event: Event) -> None: ...
    def write_alert(self, alert: Alert) -> None: ...
    def close(self) -> None: ...


@dataclass
class ExportSummary:
    """What one export wrote."""

    fmt: str
    events: int = 0
    alerts: int = 0
    by_class: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        classes = ", ".join(f"{name} {count}" for name, count in sorted(self.by_class.items()))
        return f"export: {self.events} events and {self.alerts} alerts as {self.fmt}" + (
            f" ({classes})" if classes else ""
        )


def make_writer(fmt: str, out: TextIO, summary: ExportSummary) -> Writer:
    if fmt == "jsonl":
        from listener.export.jsonl import JsonlWriter

        return JsonlWriter(out)
    if fmt == "csv":
        from listener.export.csv_format import CsvWriter

        return CsvWriter(out)
    if fmt == "ocsf":
        from listener.export.ocsf import OcsfWriter

        return OcsfWriter(out, summary.by_class)
    if fmt == "ecs":
        from listener.export.ecs import EcsWriter

        return EcsWriter(out)
    raise ValueError(f"unknown export format {fmt!r}")


def export_trail(
    trail: SQLiteTrail,
    fmt: str,
    out: TextIO,
    *,
    since_ns: int | None = None,
    until_ns: int | None = None,
    on_record: Callable[[], None] | None = None,
) -> ExportSummary:
    """Write the events and alerts with since <= time < until to `out`."""
    summary = ExportSummary(fmt)
    writer = make_writer(fmt, out, summary)
    for record in _records(trail, since_ns, until_ns):
        if isinstance(record, Event):
            writer.write_event(record)
            summary.events += 1
        else:
            writer.write_alert(record)
            summary.alerts += 1
        if on_record is not None:
            on_record()
    writer.close()
    return summary


def count_records(trail: SQLiteTrail, since_ns: int | None, until_ns: int | None) -> int:
    """How many records `export_trail` will write (for a progress bar)."""
    low = since_ns if since_ns is not None else -(2**63)
    high = until_ns if until_ns is not None else 2**63 - 1
    conn = trail._connection()
    total = 0
    for table in ("events", "alerts"):
        (count,) = conn.execute(
            f"SELECT count(*) FROM {table} WHERE time_ns >= ? AND time_ns < ?", (low, high)
        ).fetchone()
        total += int(count)
    return total


def _records(
    trail: SQLiteTrail, since_ns: int | None, until_ns: int | None
) -> Iterator[Event | Alert]:
    """Events in seq order, each followed by the alerts raised on it.

    Alerts are far fewer than events, so they are held in memory by event;
    events are read lazily.
    """
    from sinks.base import AlertFilter, EventFilter

    by_event: dict[int, list[Alert]] = defaultdict(list)
    alert_filter = AlertFilter(since_ns=since_ns, until_ns=until_ns, include_suppressed=True)
    for alert in trail.query_alerts(alert_filter):
        by_event[alert.event_seq].append(alert)
    for event in trail.query(EventFilter(since_ns=since_ns, until_ns=until_ns)):
        yield event
        yield from by_event.pop(event.seq or 0, ())
    for alerts in by_event.values():  # an alert whose event lies outside the range
        yield from alerts
