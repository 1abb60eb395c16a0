"""Benchmark: the cost of a posture sweep on a host with many containers.

Usage: python bench/posture_sweep.py [--containers N] [--running N] [--rounds N]

Starts a private dockerd (tests/dockerd.py: needs root), creates `--containers`
busybox containers and starts `--running` of them (the rest stay stopped, as
on a sprawling host), then times, in the same run:

* the baseline: one `GET /containers/json?all=1` listing;
* a posture sweep as `docktrail run` does it (`PostureRunner`: /info, the
  bridge, listings of containers, images and volumes, the audit rules, and
  `docker diff` of `drift.containers_per_sweep` (20) running containers);
* a sweep that diffs every running container (a budget of all of them);
* one metering snapshot (one-shot stats and an inspect per running container).

Each figure is the median of `--rounds`, in ms and as a ratio to the listing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure, slug  # noqa: E402

from config.posture import DriftConfig, PostureConfig  # noqa: E402
from listener.posture.events import PostureMemory  # noqa: E402
from listener.posture.runner import PostureRunner  # noqa: E402
from listener.sources.docker_engine import EngineClient  # noqa: E402
from tests.dockerd import BUSYBOX_REF, Dockerd, bench_on_private_dockerd  # noqa: E402


def populate(daemon: Dockerd, total: int, running: int) -> None:
    with daemon.session() as api:
        for index in range(total):
            body = {"Image": BUSYBOX_REF, "Cmd": ["sleep", "3600"], "StopTimeout": 1}
            status, raw = api.request("POST", f"/containers/create?name=bench-{index}", body)
            assert status == 201, raw
            if index < running:
                status, raw = api.request("POST", f"/containers/bench-{index}/start")
                assert status == 204, raw


async def median_ms(rounds: int, step: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        await step()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    async def bench(daemon: Dockerd, trail: Path) -> None:
        started = time.perf_counter()
        await asyncio.to_thread(populate, daemon, args.containers, args.running)
        print(
            f"host: {args.containers} containers ({args.running} running), "
            f"made in {time.perf_counter() - started:.1f} s"
        )
        engine = EngineClient(daemon.host, 60.0)
        quiet = PostureConfig(audit_rules_file=trail.with_suffix(".rules"))
        budgeted = PostureRunner(quiet, "bench", PostureMemory())
        every = quiet.model_copy(update={"drift": DriftConfig(containers_per_sweep=args.running)})
        unbudgeted = PostureRunner(every, "bench", PostureMemory())
        metered = PostureRunner(quiet, "bench", PostureMemory(), metering_path=trail)
        rounds = args.rounds
        listing = await median_ms(rounds, lambda: asyncio.to_thread(engine.containers))
        sweep = await median_ms(rounds, lambda: budgeted(engine, "periodic"))
        full = await median_ms(rounds, lambda: unbudgeted(engine, "periodic"))
        meter = await median_ms(rounds, lambda: asyncio.to_thread(metered.meter_once, engine))
        metered.close()
        engine.close()
        print(f"{'step':<44} {'ms':>9} {'x listing':>10}")
        for name, value in (
            ("listing (GET /containers/json?all=1)", listing),
            ("posture sweep, drift budget 20", sweep),
            (f"posture sweep, diff of all {args.running} running", full),
            (f"metering snapshot of {args.running} running", meter),
        ):
            print(f"{name:<44} {value:>9.1f} {value / listing:>10.1f}")
            key = slug(name.split(" (")[0])
            figure(f"posture_sweep.{key}", value, "ms", baseline=listing, ratio=value / listing)
        per = (full - sweep) / max(args.running - 20, 1)
        print(f"per diffed container: {per:.1f} ms; per metered one: {meter / args.running:.1f} ms")

    bench_on_private_dockerd(bench)


if __name__ == "__main__":
    main()
