"""The live Docker Engine source (`DockerSource`, for `docktrail run`).

What it records:

* Every Engine event, read on a thread of its own (dockerd skips a reader
  that lags 100 ms), each inspected container `create`/`start` with its
  security settings in `event.config` (`container_config_from_inspect`;
  `attributes.inspect = "gone"` when the container was removed first; a
  container made from a bare image id also gets the names of that image or of
  its nearest named ancestor, `image_references`, and bind sources that are
  Unix sockets, `socket_sources`), each image event with its id, tags and
  digests, and each `exec_start` with the exec's user, privilege, terminal and
  command from `GET /exec/{id}/json` (`exec_config_from_inspect`).
* Per connection, a `docktrail` `daemon`/`connected` event: the daemon's id,
  name, versions. Reading resumes at the last stored `timeNano` (`since`).
* A `docktrail` `daemon`/`gap` event naming the window (`from_ns`,
  `until_ns`) where events may have been missed. dockerd keeps its last 256
  events for replay; after a (re)connect or a stall the source reads that
  buffer (`since=0`), which proves nothing was lost when it reaches back to
  the last event we have. Otherwise the window between that event and the
  oldest buffered one is the gap. Stalls: a paused process (SIGSTOP, an
  overloaded host) is noticed by `StallWatchdog`; events queued for us before
  the pause still arrive, so the gap starts after the last of those.
* After a (re)connect, and after a stall that lost events, `docktrail`
  `observed` events for containers (`attributes.change`: appeared,
  disappeared, started, stopped, restarted) and images (appeared,
  disappeared) whose state differs from what the trail knows
  (`KnownState`). Objects with an event newer than the listing are left out.
  The missed Engine events themselves are never invented.
* A posture sweep after every connect and every `docker.sweep_interval_secs`
  (`sweep`): the running containers the trail knows are inspected, and each
  whose security configuration was not judged yet (it differs from the last
  one of its `create`, `observed` or `posture` events, by `config_fingerprint`)
  is recorded as a `docktrail` container `posture` event with that
  configuration, for the container-config rules. Its id derives from (host,
  container, fingerprint), so a configuration is recorded once per container
  even if two sweeps race.

Threads and who does what:

* one reader thread per connection (`EventStream`) iterates docker-py's
  `/events` stream and hands each raw dict to the event loop; nothing else,
  because dockerd skips a subscriber that lags 100 ms;
* one watchdog thread (`StallWatchdog`) notices when the whole process was
  paused (SIGSTOP, an overloaded host), which is when dockerd skips us;
* a small pool of worker threads runs every other Engine call (connect,
  list, inspect, bounded re-reads of the Engine's event buffer, the sweeps'
  inspects);
* the event loop normalises, deduplicates, keeps what is known about the
  host's containers and images, and hands events to the pipeline in stream
  order per object, each after its inspect result (started at once) is in.

The neighbours: `docker` normalises the Engine's events, `docker_engine`
makes the Engine calls, `docker_inspect` reads inspect data and
`docker_state` holds what the trail knows (`KnownState`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import threading
import time
from asyncio import FIRST_COMPLETED
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from config.errors import InputError, SourceError
from listener import redact
from listener.bounds import bound_event
from listener.model.containerconfig import ContainerConfig
from listener.model.event import Actor, Event, Launch, format_time_ns, natural_id
from listener.rules.activity import config_fingerprint
from listener.sources.docker import _who_from_labels, _why_from_labels, normalize_engine_event
from listener.sources.docker_engine import (
    DaemonIdentity,
    Engine,
    EngineClient,
    describe_error,
    parse_engine_time_ns,
    since_arg,
)
from listener.sources.docker_files import EngineFiles
from listener.sources.docker_inspect import (
    _image_attributes,
    container_config_from_inspect,
    container_launch,
    exec_config_from_inspect,
    words,
)
from listener.sources.docker_state import _RECENT_IDS, KnownState, _listed_state

if TYPE_CHECKING:
    from config.models import DockerConfig

_T = TypeVar("_T")

# The name the live source has always logged under (it was part of `docker`).
log = logging.getLogger("listener.sources.docker")

_NS = 1_000_000_000

_ENGINE_PUBLISH_TIMEOUT_NS = 100_000_000  # dockerd drops an event for a reader after this
_REPLAY_OVERLAP_NS = 1_000_000  # resume a little early: concurrent events may be out of order
_WATCHDOG_TICK_SECS = 0.05
_WATCHDOG_TICK_NS = int(_WATCHDOG_TICK_SECS * _NS)
_DRAIN_IDLE_SECS = 0.3  # a stalled stream's backlog counts as read after this much quiet
_DRAIN_MAX_SECS = 5.0
_IMAGE_RESOLVE_ACTIONS = frozenset({"pull", "push", "tag", "untag", "import", "load", "save"})


class _RecentIds:
    """Ids handed on lately: a replay after a reconnect or stall repeats some."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> bool:
        """True when `event_id` is new."""
        if event_id in self._ids:
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._size:
            self._ids.popitem(last=False)
        return True


# --------------------------------------------------------------------------- threads


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The reader thread's last word: the connection is over (error, or closed by us)."""

    stream: EventStream
    error: str | None


@dataclass(frozen=True, slots=True)
class Stall:
    """The process did not run for `secs`: the Engine may have skipped events after `since_ns`.

    `stream` is the connection it happened to; a stall of an earlier connection
    is left to that reconnect's reconciliation.
    """

    since_ns: int
    resumed_ns: int
    secs: float
    stream: object = None


