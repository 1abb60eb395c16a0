"""`docktrail proxy` on either event loop (`proxy.event_loop`): the same bytes, the same trail.

uvloop is an optional dependency that cuts the latency the proxy adds
(bench/proxy.py); the proxy must behave the same on asyncio's own loop and on
uvloop: plain calls, a create, a hijacked attach, and the api-calls recorded.
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import pytest

from tests.dockerd import BUSYBOX_REF, Dockerd
from tests.shared_data import missing_component
from tests.test_proxy_cli import _query, _start, _stop


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_proxy_forwards_and_records_on_each_event_loop(
    tmp_path: Path, dockerd: Dockerd, loop: str
) -> None:
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        missing_component("uvloop is not installed (pip install 'docktrail[fast]')")
    listen = tmp_path / "docker.sock"
    config = f"trail:\n  path: {tmp_path / 't.db'}\nproxy:\n  event_loop: {loop}\n"
    argv = ("proxy", "--listen", str(listen), "--engine", str(dockerd.socket_path))
    child = _start(tmp_path, config, *argv, ready=(f'"loop": "{loop}"',))
    env = dict(dockerd.env, DOCKER_HOST=f"unix://{listen}")
    name = f"px-loop-{loop}"
    try:
        listed = _docker(env, "ps", "-a", "--format", "{{.Names}}")
        _docker(env, "create", "--name", name, BUSYBOX_REF, "sh")
        inspected = _docker(env, "inspect", "-f", "{{.Name}}", name)
        shell = _docker(env, "run", "-i", "--rm", BUSYBOX_REF, "sh", input=b"echo in-$((6*7))\n")
    finally:
        _stop(child)
        dockerd.docker("rm", "-f", name, check=False)
    assert name not in listed and inspected.strip() == f"/{name}" and shell.strip() == "in-42"
    calls = _query(tmp_path, "type=api-call")
    creates = [c for c in calls if c["attributes"]["path"] == "/containers/create"]  # type: ignore[index]
    assert [c["actor"]["name"] for c in creates][:1] == [name]  # type: ignore[index]
    assert all(c["who"]["method"] == "peer" for c in calls)  # type: ignore[index]
    attached = [c for c in calls if c["attributes"]["path"].endswith("/attach")]  # type: ignore[index]
    assert [c["attributes"]["status"] for c in attached] == [101]  # type: ignore[index]


def _docker(env: dict[str, str], *argv: str, input: bytes | None = None) -> str:
    result = subprocess.run(
        ["docker", *argv], env=env, input=input, capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode(errors="replace")
