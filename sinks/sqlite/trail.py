"""`SQLiteTrail`: opening, writing (events, alerts, source state and deliveries in
one transaction), reading, signed checkpoints and the async API for the service.

The trail owns the connection, every transaction and the writer's state (its
lock, what no checkpoint covers yet). Its bases are its read API
(`reading.TrailReader`) and when it signs (`heads.Sealing`); what else has a
concern of its own lives beside it, called inside those transactions:

- `opening`: creating a trail file sealed from the start, and connecting to it;
- `heads`: the signing key, the head seal, checkpoints, a crashed writer's tail;
- `alerting`: the alerts' checks and rows, the outbox's `delivery` events;
- `reading`: the read API (filters, look-ups by seq and id, the sources' state);
- `legacy_ids`: the dedupe of events stored under ids from before time-ordered ones;
- `worker`: the thread of the async API and its checkpoint timer.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, Self, TypeVar

from sqlite_utils import Database

import sinks.sqlite.actors as actors
import sinks.sqlite.alerting as alerting
import sinks.sqlite.dedupe as dedupe
import sinks.sqlite.heads as heads
import sinks.sqlite.labels as labels
import sinks.sqlite.legacy_ids as legacy_ids
import sinks.sqlite.opening as opening
import sinks.sqlite.reading as reading
import sinks.sqlite.rulestate as rulestate
from config.errors import TamperError, TrailError
from config.models import TrailConfig
from listener.model.alert import Alert
from listener.model.event import Event
from sinks import outbox, trailfiles
from sinks.base import (
    AppendResult,
    AsyncLifecycle,
    SourceState,
    SyncLifecycle,
)
from sinks.chain import (
    VerifyReport,
    check_mark,
    encode_states,
    mark_state,
    seal,
    seal_alerts,
    split_new,
)
from sinks.outbox import Router
from sinks.signing import Checkpoint, load_public_key
from sinks.sqlite.bulk import insert_rows
from sinks.sqlite.schema import (
    EVENT_INSERT,
    UPSERT_STATE,
    apply_migrations,
    copied_values,
    immediate,
)
from sinks.sqlite.verification import verify_connection
from sinks.sqlite.worker import Worker

T = TypeVar("T")


class SQLiteTrail(reading.TrailReader, heads.Sealing, SyncLifecycle, AsyncLifecycle):
    """The embedded trail. Sync API for CLI and tests; async API for the service.

    In async use (`start()` … `aclose()`) the connection belongs to one worker
    thread and every operation runs there; reach the sync API through
    `await trail.call(lambda t: ...)`.
    """

    def __init__(
        self,
        path: Path,
        *,
        durability: Literal["full", "normal"] = "full",
        signing_key: Path | None = None,
        checkpoint_interval_secs: float = 60.0,
        checkpoint_every_events: int = 10_000,
        witness_path: Path | None = None,
        group: str | None = None,
        host: str | None = None,
    ) -> None:
        if durability not in ("full", "normal"):
            raise TrailError(f"durability must be 'full' or 'normal', not {durability!r}")
        self.path = Path(path)
        self.durability = durability
        self.signing_key = signing_key if signing_key is not None else self.path.with_suffix(".key")
        self.checkpoint_interval_secs = checkpoint_interval_secs
        self.checkpoint_every_events = checkpoint_every_events
        self.witness_path = witness_path
        self.group = group
        # the host of the trail's own events (recovery, deliveries): the configured one
        self.host = host or socket.gethostname()
        self.recovered: Event | None = None  # the trail-recovered event this writer stored
        self._writer_lock = trailfiles.WriterLock(self.path, group)
        self._writer = False  # checked the trail's tail and holds the writers' lock
        self._signer = heads.Signer(self.signing_key)  # its seals and checkpoints (`heads`)
        self._since_checkpoint = 0  # events stored since this instance's last checkpoint
        self._unwitnessed: list[Checkpoint] = []
        self._labels = labels.LabelWriter()
        self._actors = actors.ActorWriter()
        self._label_index: bool | None = None  # whether the file has it (`_has_label_index`)
        self.applied_migrations: list[str] = []
        self._conn: sqlite3.Connection | None = None
        self._trail_id = ""
        # `legacy_ids`: read when the file is opened.
        self._legacy_until: int | None = None
        self._legacy_alerts_until: int | None = None
        self._dirty = False  # this instance stored events that no checkpoint covers yet
        self._last_checkpoint = time.monotonic()
        self._worker = Worker(self.path)  # the thread of the async API (`start()`)

    @classmethod
    def from_config(cls, config: TrailConfig, host: str | None = None) -> Self:
        return cls(
            config.path,
            durability=config.durability,
            signing_key=config.signing_key,
            checkpoint_interval_secs=config.checkpoint_interval_secs,
            checkpoint_every_events=config.checkpoint_every_events,
            witness_path=config.witness_path,
            group=config.group,
            host=host,
        )

    @property
    def trail_id(self) -> str:
        self._connection()
        return self._trail_id

    # -- sync lifecycle -------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrailError(f"{self.path}: cannot create its directory: {exc.strerror}") from exc
        with self._errors("create"):
            if not self.path.exists():
                self._create()
        if self.path.stat().st_size == 0:
            raise TrailError(
                f"{self.path}: the file is empty; a trail always holds at least its genesis "
                "checkpoint (emptied?). `docktrail verify` it; remove it to start a new trail"
            )
        with self._errors("open"):
            self._conn = opening.connect(self.path, self._setup)
        self._last_checkpoint = time.monotonic()
        if self._unwitnessed:
            self._checkpointed()  # this instance created the trail: witness its genesis

    def open_as_is(self) -> None:
        """Open the file read-only as it is: no migration, no writer's checks, nothing
        created. For a look at what a trail holds before `open()` upgrades it, which on a
        big trail can take a minute. What an older schema lacks fails as a `TrailError`."""
        if self._conn is not None:
            return
        with self._errors("open"):
            self._conn = opening.connect_as_is(self.path, self._identify)

    def _create(self) -> None:
        """Create the trail sealed by its genesis checkpoint, then put it in place
        (`opening.create`: a crash never leaves a trail file without its genesis)."""
        if not opening.create(self.path, self.group, self._setup, self._seal_genesis):
            self._unwitnessed.clear()  # another process created it first: theirs stands

    def _setup(self, conn: sqlite3.Connection, *, read_only: bool = False) -> None:
        opening.configure(conn, self.durability)
        db = Database(conn, recursive_triggers=False, execute_plugins=False)
        self.applied_migrations = apply_migrations(db, read_only=read_only)
        self._identify(conn)

    def _identify(self, conn: sqlite3.Connection) -> None:
        row = conn.execute("SELECT value FROM meta WHERE key = 'trail_id'").fetchone()
        if row is None:
            raise TamperError("meta table has no trail_id (database rewritten?)")
        self._trail_id = row[0]
        self._legacy_until = legacy_ids.legacy_until(conn)
        self._legacy_alerts_until = legacy_ids.legacy_until(conn, legacy_ids.ALERTS)

    def close(self) -> None:
        """Seal what this instance appended with a checkpoint, then close."""
        conn = self._conn
        if conn is None:
            return
        try:
            # Only a writer seals: a read-only user (query, verify) must never
            # sign on the service's behalf, perhaps with the wrong key.
            if self._dirty:
                self._checkpoint_if_moved(conn)
        finally:
            self._conn = None
            self._label_index = None
            conn.close()
            self._writer = False
            self._writer_lock.release()

    # -- writing --------------------------------------------------------------

    def append(
        self, events: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        """Store the new events of `events` and the sources' state in one transaction.

        All or nothing: a batch that fails stores neither its events nor the
        state. The state is stored even when no event is new.
        """
        return self._append(events, encode_states(source_state))

    def _append(self, events: Sequence[Event], states: list[tuple[str, str]]) -> AppendResult:
        conn = self._connection()
        if not events and not states:
            return AppendResult()
        self._ensure_writer()
        self._labels.discard()
        self._actors.discard()
        with self._errors("append"), immediate(conn):
            self._check_own_heads(conn)
            sealed, duplicates = self._insert_events(conn, events) if events else ([], 0)
            if states:
                self._put_states(conn, states)
            if sealed:
                self._seal_heads(conn)
        self._labels.committed()
        self._actors.committed()
        if sealed:
            self._dirty = True
            self._since_checkpoint += len(sealed)
            self._periodic_checkpoint()
        return AppendResult(stored=[stored for stored, _, _ in sealed], duplicates=duplicates)

    def _insert_events(
        self, conn: sqlite3.Connection, events: Sequence[Event]
    ) -> tuple[list[tuple[Event, dict[str, Any], str]], int]:
        keyed = [(e.id, e.time_ns, e.source) for e in events]
        known = dedupe.known_ids(conn, legacy_ids.EVENTS, keyed, self._legacy_until)
        fresh, duplicates = split_new(events, known)
        seq, prev_hash = heads.head(conn)
        sealed = seal(fresh, seq, prev_hash)
        insert_rows(
            conn,
            EVENT_INSERT,
            [
                (stored.seq, *copied_values(content), body, stored.prev_hash, stored.hash)
                for stored, content, body in sealed
            ],
            few_statements=self._worker.loop_busy,
        )
        if sealed:  # the actor index first: the label index reads an actor's first seq in it
            rows = (actors.content_row(content) for _, content, _ in sealed)
            self._actors.stage(conn, rows, sealed[-1][0].seq or 0)
        self._labels.stage(conn, (content for _, content, _ in sealed))
        return sealed, duplicates

    @staticmethod
    def _put_states(conn: sqlite3.Connection, states: list[tuple[str, str]]) -> None:
        now = time.time_ns()
        conn.executemany(UPSERT_STATE, [(name, value, now) for name, value in states])

    def append_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        """Store the new alerts, their deliveries and the evaluation mark in one transaction.

        `route(alert)` names the destinations of each new alert; each gets a
        pending row in the outbox (`sinks.outbox`), committed with the alert.

        Alerts whose id is stored already (a replay, a repair after a crash)
        are skipped; the new ones are sealed in place and returned. Raises
        `TrailError`, storing nothing, when an alert's `event_seq` is not the
        stored event it names, or `evaluated_through` is past the last event.
        The mark never goes backwards: a lower one is ignored.
        """
        conn = self._connection()
        if not alerts and evaluated_through is None:
            return []
        self._ensure_writer()
        with self._errors("append alerts"), immediate(conn):
            self._check_own_heads(conn)
            keyed = [(a.id, a.time_ns, a.rule) for a in alerts]
            known = dedupe.known_ids(conn, legacy_ids.ALERTS, keyed, self._legacy_alerts_until)
            fresh, _duplicates = split_new(alerts, known)
            alerting.check_event_refs(conn, fresh)
            if evaluated_through is not None:
                check_mark(evaluated_through, heads.head(conn)[0])
            sealed = seal_alerts(fresh, *heads.head(conn, "alerts"))
            alerting.insert_alerts(conn, sealed, few_statements=self._worker.loop_busy)
            if route is not None and sealed:
                outbox.enqueue(
                    conn, ((a.seq or 0, a.id, a.time_ns, route(a)) for a, _, _ in sealed)
                )
                self._record_queued(conn, sealed[0][0].seq or 0, sealed[-1][0].seq or 0)
            if evaluated_through is not None and evaluated_through > alerting.evaluation_mark(conn):
                self._put_states(conn, [mark_state(evaluated_through)])
            if sealed:
                self._seal_heads(conn)
        if sealed:
            self._dirty = True
            self._periodic_checkpoint()
        return [stored for stored, _, _ in sealed]

    def stored_alert_ids(self, alerts: Sequence[Alert]) -> set[str]:
        """Which of `alerts` the trail holds, under their ids or an older docktrail's
        (`docktrail replay` reports only the others)."""
        keyed = [(a.id, a.time_ns, a.rule) for a in alerts]
        with self._errors("look up alerts"):
            conn = self._connection()
            return dedupe.known_ids(conn, legacy_ids.ALERTS, keyed, self._legacy_alerts_until)

    def save_rule_state(self, name: str, saved: rulestate.SavedState) -> None:
        """Replace the rules' saved state `name` (derived data: `sinks.sqlite.rulestate`)."""
        conn = self._connection()
        self._ensure_writer()
        with self._errors("save rule state"), immediate(conn):
            rulestate.store(conn, name, saved)

    def load_rule_state(self, name: str) -> rulestate.SavedState | None:
        with self._errors("load rule state"):
            return rulestate.load(self._connection(), name)

    # -- reading (the rest: `reading.TrailReader`) -------------------------------

    def head(self) -> tuple[int, str]:
        """(seq, hash) of the last event; (0, GENESIS_HASH) when empty."""
        with self._errors("head"):
            return heads.head(self._connection())

    def evaluated_through(self) -> int:
        """Every event up to this seq has been evaluated by the rules (0: none)."""
        with self._errors("read evaluation mark"):
            return alerting.evaluation_mark(self._connection())

    @property
    def outbox(self) -> outbox.Outbox:
        """The deliveries of alerts to destinations (`sinks.outbox`)."""
        return outbox.Outbox(self._connection(), self._writer_transaction, self._record_delivery)

    @contextmanager
    def _writer_transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        self._ensure_writer()
        with immediate(conn):
            yield

    def _record_queued(self, conn: sqlite3.Connection, first_seq: int, last_seq: int) -> None:
        """Chain the deliveries just queued for alerts `first_seq`..`last_seq`, per destination
        and status (`queued`, or `deduplicated`: never to be sent)."""
        queued = alerting.queued_deliveries(conn, first_seq, last_seq)
        for (destination, action), ids in queued.items():
            self._chain_delivery(conn, destination, action, ids, None)

    def _record_delivery(
        self,
        conn: sqlite3.Connection,
        destination: str,
        action: str,
        ids: Sequence[int],
        attempt_id: int | None,
    ) -> None:
        """Chain one attempt's outcome for `ids` (inside the attempt's transaction)."""
        self._check_own_heads(conn)
        self._chain_delivery(conn, destination, action, ids, attempt_id)
        self._seal_heads(conn)
        self._dirty = True
        self._since_checkpoint += 1

    def _chain_delivery(
        self,
        conn: sqlite3.Connection,
        destination: str,
        action: str,
        ids: Sequence[int],
        attempt_id: int | None,
    ) -> None:
        event = alerting.delivery_event(
            self._trail_id, self.host, destination, action, ids, attempt_id
        )
        self._insert_events(conn, [event])

    def alerts_head(self) -> tuple[int, str]:
        """(seq, hash) of the last alert; (0, GENESIS_HASH) when there is none."""
        with self._errors("head"):
            return heads.head(self._connection(), "alerts")

    # -- checkpoints and the writer's own heads: `heads.Sealing`, the base ----

    # -- verify ---------------------------------------------------------------

    def verify(self, public_key: Path | None = None) -> VerifyReport:
        """Check the chain, the copied columns, the checkpoints and the triggers.

        `public_key`: a PEM file (public or private) to check signatures with;
        default: the signing key file.
        """
        conn = self._connection()
        with self._errors("verify"):
            conn.execute("BEGIN")  # one snapshot for both cursors, even while others append
            try:
                return self._verify(conn, public_key)
            finally:
                # COMMIT, not ROLLBACK: nothing was written, and a rollback would
                # abort a query the caller may still be iterating on this connection.
                conn.execute("COMMIT")

    def _verify(self, conn: sqlite3.Connection, public_key: Path | None) -> VerifyReport:
        key_path = public_key if public_key is not None else self.signing_key
        public = None  # without a key only a trail with no checkpoints can be checked
        if public_key is not None or key_path.exists():
            public = load_public_key(key_path)
        return verify_connection(conn, self._trail_id, public, key_path)

    # -- async API (TrailSink) ------------------------------------------------

    async def start(self) -> None:
        """Open on the worker thread, check the signing key, start the checkpoint timer."""
        await self._worker.start(self._start_in_worker, self._tick)

    def _start_in_worker(self) -> None:
        self.open()
        try:
            # fail at start-up, not one interval later, on a missing or wrong key
            with self._errors("start"):
                last = heads.last_key_fingerprint(self._connection())
            self._signer.key(last)
            self._ensure_writer()  # seal what a crashed writer left, before anything new
        except BaseException:
            self._dirty = False
            self.close()
            raise

    async def write(
        self, batch: Sequence[Event], *, source_state: SourceState | None = None
    ) -> AppendResult:
        # list() and encoding here: the caller may reuse its batch and change its
        # state dicts while the worker is still busy with them
        return await self._worker.run(self._append, list(batch), encode_states(source_state))

    async def write_alerts(
        self,
        alerts: Sequence[Alert],
        *,
        evaluated_through: int | None = None,
        route: Router | None = None,
    ) -> list[Alert]:
        """`append_alerts` on the worker thread."""
        append = functools.partial(
            self.append_alerts, evaluated_through=evaluated_through, route=route
        )
        return await self._worker.run(append, list(alerts))

    async def call(self, fn: Callable[[Self], T]) -> T:
        """Run `fn(self)` on the worker thread that owns the connection."""
        return await self._worker.run(fn, self)

    async def aclose(self) -> None:
        await self._worker.stop(self.close)

    async def _tick(self) -> None:
        # Seals the tail when appends stop: append() only checks the interval itself.
        while True:
            await asyncio.sleep(self.checkpoint_interval_secs)
            await self._worker.run(self._periodic_checkpoint)
