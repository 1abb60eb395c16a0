"""Benchmark: what the socket proxy adds to Docker clients.

Usage: python bench/proxy.py [--rounds N] [--cycles C] [--runs R] [--log-mb M] [--before DIR]
       (as root)

Starts a private dockerd (tests/dockerd.py) and `docktrail proxy` in front of
it (real processes writing fresh SQLite trails): one on asyncio's own event
loop, one on uvloop when it is installed, and with `--before DIR` one from
another checkout (an earlier version, for before/after figures from the same
run). Each round runs every variant once, in a new random order, so that all
see the same machine load:

* `docker ps`, `docker inspect` and a create + start + rm cycle (three CLI
  processes): p50 and p99 latency;
* a new connection doing what the CLI does (`HEAD /_ping`, then `GET
  /containers/json`): the proxy's fixed cost per client without the CLI's
  start-up, in µs;
* one keep-alive connection doing `GET /containers/json`: the cost per request;
* `docker logs` of a container that wrote M MiB: throughput (best of 3).

Sample counts fit the statistic: a p99 is the 99th percentile only with enough
samples behind it. With 30 samples the "p99" was the largest one (a single
scheduler hiccup on a shared 2-core machine decided it); with N samples it is
the sample of rank 0.99 (N - 1), so 200 `ps` and `inspect` samples per run put
two larger samples above it, and 60 create+start+rm cycles (three CLI processes
each, twenty times slower) put one: their p99 stays the weakest figure. The raw
API figures take 5 N samples (they cost µs).

Prints each figure per variant with the ratio to direct measured in the same
run, then min / median / max of the ratios over the R runs, and `FIGURE`
lines (the medians). Targets: < 5 % added latency at p50, < 10 % at p99.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure as emit  # noqa: E402

from tests.dockerd import BUSYBOX_REF, Dockerd  # noqa: E402

Action = Callable[[], object]
# (figure, variant) → ratios to direct, one per run; and the medians of the figures themselves
RATIOS: defaultdict[tuple[str, str], list[float]] = defaultdict(list)
VALUES: defaultdict[tuple[str, str], list[float]] = defaultdict(list)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("docker", timeout=30)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(str(self._path))


@contextlib.contextmanager
def proxy_process(
    daemon: Dockerd, workdir: Path, checkout: Path, loop: str | None
) -> Iterator[Path]:
    workdir.mkdir(parents=True)
    listen = workdir / "docker.sock"
    config = f"trail:\n  path: {workdir / 'bench.db'}\n"
    if loop is not None:  # an earlier checkout may not know the key
        config += f"proxy:\n  event_loop: {loop}\n"
    (workdir / "docktrail.yaml").write_text(config)
    child = subprocess.Popen(
        [sys.executable, "-m", "listener", "-c", str(workdir / "docktrail.yaml"), "proxy",
         "--listen", str(listen), "--engine", str(daemon.socket_path)],
        cwd=checkout, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
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


def _timed(action: Action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def _cli(env: dict[str, str], *argv: str) -> Action:
    return lambda: subprocess.run(["docker", *argv], env=env, check=True, capture_output=True)


def _cycle(env: dict[str, str], name: str) -> Action:
    # `sleep`, not `true`: rm -f then always stops a running container; with `true` a slower
    # client (the proxied one) would more often find it exited, and rm would do less work
    def run() -> None:
        subprocess.run(["docker", "create", "--name", name, BUSYBOX_REF, "sleep", "60"], env=env,
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["docker", "start", name], env=env, check=True, capture_output=True)
        subprocess.run(["docker", "rm", "-f", name], env=env, check=True, capture_output=True)

    return run


def _keep_alive(path: Path) -> Action:
    connection = _UnixConnection(path)

    def get() -> bytes:
        connection.request("GET", "/v1.41/containers/json")
        return connection.getresponse().read()

    return get


def _new_connection(path: Path) -> Action:
    """What `docker ps` sends, on a fresh connection each time."""

    def run() -> None:
        connection = _UnixConnection(path)
        connection.request("HEAD", "/_ping")
        connection.getresponse().read()
        connection.request("GET", "/v1.41/containers/json")
        connection.getresponse().read()
        connection.close()

    return run


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _compare(label: str, actions: dict[str, Action], rounds: int, unit: str = "ms") -> None:
    times: dict[str, list[float]] = {variant: [] for variant in actions}
    for _ in range(rounds):
        order = list(actions)
        random.shuffle(order)
        for variant in order:
            times[variant].append(_timed(actions[variant]))
    scale = 1e6 if unit == "us" else 1e3
    d50, d99 = _quantiles(times["direct"])
    VALUES[(f"{label}.p50", "direct")].append(d50 * scale)
    VALUES[(f"{label}.p99", "direct")].append(d99 * scale)
    parts = [f"direct {d50 * scale:8.1f} / {d99 * scale:8.1f} {unit}"]
    for variant in actions:
        if variant == "direct":
            continue
        p50, p99 = _quantiles(times[variant])
        for name, value, base in (("p50", p50, d50), ("p99", p99, d99)):
            RATIOS[(f"{label}.{name}", variant)].append(value / base)
            VALUES[(f"{label}.{name}", variant)].append(value * scale)
        parts.append(f"{variant} {p50 / d50:5.3f} / {p99 / d99:5.3f}")
    print(f"{label + ' p50/p99':<34} " + "   ".join(parts), flush=True)


def _logs(env: dict[str, str], container: str) -> Action:
    return lambda: subprocess.run(["docker", "logs", container], env=env, check=True,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip


def _throughput(size_mb: int, envs: dict[str, dict[str, str]]) -> None:
    best = {v: min(_timed(_logs(env, "bench-logs")) for _ in range(3)) for v, env in envs.items()}
    rates = {variant: size_mb / seconds for variant, seconds in best.items()}
    parts = [f"direct {rates['direct']:6.1f} MiB/s"]
    for variant, rate in rates.items():
        if variant != "direct":
            RATIOS[("docker_logs.throughput", variant)].append(rate / rates["direct"])
            VALUES[("docker_logs.throughput", variant)].append(rate)
            parts.append(f"{variant} {rate / rates['direct']:5.3f}")
    VALUES[("docker_logs.throughput", "direct")].append(rates["direct"])
    print(f"{f'docker_logs ({size_mb} MiB)':<34} " + "   ".join(parts), flush=True)


def _one_run(
    envs: dict[str, dict[str, str]], sockets: dict[str, Path], args: argparse.Namespace
) -> None:
    rounds = args.rounds
    _compare("docker_ps", {v: _cli(e, "ps") for v, e in envs.items()}, rounds)
    inspect = {v: _cli(e, "inspect", "bench-target") for v, e in envs.items()}
    _compare("docker_inspect", inspect, rounds)
    cycles = {v: _cycle(e, f"bench-{v}") for v, e in envs.items()}
    _compare("create_start_rm", cycles, args.cycles)
    fresh = {v: _new_connection(path) for v, path in sockets.items()}
    _compare("api_new_connection", fresh, rounds * 5, unit="us")
    keep = {v: _keep_alive(path) for v, path in sockets.items()}
    _compare("api_keep_alive_get", keep, rounds * 5, unit="us")
    _throughput(args.log_mb, envs)


def _summary() -> None:
    print("\nratio to direct over the runs: min / median / max")
    for (figure, variant), ratios in sorted(RATIOS.items()):
        low, mid, high = min(ratios), statistics.median(ratios), max(ratios)
        print(f"  {figure:<30} {variant:<10} {low:5.3f} / {mid:5.3f} / {high:5.3f}")
    for (figure, variant), ratios in sorted(RATIOS.items()):
        unit = "MiB/s" if figure.endswith("throughput") else "us" if "api_" in figure else "ms"
        value = statistics.median(VALUES[(figure, variant)])
        base = statistics.median(VALUES[(figure, "direct")])
        target = "ratio<=1.05" if figure.endswith(".p50") else "ratio<=1.10"
        if figure.endswith("throughput") or variant == "direct":
            target = None
        emit(f"proxy.{figure}.{variant}", value, unit, baseline=base,
             ratio=statistics.median(ratios), target=target)  # fmt: skip


def _fixed_cost() -> None:
    """The proxy's cost per CLI connection (ping + one call), against `docker ps` as a whole."""
    print("\nadded per new connection (HEAD /_ping + GET), µs, per run; share of docker ps p50:")
    fresh_direct = VALUES[("api_new_connection.p50", "direct")]
    ps_direct = VALUES[("docker_ps.p50", "direct")]
    for (figure, variant), values in sorted(VALUES.items()):
        if figure != "api_new_connection.p50" or variant == "direct":
            continue
        added = [v - d for v, d in zip(values, fresh_direct, strict=True)]
        share = statistics.median(added) / (statistics.median(ps_direct) * 1000)
        runs = " ".join(f"{a:.0f}" for a in added)
        print(f"  {variant:<10} {runs}   median {statistics.median(added):.0f} µs = {share:.1%}")
        emit(f"proxy.added_per_connection.{variant}", statistics.median(added), "us",
             baseline=statistics.median(fresh_direct), ratio=share + 1)  # fmt: skip


