"""The proxy's sockets as protocols: bytes as they come, in any split, bounded in memory.

Each socket is read by its protocol's `data_received` straight into the parse
buffer. A request may arrive a byte at a time or several at once; bytes that
arrive while the proxy writes must not be missed; and a client that stops
reading a stream must stop the Engine's side, not fill the proxy's memory.
Plain reads and their responses that arrive whole are relayed from
`data_received` itself: each read must still get its own response, however
the Engine sends it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from collections.abc import Callable, Coroutine, Sequence

import pytest

from tests.proxy_stand_in import proxy_before
from tests.shared_data import missing_component

WAIT = 10.0
CREATED = b'{"Id":"' + b"ab" * 32 + b'"}'
BODY = b'{"Image": "registry.internal/base/busybox:1.36", "Cmd": ["true"]}'
CREATE = (
    b"POST /v1.41/containers/create?name=split HTTP/1.1\r\nHost: d\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


def _run_on(loop: str, test: Coroutine[object, object, None]) -> None:
    """Each test on both event loops: their transports differ (uvloop's are its own)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if loop == "uvloop":
        if importlib.util.find_spec("uvloop") is None:
            test.close()
            missing_component("uvloop is not installed (pip install 'docktrail[fast]')")
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(test)


def _reply(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


async def _answer_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A stand-in Engine: a create gets an id (after its body), any other request its path."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            path = head.split(b" ")[1]
            if path.startswith(b"/v1.41/containers/create"):
                assert await reader.readexactly(len(BODY)) == BODY
                writer.write(_reply(b"201 Created", CREATED))
            else:
                writer.write(_reply(b"200 OK", path))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def _events(proxied_events: Sequence[object], count: int) -> None:
    for _ in range(int(WAIT / 0.02)):
        if len(proxied_events) >= count:
            return
        await asyncio.sleep(0.02)


@LOOPS
def test_a_request_arriving_a_byte_at_a_time_is_forwarded_and_recorded(loop: str) -> None:
    _run_on(loop, _a_request_arriving_a_byte_at_a_time_is_forwarded_and_recorded())


async def _a_request_arriving_a_byte_at_a_time_is_forwarded_and_recorded() -> None:
    async with proxy_before(_answer_each) as proxied:
        reader, writer = await asyncio.open_unix_connection(str(proxied.config.listen))
        for byte in CREATE:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.001)  # each byte its own read on the proxy's side
        expected = _reply(b"201 Created", CREATED)
        assert await asyncio.wait_for(reader.readexactly(len(expected)), WAIT) == expected
        writer.close()
        await _events(proxied.events, 1)
        (event,) = proxied.events
        assert event.attributes["status"] == 201
        assert event.attributes["response_id"] == "ab" * 32
        assert "busybox" in str(event.attributes["body"])


@LOOPS
def test_pipelined_requests_are_answered_in_order_and_recorded(loop: str) -> None:
    _run_on(loop, _pipelined_requests_are_answered_in_order_and_recorded())


async def _pipelined_requests_are_answered_in_order_and_recorded() -> None:
    reads = [b"GET /v1.41/_ping%d HTTP/1.1\r\nHost: d\r\n\r\n" % n for n in range(3)]
    async with proxy_before(_answer_each) as proxied:
        reader, writer = await asyncio.open_unix_connection(str(proxied.config.listen))
        writer.write(reads[0] + CREATE + reads[1] + reads[2])  # all in one write
        expected = (
            _reply(b"200 OK", b"/v1.41/_ping0")
            + _reply(b"201 Created", CREATED)
            + _reply(b"200 OK", b"/v1.41/_ping1")
            + _reply(b"200 OK", b"/v1.41/_ping2")
        )
        assert await asyncio.wait_for(reader.readexactly(len(expected)), WAIT) == expected
        writer.close()
        await _events(proxied.events, 1)
        await asyncio.sleep(0.1)  # the reads are not recorded: nothing more comes
        (event,) = proxied.events
        assert event.attributes["response_id"] == "ab" * 32


STREAM_CHUNK = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
STREAM_CHUNKS = 512  # 32 MiB: far more than every buffer on the way together
STREAM_END = b"0\r\n\r\n"
BOUND = 8 * 1024 * 1024  # the kernel's socket buffers and the proxy's own, with room


@LOOPS
def test_a_client_that_stops_reading_a_stream_stops_the_engine(loop: str) -> None:
    _run_on(loop, _a_client_that_stops_reading_a_stream_stops_the_engine())


async def _a_client_that_stops_reading_a_stream_stops_the_engine() -> None:
    """`docker logs -f` read slowly: the proxy holds a bounded amount, then the Engine
    waits; once the client reads again the whole stream arrives, byte for byte."""
    written = 0

    async def stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(STREAM_CHUNKS):
            writer.write(STREAM_CHUNK)
            await writer.drain()
            written += len(STREAM_CHUNK)
        writer.write(STREAM_END)
        await writer.drain()
        await reader.read()
        writer.close()

    async with proxy_before(stream) as proxied:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client, str(proxied.config.listen))
        await loop.sock_sendall(client, b"GET /v1.41/containers/x/logs?follow=1 HTTP/1.1\r\n\r\n")
        stalled_at = await _stalled(lambda: written)  # the client reads nothing meanwhile
        assert 0 < stalled_at < BOUND, stalled_at
        received = bytearray()
        while not received.endswith(STREAM_END):
            data = await asyncio.wait_for(loop.sock_recv(client, 1 << 20), WAIT)
            assert data, "the stream ended early"
            received += data
        client.close()
    head_end = received.index(b"\r\n\r\n") + 4
    assert bytes(received[head_end:]) == STREAM_CHUNK * STREAM_CHUNKS + STREAM_END


