"""The posture checks at every sweep of the live Docker source (`on_sweep`),
and the metering loop beside it.

Every Engine call and file read runs in a worker thread, never on the event
loop. A family that cannot run (the Engine went away) is skipped this sweep;
the reconnect's sweep runs it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from config.errors import SourceError
from config.posture import PostureConfig
from listener.model.event import Actor, Event
from listener.posture import metering, sprawl
from listener.posture.audit import audit_rule_checks, read_loaded_rules
from listener.posture.check import Check
from listener.posture.daemon import daemon_checks
from listener.posture.drift import DriftWatch
from listener.posture.events import PostureMemory

log = logging.getLogger(__name__)
_DAY_NS = 86_400 * 1_000_000_000
Listing = list[dict[str, Any]]


def read_daemon(engine: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Blocking: the Engine's `/info` and its default bridge network (None when absent)."""
    import docker.errors

    def bridge(client: Any) -> dict[str, Any] | None:
        try:
            return client.inspect_network("bridge")  # type: ignore[no-any-return]
        except docker.errors.NotFound:
            return None

    info = engine.api("cannot read /info", lambda client: client.info())
    return info, engine.api("cannot inspect the bridge network", bridge)


def read_daemon_json(path: Path) -> dict[str, Any] | None:
    """Blocking: the daemon's configuration file, None when unreadable or not JSON."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_host(engine: Any) -> tuple[Listing, Listing, Listing]:
    """Blocking: containers (all), images and volumes of the Engine."""
    volumes = engine.api("cannot list volumes", lambda c: c.volumes().get("Volumes") or [])
    return engine.containers(), engine.images(), list(volumes)


def host_checks(
    config: PostureConfig,
    listings: tuple[Listing, Listing, Listing],
    last_used_ns: Mapping[str, int],
    samples: Sequence[metering.Sample] | None,
    info: Mapping[str, Any],
    sprawl_margin: int,
) -> list[Check]:
    """The CIS 6.x rows: image and container sprawl, backups, and resource usage
    unless `samples` is None (no snapshot taken yet: nothing to judge)."""
    containers, images, volumes = listings
    candidates = sprawl.image_candidates(
        images, containers, last_used_ns, time.time_ns(), config.images.unused_days
    )
    host_memory, host_cpus = int(info.get("MemTotal") or 0), int(info.get("NCPU") or 1)
    checks = [
        sprawl.image_check(candidates, sprawl.tag_sprawl(images, config.images.max_tags)),
        sprawl.container_check(containers, sprawl_margin),
        sprawl.backup_check(sprawl.unbacked_volumes(containers, volumes, config.backup_labels)),
    ]
    if samples is not None:
        share = config.metering.host_share
        checks.append(metering.usage_check(samples, host_memory, host_cpus, share))
    return checks


class PostureRunner:
    """Runs the check families; hands back the events of what changed."""

    def __init__(
        self,
        config: PostureConfig,
        host: str,
        memory: PostureMemory,
        *,
        metering_path: Path | None = None,
        sprawl_margin: int = 25,
        audit_watches: bool = True,
    ) -> None:
        self.config = config
        # The watches matter where docktrail reads auditd; with `auditd.enabled: false`
        # their absence is the operator's choice, shown by `docktrail posture`, not alerted.
        self.audit_watches = audit_watches
        self.host = host
        self.memory = memory
        self.metering_path = metering_path
        self.sprawl_margin = sprawl_margin
        self.drift = DriftWatch(config.drift, host)
        self.samples: list[metering.Sample] = []  # the last metering snapshot
        self.snapshots = 0
        self._last_used: dict[str, int] = {}  # image id -> last sweep a container had it
        self._pool: ThreadPoolExecutor | None = None

    async def __call__(self, engine: Any, reason: str) -> list[Event]:
        if not self.config.enabled or getattr(engine, "api", None) is None:
            return []
        try:
            info, bridge = await asyncio.to_thread(read_daemon, engine)
            listings = await asyncio.to_thread(read_host, engine)
        except SourceError as exc:
            log.warning(f"posture checks skipped: {exc}")
            return []
        events = await self._daemon(info, bridge, reason)
        if self.audit_watches:
            events += await self.audit_rules(reason)
        events += self._host(info, listings, reason)
        try:
            events += await asyncio.to_thread(self.drift.sweep, engine, listings[0], reason)
        except SourceError as exc:
            log.warning(f"container drift skipped: {exc}")
        return events

    async def _daemon(
        self, info: dict[str, Any], bridge: dict[str, Any] | None, reason: str
    ) -> list[Event]:
        config_file = await asyncio.to_thread(read_daemon_json, self.config.daemon_config_file)
        actor = Actor(id=str(info.get("ID") or ""), name=str(info.get("Name") or "") or None)
        checks = daemon_checks(info, bridge, config_file)
        return self.memory.changes("daemon", checks, actor, self.host, reason)

    async def audit_rules(self, reason: str) -> list[Event]:
        text, origin = await asyncio.to_thread(read_loaded_rules, self.config.audit_rules_file)
        checks = audit_rule_checks(self.config.required_watches, text, origin)
        actor = Actor(id=self.host, name=self.host)
        return self.memory.changes("audit-rules", checks, actor, self.host, reason)

    def _host(
        self, info: dict[str, Any], listings: tuple[Listing, Listing, Listing], reason: str
    ) -> list[Event]:
        now = time.time_ns()
        for container in listings[0]:
            self._last_used[str(container.get("ImageID") or "")] = now
        listed_images = {str(image.get("Id") or "") for image in listings[1]}
        self._last_used = {i: t for i, t in self._last_used.items() if i in listed_images}
        samples = self.samples if self.snapshots else None
        checks = host_checks(
            self.config, listings, self._last_used, samples, info, self.sprawl_margin
        )
        actor = Actor(id=self.host, name=self.host)
        return self.memory.changes(
            "host", checks, actor, self.host, reason, summary_after_ns=_DAY_NS
        )

    # ------------------------------------------------------------------ metering

    def meter_once(self, engine: Any) -> int:
        """Blocking: one snapshot of the running containers, stored; how many."""
        assert self.metering_path is not None
        if self._pool is None:  # kept: each of its threads keeps its Engine connection
            self._pool = ThreadPoolExecutor(
                self.config.metering.workers, thread_name_prefix="docker-stats"
            )
        fresh = metering.snapshot(engine, engine.containers(), self._pool)
        with metering.opened(self.metering_path) as store:
            store.add(fresh.samples, self.config.metering.retention_days)
        if fresh.unread:
            log.warning(f"metering: stats of {len(fresh.unread)} running container(s) unread")
        samples = metering.judged(fresh, self.samples)
        if samples is not None:
            self.samples = samples
            self.snapshots += 1
        return len(fresh.samples)

    async def meter_forever(self, engine: Any) -> None:
        """A snapshot every `metering.interval_secs` (from start to start) until cancelled;
        a snapshot that takes longer delays the next, never doubles it up."""
        interval = self.config.metering.interval_secs
        try:
            while True:
                started = time.monotonic()
                try:
                    await asyncio.to_thread(self.meter_once, engine)
                except SourceError as exc:
                    log.warning(f"metering snapshot skipped: {exc}")
                await asyncio.sleep(max(0.0, started + interval - time.monotonic()))
        finally:
            self.close()

    def close(self) -> None:
        """Ends the metering threads (the snapshot under way finishes on its own)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
