"""The posture checks of `docktrail run`, primed from the trail."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from config.models import DocktrailConfig
from listener.model.event import Event
from listener.posture.events import PostureMemory
from listener.posture.runner import PostureRunner
from listener.rules.activity import READ_OPERATIONS


def metering_path(config: DocktrailConfig) -> Path:
    """The snapshots file: beside the trail unless configured."""
    configured = config.posture.metering.path
    return configured if configured is not None else config.trail.path.with_suffix(".metering.db")


async def posture_runner(config: DocktrailConfig, trail: Any, host: str) -> PostureRunner:
    """A runner that remembers what the trail recorded last (no repeat after a restart)."""
    memory = await trail.call(lambda t: PostureMemory.from_trail(t, host))
    return PostureRunner(
        config.posture,
        host,
        memory,
        metering_path=metering_path(config) if config.posture.metering.enabled else None,
        sprawl_margin=config.rules.container_sprawl.margin,
        audit_watches=config.auditd.enabled,
    )


def posture_tasks(on_sweep: object, engine: Any) -> list[Coroutine[Any, Any, None]]:
    """What runs beside the source: the metering loop, when on."""
    if isinstance(on_sweep, PostureRunner) and on_sweep.metering_path is not None:
        return [on_sweep.meter_forever(engine)]
    return []


class SweepOnDaemonChange:
    """Pipeline stage: a stored change of a daemon file (auditd) or the Engine's own
    `daemon reload` asks the live source for a posture sweep now."""

    def __init__(self) -> None:
        self.want: Callable[[str], None] | None = None  # the source's `want_sweep`

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        reason = next(filter(None, map(_sweep_reason, stored)), None)
        if reason is not None and self.want is not None:
            self.want(reason)


def _sweep_reason(event: Event) -> str | None:
    if event.source == "docker" and event.type == "daemon" and event.action == "reload":
        return "daemon-reload"
    if event.type == "daemon-file" and event.action not in READ_OPERATIONS:
        return "daemon-config-change"
    return None
