"""`docktrail posture`, `posture images`, `posture volumes` and `top` against the
real private dockerd and a real SQLite trail and metering file."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sqlite3
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from config.errors import SourceError
from config.models import TrailConfig
from config.posture import MeteringConfig, PostureConfig
from listener.cli import main
from listener.event import Actor, Event, Who
from listener.posture.events import PostureMemory
from listener.posture.metering import usage_check
from listener.posture.runner import PostureRunner
from listener.sources.docker_engine import EngineClient
from sinks.sqlite import SQLiteTrail
from tests.dockerd import BUSYBOX_REF, Dockerd

HOST = "posture-cli-test"


@pytest.fixture
def engine(dockerd: Dockerd) -> Iterator[EngineClient]:
    client = EngineClient(dockerd.host, 30.0)
    yield client
    client.close()


@pytest.fixture
def workload(dockerd: Dockerd) -> Iterator[str]:
    """A running container with a named volume and no limits; its id."""
    name, volume = f"pcli-{uuid.uuid4().hex[:8]}", f"pvol-{uuid.uuid4().hex[:8]}"
    cid = dockerd.docker(
        "run", "-d", "--name", name, "-v", f"{volume}:/data", BUSYBOX_REF, "sleep", "300"
    ).strip()  # fmt: skip
    yield cid
    dockerd.docker("rm", "--force", cid, check=False)
    dockerd.docker("volume", "rm", volume, check=False)


def write_config(tmp_path: Path, dockerd: Dockerd, **posture: Any) -> Path:
    settings = {
        "daemon_config_file": str(tmp_path / "absent.json"),
        "audit_rules_file": str(tmp_path / "absent.rules"),
        "metering": {"path": str(tmp_path / "metering.db"), "interval_secs": 60},
        **posture,
    }
    config = {
        "host": HOST,
        "docker": {"host": dockerd.host},
        "trail": {"path": str(tmp_path / "trail.db")},
        "posture": settings,
    }
    path = tmp_path / "docktrail.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(config: Path, *args: str) -> Result:
    runner = CliRunner(env={"DOCKER_HOST": None})
    return runner.invoke(main, ["-c", str(config), *args], catch_exceptions=False)


def rows(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def daemon_file_change(login: str, at_ns: int) -> Event:
    return Event(
        id=uuid.uuid4().hex, time_ns=at_ns, source="auditd", host=HOST, type="daemon-file",
        action="write", actor=Actor(id="/etc/docker/daemon.json", name="/etc/docker/daemon.json"),
        who=Who(login=login, method="auditd"),
    )  # fmt: skip


def test_posture_report_rows_with_since_and_who(
    tmp_path: Path, dockerd: Dockerd, engine: EngineClient, workload: str
) -> None:
    config = write_config(tmp_path, dockerd)
    # every running container in one sweep: the session's daemon runs other tests' too
    posture = PostureConfig.model_validate(
        {"daemon_config_file": tmp_path / "absent.json",
         "drift": {"containers_per_sweep": 10_000, "time_budget_secs": 120}}
    )  # fmt: skip
    runner = PostureRunner(posture, HOST, PostureMemory())
    dockerd.docker("exec", workload, "sh", "-c", "echo x > /bin/planted")
    before = daemon_file_change("alice", time.time_ns() - 5_000_000_000)
    recorded = asyncio.run(runner(engine, "start"))
    assert [e for e in recorded if e.action == "drift" and e.actor.id == workload]
    with SQLiteTrail.from_config(TrailConfig(path=tmp_path / "trail.db")) as trail:
        trail.append([before, *recorded])

    result = cli(config, "posture", "--format", "json")
    found = {row["check"]: row for row in rows(result)}
    assert {"icc", "live-restore", "audit-watches", "image-sprawl", "container-sprawl",
            "volume-backups", "resource-usage", "container-drift"} <= set(found)  # fmt: skip
    live = found["live-restore"]
    assert (live["cis"], live["status"]) == ("2.15", "warn")
    assert live["since"] is not None and live["changed_by"] == "alice (/etc/docker/daemon.json)"
    assert found["container-drift"]["status"] == "fail"
    assert found["volume-backups"]["status"] == "warn"
    failed = any(row["status"] == "fail" for row in found.values())
    assert result.exit_code == (1 if failed else 0) == 1

    table = cli(config, "posture")
    assert table.output.splitlines()[0].split()[:3] == ["CHECK", "CIS", "STATUS"]
    assert any(line.startswith("container-drift") for line in table.output.splitlines())


def test_unused_images_and_unbacked_volumes_are_listed(
    tmp_path: Path, dockerd: Dockerd, workload: str
) -> None:
    unused = f"registry.internal/old/unused-{uuid.uuid4().hex[:6]}:1"
    image_id = dockerd.import_busybox(unused)
    try:
        config = write_config(tmp_path, dockerd, images={"unused_days": 1 / 86_400})
        time.sleep(1.1)  # past the threshold of one second
        listed = rows(cli(config, "posture", "images", "--format", "json"))
        by_image = {row["image"]: row for row in listed}
        assert unused in by_image and by_image[unused]["id"] == image_id
        assert BUSYBOX_REF not in by_image  # a container uses it

        config = write_config(tmp_path, dockerd, images={"unused_days": 30})
        assert unused not in {r["image"] for r in rows(cli(config, "posture", "images",
                                                           "--format", "json"))}  # fmt: skip
        volumes = rows(cli(config, "posture", "volumes", "--format", "json"))
        name = dockerd.docker("inspect", "-f", "{{.Name}}", workload).strip().lstrip("/")
        assert [v for v in volumes if v["containers"] == name and v["volume"].startswith("pvol-")]
    finally:
        dockerd.docker("rmi", unused, check=False)


def test_metering_snapshots_at_the_configured_rate_and_top_shows_them(
    tmp_path: Path, dockerd: Dockerd, engine: EngineClient, workload: str
) -> None:
    path = tmp_path / "metering.db"
    posture = PostureConfig(metering=MeteringConfig(interval_secs=1.0))
    runner = PostureRunner(posture, HOST, PostureMemory(), metering_path=path)

    async def meter_for(secs: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runner.meter_forever(engine), secs)

    asyncio.run(meter_for(4.5))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with sqlite3.connect(path) as db:
        times = [t for (t,) in db.execute(
            "SELECT time_ns FROM samples WHERE container_id = ? ORDER BY time_ns", (workload,)
        )]  # fmt: skip
    assert 3 <= len(times) <= 5, times
    # dockerd answers at its collector's 1 s tick: starts are 1 s apart, answers nearly so.
    assert all(b - a >= 800_000_000 for a, b in itertools.pairwise(times)), times

    path.chmod(0o644)  # loosened by someone: the next snapshot tightens it again
    runner.meter_once(engine)
    runner.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    result = cli(write_config(tmp_path, dockerd), "top", "--format", "json")
    assert path.read_bytes() == before  # `top` only reads
    (mine,) = [row for row in rows(result) if row["id"] == workload]
    assert mine["pids"] >= 1 and mine["memory_bytes"] > 0
    assert mine["cpu_percent"] is not None and mine["limited"] is False
    assert cli(write_config(tmp_path, dockerd), "top").output.startswith("CONTAINER")


class StatsTimingOut:
    """The real Engine, except that its stats calls fail as they do when dockerd is loaded."""

    def __init__(self, engine: EngineClient) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def api(self, description: str, call: Any) -> Any:
        if description.startswith("cannot read stats"):
            raise SourceError(f"{description}: Read timed out")
        return self._engine.api(description, call)


def test_unread_stats_keep_the_previous_judgement_instead_of_nothing_running(
    tmp_path: Path, engine: EngineClient, workload: str
) -> None:
    path = tmp_path / "metering.db"
    runner = PostureRunner(PostureConfig(), HOST, PostureMemory(), metering_path=path)
    slow = StatsTimingOut(engine)
    try:
        assert runner.meter_once(slow) == 0
        assert runner.snapshots == 0  # nothing known of the workload yet: nothing judged

        assert runner.meter_once(engine) >= 1
        (read,) = [s for s in runner.samples if s.container_id == workload]
        assert runner.snapshots == 1

        runner.meter_once(slow)
        assert runner.snapshots == 2
        (kept,) = [s for s in runner.samples if s.container_id == workload]
        assert kept.time_ns == read.time_ns  # the previous reading, not "nothing running"
        host = PostureConfig().metering.host_share
        assert usage_check(runner.samples, 1 << 40, 2, host).status == "warn"  # no limits
    finally:
        runner.close()
    with sqlite3.connect(path) as db:
        stored = "SELECT COUNT(*) FROM samples WHERE container_id = ?"
        assert db.execute(stored, (workload,)).fetchone()[0] == 1  # only what was read


def test_the_last_use_of_removed_images_is_forgotten(engine: EngineClient, workload: str) -> None:
    from listener.posture.runner import read_host

    runner = PostureRunner(PostureConfig(), HOST, PostureMemory())
    runner._last_used["sha256:" + "0" * 64] = 1  # an image removed since it was last used
    listings = read_host(engine)
    runner._host(engine.api("info", lambda c: c.info()), listings, "periodic")
    listed = {str(image["Id"]) for image in listings[1]}
    used = str(next(c for c in listings[0] if c["Id"] == workload)["ImageID"])
    assert used in runner._last_used and set(runner._last_used) <= listed
