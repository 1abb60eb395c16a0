"""HTTP/1.1 framing, just enough to find message boundaries without changing a byte.

The proxy relays the exact bytes it read; it parses heads only to know where a
message ends (Content-Length, chunked, or the connection's end) and what it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

MAX_HEAD_BYTES = 64 * 1024
COPY_BYTES = 64 * 1024
RAW_STREAM_TYPES = (
    "application/vnd.docker.raw-stream",
    "application/vnd.docker.multiplexed-stream",
)


class FramingError(Exception):
    """A message the proxy cannot delimit: the connection is closed."""


class Sink(Protocol):
    """Where relayed bytes go (`wire.Wire`): a transport's writes, with flow control."""

    @property
    def held_back(self) -> bool:
        """Writes are paused, or the connection is closing: `drain` before writing more."""
        ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def can_write_eof(self) -> bool: ...

    def write_eof(self) -> None: ...


class Head:
    """A message head: its exact bytes, its start line, and its headers on demand.

    Headers are looked up where the head names them, never parsed all at once:
    the proxy asks each head for two or three of them, and parsing every line
    of every head was a tenth of its CPU per client. A lookup gives what a full
    parse would (a name compared stripped and in lower case, repeats joined).
    """

    __slots__ = ("_found", "_headers", "_lowered", "_text", "raw", "start_line")

    def __init__(self, raw: bytes, start_line: str, headers: dict[str, str] | None = None) -> None:
        self.raw = raw
        self.start_line = start_line
        self._text: str | None = None
        self._lowered: str | None = None
        self._headers = headers  # given: tests; else every header parsed only when asked for
        self._found: dict[str, str] = {}  # lookups done: framing asks some twice

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = _parse_headers(self.raw.decode("latin-1").split("\r\n")[1:])
        return self._headers

    def header(self, name: str) -> str:
        if self._headers is not None:
            return self._headers.get(name.lower(), "")
        if self._lowered is None:
            self._text = self.raw.decode("latin-1")
            self._lowered = self._text.lower()
        key = name.lower()
        if key not in self._lowered:
            return ""
        if key not in self._found:
            self._found[key] = _find_header(self._text or "", self._lowered, key)
        return self._found[key]

    @property
    def chunked(self) -> bool:
        return "chunked" in self.header("transfer-encoding").lower()

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length").strip()
        if not value:
            return None
        if not value.isdigit():
            raise FramingError(f"bad Content-Length {value[:40]!r}")
        return int(value)

    @property
    def wants_upgrade(self) -> bool:
        return "upgrade" in self.header("connection").lower()


def _parse_headers(lines: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return headers


def _find_header(text: str, lowered: str, key: str) -> str:
    """The header `key` as `_parse_headers` gives it, from the lines that hold `key`."""
    values: list[str] = []
    line_start = -1
    at = lowered.find(key)
    while at >= 0:
        start = lowered.rfind("\r\n", 0, at)
        if start >= 0 and start + 2 != line_start:  # not the start line, each line once
            line_start = start + 2
            end = lowered.find("\r\n", at)
            found = _parse_headers([text[line_start : end if end >= 0 else len(text)]])
            if key in found:
                values.append(found[key])
        at = lowered.find(key, at + 1)
    return ", ".join(values)


@dataclass(slots=True)
class Request:
    head: Head
    method: str
    target: str

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.target).query, keep_blank_values=True)


@dataclass(slots=True)
class Response:
    head: Head
    status: int

    @property
    def raw_stream(self) -> bool:
        return self.head.header("content-type").split(";")[0].strip() in RAW_STREAM_TYPES


class Buffered:
    """Bytes read and not yet parsed, so that a body's bytes are parsed in bulk.

    Chunked bodies of streams (logs, events) arrive as many small chunks; parsing
    them one await at a time cost more than half the throughput. Bytes read past
    the end of a message stay here for the next one. `fill` reads more.
    """

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    async def fill(self) -> bool:
        """Appends what comes next to `buffer`; False at the end of the stream."""
        raise NotImplementedError

    async def read_some(self, most: int) -> bytes:
        if not self.buffer and not await self.fill():
            return b""
        data = bytes(self.buffer[:most])
        del self.buffer[:most]
        return data

    async def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count:
            if not await self.fill():
                raise FramingError("connection ended inside a body")
        return self.take(count)

    def take(self, count: int) -> bytes:
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data


class Inbox(Buffered):
    """A `Buffered` over an `asyncio.StreamReader` (the proxy itself reads with `Wire`)."""

    __slots__ = ("reader",)

    def __init__(self, reader: asyncio.StreamReader) -> None:
        super().__init__()
        self.reader = reader

    async def fill(self) -> bool:
        data = await self.reader.read(COPY_BYTES)
        self.buffer += data
        return bool(data)


async def read_head(inbox: Buffered) -> Head | None:
    """The next head, or None at a clean end of the connection."""
    searched = 0
    while (end := inbox.buffer.find(b"\r\n\r\n", max(0, searched - 3))) < 0:
        searched = len(inbox.buffer)
        if searched > MAX_HEAD_BYTES:
            raise FramingError(f"message head over {MAX_HEAD_BYTES} bytes")
        if not await inbox.fill():
            if not inbox.buffer:
                return None
            raise FramingError("connection ended inside a message head")
    raw = inbox.take(end + 4)
    first = raw.find(b"\r\n")
    return Head(raw, raw[:first].decode("latin-1"))


