"""Benchmark: what the socket proxy adds to Docker clients.

Usage: python bench/proxy.py [--rounds N] [--log-mb M]   (as root)

Starts a private dockerd (tests/dockerd.py) and `docktrail proxy` in front of
it (a real process writing a fresh SQLite trail), then measures, alternating
direct and proxied runs so that both see the same machine load:

* `docker ps`, `docker inspect` and a create + start + rm cycle (three CLI
  processes): p50 and p99 latency;
* one keep-alive HTTP connection doing `GET /containers/json` (no CLI start-up
  cost: the proxy's own share is most visible here);
* `docker logs` of a container that wrote M MiB: throughput.

Prints each figure direct and proxied with the ratio proxied / direct.
Targets: < 5 % added latency at p50, < 10 % at p99.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure, slug  # noqa: E402

from tests.dockerd import BUSYBOX_REF, Dockerd  # noqa: E402


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("docker", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self._path))


@contextlib.contextmanager
def proxy_process(daemon: Dockerd, workdir: Path) -> Iterator[Path]:
    listen = workdir / "docker.sock"
    (workdir / "docktrail.yaml").write_text(f"trail:\n  path: {workdir / 'bench.db'}\n")
    child = subprocess.Popen(
        [sys.executable, "-m", "listener", "-c", str(workdir / "docktrail.yaml"), "proxy",
         "--listen", str(listen), "--engine", str(daemon.socket_path)],
        cwd=REPO, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(100):
            if listen.exists():
                break
            time.sleep(0.1)
        yield listen
    finally:
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=30)


def _timed(action: Callable[[], object]) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _cli(env: dict[str, str], *argv: str) -> Callable[[], object]:
    return lambda: subprocess.run(["docker", *argv], env=env, check=True, capture_output=True)


def _cycle(env: dict[str, str], name: str) -> Callable[[], object]:
    def run() -> None:
        subprocess.run(["docker", "create", "--name", name, BUSYBOX_REF, "true"], env=env,
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["docker", "start", name], env=env, check=True, capture_output=True)
        subprocess.run(["docker", "rm", "-f", name], env=env, check=True, capture_output=True)

    return run


def _api(path: Path) -> Callable[[], object]:
    connection = _UnixConnection(path)

    def get() -> bytes:
        connection.request("GET", "/v1.41/containers/json")
        return connection.getresponse().read()

    return get


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _compare(label: str, direct: Callable[[], object], proxied: Callable[[], object],
             rounds: int) -> None:  # fmt: skip
    times: dict[str, list[float]] = {"direct": [], "proxied": []}
    for _ in range(rounds):
        times["direct"].append(_timed(direct))
        times["proxied"].append(_timed(proxied))
    (d50, d99), (p50, p99) = _quantiles(times["direct"]), _quantiles(times["proxied"])
    print(
        f"{label:<28} p50 {d50 * 1000:8.2f} ms → {p50 * 1000:8.2f} ms ({p50 / d50:5.3f})   "
        f"p99 {d99 * 1000:8.2f} ms → {p99 * 1000:8.2f} ms ({p99 / d99:5.3f})"
    )
    key = slug(label)
    figure(
        f"proxy.{key}.p50",
        p50 * 1000,
        "ms",
        baseline=d50 * 1000,
        ratio=p50 / d50,
        target="ratio<=1.05",
    )
    figure(f"proxy.{key}.p99", p99 * 1000, "ms", baseline=d99 * 1000, ratio=p99 / d99,
           target="ratio<=1.10")  # fmt: skip


def _logs(env: dict[str, str], container: str) -> Callable[[], object]:
    return lambda: subprocess.run(["docker", "logs", container], env=env, check=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--log-mb", type=int, default=64)
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(Dockerd())
        daemon.import_busybox()
        workdir = Path(tempfile.mkdtemp(prefix="dt-bench-proxy-"))
        listen = stack.enter_context(proxy_process(daemon, workdir))
        direct = dict(os.environ, **daemon.env)
        proxied = dict(direct, DOCKER_HOST=f"unix://{listen}")
        daemon.docker("create", "--name", "bench-target", BUSYBOX_REF, "true")
        print(f"rounds: {args.rounds} (direct and proxied alternate); ratio = proxied / direct")
        _compare("docker ps", _cli(direct, "ps"), _cli(proxied, "ps"), args.rounds)
        _compare("docker inspect", _cli(direct, "inspect", "bench-target"),
                 _cli(proxied, "inspect", "bench-target"), args.rounds)  # fmt: skip
        _compare("create+start+rm", _cycle(direct, "bench-d"), _cycle(proxied, "bench-p"),
                 max(10, args.rounds // 4))  # fmt: skip
        _compare("API GET (keep-alive)", _api(daemon.socket_path), _api(listen), args.rounds * 10)
        line = "0123456789abcdef" * 3
        script = f"yes {line} | head -c {args.log_mb * 1048576}"
        daemon.docker("run", "--name", "bench-logs", BUSYBOX_REF, "sh", "-c", script)
        size = args.log_mb
        direct_s = min(_timed(_logs(direct, "bench-logs")) for _ in range(3))
        proxied_s = min(_timed(_logs(proxied, "bench-logs")) for _ in range(3))
        print(
            f"{'docker logs (' + str(size) + ' MiB)':<28} {size / direct_s:8.1f} MiB/s → "
            f"{size / proxied_s:8.1f} MiB/s ({(size / proxied_s) / (size / direct_s):5.3f})"
        )
        figure("proxy.logs", size / proxied_s, "MiB/s", baseline=size / direct_s,
               ratio=direct_s / proxied_s)  # fmt: skip
        print(f"trail: {workdir / 'bench.db'}")


if __name__ == "__main__":
    main()
