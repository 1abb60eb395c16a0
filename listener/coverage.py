"""Audit coverage: where an audit source could have tied an Engine event to a login.

`unattributed-change` means "an audit source watched this moment and saw no
login cause it". That holds only where a source really covered the event:

- live (`LiveCoverage`): the audit log is open, has been read without a break
  since before the event, and has been read past the event's time (the tail is
  current: the `Attribution` stage waited at most `auditd.hold_secs` for it);
- offline (`SpanCoverage`): the event lies inside the time span of the audit
  records read, and on their host (`node=`) when they name one.

Outside, attribution is unavailable, not missing: the event's `who.method` is
`unavailable` with the reason in `who.reason`, and no alert is raised.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from listener.model.event import Event, Who, format_time_ns
from listener.model.trusted import defaults, trusted


class _AuditedCall(Protocol):
    @property
    def audit_id(self) -> str: ...


class RunningCalls(Protocol):
    """What `mark_build_step` needs of the correlator (kept abstract: it imports us)."""

    def running(self, command: str, time_ns: int) -> _AuditedCall | None: ...


_NS = 1_000_000_000


class Coverage(Protocol):
    def missing(self, event: Event) -> str | None:
        """Why no audit source covered `event`, or None when one did."""


def mark_uncovered(event: Event, coverage: Coverage | None) -> None:
    """An Engine event no login was found for: `unavailable` when nothing covered it."""
    if coverage is None or event.source != "docker" or event.who.method != "unknown":
        return
    if event.who.candidates:
        return  # covered: the audit log showed several logins
    reason = coverage.missing(event)
    if reason is not None:
        event.who = _unavailable(reason, event.who.claimed)


_WHO = defaults(Who)
_UNAVAILABLE_GIVEN = frozenset({"method", "reason", "claimed"})


def _unavailable(reason: str, claimed: str | None) -> Who:
    """`Who(method="unavailable", reason=reason, claimed=claimed)`: on every Engine event of
    an ingest without an audit log, so built without validating the known values again."""
    if type(reason) is not str:  # not a plain str: as pydantic makes it
        return Who(method="unavailable", reason=reason, claimed=claimed)
    values = dict(_WHO)
    values.update(method="unavailable", reason=reason, claimed=claimed)
    return trusted(Who, values, set(_UNAVAILABLE_GIVEN))


class CoverageStage:
    """Pipeline Stage of a service without an audit source: Engine events say why `who`
    is missing (`auditd.enabled: false`)."""

    def __init__(self, coverage: Coverage) -> None:
        self.coverage = coverage

    async def before_write(self, batch: list[Event]) -> list[Event]:
        for event in batch:
            mark_uncovered(event, self.coverage)
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        return None


def mark_build_step(event: Event, correlator: RunningCalls) -> None:
    """A container no login was found for, created from a bare image id while a `docker
    build` call was at work: a classic build's step (`attributes.build_call` names the
    call). The build call is the change auditd recorded; its steps are not changes of
    their own."""
    if event.source != "docker" or event.type != "container" or event.who.method != "unknown":
        return
    image = event.actor.image or ""
    if not _is_image_id(image):
        return
    build = correlator.running("build", event.time_ns)
    if build is not None:
        event.attributes["build_call"] = build.audit_id


def _is_image_id(reference: str) -> bool:
    bare = reference.removeprefix("sha256:")
    return reference.startswith("sha256:") or (
        len(bare) == 64 and all(c in "0123456789abcdef" for c in bare)
    )


@dataclass(slots=True)
class FixedCoverage:
    """No audit source at all (auditd disabled, ingest without an audit log)."""

    reason: str

    def missing(self, event: Event) -> str | None:
        return self.reason


@dataclass(slots=True)
class LiveCoverage:
    """What the live audit tail covers: fed by the tail after every read cycle."""

    log_file: str
    clock: Callable[[], int] = time.time_ns
    open_since_ns: int | None = None  # reading without a break since then; None: not open
    read_through_ns: int = -1  # every record before this time has been read
    problem: str | None = None  # why the log is not open
    halted: str | None = None  # the log says auditd (or its CLI rule) stopped recording

    def reading(self, *, since_ns: int | None, read_through_ns: int) -> None:
        """The tail read a cycle with the log open (since_ns: where its records begin)."""
        if self.open_since_ns is None:
            self.open_since_ns = since_ns if since_ns is not None else self.clock()
        self.read_through_ns = max(self.read_through_ns, read_through_ns)
        self.problem = None

    def lost(self, problem: str) -> None:
        """The log is not open (missing, unreadable): nothing is covered until it is."""
        self.open_since_ns = None
        self.problem = problem

    def broken(self) -> None:
        """Records may be missing (a rotation lost a file): covered again from now on."""
        if self.open_since_ns is not None:
            self.open_since_ns = max(self.open_since_ns, self.clock())

    def halt(self, reason: str) -> None:
        self.halted = reason

    def resume(self) -> None:
        """Recording again: events from now on are covered."""
        if self.halted is not None:
            self.halted = None
            self.open_since_ns = self.clock()

    def missing(self, event: Event) -> str | None:
        if self.halted is not None:
            return self.halted
        if self.open_since_ns is None:
            return self.problem or f"audit log {self.log_file} is not open"
        if event.time_ns < self.open_since_ns:
            return f"before the audit log was read (from {format_time_ns(self.open_since_ns)})"
        if self.read_through_ns < event.time_ns:
            lag = (self.clock() - self.read_through_ns) / _NS
            return f"audit log {self.log_file} lags {lag:.1f}s behind the Engine"
        return None


HOSTS_KEPT = 1024  # hosts (node= names) of the audit records remembered
_HOSTS_NAMED = 8  # in a note, per event


@dataclass(slots=True)
class SpanCoverage:
    """The time span and hosts of the audit records read from captured files."""

    default_host: str
    first_ns: int | None = None
    last_ns: int | None = None
    hosts: set[str] = field(default_factory=set)

    more_hosts: bool = False  # records of more than HOSTS_KEPT hosts were read

    def add(self, time_ns: int, node: str | None) -> None:
        if self.first_ns is None or time_ns < self.first_ns:
            self.first_ns = time_ns
        if self.last_ns is None or time_ns > self.last_ns:
            self.last_ns = time_ns
        host = node or self.default_host
        if host in self.hosts:
            return
        if len(self.hosts) < HOSTS_KEPT:
            self.hosts.add(host)
        else:  # a file's made-up node= names: the rest are not covered (conservative)
            self.more_hosts = True

    def missing(self, event: Event) -> str | None:
        if self.first_ns is None or self.last_ns is None:
            return "no audit records read"
        if not self.first_ns <= event.time_ns <= self.last_ns:
            return (
                f"outside the audit records read ({format_time_ns(self.first_ns)} to "
                f"{format_time_ns(self.last_ns)})"
            )
        if event.host not in self.hosts:
            named = sorted(self.hosts)[:_HOSTS_NAMED]
            more = len(self.hosts) - len(named)
            hosts = ", ".join(named) + (f" and {more} more" if more else "")
            if self.more_hosts:
                hosts += f" (the first {HOSTS_KEPT} kept)"
            return f"audit records read are of {hosts}, not {event.host}"
        return None
