"""The live Docker source's logic against a fake Engine: replay, gaps, stalls, reconciliation.

The fake keeps the Engine's rules that matter here: a 256-event replay buffer
(`since` replays from it), a stream per subscriber that can fall behind and
drop events without saying so, a restart that empties the buffer. The real
daemon is in tests/test_run_live.py.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import pytest

import listener.sources.docker_live as docker_live
from config.errors import SourceError
from config.models import DockerConfig
from listener.model.event import Event
from listener.sources.docker_engine import DaemonIdentity, since_arg
from listener.sources.docker_live import DockerSource
from listener.sources.docker_state import KnownContainer, KnownState
from listener.sources.docker_stream import Stall, StallWatchdog
from tests.dockerd import Dockerd

HOST = "h"
_END = object()
MS = 1_000_000


class FakeStream:
    """docker-py's CancellableStream as the fake Engine feeds it."""

    def __init__(self, replay: list[dict[str, Any]]) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        for raw in replay:
            self._queue.put(raw)
        self.capacity: int | None = None  # while set, events beyond it are dropped
        self.held: list[dict[str, Any]] = []

    def __iter__(self) -> FakeStream:
        return self

    def __next__(self) -> dict[str, Any]:
        item = self._queue.get()
        if item is _END:
            raise StopIteration
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    def send(self, raw: dict[str, Any]) -> None:
        if self.capacity is None:
            self._queue.put(raw)
        elif len(self.held) < self.capacity:
            self.held.append(raw)  # queued for a reader that does not read

    def resume(self) -> None:
        self.capacity = None
        for raw in self.held:
            self._queue.put(raw)
        self.held.clear()

    def fail(self, error: Exception) -> None:
        self._queue.put(error)

    def close(self) -> None:
        self._queue.put(_END)


class FakeEngine:
    host = "unix:///fake/docker.sock"

    def __init__(self) -> None:
        self.history: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []
        self.reachable = True
        self.containers_list: list[dict[str, Any]] = []
        self.inspects: dict[str, dict[str, Any]] = {}
        self.images_list: list[dict[str, Any]] = []
        self.image_inspects: dict[str, dict[str, Any]] = {}
        self.inspect_delay = 0.0
        self.connects = 0
        self._lock = threading.Lock()

    # -- the Engine protocol ---------------------------------------------------------

    def connect(self) -> DaemonIdentity:
        self._check()
        self.connects += 1
        return DaemonIdentity("DAEMON-ID", "fakehost", "99.0", "1.41", "FakeOS", "6.0", 0)

    def open_events(self, since_ns: int) -> tuple[Any, Callable[[], None]]:
        self._check()
        with self._lock:
            stream = FakeStream([e for e in self.buffer() if e["timeNano"] >= since_ns])
            self.streams.append(stream)
        return stream, lambda: None

    def buffered_events(self, until_ns: int) -> list[dict[str, Any]]:
        self._check()
        with self._lock:
            return [e for e in self.buffer() if e["timeNano"] <= until_ns]

    def containers(self) -> list[dict[str, Any]]:
        self._check()
        return list(self.containers_list)

    def images(self) -> list[dict[str, Any]]:
        self._check()
        return list(self.images_list)

    def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        time.sleep(self.inspect_delay)
        self._check()
        return self.inspects.get(container_id)

    def inspect_image(self, reference: str) -> dict[str, Any] | None:
        self._check()
        return self.image_inspects.get(reference)

    def close(self) -> None:
        pass

    # -- driving it ------------------------------------------------------------------

    def buffer(self) -> list[dict[str, Any]]:
        return self.history[-256:]

    def emit(
        self, type_: str, action: str, actor_id: str, time_ns: int | None = None, **attrs: str
    ) -> dict[str, Any]:
        raw = {
            "Type": type_,
            "Action": action,
            "Actor": {"ID": actor_id, "Attributes": attrs},
            "scope": "local",
            "timeNano": time_ns if time_ns is not None else time.time_ns(),
        }
        with self._lock:
            self.history.append(raw)
            for stream in self.streams:
                stream.send(raw)
        return raw

    def crash(self) -> None:
        """dockerd killed: streams break, and the restarted daemon's buffer is empty."""
        self.reachable = False
        with self._lock:
            for stream in self.streams:
                stream.fail(ConnectionResetError(104, "Connection reset by peer"))
            self.streams.clear()
            self.history.clear()

    def _check(self) -> None:
        if not self.reachable:
            raise SourceError(f"Docker Engine not reachable at {self.host}: Connection refused")


