"""The socket proxy: accepts clients, reads their peer credentials, forwards bytes.

One engine connection per client connection. Two tasks per connection: the
upstream task reads each request head (and the bodies that are judged) and
writes the same bytes to the engine; the downstream task relays each response
in order. A request that may switch protocols (`Connection: Upgrade`: attach,
exec start, build sessions) stops the upstream task until the response says
whether it did (101, or 200 with the Engine's raw-stream type): then both
directions become a plain byte pipe, half-closes included.

Most requests are plain reads (`docker ps`: `HEAD /_ping`, `GET
/containers/json`) that arrive whole in one read, and their responses too:
those are forwarded from the sockets' `data_received` (`Wire.offer`) while the
tasks wait at a message's start, without waking them; anything else (a
recorded call, a body, a split or pipelined message, a stream) is read by the
tasks as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from dataclasses import dataclass, field

from config.proxy import ProxyConfig
from listener.correlate.effects import Lru
from listener.model.event import Who
from listener.proxy import judge
from listener.proxy.engines import EnginePool
from listener.proxy.events import PeerCall, PeerLedger, api_call_event, api_call_id, peer_who
from listener.proxy.framing import (
    MAX_HEAD_BYTES,
    BodyRelay,
    FramingError,
    Head,
    Inbox,
    Request,
    error_response,
    flush,
    parse_request,
    parse_response,
    pipe,
    read_head,
    response_has_body,
)
from listener.proxy.mailbox import Mailbox
from listener.proxy.peer import Peer, confirm_details, peer_at_accept, read_details
from listener.proxy.record import Recorder
from listener.proxy.wire import Wire

log = logging.getLogger("docktrail.proxy")

ID_BYTES = 4096  # of a create's response: `{"Id": …}`
_PLAIN = ("GET", "HEAD")
_NAMES_KEPT = 1_024  # peer containers whose names are remembered


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


class ProxyServer:
    def __init__(self, config: ProxyConfig, host: str, recorder: Recorder, ledger: PeerLedger):
        self._config = config
        self._host = host
        self._recorder = recorder
        self._ledger = ledger
        self._server: asyncio.Server | None = None
        self._names: Lru[str | None] = Lru(_NAMES_KEPT)  # peer id -> name
        self._connections: set[asyncio.Task[None]] = set()
        self._engines = EnginePool(config.engine, MAX_HEAD_BYTES)
        self._loop: asyncio.AbstractEventLoop | None = None  # asked once: a getpid() each time

    async def start(self) -> None:
        path = self._config.listen
        await asyncio.to_thread(_remove_stale_socket, path)
        running = self._loop = asyncio.get_running_loop()
        self._server = await running.create_unix_server(
            lambda: Wire(self._accepted, running), path=str(path)
        )
        await asyncio.to_thread(_set_socket_access, self._config)
        loop = type(asyncio.get_running_loop()).__module__.partition(".")[0]  # asyncio, uvloop
        log.info(
            "socket proxy listening",
            extra={
                "fields": {"listen": str(path), "engine": str(self._config.engine), "loop": loop}
            },
        )

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            await self._engines.aclose()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
            with contextlib.suppress(OSError):
                self._config.listen.unlink()

    def _accepted(self, wire: Wire) -> None:
        assert self._loop is not None  # started
        task = self._loop.create_task(self._accept(wire))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _accept(self, wire: Wire) -> None:
        try:
            await self._serve(wire)
        except asyncio.CancelledError:
            pass
        finally:
            wire.close()

    async def _serve(self, wire: Wire) -> None:
        # the credentials and the process pinned at once; the rest when a request is recorded
        # (most connections only read), kept if the pinned process had not exited by then
        try:
            peer = peer_at_accept(wire.get_extra_info("socket"))
        except OSError as exc:
            log.error("proxy: client not served", extra={"fields": {"error": str(exc)}})
            return
        client = Client(peer, wire, wire, Mailbox(self._loop))
        try:
            await self._relay(client)
        finally:
            if client.identity is not None and not client.identity.done():
                # the pidfd confirms what the reads found: closed only after them
                client.identity.add_done_callback(lambda _: peer.release())
            else:
                peer.release()

    async def _relay(self, client: Client) -> None:
        try:
            engine_reader, engine_writer = await self._engines.connect()
        except OSError as exc:
            log.error("proxy: client not served", extra={"fields": {"error": str(exc)}})
            return
        client.reader.offer = functools.partial(self._offer_first, client, engine_writer)
        if client.reader.unread() or client.reader.at_eof():  # came before the offer
            self._start_upstream(client, engine_writer)
        failures: list[BaseException] = []
        engine = engine_reader
        between_messages = False
        try:
            # responses are relayed in this task (one task fewer per client): it ends last, at
            # the upstream's end, a hijack's end, or an error
            between_messages = await self._downstream(client, engine)
        except Exception as exc:
            failures.append(exc)
        finally:
            client.reader.offer = None
            ended = await _ended(client.upstream)
            if ended is not None:
                failures.append(ended)
            reusable = between_messages and client.left_answered and not engine.unread()
            if reusable and not failures:
                self._engines.give_back(engine_reader, engine_writer)
            else:
                engine_writer.close()
                self._engines.replenish()
        for failure in failures:
            if isinstance(failure, FramingError | ConnectionError):
                log.warning("proxy connection", extra={"fields": {"error": str(failure)}})

    async def _identify(self, peer: Peer) -> Who:
        try:
            await asyncio.to_thread(self._read_details, peer)
        except OSError as exc:  # the call is still recorded, with the socket's credentials
            log.warning("proxy: peer details not read", extra={"fields": {"error": str(exc)}})
        confirm_details(peer)  # here, on the loop, where the pidfd is closed: never under it
        if peer.container_id:
            peer.container_name = await self._container_name(peer.container_id)
        return peer_who(peer)

    def _read_details(self, peer: Peer) -> None:
        """Blocking: /proc, and user and group names (NSS may ask the network)."""
        read_details(peer)
        if self._config.policy.enabled and self._config.policy.allow_groups:
            peer.group_names = peer.groups()

    # -- client → engine ---------------------------------------------------------------

    async def _upstream(self, client: Client, engine: Wire) -> None:
        inbox = client.reader
        forward_read = functools.partial(self._forward_read, client, engine)
        try:
            while True:
                inbox.offer = forward_read  # while it waits at a message's start
                head = await read_head(inbox)
                inbox.offer = None
                if head is None:
                    break
                pending = Pending(parse_request(head), time.time_ns())
                body = None
                if judge.changes_state(pending.request):  # reads: no coroutine to judge them
                    body = await self._judge(client, pending)
                client.unanswered += 1
                if pending.refused is not None:
                    client.queue.put(pending)
                    continue
                if pending.call is not None:
                    pending.peer_call = self._open_call(client, pending)
                if judge.may_hijack(pending.request):
                    pending.verdict = asyncio.get_running_loop().create_future()
                client.queue.put(pending)
                if body is not None:
                    engine.write(head.raw + body)  # one write: one wake-up of the Engine
                else:
                    engine.write(head.raw)
                    if head.chunked or head.content_length:
                        await BodyRelay(client.reader, engine, 0).relay(head)
                await flush(engine)
                if pending.verdict is not None and await pending.verdict:
                    await pipe(client.reader, engine)
                    return
            _client_ended(client, engine)
        finally:
            client.queue.put(None)

    def _offer_first(self, client: Client, engine: Wire, data: bytes) -> bool:
        """Until a request needs the upstream task, none runs: a client that sends only
        plain reads (`docker ps`) is served without one, its end included."""
        if self._forward_read(client, engine, data):
            return True
        client.reader.offer = None
        if not data and not client.reader.unread():
            _client_ended(client, engine)
            client.queue.put(None)
            return True
        self._start_upstream(client, engine)
        return False

    def _start_upstream(self, client: Client, engine: Wire) -> None:
        client.reader.offer = None
        loop = self._loop or asyncio.get_running_loop()
        client.upstream = loop.create_task(self._upstream(client, engine))

    def _forward_read(self, client: Client, engine: Wire, data: bytes) -> bool:
        """A plain read (GET or HEAD, no body, nothing recorded, no upgrade) that came whole
        in one piece: forwarded from `data_received` itself, without a wake-up of the
        upstream task (`docker ps` sends two such). False: the task reads it as any other."""
        if data.find(b"\r\n\r\n") != len(data) - 4 or len(data) > MAX_HEAD_BYTES:
            return False
        if engine.held_back:
            return False
        head = Head(data, data[: data.find(b"\r\n")].decode("latin-1"))
        try:
            request = parse_request(head)
            plain = request.method in _PLAIN and not head.chunked and not head.content_length
        except FramingError:
            return False  # the task says what is wrong with it
        if not plain or judge.changes_state(request) or judge.may_hijack(request):
            return False
        client.unanswered += 1
        client.queue.put(Pending(request, time.time_ns()))
        engine.write(data)
        return True

    async def _judge(self, client: Client, pending: Pending) -> bytes | None:
        """Reads the body when it is judged; sets `call` and `refused`."""
        request = pending.request
        head = request.head
        if not judge.changes_state(request):
            return None
        if self._config.policy.enabled:
            await self._who(client)  # the policy judges the login before anything is sent
        elif client.who is None and client.identity is None:
            client.identity = asyncio.create_task(self._identify(client.peer))
        pending.event_id = api_call_id(
            self._host, client.peer, pending.start_ns, request.method, request.target
        )
        body: bytes | None = None
        truncated = False
        if judge.wants_body(request):
            length = head.content_length
            if not head.chunked and length is not None and length <= self._config.max_body_bytes:
                body = await client.reader.read_exactly(length)
            else:
                truncated = True
        pending.call = judge.describe(request, body, truncated)
        pending.refused = judge.refusal(self._config.policy, pending.call, client.peer)
        refuse_unrecorded = self._config.on_trail_failure == "refuse" and self._recorder.failing
        if pending.refused is None and refuse_unrecorded:
            pending.refused = "docktrail cannot write its audit trail: request refused"
        if pending.refused is not None and body is None:
            await BodyRelay(client.reader, None, 0).relay(head)  # consumed, never forwarded
        return body

    async def _who(self, client: Client) -> Who:
        """The client's `who`: read once, by the first recorded request's task."""
        if client.who is None:
            if client.identity is None:
                client.identity = asyncio.create_task(self._identify(client.peer))
            try:
                client.who = await client.identity
            except Exception as exc:  # still recorded: with the socket's credentials alone
                log.error("proxy: peer details not read", extra={"fields": {"error": repr(exc)}})
                client.who = _credentials_only(client.peer)
        return client.who

    def _open_call(self, client: Client, pending: Pending) -> PeerCall:
        """The call in the ledger before it is forwarded: Engine events come while the
        Engine works. Until the client's `who` is read, attribution waits for it."""
        call = pending.call
        assert call is not None
        keys = [(call.kind, name) for name in call.names]
        if call.kind == "image" and call.image:
            keys.append(("image", call.image))
        creates = call.path == "/containers/create" or call.path.endswith("/exec")
        who = client.who or _credentials_only(client.peer)  # the details are being read
        opened = self._ledger.open(
            pending.event_id, call.path, who, client.peer, keys, awaiting_id=creates
        )
        if client.who is None and client.identity is not None:
            opened.identified.clear()
            client.identity.add_done_callback(lambda task: _identified(opened, task))
        return opened

    # -- engine → client ---------------------------------------------------------------

    async def _downstream(self, client: Client, engine: Wire) -> bool:
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
        whole: asyncio.Future[bool] = (self._loop or asyncio.get_running_loop()).create_future()
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
        assert client.who is not None  # set by `_judge` before any call is described
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

    async def _container_name(self, container_id: str) -> str | None:
        names = self._names  # peers come and go (a CI job each): the latest are kept
        if container_id in names:
            names.move_to_end(container_id)
            return names[container_id]
        name = await _inspect_name(self._config, container_id)
        names.put(container_id, name)
        return name


