"""An interim response (`100 Continue`) is relayed, and the final one after it.

Go's HTTP server, the Engine's, answers `Expect: 100-continue` (curl sends it
with larger bodies) with `HTTP/1.1 100 Continue` before the real response.
The proxy took that interim head for the response: it recorded the call with
status 100 and without the new object's id, and never relayed the real
response, so the client waited for it forever.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from config.proxy import ProxyConfig
from listener.event import Event
from listener.proxy.events import PeerLedger
from listener.proxy.forward import ProxyServer
from listener.proxy.record import Recorder

CREATED = b'{"Id":"' + b"ef" * 32 + b'"}'
FINAL = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(CREATED), CREATED)
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
REQUEST = (
    b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


async def test_the_final_response_follows_a_100_continue() -> None:
    base = Path(tempfile.mkdtemp(prefix="dt-pxc-"))

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(INTERIM + FINAL)
        await writer.drain()
        await reader.read()
        writer.close()

    server = await asyncio.start_unix_server(engine, path=str(base / "engine.sock"))
    events: list[Event] = []

    async def store(event: Event) -> None:
        events.append(event)

    recorder = Recorder(store)
    recorder.start()
    config = ProxyConfig(
        listen=base / "docker.sock", engine=base / "engine.sock", listen_group=None
    )
    proxy = ProxyServer(config, "h", recorder, PeerLedger())
    await proxy.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(config.listen))
        writer.write(REQUEST)
        received = await asyncio.wait_for(reader.readuntil(CREATED), 5)
        assert received == INTERIM + FINAL  # both, byte for byte, in order
        writer.close()
        for _ in range(100):
            if events:
                break
            await asyncio.sleep(0.02)
        (event,) = events
        assert event.attributes["status"] == 201
        assert event.attributes["response_id"] == "ef" * 32
    finally:
        await proxy.aclose()
        await recorder.aclose()
        server.close()
