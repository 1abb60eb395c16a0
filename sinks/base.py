"""The interface every trail sink implements, and the query filters they accept.

A sink has an aiokafka-like lifecycle: `start()`, `write(batch)` any number of
times, `aclose()`; or `async with sink:`. `write` is atomic per batch: either
every new event of the batch is stored (and gets `seq`, `hash`, `prev_hash`)
or none is. Events whose `id` is already stored are skipped (idempotent
ingest), and reported as duplicates.

The trails (`SQLiteTrail`, `MemoryTrail`) also take
`write(batch, source_state={name: state})`: it stores each source's read position
(JSON objects, replacing the previous one of that name) in the same
transaction as the batch, so a source that resumes from its stored state after
a crash neither skips nor repeats events. The state is stored even when the
batch is empty or all duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol, Self

from config.errors import TrailError
from config.models import SEVERITIES
from listener.model.event import Event

SourceState = Mapping[str, Mapping[str, Any]]
"""Source name -> its read position (a JSON object), as `write` takes it."""

SEVERITY_RANK: Mapping[str, int] = {name: rank for rank, name in enumerate(reversed(SEVERITIES))}
"""info 0 < low 1 < medium 2 < high 3 < critical 4."""


@dataclass(slots=True)
class AppendResult:
    """What one `write` did."""

    stored: list[Event] = field(default_factory=list)
    duplicates: int = 0


Wanted = str | tuple[str, ...] | None
"""One filter field: a value, several values (any one matches: OR), or None (any)."""


def values_of(wanted: Wanted) -> tuple[str, ...]:
    """The values a filter field accepts; empty when the field is not set."""
    if wanted is None:
        return ()
    return (wanted,) if isinstance(wanted, str) else tuple(wanted)


@dataclass(slots=True)
class EventFilter:
    """Selection of events for `query`.

    Every set field must match (AND); a field given several values matches
    any one of them (OR), as `docker events --filter` does. `container` is a
    name or an id prefix; a name selects every container that bore it in the
    trail (before and after renames), with the network events that carry
    only those containers' ids. `labels` maps a label key to its value (or
    values); every key must match.
    """

    type: Wanted = None
    action: Wanted = None
    container: Wanted = None  # name, or id prefix
    image: Wanted = None
    user: Wanted = None  # login or effective user
    source: Wanted = None
    host: Wanted = None
    labels: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    session: Wanted = None  # exec id (or a prefix of it): the exec's events and commands
    since_ns: int | None = None
    until_ns: int | None = None
    after_seq: int | None = None
    limit: int | None = None


def stored_after(
    trail: Any, after_seq: int, until_seq: int, *, page: int, type: Wanted = None
) -> Iterator[Event]:
    """The events stored after `after_seq` through `until_seq` (of `type`), in seq order.

    Each page of `page` rows is a statement of its own, so that no read transaction
    lasts the whole read (a writer's checkpoints wait for it), and its rows are
    decoded as they are used: a page of models made before the first is used left the
    caches cold (8.9 µs an event to read instead of 5.3) and its heap behind.
    """
    after = after_seq
    while after < until_seq:
        last = after
        for event in trail.query(EventFilter(after_seq=after, limit=page, type=type)):
            if event.seq is None or event.seq > until_seq:
                return
            last = event.seq
            yield event
        if last == after:
            return
        after = last


@dataclass(slots=True)
class AlertFilter:
    """Selection of alerts for `query_alerts`; every set field must match (AND).

    A field given several values matches any one of them (OR), as for events.

    `container` selects alerts whose `container` is that name, and alerts
    whose event `EventFilter(container=...)` selects (name, or id prefix, as
    for events). `image` is exact, or a glob with `*`, on the alert's image.
    `user` is the login or the effective user of the alert's `who`. Times
    bound the alert's `time_ns` (its event's time): since <= t < until.
    `min_severity` keeps that severity and the more severe ones
    (`SEVERITY_RANK`); `include_suppressed=False` drops alerts that a
    configured exception suppressed.
    """

    rule: Wanted = None
    severity: Wanted = None  # config.models.SEVERITIES
    min_severity: str | None = None
    container: Wanted = None
    image: Wanted = None
    user: Wanted = None
    host: Wanted = None
    since_ns: int | None = None
    until_ns: int | None = None
    include_suppressed: bool = True
    event_seq: int | None = None  # the alerts of one event
    after_seq: int | None = None  # alerts seq, for paging
    limit: int | None = None


def severities_at_least(minimum: str) -> tuple[str, ...]:
    """The severities ranked at or above `minimum`, most severe first."""
    if minimum not in SEVERITY_RANK:
        raise TrailError(f"unknown severity {minimum!r} (one of {', '.join(SEVERITIES)})")
    rank = SEVERITY_RANK[minimum]
    return tuple(name for name in SEVERITIES if SEVERITY_RANK[name] >= rank)


class TrailSink(Protocol):
    async def start(self) -> None: ...

    # Trails (SQLite, memory) also take `source_state=`; the protocol does not
    # demand it, so that wrappers which supply it themselves remain sinks.
    async def write(self, batch: Sequence[Event]) -> AppendResult: ...

    async def aclose(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class AsyncLifecycle:
    """`async with` for anything with `start()` and `aclose()` (aiokafka's lifecycle)."""

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class SyncLifecycle:
    """`with` for anything with `open()` and `close()`: the trails' sync API."""

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
