"""The posture checks at every sweep of the live Docker source (`on_sweep`).

Every Engine call and file read runs in a worker thread, never on the event
loop. A check that cannot run (the Engine went away) is skipped this sweep;
the reconnect's sweep runs it again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from config.errors import SourceError
from config.posture import PostureConfig
from listener.event import Actor, Event
from listener.posture.audit import audit_rule_checks, read_loaded_rules
from listener.posture.daemon import daemon_checks
from listener.posture.drift import DriftWatch
from listener.posture.events import PostureMemory

log = logging.getLogger(__name__)


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


class PostureRunner:
    """Runs the check families; hands back the events of what changed."""

    def __init__(self, config: PostureConfig, host: str, memory: PostureMemory) -> None:
        self.config = config
        self.host = host
        self.memory = memory
        self.drift = DriftWatch(config.drift, host)
        self.extra: list[Any] = []  # more families: `async (engine, reason) -> events`

    async def __call__(self, engine: Any, reason: str) -> list[Event]:
        if not self.config.enabled or getattr(engine, "api", None) is None:
            return []
        events = await self._daemon(engine, reason)
        events += await self._audit_rules(reason)
        events += await self._containers(engine, reason)
        for family in self.extra:
            try:
                events += await family(engine, reason)
            except SourceError as exc:
                log.warning(f"posture check skipped: {exc}")
        return events

    async def _daemon(self, engine: Any, reason: str) -> list[Event]:
        try:
            info, bridge = await asyncio.to_thread(read_daemon, engine)
        except SourceError as exc:
            log.warning(f"daemon posture skipped: {exc}")
            return []
        config_file = await asyncio.to_thread(read_daemon_json, self.config.daemon_config_file)
        actor = Actor(id=str(info.get("ID") or ""), name=str(info.get("Name") or "") or None)
        checks = daemon_checks(info, bridge, config_file)
        return self.memory.changes("daemon", checks, actor, self.host, reason)

    async def _containers(self, engine: Any, reason: str) -> list[Event]:
        def run() -> list[Event]:
            listed = engine.containers()
            return self.drift.sweep(engine, listed, reason)

        try:
            return await asyncio.to_thread(run)
        except SourceError as exc:
            log.warning(f"container drift skipped: {exc}")
            return []

    async def _audit_rules(self, reason: str) -> list[Event]:
        text, origin = await asyncio.to_thread(read_loaded_rules, self.config.audit_rules_file)
        checks = audit_rule_checks(self.config.required_watches, text, origin)
        actor = Actor(id=self.host, name=self.host)
        return self.memory.changes("audit-rules", checks, actor, self.host, reason)