def listed(cid: str, state: str = "running", name: str | None = None) -> dict[str, Any]:
    return {"Id": cid, "Names": [f"/{name or cid}"], "Image": "busybox", "State": state,
            "Status": state.title(), "Labels": {}}  # fmt: skip


def inspected(cid: str, started_ns: int | None = None, **host_config: Any) -> dict[str, Any]:
    started = "0001-01-01T00:00:00Z"
    if started_ns is not None:
        seconds, nanos = divmod(started_ns, 1_000_000_000)
        started = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"
    return {
        "Id": cid,
        "Name": f"/{cid}",
        "Image": "sha256:" + "1" * 64,
        "State": {"Running": started_ns is not None, "StartedAt": started,
                  "FinishedAt": "0001-01-01T00:00:00Z", "ExitCode": 0},
        "HostConfig": host_config,
        "Config": {"Image": "busybox", "User": ""},
        "Mounts": [],
    }  # fmt: skip


@asynccontextmanager
async def running(
    engine: FakeEngine | Dockerd,
    known: KnownState | None = None,
    *,
    host_name: str = HOST,
    **settings: Any,
) -> AsyncIterator[tuple[DockerSource, list[Event]]]:
    """A `DockerSource` on a fake Engine or the private daemon; yields it and what it emitted."""
    stored: list[Event] = []

    async def emit(event: Event) -> None:
        stored.append(event)

    config = DockerConfig(
        host=engine.host, reconnect_min_secs=0.05, reconnect_max_secs=0.1, **settings
    )
    fake = engine if isinstance(engine, FakeEngine) else None
    source = DockerSource(config, host_name, emit, known=known, engine=fake)
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: source.connected.is_set() or task.done(), 15)
        yield source, stored
    finally:
        source.stop()
        await asyncio.wait_for(task, 15)


