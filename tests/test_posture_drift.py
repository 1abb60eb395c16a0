"""Container drift against the real private dockerd: `docker diff`, budgeted.

Acceptance: a file written to /usr/bin inside a running container is reported
as drift with its path (and alerted); a write to a declared volume is not.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from config.models import RulesConfig
from config.posture import DriftConfig
from listener.event import Event
from listener.posture.drift import DriftWatch, drifted
from listener.rules.engine import RuleEngine
from listener.sources.docker_engine import EngineClient
from sinks.memory import MemoryTrail
from tests.dockerd import BUSYBOX_REF, Dockerd

HOST = "drift-test"


@pytest.fixture
def started(dockerd: Dockerd) -> Iterator[Callable[..., str]]:
    """Starts a busybox container with a volume on /data; removed after the test."""
    made: list[str] = []

    def start(*extra: str) -> str:
        name = f"drift-{uuid.uuid4().hex[:8]}"
        made.append(name)
        return dockerd.docker(
            "run", "-d", "--name", name, "-v", "/data", *extra, BUSYBOX_REF, "sleep", "300"
        ).strip()

    yield start
    for name in made:
        dockerd.docker("rm", "--force", "--volumes", name, check=False)


@pytest.fixture
def engine(dockerd: Dockerd) -> Iterator[EngineClient]:
    client = EngineClient(dockerd.host, 30.0)
    yield client
    client.close()


def ours(engine: EngineClient, *ids: str) -> list[dict[str, object]]:
    return [c for c in engine.containers() if c["Id"] in ids]


def alerts(events: list[Event]) -> list[str]:
    stored = MemoryTrail().append(events).stored
    found = RuleEngine(RulesConfig()).alerts_for(stored)
    return [a.summary for a in found if a.rule == "container-drift"]


def test_a_binary_written_to_usr_bin_is_drift_a_volume_write_is_not(
    dockerd: Dockerd, started: Callable[..., str], engine: EngineClient
) -> None:
    cid = started()
    watch = DriftWatch(DriftConfig(), HOST)
    assert watch.sweep(engine, ours(engine, cid), "start") == []  # a clean container

    dockerd.docker("exec", cid, "sh", "-c", "echo data > /data/payload")
    assert watch.sweep(engine, ours(engine, cid), "periodic") == []

    dockerd.docker("exec", cid, "sh", "-c", "mkdir -p /usr/bin && echo x > /usr/bin/evil")
    (event,) = watch.sweep(engine, ours(engine, cid), "periodic")
    assert event.action == "drift" and event.actor.id == cid
    assert "added /usr/bin/evil" in event.attributes["paths"]
    assert "/usr/bin/evil" in event.attributes["critical"]
    assert not [p for p in event.attributes["paths"] if "/data" in p]
    (summary,) = alerts([event])
    assert "/usr/bin/evil" in summary

    # The same drift is not recorded again; a new change is.
    assert watch.sweep(engine, ours(engine, cid), "periodic") == []
    dockerd.docker("exec", cid, "sh", "-c", "echo y > /tmp/scratch")
    (again,) = watch.sweep(engine, ours(engine, cid), "periodic")
    assert "added /tmp/scratch" in again.attributes["paths"]
    assert again.attributes["critical"] == ["/usr/bin", "/usr/bin/evil"]


def test_the_budget_spreads_containers_over_sweeps(
    dockerd: Dockerd, started: Callable[..., str], engine: EngineClient
) -> None:
    ids = [started(), started()]
    for cid in ids:
        dockerd.docker("exec", cid, "sh", "-c", "echo x > /etc/changed")
    watch = DriftWatch(DriftConfig(containers_per_sweep=1), HOST)
    first = watch.sweep(engine, ours(engine, *ids), "periodic")
    second = watch.sweep(engine, ours(engine, *ids), "periodic")
    assert len(first) == len(second) == 1
    assert {first[0].actor.id, second[0].actor.id} == set(ids)


def test_parent_directories_and_mounted_paths_are_left_out() -> None:
    changes = [{"Path": "/etc", "Kind": 0}, {"Path": "/etc/passwd", "Kind": 0}]
    changes += [{"Path": f"/srv/f{i}", "Kind": 1} for i in range(80)]
    changes.append({"Path": "/data/inside", "Kind": 1})
    found = drifted(changes, ["/data"])
    assert ("changed", "/etc") not in found and ("changed", "/etc/passwd") in found
    assert len(found) == 81


def test_a_container_removed_since_the_listing_does_not_hide_the_others_drift(
    dockerd: Dockerd, started: Callable[..., str], engine: EngineClient
) -> None:
    gone, kept = started(), started()
    listed = ours(engine, gone, kept)
    dockerd.docker("rm", "--force", gone)
    dockerd.docker("exec", kept, "sh", "-c", "echo x > /bin/planted")

    found = DriftWatch(DriftConfig(), HOST).sweep(engine, listed, "start")

    assert [event.actor.id for event in found] == [kept]
    assert "added /bin/planted" in found[0].attributes["paths"]


def test_the_round_robin_diffs_each_container_once_before_any_twice(
    dockerd: Dockerd, started: Callable[..., str], engine: EngineClient
) -> None:
    ids = [started() for _ in range(3)]
    for cid in ids:
        dockerd.docker("exec", cid, "sh", "-c", "echo x > /bin/planted")
    watch = DriftWatch(DriftConfig(containers_per_sweep=2), HOST)
    listed = ours(engine, *ids)

    first = [event.actor.id for event in watch.sweep(engine, listed, "start")]
    second = [event.actor.id for event in watch.sweep(engine, listed, "periodic")]

    assert len(first) == 2 and len(set(first)) == 2
    assert second == sorted(set(ids) - set(first))


def test_a_removed_containers_fingerprint_goes_a_stopped_ones_stays(
    dockerd: Dockerd, started: Callable[..., str], engine: EngineClient
) -> None:
    stopped, removed = started(), started()
    for cid in (stopped, removed):
        dockerd.docker("exec", cid, "sh", "-c", "echo x > /etc/changed")
    watch = DriftWatch(DriftConfig(), HOST)
    assert len(watch.sweep(engine, ours(engine, stopped, removed), "periodic")) == 2
    dockerd.docker("stop", "-t", "0", stopped)
    dockerd.docker("rm", "--force", removed)
    assert watch.sweep(engine, ours(engine, stopped, removed), "periodic") == []
    assert set(watch._last) == {stopped}  # a CI host's removed containers are not kept
    dockerd.docker("start", stopped)
    assert watch.sweep(engine, ours(engine, stopped), "periodic") == []  # not recorded again
