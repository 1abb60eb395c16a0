"""JSON Lines: the DESIGN.md event and alert objects, one per line, tagged by `record`."""

from __future__ import annotations

from datetime import UTC
from typing import Any, TextIO

import orjson

from listener.model.alert import Alert
from listener.model.event import Event


class JsonlWriter:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def write_event(self, event: Event) -> None:
        self._line({"record": "event", **event.to_json_object(UTC)})

    def write_alert(self, alert: Alert) -> None:
        self._line({"record": "alert", **alert.to_json_object(UTC)})

    def _line(self, obj: dict[str, Any]) -> None:
        self.out.write(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode() + "\n")

    def close(self) -> None:
        self.out.flush()