async def _stalled(count: Callable[[], int]) -> int:
    """The count once it stops growing for a while."""
    last, still = -1, 0
    for _ in range(int(WAIT / 0.05)):
        await asyncio.sleep(0.05)
        now = count()
        still = still + 1 if now == last and now > 0 else 0
        if still >= 6:
            return now
        last = now
    raise AssertionError(f"the Engine never stopped writing: {count()} bytes")


# how the stand-in Engine sends each response: whole, or in pieces with pauses between
RESPONSES = {
    "whole": [_reply(b"200 OK", b"[]")],
    "head then body": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", b"[]"],
    "in single bytes": [bytes([b]) for b in _reply(b"200 OK", b"[]")],
    "chunked": [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n[]\r\n0\r\n\r\n"],
    "body of a HEAD": [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"],
    "no content": [b"HTTP/1.1 204 No Content\r\n\r\n"],
}


@LOOPS
@pytest.mark.parametrize("shape", RESPONSES)
def test_each_read_gets_its_own_response_however_it_arrives(loop: str, shape: str) -> None:
    _run_on(loop, _each_read_gets_its_own_response(shape))


async def _each_read_gets_its_own_response(shape: str) -> None:
    """Three reads on one connection, each answered in `shape`; then the path of a fourth:
    no byte of one response is taken for another, none is held back."""
    pieces = RESPONSES[shape]
    method = b"HEAD" if shape == "body of a HEAD" else b"GET"

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):
            await reader.readuntil(b"\r\n\r\n")
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.002)
        await _answer_each(reader, writer)

    async with proxy_before(engine) as proxied:
        reader, writer = await asyncio.open_unix_connection(str(proxied.config.listen))
        expected = b"".join(pieces)
        for n in range(3):
            writer.write(
                b"%s /v1.41/containers/json?n=%d HTTP/1.1\r\nHost: d\r\n\r\n" % (method, n)
            )
            assert await asyncio.wait_for(reader.readexactly(len(expected)), WAIT) == expected
        writer.write(b"GET /v1.41/last HTTP/1.1\r\nHost: d\r\n\r\n")
        last = _reply(b"200 OK", b"/v1.41/last")
        assert await asyncio.wait_for(reader.readexactly(len(last)), WAIT) == last
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), WAIT) == b""  # nothing else came
        writer.close()


@LOOPS
def test_a_response_with_connection_close_ends_the_client_connection(loop: str) -> None:
    _run_on(loop, _a_response_with_connection_close_ends_the_client_connection())


async def _a_response_with_connection_close_ends_the_client_connection() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n[]"

    async def engine(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(closing)
        await writer.drain()
        writer.close()

    async with proxy_before(engine) as proxied:
        reader, writer = await asyncio.open_unix_connection(str(proxied.config.listen))
        writer.write(b"GET /v1.41/containers/json HTTP/1.1\r\nHost: d\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), WAIT) == closing  # then the end
        writer.close()