async def eventually(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def of(stored: list[Event], source: str = "docker", action: str | None = None) -> list[Event]:
    return [e for e in stored if e.source == source and (action is None or e.action == action)]


# ---------------------------------------------------------------------- start and stream


async def test_first_start_records_identity_baseline_and_the_stream() -> None:
    engine = FakeEngine()
    engine.containers_list = [listed("c-run"), listed("c-old", "exited")]
    engine.inspects["c-run"] = inspected("c-run", time.time_ns() - 10**9, Privileged=True)
    engine.images_list = [{"Id": "sha256:" + "1" * 64, "RepoTags": ["busybox:1"]}]
    async with running(engine) as (_, stored):
        await eventually(lambda: len(stored) >= 4)
        engine.inspects["c-new"] = inspected("c-new", CapAdd=["CAP_SYS_ADMIN"])
        for action in ("create", "start", "die", "destroy"):
            engine.emit("container", action, "c-new", name="new", image="busybox")
        await eventually(lambda: len(of(stored)) == 4)
    connected = stored[0]
    assert (connected.source, connected.type, connected.action) == ("docktrail", "daemon",
                                                                    "connected")  # fmt: skip
    assert connected.actor.id == "DAEMON-ID" and connected.attributes["server_version"] == "99.0"
    observed = {(e.type, e.actor.id): e for e in of(stored, "docktrail", "observed")}
    assert {key: e.attributes["change"] for key, e in observed.items()} == {
        ("container", "c-run"): "appeared",
        ("container", "c-old"): "appeared",
        ("image", "sha256:" + "1" * 64): "appeared",
    }
    assert observed["container", "c-run"].config["privileged"] is True
    assert observed["container", "c-run"].attributes["state"] == "running"
    assert of(stored, "docktrail", "gap") == []  # a first start has nothing to miss
    docker = of(stored)
    assert [e.action for e in docker] == ["create", "start", "die", "destroy"]
    assert docker[0].config["cap_add"] == ["SYS_ADMIN"]
    assert docker[2].config == {}  # only create and start are inspected


async def test_a_slow_inspect_holds_back_only_its_own_container() -> None:
    engine = FakeEngine()
    async with running(engine) as (source, stored):
        engine.inspect_delay = 1.0  # dockerd answers after the container's start is done
        engine.inspects["slow"] = inspected("slow")
        engine.emit("container", "create", "slow", name="slow")
        engine.emit("container", "start", "slow", name="slow")
        for i in range(50):
            engine.emit("volume", "create", f"v{i}")
        # Everything is read at once, and other objects' events are not held up...
        await eventually(lambda: len(of(stored)) == 50, timeout=0.8)
        assert source.stats.events == 52
        assert [e.actor.id for e in of(stored)] == [f"v{i}" for i in range(50)]
        # ...while the container's own events keep their order behind its inspect.
        await eventually(lambda: len(of(stored)) == 52, timeout=5)
    create, start = of(stored)[50:]
    assert (create.action, start.action) == ("create", "start")
    assert create.config["origin"] == start.config["origin"] == "inspect"


async def test_a_container_gone_before_inspect_is_recorded_as_gone() -> None:
    engine = FakeEngine()
    async with running(engine) as (source, stored):
        engine.emit("container", "create", "job", name="job")
        engine.emit("container", "destroy", "job", name="job")
        await eventually(lambda: len(of(stored)) == 2)
    create = of(stored, action="create")[0]
    assert create.attributes["inspect"] == "gone" and create.config == {}
    assert source.stats.inspect_gone == 1 and source.stats.inspect_failed == 0


async def test_image_events_get_their_tags_and_digests() -> None:
    engine = FakeEngine()
    image_id = "sha256:" + "2" * 64
    engine.image_inspects[image_id] = {"Id": image_id, "RepoTags": ["app:1", "app:latest"],
                                       "RepoDigests": ["app@sha256:" + "3" * 64]}  # fmt: skip
    async with running(engine) as (_, stored):
        engine.emit("image", "tag", image_id, name="app:latest")
        engine.emit("image", "delete", "sha256:" + "4" * 64)
        await eventually(lambda: len(of(stored)) == 2)
    (tag,), (delete,) = of(stored, action="tag"), of(stored, action="delete")
    assert tag.attributes["image_id"] == image_id
    assert tag.attributes["repo_tags"] == ["app:1", "app:latest"]
    assert tag.attributes["repo_digests"] == ["app@sha256:" + "3" * 64]
    assert "inspect" not in delete.attributes  # deletes are not resolved: the image is gone


async def test_an_unreachable_engine_is_reported_and_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    engine = FakeEngine()
    engine.reachable = False
    caplog.set_level(logging.WARNING)
    stored: list[Event] = []

    async def emit(event: Event) -> None:
        stored.append(event)

    config = DockerConfig(host=engine.host, reconnect_min_secs=0.05, reconnect_max_secs=0.1)
    source = DockerSource(config, HOST, emit, engine=engine)
    task = asyncio.create_task(source.run())
    await eventually(lambda: len(caplog.records) >= 3)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "Docker Engine not reachable at unix:///fake/docker.sock: Connection refused; "
        "retrying in 0.05s"
    )
    assert messages[2].endswith("retrying in 0.1s")  # backoff, capped
    assert caplog.records[0].fields["fix"].startswith("start dockerd")  # type: ignore[attr-defined]
    engine.reachable = True
    await eventually(lambda: source.connected.is_set())
    source.stop()
    await asyncio.wait_for(task, 5)
    assert of(stored, "docktrail", "connected")


