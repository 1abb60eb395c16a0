"""An interim response (`100 Continue`) is relayed, and the final one after it.

Go's HTTP server, the Engine's, answers `Expect: 100-continue` (curl sends it
with larger bodies) with `HTTP/1.1 100 Continue` before the real response.
The proxy took that interim head for the response: it recorded the call with
status 100 and without the new object's id, and never relayed the real
response, so the client waited for it forever.
"""

from __future__ import annotations

import asyncio

from tests.proxy_stand_in import proxy_before

CREATED = b'{"Id":"' + b"ef" * 32 + b'"}'
FINAL = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(CREATED), CREATED)
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
REQUEST = (
    b"POST /v1.41/containers/create HTTP/1.1\r\nHost: d\r\nExpect: 100-continue\r\n"
    b"Content-Length: 2\r\n\r\n{}"
)


async def test_the_final_response_follows_a_100_continue() -> None:
    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(INTERIM + FINAL)
        await writer.drain()
        await reader.read()
        writer.close()

    async with proxy_before(engine) as proxied:
        reader, writer = await asyncio.open_unix_connection(str(proxied.config.listen))
        writer.write(REQUEST)
        received = await asyncio.wait_for(reader.readuntil(CREATED), 5)
        assert received == INTERIM + FINAL  # both, byte for byte, in order
        writer.close()
        for _ in range(100):
            if proxied.events:
                break
            await asyncio.sleep(0.02)
        (event,) = proxied.events
        assert event.attributes["status"] == 201
        assert event.attributes["response_id"] == "ef" * 32
