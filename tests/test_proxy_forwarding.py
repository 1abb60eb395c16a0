"""The proxy's forwarding and judging against a raw Unix-socket HTTP server.

The server records every byte it receives and answers with canned bytes, so
the tests see exactly what the proxy passed on in each direction: keep-alive,
chunked bodies, pipelined requests, refusals, and the fail-safe when the
trail cannot take events.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from config.proxy import ProxyConfig, ProxyPolicyConfig
from listener.event import Event
from listener.proxy.events import PeerLedger
from listener.proxy.forward import ProxyServer
from listener.proxy.judge import Call, refusal
from listener.proxy.peer import Peer
from listener.proxy.record import Recorder

CREATED = b'{"Id":"' + b"ab" * 32 + b'","Warnings":[]}'
OK_CREATE = (
    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (
        len(CREATED),
        CREATED,
    )
)
OK_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"


@dataclass
class RawEngine:
    """Answers each request head (and its declared body) with the next canned reply."""

    path: Path
    replies: list[bytes]
    received: bytearray = field(default_factory=bytearray)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in self.replies:
            head = await reader.readuntil(b"\r\n\r\n")
            self.received += head
            if b"chunked" in head.lower():
                self.received += await reader.readuntil(b"\r\n0\r\n")
                self.received += await reader.readuntil(b"\r\n\r\n")  # the test's trailer
            elif b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.received += await reader.readexactly(length)
            writer.write(reply)
            await writer.drain()
        writer.close()


@dataclass
class Setup:
    engine: RawEngine
    listen: Path
    events: list[Event]
    recorder: Recorder


async def _start(
    replies: list[bytes],
    policy: ProxyPolicyConfig | None = None,
    put: Callable[[Event], Awaitable[None]] | None = None,
    on_trail_failure: str = "forward",
) -> AsyncIterator[Setup]:
    base = Path(tempfile.mkdtemp(prefix="dt-pxf-"))
    engine = RawEngine(base / "engine.sock", replies)
    server = await asyncio.start_unix_server(engine.serve, path=str(engine.path))
    events: list[Event] = []

    async def store(event: Event) -> None:
        events.append(event)

    config = ProxyConfig(
        listen=base / "docker.sock",
        engine=engine.path,
        listen_group=None,
        policy=policy or ProxyPolicyConfig(),
        on_trail_failure=on_trail_failure,  # type: ignore[arg-type]
    )
    recorder = Recorder(put or store)
    recorder.start()
    proxy = ProxyServer(config, "h", recorder, PeerLedger())
    await proxy.start()
    try:
        yield Setup(engine, config.listen, events, recorder)
    finally:
        await proxy.aclose()
        await recorder.aclose()
        server.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def two_creates() -> AsyncIterator[Setup]:
    async for setup in _start([OK_CREATE, OK_CHUNKED]):
        yield setup


async def _exchange(listen: Path, request: bytes, until: bytes, count: int = 1) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(listen))
    writer.write(request)
    await writer.drain()
    received = b""
    while received.count(until) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 10)
        if not chunk:
            break
        received += chunk
    writer.close()
    return received


CREATE_BODY = json.dumps(
    {"Image": "busybox", "Env": ["API_TOKEN=s3cr3t", "MODE=x"], "HostConfig": {"Privileged": True}}
).encode()
CREATE = (
    b"POST /v1.47/containers/create?name=web HTTP/1.1\r\nHost: docker\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(CREATE_BODY), CREATE_BODY)
)
CHUNKED_BUILD = (
    b"POST /v1.47/build?t=x HTTP/1.1\r\nHost: docker\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: 1\r\n\r\n"
)


async def test_pipelined_requests_and_chunked_bodies_pass_byte_for_byte(
    two_creates: Setup,
) -> None:
    received = await _exchange(two_creates.listen, CREATE + CHUNKED_BUILD, b"HTTP/1.1", 2)
    assert received == OK_CREATE + OK_CHUNKED
    await two_creates.recorder.aclose()
    assert bytes(two_creates.engine.received) == CREATE + CHUNKED_BUILD
    create, build = two_creates.events
    assert (create.attributes["path"], create.attributes["status"]) == ("/containers/create", 201)
    assert create.attributes["response_id"] == "ab" * 32
    assert create.attributes["body"]["HostConfig"] == {"Privileged": True}
    assert "s3cr3t" not in json.dumps(create.attributes) and "MODE=x" in json.dumps(
        create.attributes
    )
    assert (build.attributes["path"], build.attributes["status"]) == ("/build", 200)
    assert create.who.method == "peer" and create.who.pid is not None


@pytest.fixture
async def guarded() -> AsyncIterator[Setup]:
    async for setup in _start([OK_CREATE], ProxyPolicyConfig(enabled=True)):
        yield setup


async def test_a_refused_request_never_reaches_the_engine(guarded: Setup) -> None:
    received = await _exchange(guarded.listen, CREATE, b"}")
    assert received.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    message = json.loads(received.split(b"\r\n\r\n", 1)[1])["message"]
    assert "privileged containers are not allowed" in message
    assert guarded.engine.received == b""
    await guarded.recorder.aclose()
    assert [e.action for e in guarded.events] == ["refused"]


async def _broken_trail(event: Event) -> None:
    raise OSError("disk full")


@pytest.mark.parametrize(("mode", "forwarded"), [("forward", True), ("refuse", False)])
async def test_when_the_trail_fails_the_proxy_says_so_and_does_as_configured(
    mode: str, forwarded: bool, caplog: pytest.LogCaptureFixture
) -> None:
    async for setup in _start([OK_CREATE, OK_CREATE], put=_broken_trail, on_trail_failure=mode):
        await _exchange(setup.listen, CREATE, b"}")  # its event cannot be stored
        for _ in range(100):
            if setup.recorder.failing:
                break
            await asyncio.sleep(0.01)
        assert setup.recorder.failing and "NOT RECORDED" in caplog.text
        second = await _exchange(setup.listen, CREATE, b"}")
        assert second.startswith(b"HTTP/1.1 201") is forwarded
        assert setup.engine.received.count(b"POST") == (2 if forwarded else 1)


def _peer(login: str | None = None) -> Peer:
    peer = Peer(pid=1, uid=1000, gid=1000)
    peer.auid = None
    if login is not None:
        import pwd

        peer.auid = pwd.getpwnam(login).pw_uid
    peer.read_names()
    return peer


@pytest.mark.parametrize(
    ("host", "image", "refused"),
    [
        ({"Binds": ["/:/host"]}, "busybox", "bind of / is not allowed"),
        ({"Binds": ["/var/run/docker.sock:/s"]}, "busybox", "bind of /var/run/docker.sock"),
        ({"Mounts": [{"Type": "bind", "Source": "/etc/ssh"}]}, "busybox", "bind of /etc/ssh"),
        ({"PidMode": "host"}, "busybox", "PidMode host"),
        ({"NetworkMode": "host"}, "busybox", "NetworkMode host"),
        ({}, "evil.example/miner", "image evil.example/miner is outside"),
        ({"Binds": ["/srv/data:/data"]}, "docker.io/library/nginx", None),
    ],
)
def test_policy_names_each_refused_setting(
    host: dict[str, object], image: str, refused: str | None
) -> None:
    policy = ProxyPolicyConfig(enabled=True, trusted_images=["docker.io/library/*", "busybox"])
    call = Call("/containers/create", "container", image=image, body={"HostConfig": host})
    reason = refusal(policy, call, _peer())
    assert (reason is None) if refused is None else (reason is not None and refused in reason)
    root = _peer("root")
    listed = ProxyPolicyConfig(enabled=True, trusted_images=["busybox"], allow_logins=["root"])
    assert refusal(listed, call, root) is None


async def test_a_chunked_body_split_anywhere_ends_where_it_ends() -> None:
    """Bytes past the body (the next response) stay for the next read, at every split."""
    from listener.proxy.framing import BodyRelay, Inbox, read_head

    body = b"4\r\nWiki\r\n6;x=y\r\npedia \r\n0\r\nT: 1\r\n\r\n"
    message = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    following = b"HTTP/1.1 204 No Content\r\n\r\n"
    data = message + following
    for split in range(1, len(data)):
        reader = asyncio.StreamReader()
        reader.feed_data(data[:split])
        inbox = Inbox(reader)
        relay = BodyRelay(inbox, None, 64)
        asyncio.get_running_loop().call_soon(reader.feed_data, data[split:])
        asyncio.get_running_loop().call_soon(reader.feed_eof)
        head = await read_head(inbox)
        assert head is not None and head.chunked
        await relay.relay(head)
        assert bytes(relay.kept) == b"Wikipedia ", split
        after = await read_head(inbox)
        assert after is not None and after.raw == following, split


def _judged(target: str, body: dict[str, object] | None, *, truncated: bool = False) -> str | None:
    from listener.proxy.framing import Head, parse_request
    from listener.proxy.judge import describe

    request = parse_request(Head(b"", f"POST {target} HTTP/1.1"))
    raw = json.dumps(body).encode() if body is not None else None
    call = describe(request, raw, truncated)
    return refusal(ProxyPolicyConfig(enabled=True), call, _peer())


@pytest.mark.parametrize(
    ("target", "body", "truncated"),
    [
        ("/v1.47/containers/create", {"hostconfig": {"privileged": True}}, False),
        ("/v1.47/containers/create", {"HostConfig": {"Privileged": False, "privileged": 1}}, False),
        ("/v1.47/containers/cre%61te", {"HostConfig": {"Privileged": True}}, False),
        ("/v1.4.7/containers/create", {"HostConfig": {"Privileged": True}}, False),
        (
            "/containers/create",
            {"HostConfig": {"Mounts": [{"type": "bind", "source": "/"}]}},
            False,
        ),
        ("/v1.47/containers/web/exec", {"Privileged": True, "Cmd": ["sh"]}, False),
        ("/v1.47/containers/create", None, True),
    ],
)
def test_policy_sees_what_the_engine_would_read(
    target: str, body: dict[str, object] | None, truncated: bool
) -> None:
    """Spellings the Engine accepts (any key case, escapes, odd versions) are judged too."""
    assert _judged(target, body, truncated=truncated) is not None
    assert _judged("/v1.47/containers/create", {"HostConfig": {"Memory": 1}}) is None


async def test_an_attach_without_upgrade_switches_to_raw_bytes_both_ways() -> None:
    """The Engine answers 200 raw-stream and then echoes stdin: no HTTP after the head."""
    base = Path(tempfile.mkdtemp(prefix="dt-pxh-"))
    raw_head = b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.raw-stream\r\n\r\n"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(raw_head)
        while data := await reader.read(65536):
            writer.write(data)
        writer.write_eof()

    engine = await asyncio.start_unix_server(echo, path=str(base / "engine.sock"))
    events: list[Event] = []

    async def store(event: Event) -> None:
        events.append(event)

    recorder = Recorder(store)
    recorder.start()
    config = ProxyConfig(listen=base / "p.sock", engine=base / "engine.sock", listen_group=None)
    proxy = ProxyServer(config, "h", recorder, PeerLedger())
    await proxy.start()
    try:
        reader, writer = await asyncio.open_unix_connection(str(config.listen))
        writer.write(
            b"POST /v1.47/containers/c1/attach?stdin=1&stream=1 HTTP/1.1\r\nHost: d\r\n\r\n"
        )
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10) == raw_head
        stdin = b"GET / HTTP/1.1\r\n\r\n not http \x00\xff" * 100
        writer.write(stdin)
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 10) == stdin
        writer.close()
    finally:
        await proxy.aclose()
        await recorder.aclose()
        engine.close()
        shutil.rmtree(base, ignore_errors=True)
    assert [(e.attributes["path"], e.attributes["status"]) for e in events] == [
        ("/containers/c1/attach", 200)
    ]


async def test_peer_names_are_remembered_for_the_latest_peers_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import listener.proxy.forward as forward

    asked: list[str] = []

    async def inspect_name(config: ProxyConfig, container_id: str) -> str | None:
        asked.append(container_id)  # what the Engine would be asked
        return f"job-{container_id}"

    monkeypatch.setattr(forward, "_inspect_name", inspect_name)
    config = ProxyConfig(listen=tmp_path / "p.sock", engine=tmp_path / "e.sock", listen_group=None)

    async def nowhere(event: Event) -> None:
        raise AssertionError("nothing is recorded here")

    proxy = ProxyServer(config, "h", Recorder(nowhere), PeerLedger())
    for n in range(3 * forward._NAMES_KEPT):  # a CI job container each
        assert await proxy._container_name(f"c{n}") == f"job-c{n}"
    assert len(proxy._names) == forward._NAMES_KEPT
    last = f"c{3 * forward._NAMES_KEPT - 1}"
    assert await proxy._container_name(last) == f"job-{last}" and asked.count(last) == 1
