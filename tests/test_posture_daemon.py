"""Daemon posture against a real private dockerd with a default bridge.

The daemon runs in a network namespace of its own (`unshare --net`), so its
bridge and iptables rules never touch the host's network. Acceptance: a daemon
restarted with `--icc=true` after `--icc=false` raises a `daemon-posture`
alert naming CIS 2.2; `--live-restore` on is recorded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from config.models import DockerConfig, RulesConfig
from config.posture import PostureConfig
from listener.event import Event
from listener.posture.events import PostureMemory
from listener.posture.runner import PostureRunner
from listener.posture.wiring import SweepOnDaemonChange
from listener.rules.engine import RuleEngine
from listener.sources.docker_live import DockerSource
from sinks.memory import MemoryTrail
from tests.dockerd import Dockerd, unavailable_reason
from tests.shared_data import missing_component
from tests.test_docker_source import eventually

HOST = "posture-daemon-test"
BRIDGE = ("--bridge=", "--iptables=true")  # after the fixture's --bridge=none: last one wins


@pytest.fixture
def bridged() -> Iterator[Dockerd]:
    """A private dockerd with the default bridge, in its own network namespace."""
    reason = unavailable_reason() or (None if shutil.which("unshare") else "no `unshare`")
    if reason is not None:
        missing_component(reason)
    daemon = Dockerd(launcher=("unshare", "--net"), extra_args=(*BRIDGE, "--icc=false"))
    daemon.extra_args += ("--live-restore",)
    with daemon:
        yield daemon


@asynccontextmanager
async def watching(
    daemon: Dockerd, memory: PostureMemory, tmp_path: Path
) -> AsyncIterator[list[Event]]:
    """A live source with the posture checks on `daemon`; yields what it handed on."""
    stored: list[Event] = []
    sweeper = SweepOnDaemonChange()  # as `docktrail run` wires it, behind the trail

    async def emit(event: Event) -> None:
        stored.append(event)
        await sweeper.after_write([event])

    posture = PostureConfig(
        daemon_config_file=tmp_path / "absent.json", audit_rules_file=tmp_path / "absent.rules"
    )
    config = DockerConfig(host=daemon.host, reconnect_min_secs=0.05, reconnect_max_secs=0.2)
    runner = PostureRunner(posture, HOST, memory)
    source = DockerSource(config, HOST, emit, on_sweep=runner)
    sweeper.want = source.want_sweep
    task = asyncio.create_task(source.run())
    try:
        await eventually(lambda: source.stats.sweeps >= 1, 30)
        yield stored
    finally:
        source.stop()
        await asyncio.wait_for(task, 15)


def daemon_posture(stored: list[Event], check: str) -> list[Event]:
    return [
        e
        for e in stored
        if e.type == "daemon" and e.action == "posture" and e.attributes["check"] == check
    ]


def alerts(events: list[Event]) -> list[tuple[str, str, str]]:
    stored = MemoryTrail().append(events).stored
    found = RuleEngine(RulesConfig()).alerts_for(stored)
    return [(a.rule, a.severity, a.summary) for a in found if a.rule == "daemon-posture"]


async def test_icc_turned_back_on_alerts_with_the_cis_item(
    bridged: Dockerd, tmp_path: Path
) -> None:
    memory = PostureMemory()
    async with watching(bridged, memory, tmp_path) as stored:
        await eventually(lambda: bool(daemon_posture(stored, "live-restore")))
        (icc,) = daemon_posture(stored, "icc")
        assert (icc.attributes["status"], icc.attributes["value"]) == ("pass", "false")
        (live,) = daemon_posture(stored, "live-restore")
        assert (live.attributes["status"], live.attributes["cis"]) == ("pass", "2.15")
        assert live.attributes["value"] is True
        assert not [a for a in alerts(stored) if "icc" in a[2]]

        bridged.extra_args = (*BRIDGE, "--icc=true")
        await asyncio.to_thread(bridged.restart)
        await eventually(lambda: len(daemon_posture(stored, "icc")) == 2, 60)
        await eventually(lambda: len(daemon_posture(stored, "live-restore")) == 2, 30)

    turned_on = daemon_posture(stored, "icc")[-1]
    assert turned_on.attributes["status"] == "fail"
    assert turned_on.attributes["previous_status"] == "pass"
    assert turned_on.attributes["reason"] == "reconnect"
    icc_alerts = [a for a in alerts(stored) if a[2].startswith("icc")]
    assert len(icc_alerts) == 1
    _rule, severity, summary = icc_alerts[0]
    assert severity == "high" and "CIS 2.2" in summary and "pass → fail" in summary
    live_off = daemon_posture(stored, "live-restore")[-1]
    assert (live_off.attributes["status"], live_off.attributes["value"]) == ("warn", False)
    assert any(a[2].startswith("live-restore") for a in alerts(stored))


async def test_an_unchanged_posture_is_not_recorded_again(bridged: Dockerd, tmp_path: Path) -> None:
    async with watching(bridged, PostureMemory(), tmp_path) as first:
        await eventually(lambda: bool(daemon_posture(first, "icc")))
    checks = {e.attributes["check"] for e in first if e.type == "daemon" and e.action == "posture"}
    assert {"icc", "userns-remap", "live-restore", "insecure-registries"} <= checks

    # A restarted service remembers what the trail holds: nothing new to record.
    async with watching(bridged, PostureMemory.from_events(first), tmp_path) as second:
        pass
    assert [e for e in second if e.action == "posture"] == []


async def test_a_daemon_reload_is_swept_at_once(bridged: Dockerd, tmp_path: Path) -> None:
    async with watching(bridged, PostureMemory(), tmp_path) as stored:
        await eventually(lambda: bool(daemon_posture(stored, "insecure-registries")))
        config_file = bridged.root / "daemon.json"
        settings = json.loads(config_file.read_text())
        config_file.write_text(json.dumps({**settings, "insecure-registries": ["10.9.8.0/24"]}))
        assert bridged.pid is not None
        os.kill(bridged.pid, signal.SIGHUP)  # dockerd reloads its file: a `daemon reload` event
        await eventually(lambda: len(daemon_posture(stored, "insecure-registries")) == 2)

    loosened = daemon_posture(stored, "insecure-registries")[-1]
    assert loosened.attributes["reason"] == "daemon-reload"
    assert loosened.attributes["items"] == ["10.9.8.0/24"]
    (alert,) = [a for a in alerts(stored) if a[2].startswith("insecure-registries")]
    assert "CIS 2.5" in alert[2] and alert[1] == "high"
