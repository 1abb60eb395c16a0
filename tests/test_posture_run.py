"""`docktrail run` wires the posture checks: recorded at start, not repeated after a
restart (the trail remembers), and metering beside the trail, 0600."""

from __future__ import annotations

import sqlite3
import stat
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from sinks.base import EventFilter
from tests import test_run_live
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.test_run_live import Service

service_factory = test_run_live.service_factory
POSTURE = EventFilter(type=("daemon", "audit-rules", "host"), action="posture")


@pytest.fixture
def sleeper(dockerd: Dockerd) -> Iterator[str]:
    name = f"prun-{uuid.uuid4().hex[:8]}"
    yield dockerd.docker("run", "-d", "--name", name, BUSYBOX_REF, "sleep", "300").strip()
    dockerd.docker("rm", "--force", name, check=False)


def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def metered(service: Service, container_id: str) -> int:
    path = service.trail_path.with_suffix(".metering.db")
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        made = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'samples'"
        if db.execute(made).fetchone() is None:
            return 0  # the service made the file (0600 first) and is setting it up
        query = "SELECT COUNT(*) FROM samples WHERE container_id = ?"
        return int(db.execute(query, (container_id,)).fetchone()[0])


def test_run_records_posture_once_and_meters_beside_the_trail(
    dockerd: Dockerd, service_factory: Callable[..., Service], sleeper: str
) -> None:
    service = service_factory(dockerd)
    wait_until(lambda: {e.attributes["check"] for e in service.events(POSTURE)} >= {"icc"})
    wait_until(lambda: metered(service, sleeper) >= 1)
    metering_file = service.trail_path.with_suffix(".metering.db")
    assert stat.S_IMODE(metering_file.stat().st_mode) == 0o600
    wait_until(lambda: service.count_logs("posture sweep done") >= 1 or bool(service.events(
        EventFilter(type="host", action="posture"))))  # fmt: skip
    assert service.stop() == 0, service.log_text()
    first = service.events(POSTURE)
    checks = {e.attributes["check"] for e in first}
    assert {"icc", "live-restore", "container-sprawl"} <= checks
    assert "audit-watches" not in checks  # auditd.enabled is false here: nothing to alert

    again = service_factory(dockerd)
    wait_until(lambda: again.count_logs("connected to the Docker Engine") >= 1)
    time.sleep(1.0)  # the start's sweep
    assert again.stop() == 0, again.log_text()
    extra = [e.attributes["check"] for e in again.events(POSTURE)[len(first) :]]
    assert extra == []  # nothing changed: nothing recorded
