"""An Engine connection serves the next client only when the last one left between messages.

A client that read every response in full leaves its Engine connection idle
and clean: the next client gets it (no new connection for the Engine to
accept). A client that leaves while a response is still coming (a stream, a
slow call) must not pass that connection on: the late response would reach the
next client as if it were its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.proxy_stand_in import proxy_before

WAIT = 5.0


def _get(path: str) -> bytes:
    return f"GET /v1.41{path} HTTP/1.1\r\nHost: d\r\n\r\n".encode()


def _reply(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


@dataclass
class Engine:
    """Answers each GET with its path; `/slow` only once `release` is set."""

    connections: list[list[str]] = field(default_factory=list)  # the paths each one served
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_got: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served: list[str] = []
        self.connections.append(served)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                path = head.split(b" ")[1].decode().removeprefix("/v1.41")
                served.append(path)
                if path == "/slow":
                    self.slow_got.set()
                    await self.release.wait()
                writer.write(_reply(path.encode()))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@dataclass
class Setup:
    listen: Path
    engine: Engine


@pytest.fixture
async def proxied() -> AsyncIterator[Setup]:
    engine = Engine()
    async with proxy_before(engine.handle) as proxied:
        try:
            yield Setup(proxied.config.listen, engine)
        finally:
            engine.release.set()


async def _exchange(listen: Path, path: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(listen))
    writer.write(_get(path))
    answer = await asyncio.wait_for(reader.readuntil(path.encode()), WAIT)
    writer.close()
    await writer.wait_closed()
    return answer


async def _served(engine: Engine, path: str) -> list[str]:
    for _ in range(250):
        for served in engine.connections:
            if path in served:
                return served
        await asyncio.sleep(0.02)
    raise AssertionError(f"the Engine never got {path}: {engine.connections}")


async def test_a_client_that_read_everything_leaves_its_connection_to_the_next(
    proxied: Setup,
) -> None:
    assert await _exchange(proxied.listen, "/first") == _reply(b"/first")
    await asyncio.sleep(0.1)  # the first client's end is handled
    assert await _exchange(proxied.listen, "/second") == _reply(b"/second")
    served = await _served(proxied.engine, "/second")
    assert served == ["/first", "/second"]  # one Engine connection, in turn


async def test_a_client_gone_before_its_response_never_passes_the_connection_on(
    proxied: Setup,
) -> None:
    _reader, writer = await asyncio.open_unix_connection(str(proxied.listen))
    writer.write(_get("/slow"))
    await asyncio.wait_for(proxied.engine.slow_got.wait(), WAIT)
    writer.close()  # gone while the Engine still works on its call
    await writer.wait_closed()
    await asyncio.sleep(0.1)
    proxied.engine.release.set()  # the late response is sent now
    await asyncio.sleep(0.2)  # and relayed to nobody: the connection is free again
    assert await _exchange(proxied.listen, "/next") == _reply(b"/next")
    assert await _served(proxied.engine, "/next") == ["/next"]  # a connection of its own
