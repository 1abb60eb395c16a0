"""The compose file's socket-proxy allowlist is enough for `docktrail run`, and nothing
more: a proxy with the same rules as deploy/compose/compose.yaml (GET/HEAD only, the API
sections it enables) sits between a real `docktrail run` and the test dockerd; the
service records a container with its inspected configuration, the proxy refuses none of
its requests, and a write through the proxy is refused."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sinks.base import EventFilter
from tests.dockerd import BUSYBOX_REF, Dockerd, wait_until
from tests.test_deploy import compose_config
from tests.test_run_live import Service

FORBIDDEN = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def compose_sections() -> set[str]:
    """API path sections the compose file's proxy lets through (PING is `/_ping`)."""
    environment = compose_config()["services"]["socket-proxy"]["environment"]
    enabled = {key.lower() for key, value in environment.items() if value == "1"}
    return {"_ping" if key == "ping" else key for key in enabled}


def section_of(path: str) -> str:
    parts = path.split("?", 1)[0].strip("/").split("/")
    if parts and parts[0].startswith("v") and parts[0][1:2].isdigit():
        parts = parts[1:]  # /v1.47/containers/json
    return parts[0] if parts else ""


class AllowlistProxy:
    """TCP in front of the Engine's unix socket; each request head is checked."""

    def __init__(self, engine: Path, sections: set[str]) -> None:
        self.engine = engine
        self.sections = sections
        self.passed: list[str] = []
        self.refused: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self._listener.accept()
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX)
        upstream.connect(str(self.engine))
        threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()
        buffer = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                if not self._allowed(head):
                    client.sendall(FORBIDDEN)
                    return
                upstream.sendall(head + b"\r\n\r\n")
        for end in (client, upstream):
            end.close()

    def _allowed(self, head: bytes) -> bool:
        method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        has_body = b"content-length:" in head.lower() and b"content-length: 0" not in head.lower()
        ok = method in ("GET", "HEAD") and section_of(path) in self.sections and not has_body
        (self.passed if ok else self.refused).append(f"{method} {path}")
        return ok


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@dataclass
class ThroughProxy:
    host: str


@pytest.fixture
def proxy(dockerd: Dockerd) -> Iterator[AllowlistProxy]:
    running = AllowlistProxy(dockerd.socket_path, compose_sections())
    yield running
    running.close()


def test_docktrail_runs_through_the_compose_allowlist(
    dockerd: Dockerd, proxy: AllowlistProxy, tmp_path: Path
) -> None:
    assert compose_sections() == {
        "_ping",
        "version",
        "info",
        "events",
        "containers",
        "images",
        "exec",
        "networks",
        "volumes",
    }
    service = Service(tmp_path, ThroughProxy(f"tcp://127.0.0.1:{proxy.port}"))  # type: ignore[arg-type]
    service.start()
    try:
        dockerd.docker("create", "--name", "proxy-probe", "--privileged", BUSYBOX_REF, "true")

        def recorded() -> bool:
            found = service.events(EventFilter(source="docker", container="proxy-probe"))
            return any(e.action == "create" and e.config for e in found)

        assert wait_until(recorded, 30), service.log_text()
        created = service.events(EventFilter(source="docker", container="proxy-probe"))[0]
        assert created.config.get("privileged") is True  # inspected through the proxy
        assert proxy.refused == []
        seen = {section_of(request.split(" ", 1)[1]) for request in proxy.passed}
        assert {"events", "containers"} <= seen
    finally:
        assert service.stop() == 0, service.log_text()
        dockerd.docker("rm", "--force", "proxy-probe", check=False)


def test_the_allowlist_refuses_writes(dockerd: Dockerd, proxy: AllowlistProxy) -> None:
    env = {**dockerd.env, "DOCKER_HOST": f"tcp://127.0.0.1:{proxy.port}"}
    result = subprocess.run(
        ["docker", "create", "--name", "via-proxy", BUSYBOX_REF, "true"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert any(r.startswith("POST ") and "/containers/create" in r for r in proxy.refused)
    assert "via-proxy" not in dockerd.docker("ps", "-a", "--format", "{{.Names}}")
