"""`docktrail proxy` on its own: the proxy's api-call events into the trail (wiring)."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from config.errors import ConfigError
from config.models import DocktrailConfig
from listener import redact
from listener.proxy.service import ProxyService

log = logging.getLogger(__name__)


def proxy_loop_factory(config: DocktrailConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop `proxy.event_loop` names (None: asyncio's own)."""
    choice = config.proxy.event_loop
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ConfigError(
                "proxy.event_loop is uvloop but uvloop is not installed "
                "(pip install 'docktrail[fast]')"
            ) from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def run_proxy(config: DocktrailConfig) -> int:
    """`docktrail proxy`: api-call events into the trail until SIGTERM or SIGINT."""
    from listener.pipeline import Pipeline
    from sinks.sqlite import SQLiteTrail

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = config.host_name()
    redact.configure(redact.Redactor.from_config(config))
    trail = SQLiteTrail.from_config(config.trail, host)
    async with trail:
        pipeline = Pipeline(
            trail,
            batch_size=config.trail.batch_size,
            flush_interval_secs=config.trail.flush_interval_secs,
        )
        service = ProxyService(config.proxy, host)
        await service.start(pipeline.put)
        try:
            await stop.wait()
        finally:
            await service.aclose()
            await pipeline.aclose()
    log.info("proxy stopped")
    return 0