def _client_ended(client: Client, engine: Wire) -> None:
    """The client's end, at a message's start."""
    if client.unanswered == 0:
        client.left_answered = True  # nothing in flight: no stream to end
    elif engine.can_write_eof():
        engine.write_eof()  # the Engine ends its streams when the client goes


async def _ended(upstream: asyncio.Task[None] | None) -> BaseException | None:
    """How the upstream task ended: cancelled if it had not yet (it usually has: the
    client's end ended both)."""
    if upstream is None:
        return None
    if not upstream.done():
        upstream.cancel()
        await asyncio.wait([upstream])
    return asyncio.CancelledError() if upstream.cancelled() else upstream.exception()


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


def _credentials_only(peer: Peer) -> Who:
    return peer_who(Peer(peer.pid, peer.uid, peer.gid))


def _identified(call: PeerCall, identity: asyncio.Task[Who]) -> None:
    if not identity.cancelled() and identity.exception() is None:
        call.who = identity.result()
    call.identified.set()


def _response_id(kept: bytearray) -> str | None:
    if not kept:
        return None
    try:
        data = json.loads(bytes(kept))
    except ValueError:
        return None
    value = data.get("Id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


async def _inspect_name(config: ProxyConfig, container_id: str) -> str | None:
    """The name of the container a client runs in, from the Engine itself."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(config.engine))
    except OSError:
        return None
    try:
        writer.write(
            f"GET /containers/{container_id}/json HTTP/1.1\r\nHost: docker\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await writer.drain()
        inbox = Inbox(reader)
        head = await asyncio.wait_for(read_head(inbox), 5)
        if head is None or parse_response(head).status != 200:
            return None
        relay = BodyRelay(inbox, None, 1 << 20)
        await asyncio.wait_for(relay.relay(head, until_close=True), 5)
        name = json.loads(bytes(relay.kept)).get("Name")
        return name.lstrip("/") if isinstance(name, str) else None
    except (OSError, ValueError, FramingError, TimeoutError):
        return None
    finally:
        writer.close()


def _remove_stale_socket(path: object) -> None:
    import os
    import stat
    from pathlib import Path

    target = Path(str(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(target.lstat().st_mode):
            os.unlink(target)


def _set_socket_access(config: ProxyConfig) -> None:
    import grp
    import os

    if config.listen_group:
        try:
            os.chown(config.listen, -1, grp.getgrnam(config.listen_group).gr_gid)
        except (KeyError, PermissionError) as exc:
            log.warning("proxy socket group not set", extra={"fields": {"error": str(exc)}})
    os.chmod(config.listen, config.listen_mode)
