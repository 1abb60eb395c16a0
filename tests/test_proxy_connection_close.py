"""`Connection: close` through the proxy: the client's connection ends with the Engine's.

A client that asks for `Connection: close` (HTTP/1.0 habits, `nc`, scripts
that read a reply to its end) gets the reply and then the end of the
connection, as from the Engine itself; the proxy does not keep it open
waiting for a next request that will never come.
"""

from __future__ import annotations

import asyncio
import socket

from tests.dockerd import Dockerd
from tests.proxy_harness import ProxiedEngine

REQUEST = b"GET /v1.41/version HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"


def _read_to_end(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)  # the proxy before this fix never ended the connection
        client.connect(path)
        client.sendall(REQUEST)
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
        return reply


async def test_a_reply_with_connection_close_ends_the_connection(dockerd: Dockerd) -> None:
    direct = await asyncio.to_thread(_read_to_end, str(dockerd.socket_path))
    async with ProxiedEngine(dockerd) as proxy:
        proxied = await asyncio.to_thread(_read_to_end, str(proxy.socket_path))
    assert proxied.startswith(b"HTTP/1.1 200") and b'"ApiVersion"' in proxied
    assert proxied.split(b"\r\n\r\n", 1)[1] == direct.split(b"\r\n\r\n", 1)[1]
