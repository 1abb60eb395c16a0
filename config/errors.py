"""The one error hierarchy of docktrail.

It lives in `config` because `config` is the package every other one may import
and which imports nothing of ours. Foreign errors (sqlite3, docker-py, aiokafka,
yaml, pydantic) are translated into these at the boundary where they occur, so
callers handle one family. `retriable` says whether trying the same thing again
later may succeed (as in aiokafka's errors).
"""

from __future__ import annotations


class DocktrailError(Exception):
    """Base of every error docktrail raises on purpose."""

    retriable: bool = False
    exit_code: int = 2


class ConfigError(DocktrailError):
    """A configuration file, environment override or option is invalid."""


class InputError(DocktrailError):
    """One record of an input (a line of a captured file) cannot be used.

    Carries where it is, so messages name the file and line.
    """

    def __init__(self, reason: str, *, path: str | None = None, line: int | None = None) -> None:
        self.reason = reason
        self.path = path
        self.line = line
        super().__init__(self.location_prefix() + reason)

    def location_prefix(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}: " if self.line is not None else f"{self.path}: "


class TrailError(DocktrailError):
    """The trail cannot be opened, read or written."""


class TrailBusyError(TrailError):
    """Another writer holds the trail; trying again later may succeed."""

    retriable = True


class TamperError(TrailError):
    """The trail's hash chain or signed checkpoints do not match its rows."""

    exit_code = 1

    def __init__(self, reason: str, *, seq: int | None = None) -> None:
        self.reason = reason
        self.seq = seq
        where = f"seq {seq}: " if seq is not None else ""
        super().__init__(where + reason)


class SigningKeyError(TrailError):
    """The checkpoint signing key is missing, unreadable or does not match."""


class SourceError(DocktrailError):
    """A source (Docker Engine, audit log) cannot be read."""

    retriable = True


class SinkError(DocktrailError):
    """A trail sink (SQLite, Kafka) refused or failed a write."""

    retriable = True


class NotifierError(DocktrailError):
    """An alert could not be delivered to a destination."""

    retriable = True


class RuleStateError(DocktrailError):
    """A saved rules state holds what cannot be saved or read back: it is rebuilt instead."""
