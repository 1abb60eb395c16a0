"""`docker pull` and `docker push` through the proxy, with a local registry.

An image of its own (one imported layer of random bytes, so the pull really
downloads it) is pushed to a private registry on 127.0.0.1 and removed from
the daemon; `docker pull` through the proxy then works unchanged, and its
`POST /images/create?fromImage=…` is an `api-call` of the login with
`method = "peer"`. A push through the proxy lands in the registry and is
recorded the same way.
"""

from __future__ import annotations

import asyncio
import io
import os
import tarfile
from collections.abc import Iterator
from urllib.parse import parse_qs

import pytest

from listener.event import Event
from tests import test_audit_live, test_proxy_live
from tests.dockerd import Dockerd
from tests.proxy_harness import ProxiedEngine, run_as
from tests.registry import Registry, registry_unavailable
from tests.shared_data import missing_component
from tests.test_audit_live import Person

people = test_audit_live.people
proxied = test_proxy_live.proxied


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    reason = registry_unavailable()
    if reason is not None:
        missing_component(reason)
    server = Registry()
    try:
        server.start()
        yield server
    finally:
        server.stop()


def _one_layer_tar(size: int = 256 * 1024) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("payload.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buffer.getvalue()


def _image_calls(proxy: ProxiedEngine, path: str) -> list[Event]:
    return [e for e in proxy.api_calls(path=path) if e.attributes.get("status") == 200]


def _has_image(dockerd: Dockerd, ref: str) -> bool:
    return dockerd.docker("image", "ls", "-q", ref).strip() != ""


async def test_docker_pull_from_a_local_registry_works_through_the_proxy(
    proxied: ProxiedEngine, people: dict[str, Person], registry: Registry
) -> None:
    dockerd, alice = proxied.dockerd, people["dt-alice"]
    ref = f"{registry.address}/dt/pulled:px"
    await asyncio.to_thread(dockerd.docker, "import", "-", ref, input=_one_layer_tar())
    await asyncio.to_thread(dockerd.docker, "push", ref)
    await asyncio.to_thread(dockerd.docker, "rmi", ref)
    assert registry.tags("dt/pulled") == ["px"] and not _has_image(dockerd, ref)

    pulled = await run_as(alice, proxied.env, "docker", "pull", ref)

    shown = pulled.stdout.decode(errors="replace")
    assert "Pull complete" in shown and f"Downloaded newer image for {ref}" in shown, shown
    assert _has_image(dockerd, ref)
    assert await proxied.wait_for(lambda: bool(_image_calls(proxied, "/images/create")))
    (call,) = _image_calls(proxied, "/images/create")
    assert (call.who.method, call.who.login, call.who.auid) == ("peer", "dt-alice", alice.uid)
    query = parse_qs(call.attributes["query"])
    assert (query["fromImage"], query["tag"]) == ([f"{registry.address}/dt/pulled"], ["px"])
    assert call.actor.image == ref
    assert proxied.service.recorder is not None and proxied.service.recorder.lost == 0
    await asyncio.to_thread(dockerd.docker, "rmi", ref)


async def test_docker_push_to_a_local_registry_works_through_the_proxy(
    proxied: ProxiedEngine, people: dict[str, Person], registry: Registry
) -> None:
    dockerd, alice = proxied.dockerd, people["dt-alice"]
    ref = f"{registry.address}/dt/pushed:px"
    await asyncio.to_thread(dockerd.docker, "import", "-", ref, input=_one_layer_tar())

    pushed = await run_as(alice, proxied.env, "docker", "push", ref)

    assert "Pushed" in pushed.stdout.decode(errors="replace")
    assert registry.tags("dt/pushed") == ["px"]
    path = f"/images/{registry.address}/dt/pushed/push"
    assert await proxied.wait_for(lambda: bool(_image_calls(proxied, path)))
    (call,) = _image_calls(proxied, path)
    assert (call.who.method, call.who.login) == ("peer", "dt-alice")
    await asyncio.to_thread(dockerd.docker, "rmi", ref)
