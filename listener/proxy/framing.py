"""HTTP/1.1 framing, just enough to find message boundaries without changing a byte.

The proxy relays the exact bytes it read; it parses heads only to know where a
message ends (Content-Length, chunked, or the connection's end) and what it is.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

MAX_HEAD_BYTES = 64 * 1024
COPY_BYTES = 64 * 1024
RAW_STREAM_TYPES = (
    "application/vnd.docker.raw-stream",
    "application/vnd.docker.multiplexed-stream",
)


class FramingError(Exception):
    """A message the proxy cannot delimit: the connection is closed."""


@dataclass(slots=True)
class Head:
    raw: bytes
    start_line: str
    headers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

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


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head, or None at a clean end of the connection."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FramingError("connection ended inside a message head") from None
    except asyncio.LimitOverrunError:
        raise FramingError(f"message head over {MAX_HEAD_BYTES} bytes") from None
    lines = raw.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return Head(raw, lines[0], headers)


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
    """Copies one message body from `reader` to `writer`, keeping up to `keep` bytes of it."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter | None, keep: int
    ):
        self._reader, self._writer, self._keep = reader, writer, keep
        self.kept = bytearray()
        self.size = 0
        self.truncated = False

    async def relay(self, head: Head, *, until_close: bool = False) -> None:
        if head.chunked:
            await self._chunked()
        elif (length := head.content_length) is not None:
            await self._exact(length)
        elif until_close:
            await self._to_end()

    async def _send(self, data: bytes, payload: bytes = b"") -> None:
        if payload:
            self.size += len(payload)
            room = self._keep - len(self.kept)
            if room > 0:
                self.kept += payload[:room]
            if len(payload) > room:
                self.truncated = True
        if self._writer is not None:
            self._writer.write(data)
            await self._writer.drain()

    async def _exact(self, length: int) -> None:
        left = length
        while left:
            data = await self._reader.read(min(left, COPY_BYTES))
            if not data:
                raise FramingError("connection ended inside a body")
            left -= len(data)
            await self._send(data, data)

    async def _to_end(self) -> None:
        while data := await self._reader.read(COPY_BYTES):
            await self._send(data, data)

    async def _chunked(self) -> None:
        while True:
            line = await self._line()
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise FramingError(f"bad chunk size {size_text[:20]!r}") from None
            await self._send(line)
            if size == 0:
                break
            await self._exact(size)
            await self._send(await self._line())  # the CRLF after the chunk
        while (trailer := await self._line()) != b"\r\n":
            await self._send(trailer)
        await self._send(b"\r\n")

    async def _line(self) -> bytes:
        try:
            return await self._reader.readuntil(b"\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            raise FramingError("connection ended inside a chunked body") from None


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Raw bytes until EOF, then half-closes `writer`; returns the byte count."""
    total = 0
    try:
        while data := await reader.read(COPY_BYTES):
            total += len(data)
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    return total


def error_response(status: int, reason: str, message: str) -> bytes:
    """A Docker-style JSON error (`{"message": …}`) the clients print as is."""
    import json

    body = json.dumps({"message": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body
