"""The peer's process is pinned at accept; its /proc details are read later.

The proxy takes SO_PEERCRED at accept and pins the process (a pidfd, or its
start time where pidfds are not available), and reads the rest of /proc only
before the first request it records. What it then reads counts only if the
pinned process had not exited by the end of the reads: a pid that now names
another process, or none, leaves the credentials alone, with `gone` set.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.proxy.peer import Peer, confirm_details, peer_at_accept, peer_of, read_details
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.proxy_harness import ProxiedEngine

CLIENT = "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(60)"  # noqa: E501
Accepted = tuple[Peer, subprocess.Popen[bytes], socket.socket]


@pytest.fixture(params=[True, False], ids=["pidfd", "start-time"])
def accepted(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Accepted]:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(path), "pin-me"])
        try:
            connection, _ = server.accept()
            with connection:
                peer = peer_at_accept(connection, use_pidfd=request.param)
                try:
                    yield peer, client, connection
                finally:
                    peer.release()
        finally:
            client.kill()
            client.wait()


def _gone(client: subprocess.Popen[bytes]) -> None:
    client.kill()
    client.wait()


def test_details_of_the_process_that_connected_are_read(accepted: Accepted) -> None:
    peer, client, _ = accepted
    assert (peer.pid, peer.gone, peer.argv) == (client.pid, False, [])
    assert (peer.pidfd is not None) != (peer.start_ticks is not None)  # one pin or the other
    read_details(peer)
    confirm_details(peer)
    assert not peer.gone and peer.argv[-1] == "pin-me" and peer.exe is not None
    assert peer.start_ticks is not None and peer.user is not None


def test_a_client_gone_before_its_first_recorded_request_keeps_its_credentials(
    accepted: Accepted,
) -> None:
    peer, client, _ = accepted
    _gone(client)
    read_details(peer)
    confirm_details(peer)
    assert peer.gone and peer.argv == [] and peer.auid is None and peer.exe is None
    assert (peer.pid, peer.uid) == (client.pid, os.geteuid()) and peer.summary()["gone"] is True


def test_details_are_dropped_when_the_pid_names_another_process(accepted: Accepted) -> None:
    peer, client, _ = accepted
    if peer.pidfd is not None:
        read_details(peer)
        _gone(client)  # exited during the reads: the pid may have been reused meanwhile
    else:
        assert peer.start_ticks is not None
        peer.start_ticks -= 1  # as if the process seen at accept had exited and the pid come back
        read_details(peer)
    confirm_details(peer)
    assert peer.gone and peer.argv == [] and peer.exe is None and peer.cgroup is None
    assert peer.user is not None  # the credentials stay: they are the socket's, not /proc's


def test_peer_of_reads_everything_at_once_and_keeps_no_descriptor(accepted: Accepted) -> None:
    _, client, connection = accepted
    before = len(os.listdir("/proc/self/fd"))
    peer = peer_of(connection)
    assert (peer.pid, peer.argv[-1], peer.pidfd) == (client.pid, "pin-me", None)
    assert len(os.listdir("/proc/self/fd")) == before


HANDOVER = """
import socket, sys
client = socket.socket(socket.AF_UNIX); client.connect(sys.argv[1])
courier = socket.socket(socket.AF_UNIX); courier.connect(sys.argv[2])
socket.send_fds(courier, [b"fd"], [client.fileno()])
"""  # connects to the proxy, hands the connection over and exits before any request


async def test_a_call_on_a_connection_whose_process_exited_is_recorded_with_its_credentials(
    dockerd: Dockerd, tmp_path: Path
) -> None:
    courier_path = tmp_path / "courier.sock"
    async with ProxiedEngine(dockerd) as proxy:
        with socket.socket(socket.AF_UNIX) as courier:
            courier.bind(str(courier_path))
            courier.listen(1)
            argv = [sys.executable, "-c", HANDOVER, str(proxy.socket_path), str(courier_path)]
            child = await asyncio.create_subprocess_exec(*argv)
            conn, _ = await asyncio.to_thread(courier.accept)
            with conn:
                _, fds, _, _ = await asyncio.to_thread(socket.recv_fds, conn, 16, 1)
            assert await child.wait() == 0  # gone before its connection says a word
        with socket.socket(fileno=fds[0]) as handed:
            body = json.dumps({"Image": BUSYBOX_REF, "Cmd": ["true"]}).encode()
            request = (
                b"POST /v1.41/containers/create?name=px-orphan HTTP/1.1\r\nHost: docker\r\n"
                b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body)
            )
            reply = await asyncio.to_thread(_exchange, handed, request)
        assert reply.startswith(b"HTTP/1.1 201"), reply[:200]
        assert await proxy.wait_for(lambda: bool(proxy.api_calls(path="/containers/create")))
        (call,) = proxy.api_calls(path="/containers/create")
    dockerd.docker("rm", "-f", "px-orphan")
    assert (call.who.method, call.who.pid, call.who.uid) == ("peer", child.pid, os.geteuid())
    assert call.who.login is None and call.who.command is None  # nothing of another process
    assert call.attributes["peer"]["gone"] is True and call.actor.name == "px-orphan"


def _exchange(sock: socket.socket, request: bytes) -> bytes:
    sock.sendall(request)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
    return reply
