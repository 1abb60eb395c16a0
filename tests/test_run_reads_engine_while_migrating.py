"""`docktrail run` reads the Engine before it opens the trail for writing: an upgrade's
migrations (a minute on a big trail) run while the Engine's events are read into the
source's queue, so the Engine's buffer of its last 256 events need not cover them.
Where reading resumes is read from the trail file as it is, before the migration.

In-process, against the session's private dockerd: the actor index's migration (0014)
is held until the service has connected to the Engine and 600 Engine events have
happened, more than the Engine keeps for a late reader; every one must be stored, and
no `gap` recorded. Past `UNWIRED_EVENTS_MAX`, what was not kept is a recorded gap."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlite_utils import Database

import listener.app as app
import listener.sources.docker_live as docker_live
import sinks.sqlite.actors as actors
import sinks.sqlite.schema as schema
from config.models import DocktrailConfig
from listener.model.event import Actor, Event, natural_id
from listener.sources.docker_engine import since_arg
from listener.sources.docker_stream import REPLAY_OVERLAP_NS
from sinks.base import EventFilter
from sinks.sqlite import SQLiteTrail
from tests.actor_layouts import trail_before_the_actor_index
from tests.dockerd import Dockerd

HOST = "upgrade-host"
VOLUMES = 300  # a create and a destroy each: more than the Engine's 256 for a late reader
WAIT_SECS = 30.0


class _Seen(logging.Handler):
    """Sets `event` when a log record's message is `message`."""

    def __init__(self, message: str) -> None:
        super().__init__()
        self.message = message
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == self.message:
            self.event.set()


@contextlib.contextmanager
def _watching(message: str) -> Iterator[threading.Event]:
    """An event set when the service logs `message` (at info, as `docktrail run` logs)."""
    seen = _Seen(message)
    logger = logging.getLogger("listener")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(seen)
    try:
        yield seen.event
    finally:
        logger.removeHandler(seen)
        logger.setLevel(level)


def _trail_of_before_the_upgrade(path: Path, daemon: Dockerd, prefix: str) -> int:
    """A trail as a docktrail before the actor index left it, its last Engine event of
    `HOST` stored just after the Engine's newest (which the Engine still holds when the
    service connects: nothing between them can have been missed); that event's time."""
    with daemon.session() as api:
        status, text = api.request("POST", "/volumes/create", {"Name": f"{prefix}-marker"})
        assert status == 201, text
        status, text = api.request("DELETE", f"/volumes/{prefix}-marker")
        assert status == 204, text
    time.sleep(0.05)  # past the replay's overlap: the stream's replay starts after the marker
    stored_ns = time.time_ns()
    event = Event(
        id=natural_id("upgrade", stored_ns),
        time_ns=stored_ns,
        source="docker",
        host=HOST,
        type="volume",
        action="create",
        actor=Actor(id="before-the-upgrade"),
    )
    with SQLiteTrail(path, host=HOST) as trail:
        trail.append([event])
    trail_before_the_actor_index(path)
    return stored_ns


def _volume_churn(daemon: Dockerd, prefix: str) -> None:
    with daemon.session() as api:
        for n in range(VOLUMES):
            for method, where, body in (
                ("POST", "/volumes/create", {"Name": f"{prefix}-{n}"}),
                ("DELETE", f"/volumes/{prefix}-{n}", None),
            ):
                status, text = api.request(method, where, body)
                assert status in (201, 204), text


@contextlib.contextmanager
def _migration_held(connected: threading.Event, daemon: Dockerd, prefix: str) -> Iterator[None]:
    """The actor index's migration, run once the service has connected to the Engine
    and the volumes have churned (the service's source reads them meanwhile). In place:
    `apply_migrations` defaults to the list itself."""
    index = next(i for i, m in enumerate(schema.MIGRATIONS) if m.name == actors.MIGRATION)
    real = schema.MIGRATIONS[index]

    def apply(db: Database) -> None:
        if not connected.wait(WAIT_SECS):
            raise AssertionError("the Engine was not read while the trail migrated")
        _volume_churn(daemon, prefix)
        real.apply(db)

    schema.MIGRATIONS[index] = real._replace(apply=apply)
    try:
        yield
    finally:
        schema.MIGRATIONS[index] = real


def _volume_events(path: Path, prefix: str) -> list[Event]:
    with SQLiteTrail(path) as trail:
        events = trail.query(EventFilter(source="docker", type="volume"))
        return [e for e in events if e.actor.id.startswith(prefix) and "marker" not in e.actor.id]


