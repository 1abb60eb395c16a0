"""The engine → client direction of a connection: each response relayed in request order.

The downstream task takes the requests in flight from the connection's
mailbox, one `Pending` each, and relays their responses in that order: whole
ones from the Engine socket's `data_received` (`Wire.offer`) when they come
in one piece, anything else read here. A 403 answers a refused request. An
upgrade's response (101, or 200 with the Engine's raw-stream type) tells the
upstream task, through `Pending.verdict`, that both directions are now a byte
pipe. Each recorded call is recorded as its response ends (or as its stream
starts). `Client` and `Pending` are defined here, beneath `forward`, which
fills them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from listener.model.event import Who
from listener.proxy import judge
from listener.proxy.events import PeerCall, api_call_event
from listener.proxy.framing import (
    MAX_HEAD_BYTES,
    BodyRelay,
    FramingError,
    Head,
    Request,
    error_response,
    flush,
    parse_response,
    pipe,
    read_head,
    response_has_body,
)
from listener.proxy.mailbox import Mailbox
from listener.proxy.peer import Peer
from listener.proxy.record import Recorder
from listener.proxy.wire import Wire

log = logging.getLogger("docktrail.proxy")

ID_BYTES = 4096  # of a create's response: `{"Id": …}`


@dataclass(slots=True)
class Pending:
    request: Request
    start_ns: int
    event_id: str = ""
    call: judge.Call | None = None
    peer_call: PeerCall | None = None
    refused: str | None = None
    verdict: asyncio.Future[bool] | None = None


@dataclass(slots=True)
class Client:
    peer: Peer
    reader: Wire
    writer: Wire  # the same socket: reads and writes
    queue: Mailbox[Pending | None] = field(default_factory=Mailbox)
    who: Who | None = None  # read before the first response to a recorded request
    identity: asyncio.Task[Who] | None = None  # reading it, while the Engine works
    unanswered: int = 0  # requests sent on whose responses the client still waits
    # it left with every response relayed in full: the Engine connection is between
    # messages and can serve the next client
    left_answered: bool = False
    # reads the requests that are not plain reads; started by the first of them (or the end)
    upstream: asyncio.Task[None] | None = None


class Downstream:
    """Relays each connection's responses, and records the calls they answer."""

    def __init__(
        self,
        host: str,
        recorder: Recorder,
        who: Callable[[Client], Awaitable[Who]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._host = host
        self._recorder = recorder
        self._who = who  # the client's `who`, read once (by the server, which reads peers)
        self._loop = loop  # given: asking for the running loop is a getpid() each time

    async def relay(self, client: Client, engine: Wire) -> bool:
        """Relays the responses in order; True when it ended between them (the client left)."""
        while (pending := await client.queue.get()) is not None:
            plain = pending.call is None and pending.verdict is None and not engine.unread()
            if plain and await self._relayed_whole(client, engine, pending):
                client.unanswered -= 1
                continue
            if pending.call is not None and client.who is None:
                await self._who(client)  # read while the Engine worked; before the response
            if pending.refused is not None:
                client.writer.write(error_response(403, "Forbidden", pending.refused))
                await flush(client.writer)
                self._record(client, pending, 403)
                log.warning(
                    "proxy refused a request",
                    extra={"fields": {"who": client.peer.login, "reason": pending.refused}},
                )
                client.unanswered -= 1
                continue
            try:
                ended = await self._relay_response(client, engine, pending)
            except BaseException:
                self._record(client, pending, None)
                if pending.verdict is not None and not pending.verdict.done():
                    pending.verdict.set_result(False)
                raise
            if ended:
                return False
            client.unanswered -= 1
        return True

    async def _relayed_whole(self, client: Client, engine: Wire, pending: Pending) -> bool:
        """True when the response came whole in one piece and `_relay_whole` relayed it from
        the Engine's `data_received` (a read's response, most often); else it is read here."""
        whole: asyncio.Future[bool] = self._loop.create_future()
        engine.offer = functools.partial(_relay_whole, client.writer, pending, whole)
        try:
            return await whole
        finally:
            engine.offer = None

    async def _relay_response(self, client: Client, engine: Wire, pending: Pending) -> bool:
        """Relays one response; True when the connection is done (hijack or close)."""
        head = await self._final_head(client, engine)
        if head is None:
            self._record(client, pending, None)
            if pending.verdict is not None:
                pending.verdict.set_result(False)
            return True
        response = parse_response(head)
        has_body = response_has_body(pending.request.method, response.status)
        coalesce = has_body and pending.verdict is None and bool(engine.buffer)
        if not coalesce:
            client.writer.write(head.raw)
            await flush(client.writer)
        if pending.verdict is not None:
            hijacked = response.status == 101 or (response.status == 200 and response.raw_stream)
            pending.verdict.set_result(hijacked)
            if hijacked:  # the call lasts as long as the stream: its events come during it
                self._record(client, pending, response.status, finish=False)
                await pipe(engine, client.writer)
                if pending.peer_call is not None:
                    pending.peer_call.finish([])
                return True
        keep = ID_BYTES if pending.peer_call is not None and pending.peer_call.awaiting_id else 0
        length = head.content_length if coalesce and not head.chunked else None
        if length is not None and len(engine.buffer) >= length:
            # the whole response is here (most are): one write, no relay of its body
            body = engine.take(length)
            client.writer.write(head.raw + body)
            await flush(client.writer)
            self._record(client, pending, response.status, _response_id(bytearray(body[:keep])))
            return "close" in head.header("connection").lower()
        # the head leaves with the body bytes already here (one write, one wake-up of the
        # client), never waiting for more: a stream's head must reach its client at once
        relay = BodyRelay(engine, client.writer, keep, prefix=head.raw if coalesce else b"")
        until_close = not head.chunked and head.content_length is None
        if has_body:
            await relay.relay(head, until_close=True)
        else:
            until_close = False
        self._record(client, pending, response.status, _response_id(relay.kept))
        # `Connection: close`: the Engine closes after this response, and so does the client's
        # connection (a client reading to the end would otherwise wait on the proxy forever)
        return (until_close and has_body) or "close" in head.header("connection").lower()

    async def _final_head(self, client: Client, engine: Wire) -> Head | None:
        """The response's head, past interim ones: Go's server answers `Expect:
        100-continue` with `100 Continue` first. Those are relayed as they come."""
        while (head := await read_head(engine)) is not None:
            status = parse_response(head).status
            if not 100 <= status < 200 or status == 101:
                return head
            client.writer.write(head.raw)
            await flush(client.writer)
        return None

    def _record(
        self,
        client: Client,
        pending: Pending,
        status: int | None,
        response_id: str | None = None,
        *,
        finish: bool = True,
    ) -> None:
        if pending.call is None:
            return
        assert client.who is not None  # set (`ProxyServer._judge`) before a call is described
        event = api_call_event(
            self._host,
            client.peer,
            client.who,
            pending.request.method,
            pending.request.target,
            pending.call,
            status=status,
            start_ns=pending.start_ns,
            refused=pending.refused,
            response_id=response_id,
        )
        if pending.peer_call is not None and finish:
            kind = "exec" if pending.call.path.endswith("/exec") else pending.call.kind
            pending.peer_call.finish([(kind, response_id or "")])
        self._recorder.record(event)


def _relay_whole(client: Wire, pending: Pending, whole: asyncio.Future[bool], data: bytes) -> bool:
    """Relays `data` when it is exactly one final response, with its whole body, that
    keeps the connection open; sets `whole` either way (False: the task reads it)."""
    if whole.done():
        return False
    relayed = _is_whole_response(pending, data) and not client.held_back
    if relayed:
        client.write(data)
    whole.set_result(relayed)
    return relayed


def _is_whole_response(pending: Pending, data: bytes) -> bool:
    end = data.find(b"\r\n\r\n") + 4
    if end < 4 or end > MAX_HEAD_BYTES:
        return False
    head = Head(data[:end], data[: data.find(b"\r\n")].decode("latin-1"))
    try:
        status = parse_response(head).status
        if 100 <= status < 200 or "close" in head.header("connection").lower():
            return False  # interim responses and the end of the connection: the task's
        if not response_has_body(pending.request.method, status):
            return len(data) == end
        length = None if head.chunked else head.content_length
    except FramingError:
        return False  # the task says what is wrong with it
    return length is not None and len(data) == end + length


def _response_id(kept: bytearray) -> str | None:
    if not kept:
        return None
    try:
        data = json.loads(bytes(kept))
    except ValueError:
        return None
    value = data.get("Id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None
