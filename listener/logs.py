"""Structured logging: readable lines on a terminal, JSON lines otherwise.

Journald, Docker's log drivers and SIEM shippers read JSON; people read text.
Extra fields given with `log.info(msg, extra={"fields": {...}})` are kept as
keys of the JSON object. Every line is redacted (`notifiers.urlsecrets`): no
destination secret reaches a log, apprise's own debug lines included.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from listener.safetext import printable
from notifiers.urlsecrets import redact


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", {}) or {}
        line.update({k: redact(v) if isinstance(v, str) else v for k, v in fields.items()})
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower():7} {record.getMessage()}"
        fields = getattr(record, "fields", None)
        if fields:
            text += "  " + " ".join(f"{key}={value}" for key, value in fields.items())
        text = printable(text)  # a terminal: names and labels must not drive it
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def setup_logging(level: str = "info", *, json_lines: bool | None = None) -> None:
    stream = sys.stderr
    if json_lines is None:
        json_lines = not stream.isatty()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