def _variants(args: argparse.Namespace) -> list[tuple[str, Path, str | None]]:
    variants: list[tuple[str, Path, str | None]] = [("asyncio", REPO, "asyncio")]
    if importlib.util.find_spec("uvloop") is not None:
        variants.append(("uvloop", REPO, "uvloop"))
    if args.before is not None:
        variants.append(("before", Path(args.before).resolve(), None))
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200, help="docker ps / inspect samples")
    parser.add_argument("--cycles", type=int, default=60, help="create+start+rm samples")
    parser.add_argument("--runs", type=int, default=3, help="whole measurements, for min/max")
    parser.add_argument("--log-mb", type=int, default=16)
    parser.add_argument("--before", help="a checkout of an earlier version, run as a variant")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(Dockerd())
        daemon.import_busybox()
        workdir = Path(tempfile.mkdtemp(prefix="dt-bench-proxy-"))
        direct = dict(os.environ, **daemon.env)
        envs, sockets = {"direct": direct}, {"direct": daemon.socket_path}
        for variant, checkout, loop in _variants(args):
            listen = stack.enter_context(proxy_process(daemon, workdir / variant, checkout, loop))
            envs[variant] = dict(direct, DOCKER_HOST=f"unix://{listen}")
            sockets[variant] = listen
        daemon.docker("create", "--name", "bench-target", BUSYBOX_REF, "true")
        line = "0123456789abcdef" * 3
        script = f"yes {line} | head -c {args.log_mb * 1048576}"
        daemon.docker("run", "--name", "bench-logs", BUSYBOX_REF, "sh", "-c", script)
        print(f"rounds: {args.rounds}, cycles: {args.cycles}, runs: {args.runs}; "
              "variants in random order each round;")  # fmt: skip
        print("ratio = variant / direct, measured in the same run")
        for run in range(args.runs):
            print(f"\nrun {run + 1}")
            _one_run(envs, sockets, args)
        _summary()
        _fixed_cost()
        print(f"trails: {workdir}")


if __name__ == "__main__":
    main()