# ---------------------------------------------------------------------- restarts and gaps


async def test_restart_within_the_buffer_replays_what_was_missed_without_a_gap() -> None:
    engine = FakeEngine()
    first = engine.emit("volume", "create", "before")
    missed = [engine.emit("volume", "create", f"missed{i}") for i in range(10)]
    known = KnownState(last_docker_ns=first["timeNano"])
    async with running(engine, known) as (_, stored):
        await eventually(lambda: len(of(stored)) >= 11)
    # `before` again too: resuming at the last stored event; the trail stores it once.
    assert [e.actor.id for e in of(stored)] == ["before"] + [raw["Actor"]["ID"] for raw in missed]
    assert of(stored, "docktrail", "gap") == []


def _wired_later(
    engine: FakeEngine, horizon_ns: int
) -> tuple[DockerSource, list[Event], Callable[[Event], Awaitable[None]]]:
    """A source reading `engine` from `horizon_ns` at once and wired later (as `docktrail
    run` starts it); what it hands on once wired, and where to: `wired(emit, …)`."""
    stored: list[Event] = []

    async def emit(event: Event) -> None:
        stored.append(event)

    async def too_early(event: Event) -> None:
        raise AssertionError(f"handed on before it was wired: {event.action}")

    config = DockerConfig(host=engine.host, reconnect_min_secs=0.05, reconnect_max_secs=0.1)
    source = DockerSource(config, HOST, too_early, engine=engine)
    source.wire_later(horizon_ns)
    return source, stored, emit


async def test_a_source_wired_later_reads_the_engine_at_once_and_hands_on_once_wired() -> None:
    """The service opens the stream before it restores what a long trail knows: what
    the Engine sends meanwhile (more than the 256 it keeps for a late reader) is read,
    and nothing is reconciled or handed on before `wired`."""
    engine = FakeEngine()
    first = engine.emit("volume", "create", "before")
    engine.containers_list = []  # c-gone was removed while the service was stopped
    source, stored, emit = _wired_later(engine, first["timeNano"])
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: len(engine.streams) == 1)
        during = [engine.emit("volume", "create", f"v{i}") for i in range(300)]
        await asyncio.sleep(0.2)
        assert source.queue_depth() >= 300 and not source.connected.is_set()
        known = KnownState(
            containers={"c-gone": KnownContainer("c-gone", "gone", "busybox", "exited", None, 1)},
            last_docker_ns=first["timeNano"],
        )
        source.wired(emit, known)
        await eventually(lambda: len(of(stored)) == 301)
    finally:
        source.stop()
        await asyncio.wait_for(task, 5)
    assert stored[0].action == "connected"
    assert [e.actor.id for e in of(stored)] == ["before"] + [r["Actor"]["ID"] for r in during]
    assert [e.actor.id for e in of(stored, "docktrail", "observed")] == ["c-gone"]
    assert of(stored, "docktrail", "gap") == []


