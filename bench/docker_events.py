"""Benchmark: the live Docker source end to end, Engine event to committed trail row.

Usage: python bench/docker_events.py [--containers N] [--volumes N] [--workers N]

Starts a private dockerd (tests/dockerd.py: needs root, dockerd, containerd and
a static busybox), runs the live source, the pipeline and the SQLite trail
in-process with the default settings (durability full, batches of 500 or
50 ms), and drives two bursts through the Engine API from worker threads:

* containers: create, start, kill and remove `--containers` busybox containers
  (create and start are inspected, as in `docktrail run`);
* volumes: create and remove `--volumes` volumes, the cheapest Engine events.

For each burst it prints the Engine's event rate, the rate at which docktrail
committed them, and the delay from each event's `timeNano` to the commit of
its batch (p50, p99, max). Every event the Engine sent must be stored once.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from config.models import DockerConfig  # noqa: E402
from listener.model.event import Event  # noqa: E402
from listener.pipeline import Pipeline  # noqa: E402
from listener.sources.docker_live import DockerSource  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402
from tests.dockerd import (  # noqa: E402
    BUSYBOX_REF,
    Dockerd,
    EngineSession,
    EventsRecorder,
    bench_on_private_dockerd,
)

MS = 1_000_000


class CommitClock:
    """A pipeline stage noting, for each stored Engine event, when its batch committed."""

    def __init__(self) -> None:
        self.delays_ns: list[int] = []
        self.first_ns: int | None = None
        self.last_commit_ns = 0

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        now = time.time_ns()
        for event in stored:
            if event.source == "docker":
                self.delays_ns.append(now - event.time_ns)
                self.first_ns = event.time_ns if self.first_ns is None else self.first_ns
                self.last_commit_ns = now

    def reset(self) -> None:
        self.delays_ns.clear()
        self.first_ns = None


def container_burst(daemon: Dockerd, count: int, workers: int) -> None:
    def work(worker: int) -> None:
        with daemon.session() as api:
            for i in range(worker, count, workers):
                status, body = api.request(
                    "POST",
                    f"/containers/create?name=bench-{i}",
                    {"Image": BUSYBOX_REF, "Cmd": ["sleep", "60"], "StopTimeout": 1},
                )
                assert status == 201, body
                call(api, "POST", f"/containers/bench-{i}/start", 204)
                call(api, "POST", f"/containers/bench-{i}/kill", 204)
                call(api, "DELETE", f"/containers/bench-{i}?force=1", 204)

    run_workers(work, workers)


def volume_burst(daemon: Dockerd, count: int, workers: int) -> None:
    def work(worker: int) -> None:
        with daemon.session() as api:
            for i in range(worker, count, workers):
                call(api, "POST", "/volumes/create", 201, {"Name": f"bench-{i}"})
                call(api, "DELETE", f"/volumes/bench-{i}", 204)

    run_workers(work, workers)


def call(api: EngineSession, method: str, path: str, want: int, body: object = None) -> None:
    status, text = api.request(method, path, body)
    if status != want:
        raise RuntimeError(f"{method} {path}: {status} {text[:200]!r}")


def run_workers(work: Callable[[int], None], workers: int) -> None:
    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def measure(
    name: str,
    burst: Callable[[], None],
    clock: CommitClock,
    source: DockerSource,
    truth: EventsRecorder,
) -> None:
    clock.reset()
    before = source.stats.events
    started = time.time_ns()
    await asyncio.to_thread(burst)
    engine_done = time.time_ns()
    await asyncio.sleep(0.5)  # the raw reader catches up
    expected = sum(1 for raw in truth.events if int(str(raw["timeNano"])) >= started)
    deadline = time.monotonic() + 60
    while len(clock.delays_ns) < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stored = len(clock.delays_ns)
    delays = sorted(clock.delays_ns)
    engine_secs = (engine_done - started) / 1e9
    recorded_secs = (clock.last_commit_ns - started) / 1e9
    print(
        f"{name:10} {stored:5} of {expected:5} events stored "
        f"(handed on {source.stats.events - before})  "
        f"engine {expected / engine_secs:6.0f}/s  recorded {stored / recorded_secs:6.0f}/s  "
        f"delay p50 {percentile(delays, 50) / MS:6.1f} ms  "
        f"p99 {percentile(delays, 99) / MS:6.1f} ms  max {delays[-1] / MS:6.1f} ms"
    )
    if stored != expected:
        raise SystemExit(f"{name}: {expected - stored} events not stored")


def percentile(values: list[int], pct: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


async def bench(daemon: Dockerd, args: argparse.Namespace, trail_path: Path) -> None:
    clock = CommitClock()
    async with SQLiteTrail(trail_path) as trail:
        pipeline = Pipeline(trail, stages=[clock])
        source = DockerSource(DockerConfig(host=daemon.host), "bench", pipeline.put)
        task = asyncio.create_task(source.run())
        while not source.connected.is_set():
            await asyncio.sleep(0.01)
        with daemon.record_events() as truth:  # the ground truth: a raw /events reader
            containers = args.containers
            await measure(
                "containers",
                lambda: container_burst(daemon, containers, args.workers),
                clock,
                source,
                truth,
            )
            volumes = args.volumes
            await measure(
                "volumes", lambda: volume_burst(daemon, volumes, args.workers), clock, source, truth
            )
        source.stop()
        await task
        await pipeline.aclose()
        print(f"source: {source.stats}")
        print(f"pipeline: {pipeline.stats}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200, help="containers to churn")
    parser.add_argument("--volumes", type=int, default=2000, help="volumes to churn")
    parser.add_argument("--workers", type=int, default=4, help="client threads")
    args = parser.parse_args()
    bench_on_private_dockerd(lambda daemon, trail_path: bench(daemon, args, trail_path))


if __name__ == "__main__":
    main()
