"""Headers looked up on demand give what parsing every line gives.

The proxy frames messages by Content-Length, Transfer-Encoding and Connection:
a lookup that disagreed with the full parse on any head (odd case, spaces
around the name, repeats, the name inside a value or the start line) would
let a client and the Engine see different message boundaries.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from listener.proxy.framing import FramingError, Head, Inbox, _parse_headers, read_head

NAMES = ("content-length", "transfer-encoding", "connection", "content-type", "host")

HEADS = [
    b"GET /v1.41/containers/json HTTP/1.1\r\nHost: docker\r\nUser-Agent: Go\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n",
    b"POST /x HTTP/1.1\r\ncOnTeNt-LeNgTh: 12\r\n\r\n",
    b"POST /x HTTP/1.1\r\n  Content-Length : 3 \r\n\r\n",
    b"POST /x HTTP/1.1\r\nX-Note: content-length: 9\r\nContent-Length: 4\r\n\r\n",
    b"POST /content-length:1 HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /x HTTP/1.1\r\nX-Content-Length: 8\r\nContent-Lengthy: 2\r\n\r\n",
    b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /x HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: tcp\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nHost\r\nHost:\r\nHost: a:b\n c\r\n\r\n",
    b"POST /x HTTP/1.1\r\nContent-Length: 1\xa0\r\n\xa0Connection\xa0: close\r\n\r\n",
]


def _read(raw: bytes) -> Head:
    async def read() -> Head | None:
        inbox = Inbox(asyncio.StreamReader())
        inbox.buffer += raw
        return await read_head(inbox)

    head = asyncio.run(read())
    assert head is not None
    return head


@pytest.mark.parametrize("raw", HEADS)
def test_each_lookup_equals_the_full_parse(raw: bytes) -> None:
    full = _parse_headers(raw.decode("latin-1").split("\r\n")[1:])
    for name in (*NAMES, *full):
        assert _read(raw).header(name) == full.get(name, ""), name
        assert _read(raw).header(name.upper()) == full.get(name, ""), name


def test_lookups_in_any_order_agree() -> None:
    raw = HEADS[1]
    for order in itertools.permutations(NAMES[:3]):
        head = _read(raw)
        assert [head.header(n) for n in order] == [head.headers.get(n, "") for n in order]


def test_framing_from_lookups() -> None:
    assert _read(HEADS[2]).content_length == 12
    assert _read(HEADS[3]).content_length == 3
    assert _read(HEADS[4]).content_length == 4
    assert _read(HEADS[5]).content_length is None
    assert _read(HEADS[6]).content_length is None
    assert _read(HEADS[7]).chunked
    assert _read(HEADS[8]).wants_upgrade
    assert _read(HEADS[0]).start_line == "GET /v1.41/containers/json HTTP/1.1"
    with pytest.raises(FramingError):  # two lengths: refused, never one of them picked
        _ = _read(HEADS[1]).content_length
