"""The posture checks of `docktrail run`, primed from the trail."""

from __future__ import annotations

from typing import Any

from config.models import DocktrailConfig
from listener.posture.events import PostureMemory
from listener.posture.runner import PostureRunner


async def posture_runner(config: DocktrailConfig, trail: Any, host: str) -> PostureRunner:
    """A runner that remembers what the trail recorded last (no repeat after a restart)."""
    memory = await trail.call(lambda t: PostureMemory.from_trail(t, host))
    return PostureRunner(config.posture, host, memory)
