"""Wiring: the proxy inside `docktrail run`, and `docktrail proxy` on its own."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from config.proxy import ProxyConfig
from listener.model.event import Event
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
