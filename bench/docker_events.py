"""Benchmark: the live Docker source end to end, Engine event to committed trail row.

Usage: python bench/docker_events.py [--containers N] [--volumes N] [--workers N]

Starts a private dockerd (tests/dockerd.py: needs root, dockerd, containerd and
a static busybox), runs the live source, the pipeline and the SQLite trail
in-process with the default settings (durability full, batches of 500), and
drives two bursts through the Engine API from worker threads:

* containers: create, start, kill and remove `--containers` busybox containers
  (create and start are described as in `docktrail run`: a create from the
  Engine's own files, `docker.read_engine_files`, a start by its inspect);
* volumes: create and remove `--volumes` volumes, the cheapest Engine events.

For each burst it prints the Engine's event rate, the rate at which docktrail
committed them, and the delay from each event's `timeNano` to the commit of
its batch (p50, p99, max). Every event the Engine sent must be stored once.

The bursts run three times, each with a fresh trail, in the same run:

* ``timer``: batches closed by the 50 ms flush timer (the baseline: how the
  pipeline wrote before group commit);
* ``idle``: group commit as `docktrail run` writes (`write_when_idle`);
* ``attribution``: group commit plus auditd attribution as `docktrail run`
  holds Engine events for it (`Attribution`, hold 1 s), fed by an audit log
  tail (`AuditLogTail`) on a quiet log: the deliberate wait for the log to be
  read past each event (``auditd.audit_lag_secs`` + a poll), no audit records,
  audit barriers off (``auditd.barrier: false``);
* ``busy`` (not run unless named in ``--modes``): ``idle`` with the event
  loop kept busy meanwhile (Python in 0.1 ms slices, then a poll), as a loop
  under load: the stream's reader thread and the trail's writer must still get
  the GIL (`listener.giveway`), or dockerd drops the events the reader does not
  take (the run fails: not every event stored);
* ``attribution-auditd`` (not run unless named in ``--modes``): the same with
  a real, private auditd writing the log (started as tests/test_audit_live.py
  does: needs root and no other audit daemon) and audit barriers on, as
  `docktrail run` has them: an event waits until the barrier docktrail sends
  after it is read back from the log.

With ``--sizes 1M,10M`` each mode writes instead into bench/trail_scale.py's
cached trail of that size, in place (a few thousand events more each run; a size
not cached is a NOTE): the same figures, named ``<mode>.<size>``, say whether the
delay to commit grows with the trail, as ``docktrail run`` writes into it.

Container creates are printed apart (``inspected``), as is the delay of every
other event: an inspect of a create waits until the start that follows has
released the container's lock, which reading the Engine's files avoids
(`--inspect-creates` measures the old way, for comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import trail_scale  # noqa: E402
from busyloop import python_in_slices  # noqa: E402
from figures import figure  # noqa: E402

from config.models import AuditdConfig, DockerConfig  # noqa: E402
from listener.correlate import Attribution, Correlator  # noqa: E402
from listener.model.event import Event  # noqa: E402
from listener.pipeline import Pipeline  # noqa: E402
from listener.sources.auditd import AuditLogTail  # noqa: E402
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
        self.creates_ns: list[int] = []  # of container creates (held for their inspect)
        self.first_ns: int | None = None
        self.last_commit_ns = 0

    async def before_write(self, batch: list[Event]) -> list[Event]:
        return batch

    async def after_write(self, stored: Sequence[Event]) -> None:
        now = time.time_ns()
        for event in stored:
            if event.source == "docker":
                self.delays_ns.append(now - event.time_ns)
                if event.type == "container" and event.action == "create":
                    self.creates_ns.append(now - event.time_ns)
                self.first_ns = event.time_ns if self.first_ns is None else self.first_ns
                self.last_commit_ns = now

    def reset(self) -> None:
        self.delays_ns.clear()
        self.creates_ns.clear()
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
    mode: str,
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
    report(f"{mode}.{name}", delays, clock.creates_ns)


RUN_MODES = ("idle", "attribution-auditd")  # without auditd, and with it
BUSY_SLICE_SECS = 0.0001  # mode busy: the loop runs Python this long between two polls
BASELINES: dict[str, float] = {}  # figure name without the mode -> p99 of the timer mode


def report(name: str, delays: list[int], creates: list[int]) -> None:
    others = sorted(delays)
    for create in creates:  # one value each: remove the creates from the rest
        others.remove(create)
    parts = {"all": delays, "inspected": sorted(creates), "others": others}
    mode, what = name.split(".", 1)
    for part, values in parts.items():
        if not values:
            continue
        p50, p99 = percentile(values, 50) / MS, percentile(values, 99) / MS
        print(f"  {part:10} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({len(values)} events)")
        key = f"{what}.{part}.p99"
        if mode == "timer":
            BASELINES[key] = p99
        base = BASELINES.get(key)
        # the target is for how `docktrail run` writes: creates included, barriers on
        target = "<100" if mode in RUN_MODES else None
        figure(f"docker_events.{mode}.{key}", p99, "ms", baseline=base,
               ratio=None if base is None else p99 / base, target=target)  # fmt: skip
        figure(f"docker_events.{mode}.{what}.{part}.p50", p50, "ms")


def percentile(values: list[int], pct: float) -> float:
    if len(values) == 1:
        return float(values[0])
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]


async def bench(daemon: Dockerd, args: argparse.Namespace, trail_path: Path) -> None:
    for mode in args.modes:
        if not args.sizes:
            print(f"mode {mode}:")
            await bench_mode(daemon, args, trail_path.with_name(f"{mode}.db"), mode)
        for size, path in sized_trails(args.sizes, args.cache).items():
            print(f"mode {mode}, into the cached {size} trail {path.name}:")
            await bench_mode(daemon, args, path, mode, size)


def sized_trails(sizes: str, cache: Path) -> dict[str, Path]:
    """bench/trail_scale.py's cached trail of each size (a NOTE for each one not cached)."""
    found = {}
    for size in (s.strip() for s in sizes.split(",") if s.strip()):
        if trail_scale.in_cache(cache, size):
            found[size] = trail_scale.cache_names(cache, size, trail_scale.SIZES[size])[0]
    return found