class EventStream:
    """The reader thread of one connection. It reads and hands over; it does nothing slow."""

    def __init__(
        self,
        stream: Any,
        release: Callable[[], None],
        since_ns: int,
        deliver: Callable[[object], None],
    ) -> None:
        self.last_time_ns = since_ns  # highest timeNano handed over (read by the watchdog)
        self.last_read = time.monotonic()
        self._stream = stream
        self._release = release
        self._deliver = deliver
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="docker-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Ends the stream from any thread; the reader then delivers `StreamEnded`."""
        self._closed = True
        with contextlib.suppress(Exception):  # already closed by the Engine
            self._stream.close()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        error: str | None = None
        try:
            for raw in self._stream:
                self.last_read = time.monotonic()
                time_nano = raw.get("timeNano") if isinstance(raw, dict) else None
                if isinstance(time_nano, int) and time_nano > self.last_time_ns:
                    self.last_time_ns = time_nano
                self._deliver(raw)
        except Exception as exc:  # any failure ends this connection; the loop reconnects
            error = describe_error(exc)
        if error is None and not self._closed:
            error = "the Engine closed the events stream"
        with contextlib.suppress(Exception):
            self._release()
        self._deliver(StreamEnded(self, None if self._closed else error))


class StallWatchdog:
    """Notices that the whole process was paused, from a jump of the monotonic clock.

    dockerd gives each reader a 1024-event queue and drops an event for a reader
    whose queue stays full for 100 ms; nothing tells the reader. A thread of its
    own, because a busy event loop is not a stall (the reader thread kept
    reading) while a stopped process is.
    """

    def __init__(
        self,
        threshold_secs: float,
        current: Callable[[], EventStream | None],
        deliver: Callable[[object], None],
    ) -> None:
        self._threshold = threshold_secs
        self._current = current
        self._deliver = deliver
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="docker-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        previous = time.monotonic()
        stream = self._current()
        seen = stream.last_time_ns if stream is not None else 0
        while not self._stop.wait(_WATCHDOG_TICK_SECS):
            now = time.monotonic()
            if now - previous > self._threshold and stream is not None:
                resumed = time.time_ns()
                self._deliver(Stall(seen, resumed, now - previous, stream))
            previous = now
            stream = self._current()  # what had been read when the next pause begins
            seen = stream.last_time_ns if stream is not None else 0


# --------------------------------------------------------------------------- source

Emit = Callable[[Event], Awaitable[None]]
# Told the running containers the trail knows (their listing) at each sweep; returns events.
OnRunning = Callable[[list[dict[str, Any]]], list[Event]]
# Each sweep, given the Engine and the sweep's reason: more checks' events (`listener.posture`).
OnSweep = Callable[[Engine, str], Awaitable[list[Event]]]
_STOP = object()


@dataclass(slots=True)
class SourceStats:
    events: int = 0  # Engine events handed on
    repeated: int = 0  # Engine events seen again (replays after a reconnect or stall)
    malformed: int = 0
    connections: int = 0
    gaps: int = 0
    stalls: int = 0
    observed: int = 0
    inspect_gone: int = 0
    inspect_failed: int = 0
    sweeps: int = 0  # posture sweeps done
    posture: int = 0  # containers a sweep recorded (configuration not judged before)


@dataclass(slots=True)
class Enrichment:
    """What an inspect adds to an event: `config`, and attributes (or why there is none)."""

    config: dict[str, Any] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    launch: Launch | None = None  # for attribution only, never stored

    def apply(self, event: Event) -> None:
        if self.config is not None:
            event.config = self.config
        if self.launch is not None:
            event.note_launch(self.launch)
        event.attributes.update(self.attributes)


def _bound_enriched(event: Event) -> None:
    """What inspect added is Engine data too: redacted and bounded like the event.

    A value that cannot be stored drops the configuration, not the event.
    """
    redact.active().event(event)
    try:
        bound_event(event, surrogates="escape")
    except InputError as exc:
        log.warning(f"dropped the inspect data of {event.type} {event.action}: {exc}")
        event.config = {}
        event.attributes["inspect"] = "failed"
        event.attributes["inspect_error"] = str(exc)[:200]
        bound_event(event, surrogates="escape")  # the event itself was bounded already


@dataclass(slots=True)
class _Drain:
    """After a stall: the stream first delivers its backlog from before, then live events."""

    cutoff_ns: int  # events older than this were queued for us before the stall
    prefix_end_ns: int  # the newest of them the stream has delivered so far
    done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(slots=True)
class _Pending:
    event: Event
    enrichment: asyncio.Future[Enrichment] | None = None
    # A posture event: dropped when, by its turn, its configuration has been judged
    # (the create of a new container, held behind its inspect, came first).
    judge_once: bool = False

    @property
    def waiting(self) -> bool:
        return self.enrichment is not None and not self.enrichment.done()


class _ObjectOrder:
    """Stream order per object: an event waits for the inspects of its own object only.

    A container's create is inspected at once, but dockerd answers that inspect
    only after a start in progress finishes (both take the container's lock),
    and a start can take seconds. Holding every event of the host behind it
    would delay them all; holding the container's own events keeps its story
    in order (create with its config, then start, …).
    """

    def __init__(self) -> None:
        self.ready: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._held: dict[tuple[str, str], deque[_Pending]] = {}

    def put(self, pending: _Pending) -> None:
        key = (pending.event.type, pending.event.actor.id)
        held = self._held.get(key)
        if held is not None:
            held.append(pending)
        elif pending.waiting:
            self._held[key] = deque([pending])
            self._release_when_done(key, pending)
        else:
            self.ready.put_nowait(pending)

    async def drain(self) -> None:
        """Waits until no event is held (shutting down: every inspect finishes)."""
        while self._held:
            waiting = [
                p.enrichment
                for held in self._held.values()
                for p in held
                if p.enrichment is not None and not p.enrichment.done()
            ]
            if waiting:
                await asyncio.wait(waiting)
            await asyncio.sleep(0)  # lets their done-callbacks release the events

    def _release_when_done(self, key: tuple[str, str], pending: _Pending) -> None:
        assert pending.enrichment is not None
        pending.enrichment.add_done_callback(lambda _: self._release(key))

    def _release(self, key: tuple[str, str]) -> None:
        held = self._held[key]
        while held:
            if held[0].waiting:
                self._release_when_done(key, held[0])
                return
            self.ready.put_nowait(held.popleft())
        del self._held[key]


