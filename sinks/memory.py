"""`MemoryTrail`: an in-memory trail for tests, with the semantics of `sinks.chain`.

It has the sync and async API of `sinks.sqlite.SQLiteTrail` but keeps
everything in lists; its `verify` checks both chains only (there are no
signed checkpoints in memory).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self, TypeVar

from config.errors import TrailError
from listener.model.alert import Alert
from listener.model.event import GENESIS_HASH, Event, canonical_json
from sinks.base import (
    AlertFilter,
    AppendResult,
    AsyncLifecycle,
    EventFilter,
    SourceState,
    SyncLifecycle,
)
from sinks.chain import (
    RULES_MARK,
    VerifyReport,
    check_mark,
    decode_state,
    encode_states,
    event_ref_problem,
    link_problem,
    mark_state,
    mark_value,
    seal,
    seal_alerts,
    split_new,
)
from sinks.filtering import alert_matches, container_ids_named, matches
from sinks.outbox import Route, Router

T = TypeVar("T")


class MemoryTrail(SyncLifecycle, AsyncLifecycle):
    """A trail in Python lists, with the same API as `SQLiteTrail` (minus signing)."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._ids: set[str] = set()
        self._alerts: list[Alert] = []
        self._alert_ids: set[str] = set()
        self._states: dict[str, str] = {}  # name -> canonical JSON, as SQLite stores it
        self.routed: list[tuple[str, Route]] = []  # (alert id, route) given to append_alerts

    # sync lifecycle: nothing to acquire, kept for API parity
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    # -- events and source state ----------------------------------------------

    def append(
        self, events: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        """Store the new events and the sources' state together; all or nothing."""
        states = encode_states(source_state)
        fresh, duplicates = split_new(events, self._ids)
        seq, prev_hash = self.head()
        sealed = seal(fresh, seq, prev_hash)  # raises before anything is stored
        for stored, _content, _body in sealed:
            # deep copies: a caller mutating what it got back must not edit the trail
            self._events.append(stored.model_copy(deep=True))
            self._ids.add(stored.id)
        self._states.update(states)
        return AppendResult(stored=[s[0] for s in sealed], duplicates=duplicates)

    def load_source_state(self, name: str) -> dict[str, Any] | None:
        text = self._states.get(name)
        return None if text is None else decode_state(text)

    def source_states(self) -> dict[str, dict[str, Any]]:
        return {name: decode_state(text) for name, text in sorted(self._states.items())}

    def query(self, f: EventFilter) -> Iterator[Event]:
        start = max(f.after_seq or 0, 0)
        left = f.limit
        named = container_ids_named(self._events, f.container)
        for event in self._events[start:]:
            if left is not None and left <= 0:
                return
            if matches(event, f, named):
                if left is not None:
                    left -= 1
                yield event.model_copy(deep=True)

    def count(self) -> int:
        return len(self._events)

    def head(self) -> tuple[int, str]:
        if not self._events:
            return 0, GENESIS_HASH
        last = self._events[-1]
        return last.seq or 0, last.hash or ""

    def get(self, seq: int) -> Event | None:
        if 1 <= seq <= len(self._events):
            return self._events[seq - 1].model_copy(deep=True)
        return None

    # -- alerts ---------------------------------------------------------------

    def append_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        """Store the new alerts and advance the evaluation mark together; all or nothing.

        Routes are only recorded (`routed`): the outbox and its worker need SQLite.
        """
        fresh, _duplicates = split_new(alerts, self._alert_ids)
        for alert in fresh:
            stored_id = self._event_id(alert.event_seq)
            problem = event_ref_problem(
                f"alert {alert.id}", alert.event_seq, alert.event_id, stored_id
            )
            if problem is not None:
                raise TrailError(problem)
        if evaluated_through is not None:
            check_mark(evaluated_through, self.head()[0])
        sealed = seal_alerts(fresh, *self.alerts_head())
        for stored, _content, _body in sealed:
            self._alerts.append(stored.model_copy(deep=True))
            self._alert_ids.add(stored.id)
            if route is not None:
                self.routed.extend((stored.id, r) for r in route(stored))
        if evaluated_through is not None and evaluated_through > self.evaluated_through():
            name, text = mark_state(evaluated_through)
            self._states[name] = text
        return [s[0] for s in sealed]

    def _event_id(self, seq: int) -> str | None:
        return self._events[seq - 1].id if 1 <= seq <= len(self._events) else None

    def evaluated_through(self) -> int:
        """Every event up to this seq has been evaluated by the rules (0: none)."""
        return mark_value(self._states.get(RULES_MARK))

    def query_alerts(self, f: AlertFilter) -> Iterator[Alert]:
        start = max(f.after_seq or 0, 0)
        left = f.limit
        named = container_ids_named(self._events, f.container)
        for alert in self._alerts[start:]:
            if left is not None and left <= 0:
                return
            event = self._events[alert.event_seq - 1] if f.container is not None else None
            if alert_matches(alert, f, event, named):
                if left is not None:
                    left -= 1
                yield alert.model_copy(deep=True)

    def alerts_for_event(self, seq: int) -> list[Alert]:
        return list(self.query_alerts(AlertFilter(event_seq=seq)))

    def count_alerts(self) -> int:
        return len(self._alerts)

    def alerts_head(self) -> tuple[int, str]:
        """(seq, hash) of the last alert; (0, GENESIS_HASH) when there is none."""
        if not self._alerts:
            return 0, GENESIS_HASH
        last = self._alerts[-1]
        return last.seq or 0, last.hash or ""

    # -- verify ---------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check both chains; bodies are re-serialised with the reference encoder."""
        expected_seq, expected_prev = 1, GENESIS_HASH
        for event in self._events:
            body = canonical_json(event.content())
            seq = event.seq if event.seq is not None else 0
            problem = link_problem(
                seq, expected_seq, event.prev_hash or "", expected_prev, event.hash or "", body
            )
            if problem is not None:
                return self._report(problem)
            expected_seq, expected_prev = seq + 1, event.hash or ""
        return self._report(self._alerts_problem(), alerts=True)

    def _alerts_problem(self) -> tuple[int, str] | None:
        expected_seq, expected_prev = 1, GENESIS_HASH
        for alert in self._alerts:
            body = canonical_json(alert.content())
            seq = alert.seq if alert.seq is not None else 0
            digest = alert.hash or ""
            problem = link_problem(
                seq, expected_seq, alert.prev_hash or "", expected_prev, digest, body, "alert seq"
            )
            if problem is not None:
                return problem
            stored_id = self._event_id(alert.event_seq)
            ref = event_ref_problem(f"alert seq {seq}", alert.event_seq, alert.event_id, stored_id)
            if ref is not None:
                return seq, ref
            expected_seq, expected_prev = seq + 1, digest
        return None

    def _report(self, problem: tuple[int, str] | None, *, alerts: bool = False) -> VerifyReport:
        count = len(self._events)
        bad = None if problem is None else problem[0]
        return VerifyReport(
            ok=problem is None,
            events=count,
            checkpoints=0,
            first_bad_seq=None if alerts else bad,
            problem=None if problem is None else problem[1],
            unsealed=count,  # nothing is ever signed in memory
            key_fingerprint=None,
            alerts=len(self._alerts),
            first_bad_alert_seq=bad if alerts else None,
            unsealed_alerts=len(self._alerts),
        )

    # async API (the TrailSink protocol): the work is tiny, so it runs inline
    async def start(self) -> None:
        self.open()

    async def write(
        self, batch: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        return self.append(batch, source_state=source_state)

    async def write_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        return self.append_alerts(alerts, evaluated_through=evaluated_through, route=route)

    async def call(self, fn: Callable[[Self], T]) -> T:
        """As `SQLiteTrail.call`: run `fn(self)` (inline here, there is no worker)."""
        return fn(self)

    async def aclose(self) -> None:
        self.close()