def parse_request(head: Head) -> Request:
    parts = head.start_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise FramingError(f"bad request line {head.start_line[:80]!r}")
    return Request(head, parts[0].upper(), parts[1])


def parse_response(head: Head) -> Response:
    parts = head.start_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise FramingError(f"bad status line {head.start_line[:80]!r}")
    return Response(head, int(parts[1]))


def response_has_body(request_method: str, status: int) -> bool:
    return not (request_method == "HEAD" or 100 <= status < 200 or status in (204, 304))


class BodyRelay:
    """Copies one message body from `inbox` to `writer`, keeping up to `keep` payload bytes.

    `prefix` (the message's head) goes out with the first bytes sent: the caller
    passes one only when body bytes are already buffered, as each path below
    sends what is buffered before it waits for more.
    """

    def __init__(
        self, inbox: Buffered, writer: Sink | None, keep: int, prefix: bytes = b""
    ) -> None:
        self._inbox, self._writer, self._keep = inbox, writer, keep
        self._prefix = prefix
        self.kept = bytearray()
        self.size = 0

    async def relay(self, head: Head, *, until_close: bool = False) -> None:
        if head.chunked:
            await self._chunked()
        elif (length := head.content_length) is not None:
            await self._exact(length)
        elif until_close:
            await self._to_end()
        await self._send(b"")  # the prefix of an empty body

    def _note(self, payload: bytes | bytearray) -> None:
        self.size += len(payload)
        room = self._keep - len(self.kept)
        if room > 0:
            self.kept += payload[:room]

    async def _send(self, data: bytes) -> None:
        if self._prefix:
            data, self._prefix = self._prefix + data, b""
        if self._writer is not None and data:
            self._writer.write(data)
            await flush(self._writer)

    async def _exact(self, length: int) -> None:
        left = length
        while left:
            data = await self._inbox.read_some(min(left, COPY_BYTES))
            if not data:
                raise FramingError("connection ended inside a body")
            left -= len(data)
            self._note(data)
            await self._send(data)

    async def _to_end(self) -> None:
        while data := await self._inbox.read_some(COPY_BYTES):
            self._note(data)
            await self._send(data)

    async def _chunked(self) -> None:
        """Scans whole buffers for chunk boundaries and sends each buffer in one write.

        What was read is sent before waiting for more, so a stream stays live.
        """
        scan = _ChunkScan()
        buffer = self._inbox.buffer
        while True:
            end = scan.advance(buffer, self._note if self._keep else None)
            if scan.done:
                await self._send(self._inbox.take(end))
                return
            await self._send(self._inbox.take(end))
            scan.rebase(end)
            if not await self._inbox.fill():
                raise FramingError("connection ended inside a chunked body")


class _ChunkScan:
    """Where a chunked body ends, found incrementally over a growing buffer."""

    def __init__(self) -> None:
        self.pos = 0
        self.data_left = 0  # payload bytes of the current chunk, then its CRLF
        self.crlf_left = 0
        self.trailers = False
        self.done = False

    def rebase(self, consumed: int) -> None:
        self.pos -= consumed

    def advance(self, buffer: bytearray, note: Callable[[bytes], None] | None) -> int:
        """Parses from `pos`; returns how many buffer bytes are complete (safe to send)."""
        while not self.done:
            if self.data_left:
                take = min(self.data_left, len(buffer) - self.pos)
                if take <= 0:
                    break
                if note is not None:
                    note(bytes(buffer[self.pos : self.pos + take]))
                self.pos += take
                self.data_left -= take
                continue
            if self.crlf_left:
                take = min(self.crlf_left, len(buffer) - self.pos)
                if take <= 0:
                    break
                self.pos += take
                self.crlf_left -= take
                continue
            newline = buffer.find(b"\n", self.pos)
            if newline < 0:
                if len(buffer) - self.pos > MAX_HEAD_BYTES:
                    raise FramingError("chunk size line too long")
                break
            line = bytes(buffer[self.pos : newline])
            self.pos = newline + 1
            if self.trailers:
                self.done = line.strip() == b""
                continue
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise FramingError(f"bad chunk size {size_text[:20]!r}") from None
            if size == 0:
                self.trailers = True
            else:
                self.data_left, self.crlf_left = size, 2
        return self.pos


async def pipe(inbox: Buffered, writer: Sink) -> int:
    """Raw bytes (what is buffered first) until EOF, then half-closes `writer`."""
    total = 0
    try:
        while data := await inbox.read_some(COPY_BYTES):
            total += len(data)
            writer.write(data)
            await flush(writer)
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    return total


async def flush(writer: Sink) -> None:
    """`drain()` when the writer holds bytes back or is closing, else nothing: a
    drain per write was a coroutine and four calls for the one case that needs none."""
    if writer.held_back:
        await writer.drain()


def error_response(status: int, reason: str, message: str) -> bytes:
    """A Docker-style JSON error (`{"message": …}`) the clients print as is."""
    import json

    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
