"""The proxy in front of a stand-in Engine (a Unix socket server the test writes).

For what a real dockerd cannot be made to do on cue: answer late, send an
interim response, count its connections. `proxy_before(handle)` starts the
stand-in, the proxy with its recorder, and yields them; the recorded events
collect in `Proxied.events`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from config.proxy import ProxyConfig, ProxyPolicyConfig
from listener.event import Event
from listener.proxy.events import PeerLedger
from listener.proxy.forward import ProxyServer
from listener.proxy.record import Recorder

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Proxied:
    proxy: ProxyServer
    config: ProxyConfig
    ledger: PeerLedger
    events: list[Event] = field(default_factory=list)


@asynccontextmanager
async def proxy_before(
    engine: Handler,
    *,
    policy: bool = False,
    prepare: Callable[[ProxyServer], None] | None = None,
) -> AsyncIterator[Proxied]:
    """`prepare` sees the proxy before it starts (to slow a part of it down)."""
    base = Path(tempfile.mkdtemp(prefix="dt-pxs-"))
    server = await asyncio.start_unix_server(engine, path=str(base / "engine.sock"))
    config = ProxyConfig(
        listen=base / "docker.sock",
        engine=base / "engine.sock",
        listen_group=None,
        policy=ProxyPolicyConfig(enabled=policy),
    )
    events: list[Event] = []

    async def store(event: Event) -> None:
        events.append(event)

    recorder, ledger = Recorder(store), PeerLedger()
    recorder.start()
    proxy = ProxyServer(config, "h", recorder, ledger)
    if prepare is not None:
        prepare(proxy)
    await proxy.start()
    try:
        yield Proxied(proxy, config, ledger, events)
    finally:
        await proxy.aclose()
        await recorder.aclose()
        server.close()
        shutil.rmtree(base, ignore_errors=True)
