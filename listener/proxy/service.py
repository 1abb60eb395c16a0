"""Wiring: the proxy inside `docktrail run`, and `docktrail proxy` on its own."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

from config.models import DocktrailConfig
from config.proxy import ProxyConfig
from listener import redact
from listener.event import Event
from listener.proxy.events import PeerAttribution, PeerLedger
from listener.proxy.forward import ProxyServer
from listener.proxy.record import Recorder

log = logging.getLogger("docktrail.proxy")


class ProxyService:
    """The server, its recorder, and the pipeline stage that attributes Engine events."""

    def __init__(self, config: ProxyConfig, host: str) -> None:
        self._config = config
        self._host = host
        self.ledger = PeerLedger()
        self.stage = PeerAttribution(self.ledger, config.attribution_wait_secs)
        self.recorder: Recorder | None = None
        self._server: ProxyServer | None = None

    async def start(self, put: Callable[[Event], Awaitable[None]]) -> None:
        self.recorder = Recorder(put)
        self.recorder.start()
        self._server = ProxyServer(self._config, self._host, self.recorder, self.ledger)
        await self._server.start()

    async def aclose(self) -> None:
        if self._server is not None:
            await self._server.aclose()
        if self.recorder is not None:
            await self.recorder.aclose()


async def run_proxy(config: DocktrailConfig) -> int:
    """`docktrail proxy`: api-call events into the trail until SIGTERM or SIGINT."""
    from listener.pipeline import Pipeline
    from sinks.sqlite import SQLiteTrail

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    host = config.host or socket.gethostname()
    redact.configure(redact.Redactor.from_config(config))
    trail = SQLiteTrail.from_config(config.trail)
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