async def bench_mode(
    daemon: Dockerd, args: argparse.Namespace, trail_path: Path, mode: str, size: str = ""
) -> None:
    tag = f"{size}." if size else ""  # in the figures' names: docker_events.<mode>.<size>.…
    clock = CommitClock()
    async with contextlib.AsyncExitStack() as stack:
        trail = await stack.enter_async_context(SQLiteTrail(trail_path))
        stages: list[Any] = [clock]
        if mode == "attribution":
            stages.insert(0, await stack.enter_async_context(attribution(trail_path)))
        elif mode == "attribution-auditd":
            log = stack.enter_context(private_auditd_log())
            stage = attribution(trail_path, log=log, barrier=True)
            stages.insert(0, await stack.enter_async_context(stage))
        pipeline = Pipeline(trail, stages=stages, write_when_idle=mode != "timer")
        config = DockerConfig(host=daemon.host, read_engine_files=not args.inspect_creates)
        source = DockerSource(config, "bench", pipeline.put)
        task = asyncio.create_task(source.run())
        while not source.connected.is_set():
            await asyncio.sleep(0.01)
        loaded = asyncio.Event()
        if mode == "busy":
            stack.push_async_callback(
                _stop_busy, loaded, asyncio.create_task(python_in_slices(loaded, BUSY_SLICE_SECS))
            )
        with daemon.record_events() as truth:  # the ground truth: a raw /events reader
            containers = args.containers
            await measure(
                f"{tag}containers",
                lambda: container_burst(daemon, containers, args.workers),
                clock,
                source,
                truth,
                mode,
            )
            volumes = args.volumes
            await measure(
                f"{tag}volumes",
                lambda: volume_burst(daemon, volumes, args.workers),
                clock,
                source,
                truth,
                mode,
            )
        source.stop()
        await task
        await pipeline.aclose()
        print(f"source: {source.stats}")
        # a stall the watchdog saw: the process did not run (or, starved, looked so)
        figure(f"docker_events.{mode}.{tag}stalls", source.stats.stalls, "stalls")
        print(f"pipeline: {pipeline.stats}")


@contextlib.contextmanager
def private_auditd_log() -> Iterator[Path]:
    """A private auditd (the tests' one, under their machine-wide lock); its log."""
    from tests.shared_data import machine_lock
    from tests.test_audit_live import PrivateAuditd, _auditd_unavailable

    with machine_lock("live-audit"):
        reason = _auditd_unavailable()
        if reason is not None:
            raise SystemExit(f"attribution-auditd: {reason}")
        daemon = PrivateAuditd()
        try:
            daemon.start()
            yield daemon.log_file
        finally:
            daemon.stop()


@contextlib.asynccontextmanager
async def attribution(trail_path: Path, log: Path | None = None, barrier: bool = False) -> Any:
    """The Attribution stage with `docktrail run`'s hold, its watermark moved by a tail
    of a quiet audit log (the Docker events find no calls: only the wait is measured)."""
    if log is None:
        log = trail_path.with_name("audit.log")
        log.touch()
    config = AuditdConfig(log_file=log, start_at="end", passwd_file=None, barrier=barrier)
    correlator = Correlator.from_config(config)
    tail = AuditLogTail(config, "bench", correlator=correlator)

    async def drain() -> None:  # what `docktrail run` does with the tail's events
        async for _ in tail:
            pass

    async with tail:
        reader = asyncio.create_task(drain())
        yield Attribution(correlator, hold_secs=config.hold_secs)
        reader.cancel()
        if tail.barriers is not None:
            print(f"audit barriers: {tail.barriers.counts}")


async def _stop_busy(done: asyncio.Event, task: asyncio.Task[int]) -> None:
    done.set()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--containers", type=int, default=200, help="containers to churn")
    parser.add_argument("--volumes", type=int, default=2000, help="volumes to churn")
    parser.add_argument("--workers", type=int, default=4, help="client threads")
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["timer", "idle", "attribution"],
        choices=["timer", "idle", "attribution", "attribution-auditd", "busy"],
        help="pipelines to compare",
    )
    parser.add_argument(
        "--inspect-creates", action="store_true", help="inspect creates, not read their files"
    )
    parser.add_argument(
        "--sizes", default="", help="write into the cached trails of these sizes (e.g. 1M,10M)"
    )
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/docktrail-scale"), help="trail_scale's cache"
    )
    args = parser.parse_args()
    bench_on_private_dockerd(lambda daemon, trail_path: bench(daemon, args, trail_path))


if __name__ == "__main__":
    main()
