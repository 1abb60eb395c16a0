"""CSV: one header, one row per event or alert (`record` says which).

Event columns are `query --format csv`'s; alert-only columns follow. Cells
that a spreadsheet would run as a formula (container names are chosen by
whoever runs a container) are prefixed with a quote.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC
from typing import Any, TextIO

from listener.model.alert import Alert
from listener.model.event import Event, format_time_ns
from listener.output import CSV_COLUMNS, csv_row

ALERT_ONLY_COLUMNS = ["rule", "severity", "event_seq", "summary", "suppressed", "details"]
COLUMNS = ["record", *CSV_COLUMNS, *ALERT_ONLY_COLUMNS]
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class CsvWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        self.writer.writeheader()

    def write_event(self, event: Event) -> None:
        self._row({"record": "event", **csv_row(event, UTC)})

    def write_alert(self, alert: Alert) -> None:
        self._row(
            {
                "record": "alert",
                "seq": alert.seq,
                "id": alert.id,
                "time": format_time_ns(alert.time_ns, UTC),
                "time_ns": alert.time_ns,
                "host": alert.host,
                "actor_name": alert.container,
                "actor_image": alert.image,
                "who_login": alert.who.login,
                "who_user": alert.who.user,
                "who_uid": alert.who.uid,
                "who_method": alert.who.method,
                "hash": alert.hash,
                "prev_hash": alert.prev_hash,
                "rule": alert.rule,
                "severity": alert.severity,
                "event_seq": alert.event_seq,
                "summary": alert.summary,
                "suppressed": alert.suppressed,
                "details": json.dumps(alert.details, sort_keys=True, ensure_ascii=False),
            }
        )

    def _row(self, row: dict[str, Any]) -> None:
        self.writer.writerow({key: _defused(value) for key, value in row.items()})

    def close(self) -> None:
        self.out.flush()


def _defused(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value
