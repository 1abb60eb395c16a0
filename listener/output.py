"""Rendering events for the terminal and for other programs.

`json` is JSON Lines (one object per line, nothing else on stdout), `csv` has
one flat row per event, `table` is for people and shows times in the
configured time zone with its offset.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from datetime import tzinfo
from typing import Any, TextIO

from listener.model.alert import Alert
from listener.model.event import Event, format_time_ns
from listener.safetext import csv_cell, printable

FORMATS = ("table", "json", "csv")

CSV_COLUMNS = [
    "seq", "id", "time", "time_ns", "source", "host", "type", "action",
    "actor_id", "actor_name", "actor_image", "who_login", "who_user", "who_uid",
    "who_method", "who_command", "why_reason", "why_ticket", "attributes", "config",
    "hash", "prev_hash",
]  # fmt: skip

_TABLE_COLUMNS = (("SEQ", 7), ("TIME", 35), ("SOURCE", 9), ("TYPE", 10), ("ACTION", 14),
                  ("NAME", 32), ("WHO", 12))  # fmt: skip


def write_events(events: Iterable[Event], fmt: str, tz: tzinfo, out: TextIO | None = None) -> int:
    writer = {"json": _write_json, "csv": _write_csv, "table": _write_table}[fmt]
    return writer(events, tz, out or sys.stdout)


def _write_json(events: Iterable[Event], tz: tzinfo, out: TextIO) -> int:
    count = 0
    for event in events:
        out.write(json.dumps(event.to_json_object(tz), ensure_ascii=False) + "\n")
        count += 1
    return count


def csv_row(event: Event, tz: tzinfo) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "id": event.id,
        "time": format_time_ns(event.time_ns, tz),
        "time_ns": event.time_ns,
        "source": event.source,
        "host": event.host,
        "type": event.type,
        "action": event.action,
        "actor_id": event.actor.id,
        "actor_name": event.actor.name,
        "actor_image": event.actor.image,
        "who_login": event.who.login,
        "who_user": event.who.user,
        "who_uid": event.who.uid,
        "who_method": event.who.method,
        "who_command": event.who.command,
        "why_reason": event.why.reason,
        "why_ticket": event.why.ticket,
        "attributes": json.dumps(event.attributes, sort_keys=True, ensure_ascii=False),
        "config": json.dumps(event.config, sort_keys=True, ensure_ascii=False),
        "hash": event.hash,
        "prev_hash": event.prev_hash,
    }


def _write_csv(events: Iterable[Event], tz: tzinfo, out: TextIO) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    count = 0
    for event in events:
        writer.writerow(_safe_row(csv_row(event, tz)))
        count += 1
    return count


def _write_table(events: Iterable[Event], tz: tzinfo, out: TextIO) -> int:
    out.write(_line(_TABLE_COLUMNS, [name for name, _ in _TABLE_COLUMNS]))
    count = 0
    for event in events:
        who = event.who.login or event.who.user or ("?" if event.who.method == "unknown" else "")
        cells = [
            str(event.seq),
            format_time_ns(event.time_ns, tz),
            event.source,
            event.type,
            event.action,
            event.actor.name or event.actor.id[:12],
            who,
        ]
        out.write(_line(_TABLE_COLUMNS, cells))
        count += 1
    return count


ALERT_CSV_COLUMNS = [
    "seq", "id", "time", "rule", "severity", "event_seq", "host", "container", "image",
    "who_login", "who_user", "summary", "suppressed", "details",
]  # fmt: skip

_ALERT_COLUMNS = (("SEQ", 6), ("TIME", 35), ("SEVERITY", 9), ("RULE", 26), ("CONTAINER", 20),
                  ("WHO", 10), ("SUMMARY", 70))  # fmt: skip


def write_alerts(alerts: Iterable[Alert], fmt: str, tz: tzinfo, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=ALERT_CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
    elif fmt == "table":
        out.write(_line(_ALERT_COLUMNS, [name for name, _ in _ALERT_COLUMNS]))
    for alert in alerts:
        if fmt == "json":
            out.write(json.dumps(alert.to_json_object(tz), ensure_ascii=False) + "\n")
        elif fmt == "csv":
            writer.writerow(_safe_row(_alert_row(alert, tz)))
        else:
            out.write(_line(_ALERT_COLUMNS, _alert_cells(alert, tz)))
        count += 1
    return count


def _alert_row(alert: Alert, tz: tzinfo) -> dict[str, Any]:
    return {
        "seq": alert.seq,
        "id": alert.id,
        "time": format_time_ns(alert.time_ns, tz),
        "rule": alert.rule,
        "severity": alert.severity,
        "event_seq": alert.event_seq,
        "host": alert.host,
        "container": alert.container,
        "image": alert.image,
        "who_login": alert.who.login,
        "who_user": alert.who.user,
        "summary": alert.summary,
        "suppressed": alert.suppressed,
        "details": json.dumps(alert.details, sort_keys=True, ensure_ascii=False),
    }


def _alert_cells(alert: Alert, tz: tzinfo) -> list[str]:
    summary = alert.summary + (f" [suppressed: {alert.suppressed}]" if alert.suppressed else "")
    return [
        str(alert.seq if alert.seq is not None else "-"),
        format_time_ns(alert.time_ns, tz),
        alert.severity,
        alert.rule,
        alert.container or "",
        alert.who.login or alert.who.user or "?",
        summary,
    ]


def _safe_row(row: dict[str, Any]) -> dict[str, Any]:
    """A CSV row a spreadsheet shows as text: no formulas, no control characters."""
    return {name: csv_cell(value) for name, value in row.items()}


def _line(columns: tuple[tuple[str, int], ...], cells: list[str]) -> str:
    parts = []
    for (_, width), raw in zip(columns, cells, strict=True):
        cell = printable(raw)  # names and labels are anyone's: the terminal must not obey them
        text = cell if len(cell) <= width else cell[: width - 1] + "…"
        parts.append(text.ljust(width))
    return " ".join(parts).rstrip() + "\n"
