"""The socket proxy: accepts clients, reads their peer credentials, forwards bytes.

One engine connection per client connection. Two tasks per connection: the
upstream task reads each request head (and the bodies that are judged) and
writes the same bytes to the engine; the downstream task relays each response
in order (`downstream.Downstream`). A request that may switch protocols
(`Connection: Upgrade`: attach, exec start, build sessions) stops the upstream
task until the response says whether it did (101, or 200 with the Engine's
raw-stream type): then both directions become a plain byte pipe, half-closes
included.

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

from config.proxy import ProxyConfig
from listener.correlate.effects import Lru
from listener.model.event import Who
from listener.proxy import judge
from listener.proxy.downstream import Client, Downstream, Pending
from listener.proxy.engines import EnginePool
from listener.proxy.events import PeerCall, PeerLedger, api_call_id, peer_who
from listener.proxy.framing import (
    MAX_HEAD_BYTES,
    BodyRelay,
    FramingError,
    Head,
    Inbox,
    flush,
    parse_request,
    parse_response,
    pipe,
    read_head,
)
from listener.proxy.mailbox import Mailbox
from listener.proxy.peer import Peer, confirm_details, peer_at_accept, read_details
from listener.proxy.record import Recorder
from listener.proxy.wire import Wire

log = logging.getLogger("docktrail.proxy")

_PLAIN = ("GET", "HEAD")
_NAMES_KEPT = 1_024  # peer containers whose names are remembered


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
        self._downstream: Downstream | None = None  # given the loop at the start

    async def start(self) -> None:
        path = self._config.listen
        await asyncio.to_thread(_remove_stale_socket, path)
        running = self._loop = asyncio.get_running_loop()
        self._downstream = Downstream(self._host, self._recorder, self._who, running)
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
        assert self._downstream is not None  # started
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
            between_messages = await self._downstream.relay(client, engine)
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


def _credentials_only(peer: Peer) -> Who:
    return peer_who(Peer(peer.pid, peer.uid, peer.gid))


def _identified(call: PeerCall, identity: asyncio.Task[Who]) -> None:
    if not identity.cancelled() and identity.exception() is None:
        call.who = identity.result()
    call.identified.set()


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
