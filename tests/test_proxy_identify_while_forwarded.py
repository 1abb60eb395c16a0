"""A recorded request goes to the Engine at once; the client's details are read meanwhile.

Without a policy nothing about the client decides whether a request is
forwarded, so the proxy no longer waits for /proc before sending it: the
Engine works while a worker thread reads the details. The response is still
held until they are read (and confirmed by the pidfd pinned at accept), so
the recorded `api-call` and the Engine events attributed to it carry the full
`who`. With a policy on, the details are read first, as the policy judges them.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from listener.event import Event
from listener.model.event import Actor
from listener.proxy.events import PeerAttribution, PeerLedger
from listener.proxy.forward import ProxyServer
from listener.proxy.peer import Peer
from tests.proxy_stand_in import proxy_before

CREATED = b'{"Id":"' + b"cd" * 32 + b'"}'
REPLY = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(CREATED), CREATED)
REQUEST = (
    b"POST /v1.41/containers/create?name=web HTTP/1.1\r\nHost: d\r\nContent-Length: 2\r\n\r\n{}"
)
WAIT = 5.0


@dataclass
class Slowed:
    listen: Path
    events: list[Event]
    ledger: PeerLedger
    engine_got: asyncio.Event
    release: threading.Event  # lets the details' reads finish


@pytest.fixture(params=[False, True], ids=["no-policy", "policy"])
async def slowed(request: pytest.FixtureRequest) -> AsyncIterator[Slowed]:
    async for setup in _slowed(policy=request.param):
        yield setup


@pytest.fixture
async def unjudged() -> AsyncIterator[Slowed]:
    async for setup in _slowed(policy=False):
        yield setup


async def _slowed(*, policy: bool) -> AsyncIterator[Slowed]:
    engine_got, release = asyncio.Event(), threading.Event()

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        engine_got.set()
        writer.write(REPLY)
        await writer.drain()
        await reader.read()
        writer.close()

    def slow_details(proxy: ProxyServer) -> None:
        read_details = proxy._read_details

        def slow_read(peer: Peer) -> None:  # a /proc that takes its time (a loaded host)
            release.wait(WAIT)
            read_details(peer)

        proxy._read_details = slow_read  # type: ignore[method-assign]

    async with proxy_before(engine, policy=policy, prepare=slow_details) as proxied:
        try:
            yield Slowed(proxied.config.listen, proxied.events, proxied.ledger, engine_got, release)
        finally:
            release.set()


async def test_forwarded_before_the_details_and_answered_after_them(
    slowed: Slowed, request: pytest.FixtureRequest
) -> None:
    policy = request.node.callspec.id == "policy"
    reader, writer = await asyncio.open_unix_connection(str(slowed.listen))
    writer.write(REQUEST)
    forwarded = await _within(slowed.engine_got.wait(), 1.0) is not None
    assert forwarded is not policy  # a policy judges the details: they come first
    assert await _within(reader.read(1), 0.3) is None  # the response waits for them
    slowed.release.set()
    response = await asyncio.wait_for(reader.readuntil(CREATED), WAIT)
    assert response.startswith(b"HTTP/1.1 201")
    writer.close()
    for _ in range(100):
        if slowed.events:
            break
        await asyncio.sleep(0.02)
    (event,) = slowed.events
    assert (event.who.pid, event.who.method) == (os.getpid(), "peer")
    assert event.who.exe == os.readlink("/proc/self/exe")  # the details, read and confirmed
    assert event.attributes["response_id"] == "cd" * 32


async def test_attribution_waits_for_the_details_of_a_call_forwarded_before_them(
    unjudged: Slowed,
) -> None:
    slowed = unjudged
    stage = PeerAttribution(slowed.ledger, wait_secs=WAIT)
    reader, writer = await asyncio.open_unix_connection(str(slowed.listen))
    writer.write(REQUEST)
    await asyncio.wait_for(slowed.engine_got.wait(), WAIT)
    event = Event(
        id="e1",
        time_ns=time.time_ns(),
        source="docker",
        host="h",
        type="container",
        action="create",
        actor=Actor(id="cd" * 32, name="web"),
    )
    attributed = asyncio.create_task(stage.before_write([event]))
    await asyncio.sleep(0.2)
    assert not attributed.done()  # the call is known, its client's details not yet
    slowed.release.set()
    await asyncio.wait_for(attributed, WAIT)
    assert event.who.method == "peer" and event.who.exe == os.readlink("/proc/self/exe")
    await asyncio.wait_for(reader.readuntil(CREATED), WAIT)
    writer.close()


async def _within(awaitable: object, seconds: float) -> object | None:
    try:
        return await asyncio.wait_for(awaitable, seconds)  # type: ignore[arg-type]
    except TimeoutError:
        return None
