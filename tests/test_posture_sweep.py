"""The posture sweep of the live Docker source, against the real private dockerd.

After every connect and every `docker.sweep_interval_secs`, running containers
are inspected; each whose security configuration was not judged yet is
recorded as a `docktrail` container `posture` event, which the container-config
rules judge. A configuration is judged once per container: an unchanged
container is not recorded again, by a later sweep or after a restart (what
was judged is read from the trail), while a changed one (`docker update`) is.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from config.models import DockerConfig, RulesConfig
from listener.model.event import Actor, Event
from listener.rules.engine import RuleEngine
from listener.rules.fingerprint import config_fingerprint
from listener.sources.docker_live import DockerSource
from listener.sources.docker_state import KnownState, load_known_state
from sinks.memory import MemoryTrail
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.test_docker_source import FakeEngine, eventually, inspected, listed, running

HOST = "posture-test"


@pytest.fixture
def name(dockerd: Dockerd) -> Iterator[Callable[[str], str]]:
    """Unique container names for this test; their containers are removed after it."""
    made: list[str] = []

    def make(label: str) -> str:
        made.append(f"posture-{label}-{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    for container in made:
        dockerd.docker("rm", "--force", container, check=False)


def run_risky(dockerd: Dockerd, container: str) -> str:
    """A running container with a sensitive mount and a dangerous capability; its id."""
    return dockerd.docker(
        "run", "-d", "--name", container, "--stop-timeout", "1", "-v", "/etc:/host-etc:ro",
        "--cap-add", "SYS_PTRACE", BUSYBOX_REF, "sleep", "300",
    ).strip()  # fmt: skip


def following(
    dockerd: Dockerd, known: KnownState | None = None, **settings: Any
) -> AbstractAsyncContextManager[tuple[DockerSource, list[Event]]]:
    """A `DockerSource` on the private daemon; yields it and what it handed on."""
    return running(dockerd, known, host_name=HOST, **settings)


async def swept(source: DockerSource, count: int = 1) -> None:
    """Until `count` sweeps are done and what they recorded is handed on."""
    await eventually(lambda: source.stats.sweeps >= count)
    await eventually(lambda: source._order.ready.empty())
    await asyncio.sleep(0.05)


def posture(stored: list[Event], cid: str) -> list[Event]:
    return [e for e in stored if e.action == "posture" and e.actor.id == cid]


def alerted(events: list[Event]) -> set[str]:
    """The rules that fire when `events` are stored and evaluated in order."""
    stored = MemoryTrail().append(events).stored
    return {alert.rule for alert in RuleEngine(RulesConfig()).alerts_for(stored)}


def unjudged(cid: str, container: str) -> list[Event]:
    """A trail's story of a running container without a judged configuration: its
    create could not be inspected (as when docktrail was upgraded, or lagged)."""
    now = time.time_ns()
    actor = Actor(id=cid, name=container, image=BUSYBOX_REF)
    common: dict[str, Any] = {"source": "docker", "host": HOST, "type": "container"}
    return [
        Event(id=f"{cid}-create", time_ns=now, action="create", actor=actor,
              attributes={"inspect": "gone"}, **common),
        Event(id=f"{cid}-start", time_ns=now + 1, action="start", actor=actor, **common),
    ]  # fmt: skip


def known_unjudged(cid: str, container: str) -> KnownState:
    return KnownState.from_events(unjudged(cid, container))


RISKY = {"sensitive-mount", "dangerous-capability"}


# ---------------------------------------------------------------------- at start


async def test_a_container_unknown_to_the_trail_is_judged_at_start_once(
    dockerd: Dockerd, name: Callable[[str], str]
) -> None:
    cid = run_risky(dockerd, name("unknown"))
    async with following(dockerd) as (source, stored):
        await swept(source)
    (appeared,) = [e for e in stored if e.action == "observed" and e.actor.id == cid]
    assert appeared.attributes["change"] == "appeared"
    assert alerted([appeared]) >= RISKY
    assert posture(stored, cid) == []  # judged by the observation: the sweep adds nothing


async def test_a_known_running_container_never_judged_is_judged_at_start(
    dockerd: Dockerd, name: Callable[[str], str]
) -> None:
    container = name("known")
    cid = run_risky(dockerd, container)
    async with following(dockerd, known_unjudged(cid, container)) as (source, stored):
        await swept(source)
        (event,) = posture(stored, cid)
        assert await source.sweep() == 0  # unchanged: nothing again
        await asyncio.sleep(0.1)
    assert posture(stored, cid) == [event]
    assert (event.source, event.type, event.actor.name) == ("docktrail", "container", container)
    assert event.attributes["reason"] == "start" and event.attributes["state"] == "running"
    assert event.attributes["previous_config_fingerprint"] is None
    assert event.config["cap_add"] == ["SYS_PTRACE"] and event.config["origin"] == "inspect"
    assert alerted([*unjudged(cid, container), event]) >= RISKY
    assert source.stats.posture == 1


async def test_what_was_judged_is_read_from_the_trail_at_restart(
    dockerd: Dockerd, name: Callable[[str], str]
) -> None:
    container = name("restart")
    cid = run_risky(dockerd, container)
    history = unjudged(cid, container)
    async with following(dockerd, KnownState.from_events(history)) as (source, stored):
        await swept(source)
    (judged,) = posture(stored, cid)
    trail = MemoryTrail()
    trail.append(history + stored)
    known = load_known_state(trail, HOST)
    assert known.fingerprint(cid) == judged.attributes["config_fingerprint"]
    async with following(dockerd, known) as (source, again):
        await swept(source)
        assert await source.sweep() == 0
    # Judged again would be a posture event; an Engine event of the first run that reached
    # the stream only after it stopped (a loaded host) is replayed, and is no judgement.
    assert [e for e in again if e.actor.id == cid and e.source == "docktrail"] == []


# ---------------------------------------------------------------------- changes


async def test_a_changed_configuration_is_judged_again(
    dockerd: Dockerd, name: Callable[[str], str]
) -> None:
    container = name("update")
    cid = run_risky(dockerd, container)
    async with following(dockerd, known_unjudged(cid, container)) as (source, stored):
        await swept(source)
        (first,) = posture(stored, cid)
        dockerd.docker("update", "--cpu-shares", "512", container)
        assert await source.sweep() == 1
        await eventually(lambda: len(posture(stored, cid)) == 2)
        assert await source.sweep() == 0
        # Forgetting what was judged records the same configuration with the same id.
        source.known.containers[cid].config_fingerprint = None
        assert await source.sweep() == 1
        await eventually(lambda: len(posture(stored, cid)) == 3)
    first, changed, repeated = posture(stored, cid)
    assert changed.config["cpu_shares"] == 512 and first.config["cpu_shares"] is None
    assert changed.attributes["reason"] == "periodic"
    judged_before = changed.attributes["previous_config_fingerprint"]
    assert judged_before == first.attributes["config_fingerprint"]
    assert changed.id != first.id and repeated.id == changed.id
    trail = MemoryTrail()
    assert len(trail.append([first, changed, repeated]).stored) == 2  # stored once


async def test_the_sweep_runs_every_interval_and_stops_cleanly(
    dockerd: Dockerd, name: Callable[[str], str]
) -> None:
    container = name("interval")
    async with following(dockerd, sweep_interval_secs=0.2) as (source, stored):
        cid = run_risky(dockerd, container)
        await eventually(lambda: any(e.action == "start" and e.actor.id == cid for e in stored))
        sweeps = source.stats.sweeps
        await swept(source, sweeps + 2)
        assert posture(stored, cid) == []  # judged at its create
        dockerd.docker("update", "--cpu-shares", "256", container)
        await eventually(lambda: len(posture(stored, cid)) == 1)
        tasks = set(source._tasks)
    (event,) = posture(stored, cid)
    assert event.attributes["reason"] == "periodic" and event.config["cpu_shares"] == 256
    assert tasks and all(task.done() for task in tasks)  # the sweep loop ended with the source
    assert not source._tasks


async def test_sweep_interval_zero_turns_the_sweep_off(
    dockerd: Dockerd, name: Callable[[str], str]
) -> None:
    container = name("off")
    cid = run_risky(dockerd, container)
    async with following(dockerd, known_unjudged(cid, container), sweep_interval_secs=0) as (
        source,
        stored,
    ):
        await asyncio.sleep(0.5)
    assert source.stats.sweeps == 0 and posture(stored, cid) == []


# ---------------------------------------------------------------------- races (fake Engine)


class SlowFirstInspect(FakeEngine):
    """The first inspect of a container is slow: dockerd answers it after the start."""

    def __init__(self) -> None:
        super().__init__()
        self.slow: set[str] = set()

    def inspect_container(self, container_id: str) -> dict[str, Any] | None:
        if container_id not in self.slow:
            self.slow.add(container_id)
            time.sleep(0.5)
        return super().inspect_container(container_id)


async def test_a_sweep_racing_a_new_containers_create_records_nothing() -> None:
    """The create is held behind its slow inspect; the sweep's posture event waits behind
    it, and by its turn the create's configuration is judged: it is dropped."""
    engine = SlowFirstInspect()
    stored: list[Event] = []

    async def emit(event: Event) -> None:
        stored.append(event)

    config = DockerConfig(host=engine.host, sweep_interval_secs=0)
    source = DockerSource(config, "h", emit, engine=engine)
    task = asyncio.create_task(source.run())
    await eventually(lambda: source.connected.is_set())
    engine.inspects["new"] = inspected("new", time.time_ns(), Privileged=True)
    engine.containers_list = [listed("new")]
    engine.emit("container", "create", "new", name="new", image="busybox")
    await eventually(lambda: "new" in source.known.containers)
    assert await source.sweep() == 1  # inspected before the create was handed on
    await eventually(lambda: any(e.action == "create" for e in stored))
    await asyncio.sleep(0.1)
    source.stop()
    await asyncio.wait_for(task, 5)
    (create,) = [e for e in stored if e.actor.id == "new"]
    assert create.action == "create" and create.config["privileged"] is True
    assert source.stats.posture == 0


def test_posture_events_change_no_container_state() -> None:
    """A posture event records a judgement: it must not make replays look stale."""
    common: dict[str, Any] = {"host": "h", "type": "container", "actor": Actor(id="x")}
    create = Event(id="c", time_ns=100, source="docker", action="create", **common,
                   config={"origin": "inspect"})  # fmt: skip
    judged = Event(id="p", time_ns=900, source="docktrail", action="posture", **common,
                   config={"origin": "inspect", "cpu_shares": 2})  # fmt: skip
    known = KnownState.from_events([create, judged])
    container = known.containers["x"]
    assert container.last_event_ns == 100 and container.state == "created"
    assert known.fingerprint("x") == config_fingerprint(judged.config)
