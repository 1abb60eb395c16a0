"""The proxy's pre-connected Engine sockets: each used once, none handed out spoilt.

A real Unix socket server stands in for the Engine: it counts connections,
and can close them as an Engine restart (or its header timeout) would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from listener.proxy.engines import EnginePool


class FakeEngine:
    def __init__(self) -> None:
        self.accepted: list[asyncio.StreamWriter] = []
        self.close_at_once = False

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted.append(writer)
        if self.close_at_once:
            writer.close()
            return
        await reader.read()  # until the proxy closes its side


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[tuple[FakeEngine, Path]]:
    fake, path = FakeEngine(), tmp_path / "engine.sock"
    server = await asyncio.start_unix_server(fake.handle, path=str(path))
    try:
        yield fake, path
    finally:
        for writer in fake.accepted:
            writer.close()
        server.close()


async def _settle(pool: EnginePool, fake: FakeEngine, count: int) -> None:
    for _ in range(200):
        if len(fake.accepted) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)  # the pool's own side of the last connection


async def test_connections_are_made_ahead_and_each_used_once(
    engine: tuple[FakeEngine, Path],
) -> None:
    fake, path = engine
    pool = EnginePool(path, 65536, size=2)
    first = await pool.connect()  # nothing ready yet: made on demand
    pool.replenish()
    await _settle(pool, fake, 3)
    second, third = await pool.connect(), await pool.connect()
    assert len(fake.accepted) == 3  # both came from the pool, made before they were asked for
    assert len({id(c[1]) for c in (first, second, third)}) == 3
    fourth = await pool.connect()  # the pool is empty again until a client leaves
    await _settle(pool, fake, 4)
    assert len(fake.accepted) == 4 and fourth[1] not in (second[1], third[1])
    for _, writer in (first, second, third, fourth):
        writer.close()
    await pool.aclose()


async def test_a_connection_the_engine_closed_or_an_old_one_is_never_handed_out(
    engine: tuple[FakeEngine, Path],
) -> None:
    fake, path = engine
    fake.close_at_once = True
    pool = EnginePool(path, 65536, size=1)
    pool.replenish()
    await _settle(pool, fake, 1)
    fake.close_at_once = False
    reader, writer = await pool.connect()
    await _settle(pool, fake, 2)
    assert len(fake.accepted) == 2 and not reader.at_eof()  # the closed one was dropped
    writer.close()

    aged = EnginePool(path, 65536, size=1, max_idle_secs=0.0)
    aged.replenish()
    await _settle(aged, fake, 3)
    _, fresh = await aged.connect()
    await _settle(aged, fake, 4)
    assert len(fake.accepted) == 4  # too old: dropped, a new one made
    fresh.close()
    await pool.aclose()
    await aged.aclose()