async def test_a_long_wait_for_wiring_keeps_its_bound_and_records_the_rest_as_a_gap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A trail being upgraded can hold `wired` for a minute: meanwhile the source keeps at
    most `UNWIRED_EVENTS_MAX` of the Engine's events. At wiring, what the Engine still
    holds is read again, and the events between the last one kept and it are a gap."""
    monkeypatch.setattr(docker_live, "UNWIRED_EVENTS_MAX", 20)
    engine = FakeEngine()
    first = engine.emit("volume", "create", "before")
    source, stored, emit = _wired_later(engine, first["timeNano"])
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: len(engine.streams) == 1)
        during = [engine.emit("volume", "create", f"v{i}") for i in range(300)]
        await eventually(lambda: source.queue_depth() == 20)
        await asyncio.sleep(0.2)  # the rest is read, and not kept
        assert source.queue_depth() == 20
        source.wired(emit, KnownState(last_docker_ns=first["timeNano"]))
        await eventually(lambda: len(of(stored)) == 20 + 256)
    finally:
        source.stop()
        await asyncio.wait_for(task, 5)
    kept = ["before", *(f"v{i}" for i in range(19))]
    still_held = [raw["Actor"]["ID"] for raw in engine.buffer()]  # its last 256: v44 on
    assert [e.actor.id for e in of(stored)] == kept + still_held
    [gap] = of(stored, "docktrail", "gap")
    assert gap.attributes["from_ns"] == during[18]["timeNano"]
    assert gap.attributes["until_ns"] == engine.buffer()[0]["timeNano"]


async def test_a_source_stopped_before_it_is_wired_ends_and_hands_on_nothing() -> None:
    engine = FakeEngine()
    engine.emit("volume", "create", "before")

    async def too_early(event: Event) -> None:
        raise AssertionError(f"handed on before it was wired: {event.action}")

    config = DockerConfig(host=engine.host)
    source = DockerSource(config, HOST, too_early, engine=engine)
    source.wire_later(None)
    task = asyncio.create_task(source.run())
    await eventually(lambda: len(engine.streams) == 1)
    source.stop()
    await asyncio.wait_for(task, 5)  # raises what too_early raised, had anything been handed on


async def test_restart_beyond_the_buffer_records_a_gap_and_the_observed_changes() -> None:
    engine = FakeEngine()
    now = time.time_ns()
    last_stored = now - 60 * 10**9
    known = KnownState(
        containers={
            "c-ran": KnownContainer("c-ran", "ran", "busybox", "running", now - 100 * 10**9, 1),
            "c-rm": KnownContainer("c-rm", "rm", "busybox", "exited", None, 1),
            "c-up": KnownContainer("c-up", "up", "busybox", "running", now - 100 * 10**9, 1),
            "c-same": KnownContainer("c-same", "same", "busybox", "running", now - 100 * 10**9, 1),
        },
        last_docker_ns=last_stored,
    )
    engine.containers_list = [listed("c-ran", "exited"), listed("c-up"), listed("c-same"),
                              listed("c-new", "created")]  # fmt: skip
    engine.inspects = {
        "c-up": inspected("c-up", now - 30 * 10**9),  # started again while we were away
        "c-same": inspected("c-same", now - 100 * 10**9 - 5),
        "c-new": inspected("c-new", ReadonlyRootfs=True),
        "c-ran": inspected("c-ran"),
    }
    for i in range(300):  # more than the Engine keeps
        engine.emit("volume", "create", f"v{i}", time_ns=now - 50 * 10**9 + i * MS)
    async with running(engine, known) as (_, stored):
        await eventually(lambda: len(of(stored, "docktrail", "observed")) == 4)
    (gap,) = of(stored, "docktrail", "gap")
    assert gap.attributes["reason"] == "start"
    assert gap.attributes["from_ns"] == last_stored
    assert gap.attributes["until_ns"] == now - 50 * 10**9 + 44 * MS  # the oldest still buffered
    assert len(of(stored)) == 256  # the buffered ones are stored
    changes = {e.actor.id: e.attributes["change"] for e in of(stored, "docktrail", "observed")}
    assert changes == {"c-ran": "stopped", "c-rm": "disappeared", "c-up": "restarted",
                       "c-new": "appeared"}  # fmt: skip
    new = next(e for e in stored if e.actor.id == "c-new")
    assert new.config["read_only_rootfs"] is True and new.attributes["previous_state"] is None


async def test_reconnect_after_a_crash_records_a_gap_and_resumes() -> None:
    engine = FakeEngine()
    async with running(engine) as (source, stored):
        engine.emit("volume", "create", "before-crash")
        await eventually(lambda: len(of(stored)) == 1)
        engine.crash()
        await eventually(lambda: not source.connected.is_set())
        await asyncio.sleep(0.2)  # a few failed attempts
        engine.reachable = True
        restart = engine.emit("container", "start", "restored", name="restored")
        await eventually(lambda: source.connected.is_set())
        engine.emit("volume", "create", "after-crash")
        await eventually(lambda: len(of(stored)) == 3)
    assert [e.actor.id for e in of(stored)] == ["before-crash", "restored", "after-crash"]
    assert len(of(stored, "docktrail", "connected")) == 2
    (gap,) = of(stored, "docktrail", "gap")
    assert gap.attributes["reason"] == "reconnect"
    before = of(stored)[0].time_ns
    assert (gap.attributes["from_ns"], gap.attributes["until_ns"]) == (before, restart["timeNano"])
    assert source.stats.connections == 2


# ---------------------------------------------------------------------- stalls


async def stalled(engine: FakeEngine, source: DockerSource, capacity: int, count: int) -> int:
    """The reader stops reading for a while; `count` events happen; the watchdog tells.

    Returns the time of the last event the stream delivered before.
    """
    base = time.time_ns() - 10 * 10**9
    engine.emit("volume", "create", "seen", time_ns=base)
    await eventually(lambda: source.stats.events == 1)
    (stream,) = engine.streams
    stream.capacity = capacity
    for i in range(count):
        engine.emit("volume", "create", f"s{i}", time_ns=base + 10**9 + i * MS)
    source.report_stall(Stall(since_ns=base, resumed_ns=time.time_ns(), secs=2.0))
    await asyncio.sleep(0.05)
    stream.resume()
    engine.emit("volume", "create", "live")
    return base


async def test_a_stall_that_dropped_events_gets_them_from_the_buffer() -> None:
    engine = FakeEngine()
    async with running(engine) as (source, stored):
        await stalled(engine, source, capacity=100, count=300)  # 200 dropped, 256 buffered
        await eventually(lambda: len(of(stored)) == 302)
    assert of(stored, "docktrail", "gap") == []
    assert {e.actor.id for e in of(stored)} == {"seen", "live", *(f"s{i}" for i in range(300))}


async def test_a_stall_beyond_the_buffer_records_the_lost_window() -> None:
    engine = FakeEngine()
    async with running(engine) as (source, stored):
        base = await stalled(engine, source, capacity=100, count=500)
        await eventually(lambda: bool(of(stored, "docktrail", "gap")))
        await eventually(lambda: any(e.actor.id == "live" for e in of(stored)))
    (gap,) = of(stored, "docktrail", "gap")
    # Delivered: s0..s99 (queued before the stall); buffered: the last 256, s244..s499.
    assert gap.attributes["reason"] == "stall"
    assert gap.attributes["from_ns"] == base + 10**9 + 99 * MS
    assert gap.attributes["until_ns"] == base + 10**9 + 244 * MS
    ids = {e.actor.id for e in of(stored)}
    assert ids == {"seen", "live", *(f"s{i}" for i in (*range(100), *range(244, 500)))}


def test_the_watchdog_notices_that_its_thread_did_not_run() -> None:
    stalls: list[object] = []
    stream = SimpleNamespace(last_time_ns=0)
    calls = 0

    def current() -> Any:
        nonlocal calls
        calls += 1
        stream.last_time_ns = calls * 100
        if calls == 3:
            time.sleep(0.4)  # as if the process had been stopped here
        return stream

    watchdog = StallWatchdog(0.3, current, stalls.append)
    watchdog.start()
    time.sleep(0.7)
    watchdog.stop()
    (stall,) = stalls
    assert isinstance(stall, Stall)
    assert stall.since_ns == 300 and stall.secs >= 0.4  # what was read before the pause
    assert stall.stream is stream


def test_since_is_seconds_dot_nanoseconds() -> None:
    # The Engine parses `since` as seconds.nanoseconds; a datetime would lose nanoseconds.
    assert since_arg(1_700_000_000_000_000_001) == "1700000000.000000001"
