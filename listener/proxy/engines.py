"""Engine connections made before a client needs one.

Connecting to the Engine socket cost a client about a tenth of the proxy's
added latency. A few idle connections are kept ready; each serves one client
at a time (never shared). A client that leaves with every response relayed in
full leaves its connection between messages: it is given back and serves the
next client (what an HTTP client's own connection pool does; the Engine knows
nothing of who is behind a connection). Any other end (a stream cut short, an
upgrade, `Connection: close`, an error) closes it. One idle longer than
`max_idle_secs` or already closed by the Engine is dropped, well before the
Engine's own header timeout could close it in a client's face.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from pathlib import Path

from listener.proxy.wire import Wire

log = logging.getLogger("docktrail.proxy")

Connection = tuple[Wire, Wire]  # reads and writes of one socket (the same object)


class EnginePool:
    def __init__(self, engine: Path, limit: int, size: int = 4, max_idle_secs: float = 10.0):
        self._engine, self._limit = str(engine), limit
        self._size, self._max_idle = size, max_idle_secs
        self._idle: deque[tuple[float, Connection]] = deque()
        self._filling: asyncio.Task[None] | None = None

    async def connect(self) -> Connection:
        """An idle connection when one is fit, else a new one."""
        loop = asyncio.get_running_loop()
        while self._idle:
            made, (reader, writer) = self._idle.popleft()
            if loop.time() - made < self._max_idle and _usable(reader, writer):
                return reader, writer
            writer.close()
        return await self._open()

    def give_back(self, reader: Wire, writer: Wire) -> None:
        """A connection whose client left between messages: kept for the next, when room."""
        if len(self._idle) < self._size and _usable(reader, writer):
            self._idle.append((asyncio.get_running_loop().time(), (reader, writer)))
        else:
            writer.close()

    def replenish(self) -> None:
        """Refills the pool in the background: called as a client leaves, so that the
        connecting is not done while a client waits for its responses."""
        if len(self._idle) < self._size and (self._filling is None or self._filling.done()):
            self._filling = asyncio.create_task(self._fill(), name="proxy-engine-pool")

    async def aclose(self) -> None:
        if self._filling is not None:
            self._filling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filling
        while self._idle:
            self._idle.popleft()[1][1].close()

    async def _open(self) -> Connection:
        loop = asyncio.get_running_loop()
        _, wire = await loop.create_unix_connection(lambda: Wire(loop=loop), self._engine)
        return wire, wire

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._idle) < self._size:
            try:
                connection = await self._open()
            except OSError as exc:  # the Engine is down: clients connect (and fail) themselves
                log.debug("proxy: engine pool not refilled", extra={"fields": {"error": str(exc)}})
                return
            self._idle.append((loop.time(), connection))


def _usable(reader: Wire, writer: Wire) -> bool:
    # the Engine closed it (restart, timeout): the loop has seen the end by now
    return not reader.at_eof() and not writer.is_closing()
