"""The socket proxy in front of the test dockerd: real clients, real logins.

Acceptance of the proxy: the docker CLI, docker-py, curl and a client inside
a container each create a container through it, and each change (the
`api-call` and the Engine's events) is tied to the right login or container
with `method = "peer"`; interactive and streaming commands work unchanged;
the optional policy refuses what it names, for all but the listed logins.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest

from config.proxy import ProxyPolicyConfig
from listener.event import Event
from tests import test_audit_live
from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.proxy_harness import ProxiedEngine, run_as
from tests.test_audit_live import Person

# test_audit_live's module-scoped fixture under its name (see test_who_live)
people = test_audit_live.people

IMAGE = BUSYBOX_REF
DOCKER = "/usr/local/bin/docker"


def _remove_test_containers(dockerd: Dockerd) -> None:
    """Other modules share the session dockerd: leave no container of ours behind."""
    left = dockerd.docker("ps", "-aq", "--filter", "name=^px-").split()
    if left:
        dockerd.docker("rm", "-f", *left)


@pytest.fixture
async def proxied(dockerd: Dockerd) -> AsyncIterator[ProxiedEngine]:
    try:
        async with ProxiedEngine(dockerd) as proxy:
            yield proxy
    finally:
        _remove_test_containers(dockerd)


def _created(proxy: ProxiedEngine, name: str) -> tuple[Event | None, Event | None]:
    calls = [e for e in proxy.api_calls(path="/containers/create") if e.actor.name == name]
    engine = proxy.engine_events(name, "create")
    return (calls[0] if calls else None), (engine[0] if engine else None)


async def test_each_kind_of_client_is_attributed_to_its_login(
    proxied: ProxiedEngine, people: dict[str, Person]
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    env = proxied.env
    sock = str(proxied.socket_path)
    await run_as(alice, env, "docker", "create", "--name", "px-cli", IMAGE, "true")
    body = json.dumps({"Image": IMAGE, "Cmd": ["true"], "Env": ["DB_PASSWORD=hunter2"]})
    await run_as(
        bob, env, "curl", "-sf", "--unix-socket", sock, "-H", "Content-Type: application/json",
        "-d", body, "http://docker/v1.41/containers/create?name=px-curl",
    )  # fmt: skip
    script = (
        "import docker, sys; docker.DockerClient(base_url=sys.argv[1])"
        f".containers.create({IMAGE!r}, 'true', name='px-py')"
    )
    await run_as(alice, env, sys.executable, "-c", script, f"unix://{sock}")
    for name, person in (("px-cli", alice), ("px-curl", bob), ("px-py", alice)):
        assert await proxied.wait_for(lambda n=name: all(_created(proxied, n))), name
        call, engine = _created(proxied, name)
        assert call is not None and engine is not None
        assert (call.who.method, call.who.login, call.attributes["status"]) == (
            "peer", person.name, 201,
        ), name  # fmt: skip
        assert (engine.who.method, engine.who.login, engine.who.confidence) == (
            "peer", person.name, "high",
        ), name  # fmt: skip
        assert engine.attributes["peer_call"]["call"] == call.id
    dump = json.dumps([e.model_dump() for e in proxied.trail.events()])
    assert "hunter2" not in dump and "DB_PASSWORD" in dump
    assert proxied.service.recorder is not None and proxied.service.recorder.lost == 0
    await asyncio.to_thread(proxied.dockerd.docker, "rm", "-f", "px-cli", "px-curl", "px-py")


async def test_a_client_inside_a_container_is_named_as_that_container(
    proxied: ProxiedEngine,
) -> None:
    dockerd = proxied.dockerd
    mounts = ["-v", f"{proxied.socket_path}:/proxy.sock", "-v", f"{DOCKER}:/docker:ro"]
    await asyncio.to_thread(
        dockerd.docker, "run", "--name", "px-client", *mounts, IMAGE,
        "/docker", "-H", "unix:///proxy.sock", "create", "--name", "px-inner", IMAGE, "true",
    )  # fmt: skip
    client_id = dockerd.docker("inspect", "-f", "{{.Id}}", "px-client").strip()
    assert await proxied.wait_for(lambda: all(_created(proxied, "px-inner")))
    call, engine = _created(proxied, "px-inner")
    assert call is not None and engine is not None
    assert call.attributes["peer"]["container"] == {"id": client_id, "name": "px-client"}
    assert engine.who.method == "peer"
    assert engine.attributes["peer_call"]["container"]["id"] == client_id
    dockerd.docker("rm", "-f", "px-client", "px-inner")


async def _run(
    argv: list[str], env: dict[str, str], input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """A client process, waited for off the event loop (the proxy runs on it)."""
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, input=input, capture_output=True, timeout=120
    )


def _run_in_tty(argv: list[str], env: dict[str, str], wait: bytes, send: bytes) -> bytes:
    """Runs argv on a pseudo-terminal; types `send` once `wait` shows; returns the output."""
    master, slave = os.openpty()
    process = subprocess.Popen(
        argv, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True
    )
    os.close(slave)
    output, sent = b"", False
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break  # EIO: the other side closed
                if not chunk:
                    break
                output += chunk
            if not sent and wait in output:
                os.write(master, send)
                sent = True
            if process.poll() is not None and not ready:
                break
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
        process.wait()
    return output


async def _docker(proxy: ProxiedEngine, *argv: str, input: bytes | None = None) -> str:
    result = await _run(["docker", *argv], proxy.env, input)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode(errors="replace")


async def test_interactive_commands_work_through_the_proxy(proxied: ProxiedEngine) -> None:
    env = proxied.env
    shown = await asyncio.to_thread(
        _run_in_tty,
        ["docker", "run", "-it", "--rm", IMAGE, "sh"],
        env,
        b"# ",
        b"echo tty-$((6*7))\rexit\r",
    )
    assert b"tty-42" in shown, shown
    piped = await _docker(proxied, "run", "-i", "--rm", IMAGE, "sh", input=b"echo in-$((2+3))\n")
    assert piped.strip() == "in-5"
    await _docker(proxied, "run", "-d", "--name", "px-exec", IMAGE, "sleep", "300")
    try:
        executed = await _docker(
            proxied, "exec", "-i", "px-exec", "sh", input=b"echo ex-$((3*3))\n"
        )
        assert executed.strip() == "ex-9"
        shown = await asyncio.to_thread(
            _run_in_tty,
            ["docker", "exec", "-it", "px-exec", "sh"],
            env,
            b"# ",
            b"echo et-$((4*4))\rexit\r",
        )
        assert b"et-16" in shown, shown
    finally:
        await _docker(proxied, "rm", "-f", "px-exec")
    assert await proxied.wait_for(
        lambda: any(e.attributes["status"] == 101 for e in proxied.api_calls())
    )


async def test_streams_build_and_load_work_through_the_proxy(proxied: ProxiedEngine) -> None:
    since = str(int(time.time()) - 1)
    script = "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done"
    await _docker(proxied, "run", "-d", "--name", "px-logs", IMAGE, "sh", "-c", script)
    followed = await _docker(proxied, "logs", "-f", "px-logs")
    assert followed.split() == [f"line{i}" for i in range(1, 6)]
    await _docker(proxied, "rm", "-f", "px-logs")
    until = str(int(time.time()) + 1)
    events = await _docker(
        proxied, "events", "--since", since, "--until", until, "-f", "container=px-logs"
    )
    assert " create " in events and " destroy " in events
    dockerfile = f"FROM {IMAGE}\nRUN echo built > /built\n".encode()
    build_env = dict(proxied.env, DOCKER_BUILDKIT="0")
    built = await _run(["docker", "build", "-t", "px-built:1", "-"], build_env, dockerfile)
    assert built.returncode == 0, built.stderr.decode(errors="replace")
    shown_built = await _docker(proxied, "run", "--rm", "px-built:1", "cat", "/built")
    assert shown_built.strip() == "built"
    saved = (await _run(["docker", "save", "px-built:1"], proxied.env)).stdout
    await _docker(proxied, "rmi", "px-built:1")
    loaded = await _docker(proxied, "load", input=saved)
    assert "px-built:1" in loaded
    await _docker(proxied, "rmi", "px-built:1")
    assert await proxied.wait_for(lambda: bool(proxied.api_calls(path="/images/load")))


@pytest.fixture
async def guarded(dockerd: Dockerd) -> AsyncIterator[ProxiedEngine]:
    policy = ProxyPolicyConfig(enabled=True, allow_logins=["dt-alice"])
    try:
        async with ProxiedEngine(dockerd, policy) as proxy:
            yield proxy
    finally:
        _remove_test_containers(dockerd)


async def test_policy_refuses_a_privileged_create_by_an_unlisted_login(
    guarded: ProxiedEngine, people: dict[str, Person]
) -> None:
    alice, bob = people["dt-alice"], people["dt-bob"]
    argv = ("docker", "create", "--privileged", "--name")
    refused = await run_as(bob, guarded.env, *argv, "px-bob", IMAGE, "true", check=False)
    assert refused.returncode != 0
    assert b"docktrail policy refused this request for dt-bob" in refused.stderr
    assert b"privileged containers are not allowed" in refused.stderr
    await run_as(alice, guarded.env, *argv, "px-alice", IMAGE, "true")
    assert await guarded.wait_for(lambda: bool(guarded.engine_events("px-alice", "create")))
    assert not guarded.engine_events("px-bob", "create")
    refusals = [e for e in guarded.api_calls() if e.action == "refused"]
    assert [(e.who.login, e.actor.name, e.attributes["status"]) for e in refusals] == [
        ("dt-bob", "px-bob", 403)
    ]
    guarded.dockerd.docker("rm", "-f", "px-alice")
