"""The posture checks of `docktrail run`, primed from the trail."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from config.models import DocktrailConfig
from listener.posture.events import PostureMemory
from listener.posture.runner import PostureRunner


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
    )


def posture_tasks(on_sweep: object, engine: Any) -> list[Coroutine[Any, Any, None]]:
    """What runs beside the source: the metering loop, when on."""
    if isinstance(on_sweep, PostureRunner) and on_sweep.metering_path is not None:
        return [on_sweep.meter_forever(engine)]
    return []
