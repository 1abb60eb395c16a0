"""One socket of the proxy as an `asyncio.Protocol`: bytes straight into the parse buffer.

Streams cost the proxy a layer of Python per read and per write: the
StreamReader copied each read into its buffer, `Inbox` copied it again, and
its protocol's callbacks ran for each. A `Wire` is both ends of a socket in
one object: `data_received` appends to the buffer the framing code parses
(`framing.Buffered`) and wakes the one task waiting on it; writes go to the
transport. Bytes that come while no task waits are held apart until the next
`fill`: the parsers expect the buffer to grow only when they ask for more (a
chunk scan that waits after its last send must not miss the final chunk that
came during the send).

Flow control both ways keeps memory bounded: past `HIGH_WATER` unparsed bytes
the socket stops being read until the consumer takes them (a slow reader of
`docker logs -f` stops the Engine's side, not the proxy's memory), and a writer
whose transport is paused waits in `drain`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from listener.proxy.framing import Buffered

HIGH_WATER = 256 * 1024  # unparsed bytes held before the socket is no longer read


class Wire(Buffered, asyncio.Protocol):
    __slots__ = (
        "_closed",
        "_drained",
        "_eof",
        "_incoming",
        "_loop",
        "_lost",
        "_on_connect",
        "_read_paused",
        "_waiter",
        "_write_paused",
        "offer",
        "transport",
    )

    def __init__(
        self,
        on_connect: Callable[[Wire], object] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__()
        # given, as asking for the running loop is a getpid() system call each time
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._on_connect = on_connect
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._incoming = bytearray()  # came while nobody waited: moved in by `fill`
        self._eof = False
        self._lost: Exception | None = None
        self._closed = False
        self._read_paused = False
        self._write_paused = False
        # offered the bytes first while a task waits for a message at its start: True when
        # it dealt with them whole (relayed a plain message without waking the task); the
        # end of the stream is offered as b""
        self.offer: Callable[[bytes], bool] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
        if self._on_connect is not None:
            self._on_connect(self)

    def data_received(self, data: bytes) -> None:
        offer = self.offer
        if offer is not None and not self.buffer and not self._incoming and offer(data):
            return
        waiter = self._waiter
        if waiter is not None:
            self.buffer += data
            if not waiter.done():
                waiter.set_result(None)
        else:
            self._incoming += data
        if not self._read_paused and self.unread() > HIGH_WATER and self.transport:
            self._read_paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._end_offer()
        self._wake()
        return True  # half-closed: the other direction may still carry bytes

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = self._closed = True
        self._lost = exc
        self._end_offer()
        self._wake()
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_exception(ConnectionResetError("Connection lost"))

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- reading (framing.Buffered) ----------------------------------------------------

    async def fill(self) -> bool:
        """Waits for more bytes than are buffered; False at the end of the stream."""
        if self._incoming:
            self.buffer += self._incoming
            self._incoming.clear()
            if self._read_paused and len(self.buffer) <= HIGH_WATER:
                self._resume_reading()
            return True
        if self._read_paused:
            self._resume_reading()
        if self._eof:
            return False
        had = len(self.buffer)
        waiter = self._waiter = self._event_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None
        return len(self.buffer) > had

    def take(self, count: int) -> bytes:
        data = super().take(count)
        if self._read_paused and self.unread() < HIGH_WATER // 2:
            self._resume_reading()
        return data

    def unread(self) -> int:
        """Bytes received and not yet taken."""
        return len(self.buffer) + len(self._incoming)

    def at_eof(self) -> bool:
        return self._eof and not self.unread()

    def _resume_reading(self) -> None:
        self._read_paused = False
        if self.transport is not None and not self._closed:
            self.transport.resume_reading()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def _end_offer(self) -> None:
        if self.offer is not None:
            self.offer(b"")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- writing (what the proxy used of asyncio.StreamWriter) -------------------------

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    @property
    def held_back(self) -> bool:
        """`drain` has something to wait for (or to report)."""
        return self._write_paused or self._closed or self._transport().is_closing()

    async def drain(self) -> None:
        if self._closed or self._transport().is_closing():
            await asyncio.sleep(0)  # as StreamWriter: let connection_lost run first
            if self._closed:
                raise ConnectionResetError("Connection lost")
        if self._write_paused:
            self._drained = self._event_loop().create_future()
            await self._drained

    def can_write_eof(self) -> bool:
        return self._transport().can_write_eof()

    def write_eof(self) -> None:
        self._transport().write_eof()

    def is_closing(self) -> bool:
        return self._closed or self._transport().is_closing()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def get_extra_info(self, name: str) -> Any:
        return self._transport().get_extra_info(name)

    def _transport(self) -> asyncio.Transport:
        assert self.transport is not None
        return self.transport
