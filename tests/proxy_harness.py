"""The proxy in front of the test dockerd, with the Engine events it attributes.

What `docktrail run` wires for the proxy (the proxy service, its recorder and
the peer attribution stage), fed by a raw Engine events reader, into an
in-memory trail.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from config.proxy import ProxyConfig, ProxyPolicyConfig
from listener.event import Event
from listener.pipeline import Pipeline
from listener.proxy.service import ProxyService
from listener.sources.docker import normalize_engine_event
from tests.dockerd import Dockerd
from tests.test_audit_live import Person
from tests.test_auditd import StateTrail

HOST = "proxy-test"


class ProxiedEngine:
    def __init__(self, dockerd: Dockerd, policy: ProxyPolicyConfig | None = None) -> None:
        self.dockerd = dockerd
        self.dir = Path(tempfile.mkdtemp(prefix="dt-px-"))
        self.dir.chmod(0o755)
        self.socket_path = self.dir / "docker.sock"
        self.config = ProxyConfig(
            listen=self.socket_path,
            engine=dockerd.socket_path,
            listen_group="docker",
            listen_mode=0o666,  # the test people are not all in the docker group
            policy=policy or ProxyPolicyConfig(),
            attribution_wait_secs=2.0,
        )
        self.trail = StateTrail()
        self.service = ProxyService(self.config, HOST)
        self.pipeline = Pipeline(self.trail, stages=[self.service.stage], flush_interval_secs=0.02)
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: Any = None

    @property
    def env(self) -> dict[str, str]:
        return dict(self.dockerd.env, DOCKER_HOST=f"unix://{self.socket_path}")

    async def __aenter__(self) -> ProxiedEngine:
        import docker

        client = docker.APIClient(base_url=self.dockerd.host, version="auto")
        self._stream = client.events(decode=True, since=int(time.time()) - 1)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def read() -> None:  # docker-py blocks: a thread reads and hands over
            with contextlib.suppress(Exception):
                for raw in self._stream:
                    loop.call_soon_threadsafe(queue.put_nowait, raw)

        threading.Thread(target=read, daemon=True).start()
        self._tasks = [asyncio.create_task(self._docker(queue))]
        await self.service.start(self.pipeline.put)
        return self

    async def _docker(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        while True:
            await self.pipeline.put(normalize_engine_event(await queue.get(), HOST))

    async def __aexit__(self, *exc: object) -> None:
        await self.service.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            self._stream.close()
        await self.pipeline.aclose()
        shutil.rmtree(self.dir, ignore_errors=True)

    def api_calls(self, **attrs: object) -> list[Event]:
        return [
            e
            for e in self.trail.events()
            if e.type == "api-call" and all(e.attributes.get(k) == v for k, v in attrs.items())
        ]

    def engine_events(self, name: str, action: str) -> list[Event]:
        return [
            e
            for e in self.trail.events()
            if e.source == "docker" and e.action == action and e.actor.name == name
        ]

    async def wait_for(self, predicate: Any, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await self.pipeline.flush()
            if predicate():
                return True
            await asyncio.sleep(0.05)
        return bool(predicate())


async def run_as(
    person: Person | None,
    env: dict[str, str],
    *argv: str,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """`as_login_via` off the event loop: the proxy runs on it."""
    return await asyncio.to_thread(
        lambda: as_login_via(person, env, *argv, input=input, check=check)
    )


def as_login_via(
    person: Person | None,
    env: dict[str, str],
    *argv: str,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[bytes]:
    """Runs argv as root with the person's login uid (the sudo pattern)."""
    home = (
        {"HOME": str(person.home), "DOCKER_CONFIG": str(person.home / ".docker")} if person else {}
    )
    script = 'exec "$@"'
    if person is not None:
        script = f'echo {person.uid} > /proc/self/loginuid && exec "$@"'
    result = subprocess.run(
        ["sh", "-c", script, "_", *argv],
        env={**os.environ, **env, **home},
        input=input,
        capture_output=True,
        timeout=120,
    )
    if check:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result