def _migrated(path: Path) -> bool:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        sql = "SELECT count(*) FROM _migrations WHERE name = ?"
        return bool(conn.execute(sql, (actors.MIGRATION,)).fetchone()[0])


async def _until(predicate: object, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECS
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT_SECS:.0f} s: {what}")
        await asyncio.sleep(0.1)


async def _upgraded_by_run(
    daemon: Dockerd, path: Path, prefix: str, monkeypatch: pytest.MonkeyPatch, stored: int
) -> None:
    """`run_service` on the trail at `path`, its migration held (`_migration_held`), until
    the trail is migrated and `stored` volume events of `prefix` are in it; then SIGTERM."""
    # the service's own process-wide settings stay out of the rest of the test session
    monkeypatch.setattr(app, "tune_gc", lambda: None)
    monkeypatch.setattr(app, "tune_threads", lambda: None)
    config = DocktrailConfig.model_validate(
        {
            "host": HOST,
            "trail": {"path": str(path), "flush_interval_secs": 0.02},
            "docker": {"host": daemon.host, "reconnect_min_secs": 0.2},
            "auditd": {"enabled": False},
        }
    )
    with (
        _watching("connected to the Docker Engine") as connected,
        _migration_held(connected, daemon, prefix),
    ):
        service = asyncio.create_task(app.run_service(config))
        try:
            await _until(lambda: service.done() or _migrated(path), "the trail migrated")
            await _until(
                lambda: service.done() or len(_volume_events(path, prefix)) == stored,
                f"{stored} volume events stored",
            )
        finally:
            if not service.done():  # through the service's own handler: a clean stop
                os.kill(os.getpid(), signal.SIGTERM)
            assert await asyncio.wait_for(service, WAIT_SECS) == 0


def _gaps(path: Path) -> list[Event]:
    with SQLiteTrail(path) as trail:
        return list(trail.query(EventFilter(source="docktrail", action="gap")))


async def test_the_engine_is_read_while_an_upgrade_migrates_the_trail(
    dockerd: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "docktrail.db"
    prefix = f"upgrade-{os.getpid()}-{time.time_ns()}"
    stored_ns = _trail_of_before_the_upgrade(path, dockerd, prefix)
    await _upgraded_by_run(dockerd, path, prefix, monkeypatch, 2 * VOLUMES)
    stored = _volume_events(path, prefix)
    assert sorted((e.actor.id, e.action) for e in stored) == sorted(
        (f"{prefix}-{n}", action) for n in range(VOLUMES) for action in ("create", "destroy")
    )
    with SQLiteTrail(path) as trail:
        [connected_event] = trail.query(EventFilter(source="docktrail", action="connected"))
    assert _gaps(path) == []
    # resumed where the file said before it was migrated: at its last Engine event
    assert connected_event.attributes["since"] == since_arg(stored_ns - REPLAY_OVERLAP_NS)


async def test_past_its_bound_the_wait_keeps_the_first_events_and_records_the_rest_as_a_gap(
    dockerd: Dockerd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At most `UNWIRED_EVENTS_MAX` Engine events wait while the trail is upgraded (here
    100 of 600): those are stored, then what the Engine still holds (its last 256), and
    what lies between is a gap, from the last event kept to the oldest one still held."""
    monkeypatch.setattr(docker_live, "UNWIRED_EVENTS_MAX", 100)
    path = tmp_path / "docktrail.db"
    prefix = f"bound-{os.getpid()}-{time.time_ns()}"
    _trail_of_before_the_upgrade(path, dockerd, prefix)
    with dockerd.record_events() as truth:  # the ground truth: a raw /events reader
        await _upgraded_by_run(dockerd, path, prefix, monkeypatch, 100 + 256)
        said = [raw for raw in truth.events if str(raw["Actor"]["ID"]).startswith(f"{prefix}-")]
    said = [raw for raw in said if "marker" not in raw["Actor"]["ID"]]
    assert len(said) == 2 * VOLUMES

    def of(raws: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
        return [(r["Actor"]["ID"], r["Action"], int(r["timeNano"])) for r in raws]

    stored = [(e.actor.id, e.action, e.time_ns) for e in _volume_events(path, prefix)]
    assert stored == of(said[:100]) + of(said[-256:])
    [gap] = _gaps(path)
    assert gap.attributes["from_ns"] == int(said[99]["timeNano"])
    assert gap.attributes["until_ns"] == int(said[-256]["timeNano"])
