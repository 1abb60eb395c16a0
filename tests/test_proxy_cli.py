"""`docktrail proxy` and `docktrail run` with `proxy.enabled`, as processes, into a real trail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.dockerd import BUSYBOX_REF, Dockerd


def _start(
    tmp_path: Path, config: str, *argv: str, ready: tuple[str, ...] = ("socket proxy listening",)
) -> subprocess.Popen[str]:
    (tmp_path / "docktrail.yaml").write_text(config)
    child = subprocess.Popen(
        [sys.executable, "-m", "listener", "-c", str(tmp_path / "docktrail.yaml"), *argv],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert child.stderr is not None
    waiting = set(ready)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = child.stderr.readline()
        assert line, f"exited early ({child.poll()})"
        waiting = {marker for marker in waiting if marker not in line}
        if not waiting:
            return child
    raise AssertionError("the proxy did not start")


def _stop(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=30) == 0


def _query(tmp_path: Path, *filters: str) -> list[dict[str, object]]:
    output = subprocess.run(
        [sys.executable, "-m", "listener", "-c", str(tmp_path / "docktrail.yaml"), "query"]
        + [arg for f in filters for arg in ("-f", f)]
        + ["--format", "json"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    ).stdout  # fmt: skip
    return [json.loads(line) for line in output.splitlines()]


def test_proxy_command_records_api_calls(tmp_path: Path, dockerd: Dockerd) -> None:
    listen = tmp_path / "docker.sock"
    config = f"trail:\n  path: {tmp_path / 't.db'}\n"
    child = _start(tmp_path, config, "proxy", "--listen", str(listen), "--engine",
                   str(dockerd.socket_path))  # fmt: skip
    try:
        body = json.dumps({"Image": BUSYBOX_REF, "Cmd": ["true"]})
        subprocess.run(
            ["curl", "-sf", "--unix-socket", str(listen), "-H", "Content-Type: application/json",
             "-d", body, "http://docker/v1.41/containers/create?name=px-cmd"],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip
    finally:
        _stop(child)
    assert not listen.exists()
    calls = _query(tmp_path, "type=api-call")
    assert [(c["action"], c["actor"]["name"], c["who"]["method"]) for c in calls] == [  # type: ignore[index]
        ("post", "px-cmd", "peer")
    ]
    assert calls[0]["attributes"]["status"] == 201  # type: ignore[index]
    dockerd.docker("rm", "-f", "px-cmd")


def test_run_with_the_proxy_attributes_engine_events(tmp_path: Path, dockerd: Dockerd) -> None:
    listen = tmp_path / "docker.sock"
    config = (
        f"trail:\n  path: {tmp_path / 't.db'}\n"
        f"docker:\n  host: unix://{dockerd.socket_path}\n"
        "auditd:\n  enabled: false\n"
        f"proxy:\n  enabled: true\n  listen: {listen}\n  engine: {dockerd.socket_path}\n"
    )
    ready = ("socket proxy listening", "connected to the Docker Engine")
    child = _start(tmp_path, config, "run", ready=ready)
    try:
        env = dict(dockerd.env, DOCKER_HOST=f"unix://{listen}")
        subprocess.run(
            ["docker", "create", "--name", "px-run", BUSYBOX_REF, "true"],
            env=env, check=True, capture_output=True, timeout=30,
        )  # fmt: skip
        time.sleep(1.5)  # the Engine event reaches the service
    finally:
        _stop(child)
    created = [e for e in _query(tmp_path, "container=px-run") if e["action"] == "create"]
    assert [e["who"]["method"] for e in created] == ["peer"]  # type: ignore[index]
    assert created[0]["who"]["pid"] is not None  # type: ignore[index]
    dockerd.docker("rm", "-f", "px-run")
