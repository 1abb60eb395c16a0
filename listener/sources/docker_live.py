"""The live Docker Engine source (`DockerSource`, for `docktrail run`).

What it records:

* Every Engine event, read on a thread of its own (dockerd skips a reader
  that lags 100 ms), with what its inspect adds (`docker_enrich`).
* Per connection, a `docktrail` `daemon`/`connected` event: the daemon's id,
  name, versions. Reading resumes at the last stored `timeNano` (`since`).
* After a (re)connect or a stall, a `daemon`/`gap` event where events may
  have been missed, and `observed` events for what changed meanwhile
  (`docker_reconcile`).
* A posture sweep after every connect and every `docker.sweep_interval_secs`
  (`docker_sweep`).

Threads and who does what:

* one reader thread per connection (`EventStream`) and one watchdog thread
  (`StallWatchdog`), in `docker_stream`;
* a small pool of worker threads runs every other Engine call (connect,
  list, inspect, bounded re-reads of the Engine's event buffer, the sweeps'
  inspects);
* the event loop normalises, deduplicates, keeps what is known about the
  host's containers and images, and hands events to the pipeline in stream
  order per object, each after its inspect result (started at once) is in
  (`docker_order`).

The neighbours: `docker` normalises the Engine's events, `docker_engine`
makes the Engine calls, `docker_inspect` reads inspect data and
`docker_state` holds what the trail knows (`KnownState`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

from config.errors import InputError, SourceError
from listener import giveway
from listener.model.event import Event
from listener.sources.docker import normalize_engine_event
from listener.sources.docker_engine import DaemonIdentity, Engine, EngineClient, since_arg
from listener.sources.docker_enrich import (
    Enrichment,
    Inspector,
    bound_enriched,
    enrichment_result,
)
from listener.sources.docker_files import EngineFiles
from listener.sources.docker_order import ObjectOrder, Pending
from listener.sources.docker_reconcile import Reconciler
from listener.sources.docker_state import _RECENT_IDS, KnownState
from listener.sources.docker_stats import SourceStats
from listener.sources.docker_stream import (
    REPLAY_OVERLAP_NS,
    EventStream,
    RecentIds,
    Stall,
    StallWatchdog,
    StreamEnded,
)
from listener.sources.docker_sweep import OnRunning, OnSweep, PostureSweep

if TYPE_CHECKING:
    from config.models import DockerConfig

_T = TypeVar("_T")

# The name the live source has always logged under (it was part of `docker`).
log = logging.getLogger("listener.sources.docker")

Emit = Callable[[Event], Awaitable[None]]
_STOP = object()
# Engine events kept while the trail opens (`wire_later`): about 2 KB each, 100 MB.
UNWIRED_EVENTS_MAX = 50_000


class DockerSource:
    """The live Docker Engine source of `docktrail run`.

    `await run()` connects (retrying with backoff while the Engine is away),
    records the daemon's identity, reconciles, and follows the events stream
    until `stop()`. Every event goes to `emit` (the pipeline's `put`) in stream
    order per object (`ObjectOrder`). `known` is what the trail knows about
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
        self.horizon_ns = self.known.last_docker_ns  # everything up to here is in hand
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._order = ObjectOrder()
        self._recent = RecentIds(_RECENT_IDS)
        self._stream: EventStream | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._inspector = Inspector(self.engine, lambda: self.files)
        self._reconciler = Reconciler(self, self._inspector)
        self._sweeps = PostureSweep(self, self._inspector, self._order)
        self._wired = asyncio.Event()  # what the trail knows is in hand (see `wire_later`)
        self._wired.set()
        self._dropped = 0  # Engine events not queued while `wired` was awaited (the bound)

    def wire_later(self, horizon_ns: int | None) -> None:
        """Before `run()`: read the Engine from `horizon_ns` (the last stored Engine
        event's time) at once, and hand nothing on until `wired()`."""
        self.horizon_ns = horizon_ns
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
            self._spawn(self._sweeps.loop(self._until_wired, self._stopping))
        # The stream's reader, its stall watchdog and the API pool: a busy loop gives
        # way to their threads (dockerd drops the events of a reader that does not keep
        # up, and a starved watchdog takes its late wake-up for a paused process).
        with giveway.of_running_loop().in_flight():
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
        identity = await self.call(self.engine.connect)
        reason = "start" if self.stats.connections == 0 else "reconnect"
        self.stats.connections += 1
        self.identity = identity
        if self.config.read_engine_files:
            host = str(getattr(self.engine, "host", ""))
            self.files = await asyncio.to_thread(EngineFiles.for_engine, host, identity.data_root)
        horizon = self.horizon_ns
        opened_ns = self.engine_now()
        since_ns = (opened_ns if horizon is None else horizon) - REPLAY_OVERLAP_NS
        raw_stream, release = await self.call(self.engine.open_events, since_ns)
        self._stream = EventStream(raw_stream, release, horizon or opened_ns, self._deliver)
        self._stream.start()
        log.info(
            "connected to the Docker Engine",
            extra={"fields": {"docker_host": self.engine.host, "daemon": identity.name,
                              "daemon_id": identity.id, "version": identity.server_version,
                              "api": identity.api_version, "since": since_arg(since_ns)}},
        )  # fmt: skip
        waited = not self._wired.is_set()
        held = await self._reconciler.oldest_held(self.engine_now()) if waited else None
        await self._until_wired()  # the stream is read into the queue meanwhile
        if not self._wired.is_set():
            return  # stopped first: nothing is handed on
        self.hand_on(self._reconciler.daemon_event("connected", {"since": since_arg(since_ns)}))
        read = self._hand_on_read() if waited else None
        read_oldest = min((t for t in (held, read) if t is not None), default=None)
        if self._dropped:  # the Engine's buffer says what is still there after the last kept
            horizon, read_oldest = self.horizon_ns, None
            log.warning(
                "Engine events read while the trail opened were more than are kept",
                extra={"fields": {"kept": UNWIRED_EVENTS_MAX, "not_kept": self._dropped}},
            )
            self._dropped = 0
        await self._reconciler.reconcile(
            reason, horizon, replay_from_ns=since_ns, read_oldest=read_oldest
        )
        self._sweeps.want(reason)

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
                        self._spawn(self._reconciler.recover_from_stall(item))
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
            loop.call_soon_threadsafe(self._enqueue, item)

    def _enqueue(self, item: object) -> None:
        # Before `wired` (a trail being upgraded can take a minute) at most
        # UNWIRED_EVENTS_MAX Engine events wait: at the Engine's top rate the rest would
        # fill memory. What is not kept is a gap the reconciliation records.
        waiting = isinstance(item, dict) and not self._wired.is_set()
        if waiting and self._queue.qsize() >= UNWIRED_EVENTS_MAX:
            self._dropped += 1
            return
        self._queue.put_nowait(item)

    def _on_stream_event(self, raw: object) -> None:
        time_nano = raw.get("timeNano") if isinstance(raw, dict) else None
        if isinstance(time_nano, int):
            self._reconciler.stream_read(time_nano)
            self.horizon_ns = max(self.horizon_ns or 0, time_nano)
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
        self._order.put(Pending(event, self._start_enrichment(event)))
        return True

    def hand_on(self, event: Event) -> None:
        """A docktrail event, in order with the Engine's."""
        self.known.apply(event)
        self._order.put(Pending(event))

    async def _emit_in_order(self) -> None:
        while (pending := await self._order.ready.get()) is not None:
            if pending.judge_once and not self._sweeps.not_judged(pending.event):
                continue
            if pending.enrichment is not None:
                enrichment = enrichment_result(pending.enrichment)
                enrichment.apply(pending.event)
                bound_enriched(pending.event)
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

    def replay(self, buffer: list[dict[str, Any]], from_ns: int) -> int:
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
        needed = self._inspector.needed(event)
        if needed is None:
            return None
        inspect, object_id = needed
        return self._submit(inspect, object_id)

    # ------------------------------------------------------------------ posture sweep

    async def sweep(self, reason: str = "periodic") -> int:
        """A posture sweep now (`PostureSweep.sweep`); how many containers it recorded.

        Raises `SourceError` when the Engine cannot list its containers.
        """
        return await self._sweeps.sweep(reason)

    def want_sweep(self, reason: str) -> None:
        """Ask the sweep loop for a sweep now (a deployment expires)."""
        self._sweeps.want(reason)

    # ------------------------------------------------------------------ helpers

    def _current_stream(self) -> EventStream | None:
        """For the watchdog thread: the connection being read."""
        return self._stream

    def caught_up(self, idle_secs: float) -> bool:
        """Whether the stream was quiet for `idle_secs` and all it read was handed on."""
        stream = self._stream
        quiet = stream is None or time.monotonic() - stream.last_read > idle_secs
        return quiet and self._queue.empty()

    def engine_now(self) -> int:
        """Now, on the Engine's clock."""
        skew = self.identity.clock_offset_ns if self.identity is not None else 0
        return time.time_ns() + skew

    def _submit(self, func: Callable[..., Enrichment], *args: Any) -> asyncio.Future[Enrichment]:
        assert self._loop is not None and self._executor is not None
        return self._loop.run_in_executor(self._executor, func, *args)

    async def call(self, func: Callable[..., _T], *args: Any) -> _T:
        """Runs a blocking Engine call on a worker thread, off the event loop."""
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