class DockerSource:
    """The live Docker Engine source of `docktrail run`.

    `await run()` connects (retrying with backoff while the Engine is away),
    records the daemon's identity, reconciles, and follows the events stream
    until `stop()`. Every event goes to `emit` (the pipeline's `put`) in stream
    order per object (`_ObjectOrder`). `known` is what the trail knows about
    this host (`KnownState`): its `last_docker_ns` is where reading resumes.

    The service opens the stream before it has restored what the trail knows
    (`wire_later`, then `wired`): on a long trail that takes a second or more,
    and the Engine keeps only its last 256 events for a reader that comes late.
    The stream is read into the queue meanwhile; nothing is reconciled or handed
    on before `wired`.
    """

    def __init__(
        self,
        config: DockerConfig,
        host: str,
        emit: Emit,
        *,
        known: KnownState | None = None,
        engine: Engine | None = None,
        on_running: OnRunning | None = None,
        on_sweep: OnSweep | None = None,
    ) -> None:
        self.config = config
        self.on_sweep = on_sweep
        self.on_running = on_running  # each sweep: events about the running containers
        self.host = host
        self.known = known if known is not None else KnownState()
        self.engine = (
            engine if engine is not None else EngineClient(config.host, config.timeout_secs)
        )
        self.identity: DaemonIdentity | None = None
        self.files: EngineFiles | None = None  # where new containers are read at once
        self.stats = SourceStats()
        self.connected = asyncio.Event()  # set while a stream is being followed
        self._emit = emit
        self._horizon_ns = self.known.last_docker_ns  # everything up to here is in hand
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._order = _ObjectOrder()
        self._recent = _RecentIds(_RECENT_IDS)
        self._stream: EventStream | None = None
        self._drains: list[_Drain] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._image_digests: dict[str, list[str]] = {}
        self._image_launch: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._sweep_wanted = asyncio.Event()  # a connect asks for a sweep
        self._sweep_reason = "periodic"
        self._wired = asyncio.Event()  # what the trail knows is in hand (see `wire_later`)
        self._wired.set()

    def wire_later(self, horizon_ns: int | None) -> None:
        """Before `run()`: read the Engine from `horizon_ns` (the last stored Engine
        event's time) at once, and hand nothing on until `wired()`."""
        self._horizon_ns = horizon_ns
        self._wired.clear()

    def wired(
        self,
        emit: Emit,
        known: KnownState,
        *,
        on_running: OnRunning | None = None,
        on_sweep: OnSweep | None = None,
    ) -> None:
        """What `wire_later` waited for: where events go and what the trail knows."""
        self._emit, self.known = emit, known
        self.on_running, self.on_sweep = on_running, on_sweep
        self._wired.set()

    def queue_depth(self) -> int:
        """Engine events read and not yet handed on."""
        return self._queue.qsize()

    # ------------------------------------------------------------------ life cycle

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(
            self.config.inspect_workers, thread_name_prefix="docker-api"
        )
        watchdog = StallWatchdog(
            self.config.stall_threshold_secs, self._current_stream, self._deliver
        )
        watchdog.start()
        emitter = asyncio.create_task(self._emit_in_order(), name="docker-emit")
        connection = asyncio.create_task(self._connection_loop(), name="docker-connection")
        if self.config.sweep_interval_secs > 0:
            self._spawn(self._sweep_loop())
        try:
            done, _ = await asyncio.wait({connection, emitter}, return_when=FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended it early: a refused write, a bug
        finally:
            watchdog.stop()
            await self._shut_down(connection, emitter)

    def report_stall(self, stall: Stall) -> None:
        """Checks for events the Engine skipped during `stall` (the watchdog finds them)."""
        self._queue.put_nowait(stall)

    def stop(self) -> None:
        """Ends `run()` after what was read is handed on. Call from the event loop."""
        self._stopping.set()
        self._queue.put_nowait(_STOP)
        if self._stream is not None:
            self._stream.close()

    async def _shut_down(self, connection: asyncio.Task[None], emitter: asyncio.Task[None]) -> None:
        self._stopping.set()
        for task in (connection, *self._tasks):
            task.cancel()
        await asyncio.gather(connection, *self._tasks, return_exceptions=True)
        stream = self._stream
        self._close_stream()
        if stream is not None:
            await asyncio.to_thread(stream.join, 2.0)
        if not emitter.done():
            await self._order.drain()
            self._order.ready.put_nowait(None)
            await emitter
        assert self._executor is not None
        self._executor.shutdown(wait=False, cancel_futures=True)
        await asyncio.to_thread(self.engine.close)

    # ------------------------------------------------------------------ connections

    async def _connection_loop(self) -> None:
        delay = self.config.reconnect_min_secs
        while not self._stopping.is_set():
            try:
                await self._connect()
            except SourceError as exc:
                self._close_stream()
                fields = {"docker_host": self.engine.host}
                if str(exc).startswith("Docker Engine not reachable"):
                    fields["fix"] = _FIX
                log.warning(f"{exc}; retrying in {delay:g}s", extra={"fields": fields})
                await self._sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_secs)
                continue
            delay = self.config.reconnect_min_secs
            if not self._wired.is_set():
                return
            error = await self._follow()
            if error is not None:
                log.warning(
                    f"lost the Docker Engine at {self.engine.host}: {error}; reconnecting",
                    extra={"fields": {"docker_host": self.engine.host}},
                )

    async def _connect(self) -> None:
        identity = await self._call(self.engine.connect)
        reason = "start" if self.stats.connections == 0 else "reconnect"
        self.stats.connections += 1
        self.identity = identity
        if self.config.read_engine_files:
            host = str(getattr(self.engine, "host", ""))
            self.files = await asyncio.to_thread(EngineFiles.for_engine, host, identity.data_root)
        horizon = self._horizon_ns
        opened_ns = self._engine_now()
        since_ns = (opened_ns if horizon is None else horizon) - _REPLAY_OVERLAP_NS
        raw_stream, release = await self._call(self.engine.open_events, since_ns)
        self._stream = EventStream(raw_stream, release, horizon or opened_ns, self._deliver)
        self._stream.start()
        log.info(
            "connected to the Docker Engine",
            extra={"fields": {"docker_host": self.engine.host, "daemon": identity.name,
                              "daemon_id": identity.id, "version": identity.server_version,
                              "api": identity.api_version, "since": since_arg(since_ns)}},
        )  # fmt: skip
        waited = not self._wired.is_set()
        await self._until_wired()  # the stream is read into the queue meanwhile
        if not self._wired.is_set():
            return  # stopped first: nothing is handed on
        self._put(self._daemon_event("connected", {"since": since_arg(since_ns)}))
        read_oldest = self._hand_on_read() if waited else None
        await self._reconcile(reason, horizon, replay_from_ns=since_ns, read_oldest=read_oldest)
        self._sweep_reason = reason
        self._sweep_wanted.set()

    async def _until_wired(self) -> None:
        """Returns at `wired()`, or at `stop()` before it."""
        if self._wired.is_set():
            return
        waits = {asyncio.create_task(event.wait()) for event in (self._wired, self._stopping)}
        try:
            await asyncio.wait(waits, return_when=FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    def _hand_on_read(self) -> int | None:
        """Hands on the stream's events read while the source waited for `wired`, in
        stream order and before the reconciliation's look at the Engine's buffer (which
        no longer holds the older ones); the oldest one's time.

        An end of the stream or a stall stays queued for `_follow`, with what came after it.
        """
        oldest: int | None = None
        kept: list[object] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if kept or item is _STOP or isinstance(item, StreamEnded | Stall):
                kept.append(item)
                continue
            time_nano = item.get("timeNano") if isinstance(item, dict) else None
            if isinstance(time_nano, int):
                oldest = time_nano if oldest is None else min(oldest, time_nano)
            self._on_stream_event(item)
        for item in kept:
            self._queue.put_nowait(item)
        return oldest

    async def _follow(self) -> str | None:
        """Hands on the stream's events until it ends (its error) or `stop()` (None)."""
        self.connected.set()
        try:
            while True:
                item = await self._queue.get()
                if item is _STOP:
                    return None
                if isinstance(item, StreamEnded):
                    if item.stream is self._stream:
                        self._stream = None
                        return item.error
                elif isinstance(item, Stall):
                    if item.stream is None or item.stream is self._stream:
                        self._spawn(self._recover_from_stall(item))
                else:
                    self._on_stream_event(item)
        finally:
            self.connected.clear()

    def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    # ------------------------------------------------------------------ events

    def _deliver(self, item: object) -> None:
        """From the reader and watchdog threads into the loop's queue; never blocks."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: we are shutting down
            loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _on_stream_event(self, raw: object) -> None:
        time_nano = raw.get("timeNano") if isinstance(raw, dict) else None
        if isinstance(time_nano, int):
            for drain in self._drains:
                if time_nano >= drain.cutoff_ns:
                    drain.done.set()
                else:
                    drain.prefix_end_ns = max(drain.prefix_end_ns, time_nano)
            self._horizon_ns = max(self._horizon_ns or 0, time_nano)
        self._handle_raw(raw)

    def _handle_raw(self, raw: object) -> bool:
        """Hands on one Engine event; False when it was malformed or seen before."""
        try:
            event = normalize_engine_event(raw, self.host)  # type: ignore[arg-type]
        except InputError as exc:
            self.stats.malformed += 1
            log.warning(f"skipped an Engine event: {exc}", extra={"fields": {"raw": raw}})
            return False
        if not self._recent.add(event.id):
            self.stats.repeated += 1
            return False
        self.stats.events += 1
        self.known.apply(event)
        self._order.put(_Pending(event, self._start_enrichment(event)))
        return True

    def _put(self, event: Event) -> None:
        """A docktrail event, in order with the Engine's."""
        self.known.apply(event)
        self._order.put(_Pending(event))

    async def _emit_in_order(self) -> None:
        while (pending := await self._order.ready.get()) is not None:
            if pending.judge_once and not self._not_judged(pending.event):
                continue
            if pending.enrichment is not None:
                enrichment = _enrichment_result(pending.enrichment)
                enrichment.apply(pending.event)
                _bound_enriched(pending.event)
                outcome = enrichment.attributes.get("inspect")
                self.stats.inspect_gone += outcome == "gone"
                self.stats.inspect_failed += outcome == "failed"
                if outcome == "failed":
                    log.warning(
                        f"stored {pending.event.type} {pending.event.action} without inspect: "
                        f"{enrichment.attributes.get('inspect_error')}"
                    )
            self.known.judged(pending.event)  # a create's configuration comes with its inspect
            await self._emit(pending.event)

    def _replay(self, buffer: list[dict[str, Any]], from_ns: int) -> int:
        """Hands on the buffer's events from `from_ns` on; how many were new."""
        new = 0
        for raw in buffer:
            time_nano = raw.get("timeNano")
            if isinstance(time_nano, int) and time_nano >= from_ns:
                new += self._handle_raw(raw)
        return new

    # ------------------------------------------------------------------ enrichment

    def _start_enrichment(self, event: Event) -> asyncio.Future[Enrichment] | None:
        """Starts the inspect an event needs at once (a `--rm` job is gone soon)."""
        if event.type == "container" and event.action == "create":
            return self._submit(self._describe_created, event.actor.id)
        if event.type == "container" and event.action == "start":
            return self._submit(self._inspect_container, event.actor.id)
        if event.type == "image" and event.action in _IMAGE_RESOLVE_ACTIONS and event.actor.id:
            return self._submit(self._resolve_image, event.actor.id)
        exec_id = event.attributes.get("execID")
        if event.type == "container" and event.action in _EXEC_ACTIONS and exec_id:
            return self._submit(self._inspect_exec, str(exec_id))
        return None

    def _inspect_exec(self, exec_id: str) -> Enrichment:
        """Worker thread: who an exec runs as and how, from the Engine alone."""
        inspect = getattr(self.engine, "inspect_exec", None)
        if inspect is None:
            return Enrichment()
        try:
            data = inspect(exec_id)
        except SourceError as exc:
            return Enrichment(attributes={"inspect": "failed", "inspect_error": str(exc)})
        if data is None:
            return Enrichment(attributes={"inspect": "gone"})
        pid = data.get("Pid")  # the exec's first process on the host: its session's root
        attributes = {"exec_pid": pid} if isinstance(pid, int) and pid > 0 else {}
        return Enrichment(config=exec_config_from_inspect(data), attributes=attributes)

    def _describe_created(self, container_id: str) -> Enrichment:
        """Worker thread: a new container's config from the Engine's files when they can
        be read (at once), else from its inspect (after any start in progress)."""
        files = self.files
        data = files.created(container_id) if files is not None else None
        if data is None:
            return self._inspect_container(container_id)
        try:
            enrichment = self._enrichment(data)
        except SourceError:  # the image's inspect: the container's then says it all
            return self._inspect_container(container_id)
        enrichment.attributes["inspect"] = "engine-files"
        return enrichment

    def _inspect_container(self, container_id: str) -> Enrichment:
        """Worker thread: the container's config, or why there is none."""
        return self._inspect_with_config(container_id)[1]

    def _inspect_with_config(self, container_id: str) -> tuple[dict[str, Any] | None, Enrichment]:
        """Worker thread: inspect data (None when gone or failed) and what it adds to an event."""
        try:
            data = self.engine.inspect_container(container_id)
            if data is None:
                return None, Enrichment(attributes={"inspect": "gone"})
            return data, self._enrichment(data)
        except SourceError as exc:
            return None, Enrichment(attributes={"inspect": "failed", "inspect_error": str(exc)})

    def _enrichment(self, data: Mapping[str, Any]) -> Enrichment:
        """Worker thread: what a container's inspect data adds to its event."""
        digests = self._repo_digests(str(data.get("Image") or ""))
        config = container_config_from_inspect(data, digests)
        config.socket_sources = _socket_sources(config)
        if config.image and _is_image_id(config.image):
            with contextlib.suppress(SourceError):  # then judged by the id alone
                config.image_references, config.image_intermediate = self._image_names(config.image)
        launch = container_launch(data, self._image_launch.get(str(data.get("Image") or "")))
        return Enrichment(config=config.as_event_config(), launch=launch)

    def _image_names(self, image_id: str) -> tuple[list[str], bool]:
        """Worker thread: the tags and digests of an image given by id; for an unnamed
        classic build step, those of its nearest named ancestor (intermediate: True)."""
        current, steps = image_id, 0
        while current and steps < _MAX_IMAGE_ANCESTRY:
            data = self.engine.inspect_image(current) or {}
            names = [*(data.get("RepoTags") or []), *(data.get("RepoDigests") or [])]
            names = [str(n) for n in names if n and not str(n).startswith("<none>")]
            if names:
                return names, steps > 0
            current, steps = str(data.get("Parent") or ""), steps + 1
        return [], False

    def _repo_digests(self, image_id: str) -> list[str]:
        if not image_id:
            return []
        if image_id not in self._image_digests:
            data = self.engine.inspect_image(image_id)
            if len(self._image_digests) > 1024:
                self._image_digests.clear()
                self._image_launch.clear()
            self._image_digests[image_id] = list((data or {}).get("RepoDigests") or [])
            if data is not None:
                image_config = data.get("Config") or {}
                self._image_launch[image_id] = (
                    words(image_config.get("Entrypoint")),
                    words(image_config.get("Cmd")),
                )
        return self._image_digests[image_id]

    def _resolve_image(self, reference: str) -> Enrichment:
        """Worker thread: an image event's id, tags and digests."""
        try:
            data = self.engine.inspect_image(reference)
        except SourceError as exc:
            return Enrichment(attributes={"inspect": "failed", "inspect_error": str(exc)})
        if data is None:
            return Enrichment(attributes={"inspect": "gone"})
        return Enrichment(attributes=_image_attributes(data))

    # ------------------------------------------------------------------ gaps

    async def _reconcile(
        self, reason: str, horizon: int | None, replay_from_ns: int, read_oldest: int | None = None
    ) -> None:
        """Lists the host, reads the Engine's replay buffer, records what may be lost.

        The buffer is read after the listing, and its events are handed on
        before comparing, so that a change the listing shows is explained by
        its event when the Engine still has it. `read_oldest`: the oldest event
        the stream already handed on (`_hand_on_read`); nothing after it is lost.
        """
        listed_at = self._engine_now()
        containers, images = await self._call(self._list_host)
        until = self._engine_now()
        buffer = await self._call(self.engine.buffered_events, until)
        self._replay(buffer, replay_from_ns)
        oldest = min((t for t in (_oldest(buffer), read_oldest) if t is not None), default=None)
        if horizon is not None and (oldest is None or oldest > horizon):
            # dockerd only has the events after `oldest` (it restarted, or more than
            # 256 happened): those between the last one we have and it may be lost.
            self._record_gap(horizon, oldest if oldest is not None else until, reason)
        self._horizon_ns = max(self._horizon_ns or 0, until)
        await self._compare(containers, images, listed_at, reason)

    async def _recover_from_stall(self, stall: Stall) -> None:
        """Reads the Engine's replay buffer again after a stall; a gap when it falls short."""
        self.stats.stalls += 1
        skew = self.identity.clock_offset_ns if self.identity else 0
        # Events queued for us before the pause: older than its end, less the time
        # dockerd waits on a full queue, less the watchdog's own delay.
        cutoff = stall.resumed_ns + skew - _ENGINE_PUBLISH_TIMEOUT_NS - 3 * _WATCHDOG_TICK_NS
        drain = _Drain(cutoff_ns=cutoff, prefix_end_ns=stall.since_ns)
        self._drains.append(drain)
        log.warning(
            f"docktrail did not run for {stall.secs:.1f}s: reading the Engine's events again",
            extra={"fields": {"since": since_arg(stall.since_ns)}},
        )
        try:
            # Read the buffer at once, before more events push the missed ones out;
            # hand it on after the stream's backlog, which holds most of them.
            buffer = await self._call(self.engine.buffered_events, self._engine_now())
            await self._wait_drained(drain)
            recovered = self._replay(buffer, stall.since_ns - _REPLAY_OVERLAP_NS)
            oldest = _oldest(buffer)
            # Lost: events after the last one the stream had queued before the
            # pause, older than anything the buffer still holds.
            covered = oldest is None or oldest <= drain.prefix_end_ns
            log.info(
                "stall checked: " + ("nothing lost" if covered else "events may be lost"),
                extra={"fields": {"recovered": recovered, "buffered": len(buffer)}},
            )
            if covered:
                return
            assert oldest is not None
            self._record_gap(drain.prefix_end_ns, oldest, "stall")
            listed_at = self._engine_now()
            containers, images = await self._call(self._list_host)
            await self._compare(containers, images, listed_at, "stall")
        except SourceError as exc:
            # The connection is failing too: its reconnect reconciles.
            log.warning(f"could not check the stall: {exc}")
        finally:
            self._drains.remove(drain)

    async def _wait_drained(self, drain: _Drain) -> None:
        """Until the backlog from before the stall is read (or the stream is quiet)."""
        started = time.monotonic()
        while not drain.done.is_set() and time.monotonic() - started < _DRAIN_MAX_SECS:
            stream = self._stream
            quiet = stream is None or time.monotonic() - stream.last_read > _DRAIN_IDLE_SECS
            if quiet and self._queue.empty():
                return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):
                    await drain.done.wait()

    def _record_gap(self, from_ns: int, until_ns: int, reason: str) -> None:
        self.stats.gaps += 1
        window = {"from": format_time_ns(from_ns), "until": format_time_ns(until_ns)}
        log.warning(
            "events of the Docker Engine may be missing: recorded a gap",
            extra={"fields": {**window, "reason": reason}},
        )
        attributes = {"from_ns": from_ns, "until_ns": until_ns, **window, "reason": reason}
        self._put(self._daemon_event("gap", attributes))

    # ------------------------------------------------------------------ reconciliation

    def _list_host(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return self.engine.containers(), self.engine.images()

    async def _compare(
        self,
        containers: list[dict[str, Any]],
        images: list[dict[str, Any]],
        listed_at: int,
        reason: str,
    ) -> None:
        """Stores an `observed` event for each difference between the listing and `known`.

        Objects with an event since `listed_at` are left out: that event says
        more than the listing does.
        """
        changes = self._container_changes(containers, listed_at)
        inspected = await asyncio.gather(*(self._inspect_change(cid, c) for cid, c, _ in changes))
        for (cid, change, listed), (data, enrichment) in zip(changes, inspected, strict=True):
            known = self.known.containers.get(cid)
            if known is not None and known.last_event_ns >= listed_at:
                continue  # an event came in while we inspected: it says more
            event = self._observed_container(cid, change, listed, data, enrichment, reason)
            if event is not None:
                self._put(event)
        for event in self._image_changes(images, listed_at, reason):
            self._put(event)

    def _container_changes(
        self, containers: list[dict[str, Any]], listed_at: int
    ) -> list[tuple[str, str, dict[str, Any] | None]]:
        """(id, change, listing) of containers to look at; `restarted?` needs an inspect."""
        changes: list[tuple[str, str, dict[str, Any] | None]] = []
        listed = {str(c.get("Id")): c for c in containers}
        for cid, item in listed.items():
            known = self.known.containers.get(cid)
            if known is None:
                if not self.known.removed_since(cid, listed_at):
                    changes.append((cid, "appeared", item))
                continue
            if known.last_event_ns >= listed_at or known.state is None:
                continue
            state = _listed_state(item.get("State"))
            if state == "running" and known.state != "running":
                changes.append((cid, "started", item))
            elif state != "running" and known.state == "running":
                changes.append((cid, "stopped", item))
            elif state == "running" and known.started_ns is not None:
                changes.append((cid, "restarted?", item))
        for cid, known in self.known.containers.items():
            if cid not in listed and known.last_event_ns < listed_at:
                changes.append((cid, "disappeared", None))
        return changes

    async def _inspect_change(
        self, container_id: str, change: str
    ) -> tuple[dict[str, Any] | None, Enrichment]:
        if change == "disappeared":
            return None, Enrichment()
        return await self._call(self._inspect_with_config, container_id)

    def _observed_container(
        self,
        cid: str,
        change: str,
        listed: dict[str, Any] | None,
        data: dict[str, Any] | None,
        enrichment: Enrichment,
        reason: str,
    ) -> Event | None:
        known = self.known.containers.get(cid)
        state_info: Mapping[str, Any] = (data or {}).get("State") or {}
        started_ns = parse_engine_time_ns(state_info.get("StartedAt"))
        if change == "restarted?":
            if known is None or started_ns is None or started_ns <= (known.started_ns or 0):
                return None
            change = "restarted"
        state = _listed_state(listed.get("State")) if listed is not None else "gone"
        attributes: dict[str, Any] = {
            "change": change,
            "reason": reason,
            "state": state,
            "previous_state": known.state if known is not None else None,
        }
        if listed is not None:
            attributes["status"] = str(listed.get("Status") or "")
            attributes["labels"] = dict(listed.get("Labels") or {})
        attributes.update(_state_attributes(state_info, started_ns))
        if change != "disappeared":
            attributes.update(enrichment.attributes)
        name = _container_name(listed, data) or (known.name if known else None)
        image = (listed or {}).get("Image") or (known.image if known else None)
        event = self._observed("container", cid, change, name, image, attributes)
        event.config = enrichment.config or {}
        return event

    def _image_changes(
        self, images: list[dict[str, Any]], listed_at: int, reason: str
    ) -> Iterator[Event]:
        listed = {str(image.get("Id")): image for image in images}
        for image_id, item in listed.items():
            if image_id in self.known.images or self.known.removed_since(image_id, listed_at):
                continue
            attributes = {"change": "appeared", "reason": reason, **_image_attributes(item)}
            yield self._observed(
                "image", image_id, "appeared", _image_name(item, image_id), None, attributes
            )
        for image_id, last_event in list(self.known.images.items()):
            if image_id not in listed and last_event < listed_at:
                attributes = {"change": "disappeared", "reason": reason, "image_id": image_id}
                yield self._observed("image", image_id, "disappeared", image_id, None, attributes)

    # ------------------------------------------------------------------ posture sweep

    async def sweep(self, reason: str = "periodic") -> int:
        """Records each running container whose configuration was not judged yet.

        Lists the containers, inspects the running ones the trail knows (in the
        worker threads) and hands on a `posture` event for each whose security
        configuration has another fingerprint than the last one judged. A
        container the trail does not know yet is left to its `create` event or
        to a reconciliation's `observed` one. Returns how many were handed on.
        Raises `SourceError` when the Engine cannot list its containers.
        """
        listed = await self._call(self.engine.containers)
        running = [
            item
            for item in listed
            if _listed_state(item.get("State")) == "running"
            and str(item.get("Id")) in self.known.containers
        ]
        if self.on_running is not None:
            for found in self.on_running(running):
                self._order.put(_Pending(found))
        if self.on_sweep is not None:
            for found in await self.on_sweep(self.engine, reason):
                self._order.put(_Pending(found))
        inspected = await asyncio.gather(
            *(self._call(self._inspect_with_config, str(item.get("Id"))) for item in running)
        )
        recorded = 0
        for item, (data, enrichment) in zip(running, inspected, strict=True):
            event = self._posture_event(item, data, enrichment, reason)
            if event is not None:
                self._order.put(_Pending(event, judge_once=True))
                recorded += 1
        self.stats.sweeps += 1
        return recorded

    def want_sweep(self, reason: str) -> None:
        """Ask the sweep loop for a sweep now (a deployment expires)."""
        self._sweep_reason = reason
        self._sweep_wanted.set()

    async def _sweep_loop(self) -> None:
        """A sweep after every connect and every `sweep_interval_secs` after the last one."""
        await self._until_wired()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.sweep_interval_secs):
                    await self._sweep_wanted.wait()
            if self._stopping.is_set():
                return
            reason, self._sweep_reason = self._sweep_reason, "periodic"
            self._sweep_wanted.clear()
            try:
                recorded = await self.sweep(reason)
            except SourceError as exc:  # the Engine is away: its reconnect asks again
                log.warning(f"posture sweep skipped: {exc}")
                continue
            except Exception:  # a bug must not end the sweeps, nor the source
                log.exception("posture sweep failed")
                continue
            log.log(
                logging.INFO if recorded else logging.DEBUG,
                "posture sweep done",
                extra={"fields": {"reason": reason, "recorded": recorded}},
            )

    def _posture_event(
        self,
        listed: dict[str, Any],
        data: dict[str, Any] | None,
        enrichment: Enrichment,
        reason: str,
    ) -> Event | None:
        """A `posture` event, or None: gone, not inspectable, or its configuration was judged."""
        cid = str(listed.get("Id"))
        known = self.known.containers.get(cid)
        if data is None or enrichment.config is None or known is None:
            return None
        fingerprint = config_fingerprint(enrichment.config)
        if fingerprint == known.config_fingerprint:
            return None
        state_info: Mapping[str, Any] = data.get("State") or {}
        labels = dict(listed.get("Labels") or {})
        attributes: dict[str, Any] = {
            "reason": reason,
            "state": _listed_state(listed.get("State")),
            "status": str(listed.get("Status") or ""),
            "labels": labels,
            "config_fingerprint": fingerprint,
            "previous_config_fingerprint": known.config_fingerprint,
            **_state_attributes(state_info, parse_engine_time_ns(state_info.get("StartedAt"))),
        }
        now = time.time_ns()
        return Event(
            # Once per container and configuration: a repeated sweep stores nothing twice.
            id=natural_id("docktrail", self.host, "container", "posture", cid, fingerprint),
            time_ns=now,
            source="docktrail",
            host=self.host,
            type="container",
            action="posture",
            actor=Actor(
                id=cid,
                name=_container_name(listed, data) or known.name,
                image=listed.get("Image") or known.image,
            ),
            attributes=attributes,
            who=_who_from_labels(labels),
            why=_why_from_labels(labels),
            config=enrichment.config,
        )

    def _not_judged(self, event: Event) -> bool:
        """At its turn to be handed on: whether a posture event still says something new."""
        known = self.known.containers.get(event.actor.id)
        if known is None:
            return False  # removed meanwhile
        if known.config_fingerprint == event.attributes.get("config_fingerprint"):
            return False
        self.stats.posture += 1
        return True

    # ------------------------------------------------------------------ docktrail events

    def _daemon_event(self, action: str, attributes: dict[str, Any]) -> Event:
        identity = self.identity
        assert identity is not None
        now = time.time_ns()
        return Event(
            id=natural_id("docktrail", self.host, "daemon", action, identity.id, now),
            time_ns=now,
            source="docktrail",
            host=self.host,
            type="daemon",
            action=action,
            actor=Actor(id=identity.id, name=identity.name or None),
            attributes={"docker_host": self.engine.host, **identity.attributes(), **attributes},
        )

    def _observed(
        self,
        type_: str,
        object_id: str,
        change: str,
        name: str | None,
        image: str | None,
        attributes: dict[str, Any],
    ) -> Event:
        self.stats.observed += 1
        now = time.time_ns()
        labels: Mapping[str, str] = attributes.get("labels") or {}
        return Event(
            id=natural_id("docktrail", self.host, type_, "observed", object_id, change, now),
            time_ns=now,
            source="docktrail",
            host=self.host,
            type=type_,
            action="observed",
            actor=Actor(id=object_id, name=name, image=image),
            attributes=attributes,
            who=_who_from_labels(labels),
            why=_why_from_labels(labels),
        )

    # ------------------------------------------------------------------ helpers

    def _current_stream(self) -> EventStream | None:
        """For the watchdog thread: the connection being read."""
        return self._stream

    def _engine_now(self) -> int:
        skew = self.identity.clock_offset_ns if self.identity is not None else 0
        return time.time_ns() + skew

    def _submit(self, func: Callable[..., Enrichment], *args: Any) -> asyncio.Future[Enrichment]:
        assert self._loop is not None and self._executor is not None
        return self._loop.run_in_executor(self._executor, func, *args)

    async def _call(self, func: Callable[..., _T], *args: Any) -> _T:
        assert self._loop is not None and self._executor is not None
        return await self._loop.run_in_executor(self._executor, func, *args)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep(self, secs: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(secs):
                await self._stopping.wait()


_FIX = "start dockerd, or point docker.host / DOCKER_HOST at a running engine"


def _enrichment_result(future: asyncio.Future[Enrichment]) -> Enrichment:
    """The outcome of a finished inspect; a failure of ours must not lose the event."""
    if future.cancelled():
        return Enrichment(attributes={"inspect": "failed", "inspect_error": "cancelled"})
    error = future.exception()
    if error is not None:
        log.error("inspect failed", exc_info=error)
        return Enrichment(attributes={"inspect": "failed", "inspect_error": repr(error)})
    return future.result()


def _oldest(buffer: list[dict[str, Any]]) -> int | None:
    times = [raw["timeNano"] for raw in buffer if isinstance(raw.get("timeNano"), int)]
    return min(times) if times else None


def _image_name(data: Mapping[str, Any], image_id: str) -> str:
    tags = [tag for tag in data.get("RepoTags") or [] if tag != "<none>:<none>"]
    return str(tags[0]) if tags else image_id


def _container_name(listed: Mapping[str, Any] | None, data: Mapping[str, Any] | None) -> str | None:
    names = (listed or {}).get("Names") or []
    name = names[0] if names else (data or {}).get("Name")
    return str(name).lstrip("/") if name else None


def _state_attributes(state: Mapping[str, Any], started_ns: int | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if started_ns is not None:
        attributes["started_at_ns"] = started_ns
        attributes["started_at"] = format_time_ns(started_ns)
    finished_ns = parse_engine_time_ns(state.get("FinishedAt"))
    if finished_ns is not None:
        attributes["finished_at"] = format_time_ns(finished_ns)
    if finished_ns is not None and not state.get("Running"):
        attributes["exit_code"] = state.get("ExitCode")
    return attributes


_EXEC_ACTIONS = frozenset({"exec_start"})  # what exec-in-container judges
_MAX_IMAGE_ANCESTRY = 128  # classic builds have a step per instruction


def _is_image_id(reference: str) -> bool:
    bare = reference.removeprefix("sha256:")
    return reference.startswith("sha256:") or (
        len(bare) == 64 and all(c in "0123456789abcdef" for c in bare)
    )


def _socket_sources(config: ContainerConfig) -> list[str]:
    """Bind sources that are Unix sockets on this host (any name: an Engine's socket)."""
    found = []
    for mount in config.mounts:
        if mount.type != "bind" or not mount.source.startswith("/"):
            continue
        try:
            if stat.S_ISSOCK(os.stat(mount.source).st_mode):
                found.append(mount.source)
        except OSError:
            continue  # gone, or not visible from here: judged by its path
    return found
