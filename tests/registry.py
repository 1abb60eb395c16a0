"""A private image registry for tests: Debian's docker-registry on 127.0.0.1.

dockerd treats 127.0.0.0/8 as an insecure registry, so plain HTTP works with
no daemon setting. Storage and config live in a temporary directory.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REGISTRY_BINARY = "/usr/bin/docker-registry"


def registry_unavailable() -> str | None:
    if shutil.which(REGISTRY_BINARY) is None:
        return f"{REGISTRY_BINARY} is not installed (Debian: docker-registry)"
    return None


class Registry:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dt-registry-"))
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        config = self.dir / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.dir / 'data'}\n"
            f"http:\n  addr: {self.address}\n"
        )
        log = open(self.dir / "registry.log", "wb")  # noqa: SIM115 (the child keeps it)
        self._process = subprocess.Popen(
            [REGISTRY_BINARY, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"registry exited: {self.log_tail()}")
            if self._get("/v2/")[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"registry did not answer: {self.log_tail()}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def tags(self, repository: str) -> list[str]:
        status, body = self._get(f"/v2/{repository}/tags/list")
        if status != 200:
            return []
        tags = json.loads(body).get("tags") or []
        return [str(tag) for tag in tags]

    def log_tail(self) -> str:
        path = self.dir / "registry.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _get(self, path: str) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read()
        except OSError:
            return 0, b""
        finally:
            connection.close()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
