"""The peer's pid is pinned at accept by its start time; /proc details are read later.

The proxy takes SO_PEERCRED and the process start time at accept and reads
the rest of /proc only before the first request it records. What it then
reads counts only if the pid still has the start time seen at accept: a
process that exited (or a pid that now names another process) leaves the
credentials alone, with `gone` set.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from listener.proxy.peer import Peer, peer_at_accept, read_details

CLIENT = "import socket, sys, time; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(60)"  # noqa: E501


@pytest.fixture
def accepted(tmp_path: Path) -> Iterator[tuple[Peer, subprocess.Popen[bytes]]]:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        client = subprocess.Popen([sys.executable, "-c", CLIENT, str(path), "pin-me"])
        try:
            connection, _ = server.accept()
            with connection:
                yield peer_at_accept(connection), client
        finally:
            client.kill()
            client.wait()


def test_details_of_the_process_that_connected_are_read(
    accepted: tuple[Peer, subprocess.Popen[bytes]],
) -> None:
    peer, client = accepted
    assert (peer.pid, peer.gone, peer.argv) == (client.pid, False, [])
    assert peer.start_ticks is not None
    read_details(peer)
    assert not peer.gone and peer.argv[-1] == "pin-me" and peer.exe is not None
    assert peer.user is not None


def test_details_are_dropped_when_the_pid_names_another_process(
    accepted: tuple[Peer, subprocess.Popen[bytes]],
) -> None:
    peer, _ = accepted
    assert peer.start_ticks is not None
    peer.start_ticks -= 1  # as if the process seen at accept had exited and the pid come back
    read_details(peer)
    assert peer.gone and peer.argv == [] and peer.exe is None and peer.cgroup is None
    assert peer.user is not None  # the credentials stay: they are the socket's, not /proc's


def test_a_client_gone_before_its_first_recorded_request_keeps_its_credentials(
    accepted: tuple[Peer, subprocess.Popen[bytes]],
) -> None:
    peer, client = accepted
    client.kill()
    client.wait()
    read_details(peer)
    assert peer.gone and peer.argv == [] and peer.auid is None
    assert (peer.pid, peer.uid) == (client.pid, 0) and peer.summary()["gone"] is True
