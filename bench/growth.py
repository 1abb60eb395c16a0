"""Benchmark: does the cost of new input grow with the trail it goes into?

    .venv/bin/python bench/growth.py [--sizes 100k,1M] [--new 20000] [--repeat 2]
                                     [--cache /tmp/docktrail-growth] [--no-run]

Trails of each size are built once and kept in `--cache` (reused by later
runs; `--rebuild` makes them again): the Engine events of the scenario-a
capture (/work/shared/fixtures/scenario-a/events.jsonl, or a built-in copy of
its mix) repeated round after round with fresh container ids and names and
later times, stored through the trail's own pipeline (`Pipeline` with the
`RulesStage`, 20,000 events per transaction: hash chain, indexes, rules and
alerts as in the service), so the history holds the alerts it would hold.
The capture ends with four containers still there; each round first removes
the previous round's (`die` and `destroy`, as a host that redeploys does), so
the host keeps a handful of containers however long its trail. What the state
of many live containers costs is bench/live_state.py's figure.

Then, in this run, against copies of those trails and an empty one:

- `ingest` of `--new` more events of the same mix (`ingest_files`, end to end:
  parse, rules, trail, alerts; under `docktrail ingest`'s collector settings and
  switch interval, `listener.app.tuned_runtime`) into each trail vs into the
  empty one. A copy is in the page cache as it is written; a 10M trail, measured
  in place, is measured twice a round: first with none of its pages cached
  (`evicted`: as after a reboot; the `.cold` figure), then with its actor index
  read first (`warmed`: as a running service keeps it);
- `docktrail run` (a real process) from its start to its first connection to
  the Engine's socket (a local stand-in that only records the connection),
  on each trail vs on the empty one;
- with `--restart`, the same ingest again into the trail the first ingest left
  (a second start: what rules state the first start saved, it finds).

Output: `FIGURE name value unit baseline=… ratio=…` lines (median of
`--repeat` runs; min and max beside), which bench/all.py collects. The ratio
is rate(size)/rate(empty) for ingest (1.0: flat; the target is >= 0.8), the
median of the rounds' ratios (an empty trail and each size are measured in
turn, round after round, after one ingest that is not counted), and
time(size)/time(empty) for `run`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO))

from figures import figure as print_figure  # noqa: E402

from bench import bulk_trail  # noqa: E402
from config.models import DocktrailConfig  # noqa: E402
from listener.app import tuned_runtime  # noqa: E402
from listener.ingest import ingest_files  # noqa: E402
from listener.pipeline import Pipeline  # noqa: E402
from listener.rules.engine import RuleEngine, RulesStage  # noqa: E402
from listener.rules.registry import RULES  # noqa: E402
from listener.rules.snapshot import STATE_VERSION  # noqa: E402
from listener.sources.docker import normalize_engine_event  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402
from sinks.sqlite.actors import TABLES  # noqa: E402

SCENARIO = Path("/work/shared/fixtures/scenario-a/events.jsonl")
HOST = "bench-host"
BUILD_BATCH = 20_000
ROUND_GAP_NS = 1_000_000_000
# Of the cached trails: bump when the generator or the trail changes (4: 8 KiB pages;
# 5: each round removes the containers the previous one left).
FORMAT = 5
# New events start after the rounds of the largest trail this bench can build.
NEW_FIRST_ROUND = 10_000_000
# From this size on a trail is built with its secondary indexes deferred
# (bench/bulk_trail.py) and measured in place, not in a copy (a 10M trail is
# ~13 GB): each measured ingest adds its events to the cached trail for good,
# with rounds of its own, so the trail is a little larger at each run (printed).
BULK_FROM = 10_000_000


def parse_size(text: str) -> int:
    text = text.strip().lower()
    factor = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * factor)


def size_name(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1_000}k"


# -- the event mix --------------------------------------------------------------


class Mix:
    """Round r of the scenario: its events with ids and names of round r, r spans later."""

    def __init__(self, template: list[dict[str, Any]]) -> None:
        self.template = template
        first, last = template[0]["timeNano"], template[-1]["timeNano"]
        self.span_ns = last - first + ROUND_GAP_NS
        self.first_ns = first
        self.last_ns = last
        self.removals = _removals(template)

    def write(self, path: Path, first_round: int, events: int) -> Path:
        """`events` Engine events from round `first_round` on, as an events file at `path`."""
        with path.open("w") as out:
            for raw in self.rounds(first_round, events):
                out.write(json.dumps(raw) + "\n")
        return path

    def rounds(self, first_round: int, events: int) -> Iterator[dict[str, Any]]:
        produced, round_no = 0, first_round
        while True:
            for raw in self._round(round_no, first=round_no == first_round):
                if produced == events:
                    return
                yield raw
                produced += 1
            round_no += 1

    def _round(self, round_no: int, *, first: bool) -> Iterator[dict[str, Any]]:
        """The previous round's leftovers removed (half a gap after it), then the scenario."""
        if not first:
            removed_at = self.last_ns + (round_no - 1) * self.span_ns + ROUND_GAP_NS // 2
            for step, raw in enumerate(self.removals):
                item = self._of_round(raw, round_no - 1)
                when = removed_at + step * 1_000_000
                item["timeNano"], item["time"] = when, when // 1_000_000_000
                yield item
        for raw in self.template:
            yield self._of_round(raw, round_no)

    def _of_round(self, raw: dict[str, Any], round_no: int) -> dict[str, Any]:
        item: dict[str, Any] = json.loads(json.dumps(raw))
        when = raw["timeNano"] + round_no * self.span_ns
        item["timeNano"], item["time"] = when, when // 1_000_000_000
        if item.get("Type") == "container":
            fresh = _fresh_id(item["Actor"]["ID"], round_no)
            item["Actor"]["ID"] = item["id"] = fresh
            attrs = item["Actor"]["Attributes"]
            if "name" in attrs:
                attrs["name"] = f"{attrs['name']}-{round_no}"
            if "execID" in attrs:
                attrs["execID"] = _fresh_id(attrs["execID"], round_no)
        elif item.get("Type") == "network" and "container" in item["Actor"]["Attributes"]:
            attrs = item["Actor"]["Attributes"]
            attrs["container"] = _fresh_id(attrs["container"], round_no)
        return item


def _removals(template: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Engine events that remove the containers `template` leaves: `die` for a running
    one, then `destroy`, each with the attributes of its `create`."""
    created: dict[str, dict[str, Any]] = {}
    running: set[str] = set()
    for raw in template:
        if raw.get("Type") != "container":
            continue
        cid, action = raw["Actor"]["ID"], str(raw.get("Action", "")).split(":")[0]
        if action == "create":
            created[cid] = raw
        elif action == "destroy":
            created.pop(cid, None)
        elif action == "start":
            running.add(cid)
        elif action == "die":
            running.discard(cid)
    removals = []
    for cid, create in created.items():
        for action in ("die", "destroy") if cid in running else ("destroy",):
            item = json.loads(json.dumps(create))
            item["Action"] = item["status"] = action
            if action == "die":
                item["Actor"]["Attributes"]["exitCode"] = "137"
            removals.append(item)
    return removals


def _fresh_id(old: str, round_no: int) -> str:
    return hashlib.sha256(f"{old}:{round_no}".encode()).hexdigest()


def load_mix() -> Mix:
    lines = SCENARIO.read_text().splitlines()
    return Mix([json.loads(line) for line in lines if line.strip()])


# -- building and copying trails -----------------------------------------------


def trail_config(path: Path, beside: Path | None = None) -> DocktrailConfig:
    """`beside`: the directory of the Engine's socket (default: the trail's)."""
    sock_dir = path.parent if beside is None else beside
    return DocktrailConfig.model_validate(
        {
            "host": HOST,  # the events' host: `run` reads what the trail knows of it
            "trail": {"path": str(path), "signing_key": str(path.with_suffix(".key"))},
            "auditd": {"enabled": False},
            "docker": {"host": f"unix://{sock_dir / 'engine.sock'}", "sweep_interval_secs": 0},
            "posture": {"enabled": False},
        }
    )


async def build_trail(path: Path, raws: Iterable[dict[str, Any]]) -> None:
    """Stores Engine events as `run` would: rules and alerts, and the saved states it keeps."""
    config = trail_config(path)
    trail = SQLiteTrail.from_config(config.trail)
    async with trail:
        stage = RulesStage(trail, RuleEngine(config.rules))
        await stage.start()
        stages: list[Any] = [stage]
        try:
            from listener.sources.known_saved import restore_known
        except ImportError:  # a checkout from before saved states, for `before` figures
            pass
        else:
            stages.append((await trail.call(lambda t: restore_known(t, HOST)))[1])
        pipeline = Pipeline(trail, stages=stages, batch_size=BUILD_BATCH, flush_interval_secs=60)
        async with pipeline:
            for raw in raws:
                await pipeline.put(normalize_engine_event(raw, HOST))
        for saving in stages:  # what the service does at a clean stop
            save = getattr(saving, "save_state", None) or getattr(saving, "save", None)
            if save is not None:
                await save()


def cache_key() -> str:
    """The bench's format, the rule set and the saved state's version: a trail built under
    other rules would be measured with its one-off rebuild of the rules' state."""
    rules = ",".join(sorted(rule.meta.id for rule in RULES))
    return hashlib.sha256(f"{FORMAT}|{STATE_VERSION}|{rules}".encode()).hexdigest()[:10]


def cached_trail(cache: Path, mix: Mix, events: int, rebuild: bool) -> Path:
    bulk = "-bulk" if events >= BULK_FROM else ""  # not the incrementally grown one
    path = cache / f"growth-{cache_key()}-{size_name(events)}{bulk}.db"
    if path.exists() and not rebuild:
        return bulk_trail.up_to_date(path)
    for old in cache.glob(path.name + "*"):
        old.unlink()
    path.with_suffix(".key").unlink(missing_ok=True)
    building = cache / f"building-{size_name(events)}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    started = time.perf_counter()
    if bulk:
        db = building / "t.db"

        def fill() -> None:
            asyncio.run(build_trail(db, mix.rounds(0, events)))

        bulk_trail.build(db, db.with_suffix(".key"), fill)
    else:
        asyncio.run(build_trail(building / "t.db", mix.rounds(0, events)))
    took = time.perf_counter() - started
    how = " (bulk: indexes deferred, verified)" if bulk else ""
    print(f"# built {size_name(events)} trail{how} in {took:.0f}s ({events / took:,.0f} events/s)")
    return install_built(building, path)


def install_built(building: Path, path: Path) -> Path:
    """The trail built in `building` (t.db, t.key) moved to `path` in the cache."""
    os.replace(building / "t.db", path)
    os.replace(building / "t.key", path.with_suffix(".key"))
    shutil.rmtree(building)
    return path


def in_cache(cache: Path, events: int) -> bool:
    """Whether the trail of `events` is cached; if not, a NOTE line says so (bench/all.py)."""
    bulk = "-bulk" if events >= BULK_FROM else ""
    if (cache / f"growth-{cache_key()}-{size_name(events)}{bulk}.db").exists():
        return True
    print(
        f"NOTE not measured at {size_name(events)}: no cached trail in {cache} (build it: "
        f"bench/growth.py --sizes {size_name(events)}; cold, 10M takes about 25 min)",
        flush=True,
    )
    return False


def copy_trail(cached: Path | None, work: Path) -> Path:
    """A private copy of a cached trail (with its key), or a fresh directory for an empty one."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    path = work / "t.db"
    if cached is not None:
        shutil.copyfile(cached, path)
        shutil.copyfile(cached.with_suffix(".key"), path.with_suffix(".key"))
        os.chmod(path.with_suffix(".key"), 0o600)
        _on_disk(path)
    return path


def _on_disk(path: Path) -> None:
    # On disk before the clock starts: a trail of that size is not a gigabyte of
    # dirty page cache, which the measured ingest's first fsync would write out.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def in_place(path: Path) -> Path:
    """The cached trail itself, measured where it lies (no 13 GB copy)."""
    _on_disk(path)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        events = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    print(f"# measured in place: {path.name}, last event seq {events:,}", flush=True)
    return path


def evicted(path: Path) -> Path:
    """`path` with none of its pages in the OS page cache: as after a reboot.

    Only this file's pages (`POSIX_FADV_DONTNEED`, after an fsync so none is dirty):
    what else the machine caches is left as it is."""
    _on_disk(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return path


def warmed(path: Path) -> Path:
    """`path` with its actor index in the OS page cache: as a running service keeps it.

    A writer inserts each new container's rows at a random place in the actor index
    (`sinks.sqlite.actors`), so over a few thousand containers a running service has
    read every page of it; an ingest into a cold 10M trail reads most of its pages
    from disk instead (34 of the 41 MB one ingest read, measured with mincore(2)).
    The 100k and 1M trails are copied before each ingest, so all their pages are
    cached: warmed, the 10M trail is measured as they are."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        for table in TABLES:
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return path


def fresh_events(work: Path, path: Path, count: int) -> Path:
    """`count` new events of rounds that no earlier in-place run stored in `path`:
    each run adds more events than it uses rounds, so the stored count keys them."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        stored = conn.execute("SELECT max(seq) FROM events").fetchone()[0]
    return load_mix().write(work / "fresh.jsonl", NEW_FIRST_ROUND * 3 + stored, count)


# -- measurements ----------------------------------------------------------------


def ingest_secs(path: Path, new_events: Path) -> float:
    gc.collect()
    with tuned_runtime():  # the collector and switch interval of `docktrail ingest`
        started = time.perf_counter()
        report = asyncio.run(
            ingest_files(trail_config(path), docker_events=[new_events], host=HOST)
        )
        took = time.perf_counter() - started
    if report.stats.stored == 0:
        raise SystemExit(f"ingest into {path} stored nothing: {report.summary()}")
    return took


class EngineStandIn:
    """A unix socket that records when the service first connects, and answers nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.first: float | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path.unlink(missing_ok=True)
        self._sock.bind(str(path))
        self._sock.listen(16)
        self._held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._sock.accept()
                if self.first is None:
                    self.first = time.perf_counter()
                self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


class RunStart(NamedTuple):
    secs: float  # from starting `docktrail run` to its first connection to the Engine
    ready_secs: float  # to its "docktrail running" (states restored, stages wired)
    rss_mb: float  # the service's resident memory RSS_SETTLE_SECS after it is running


RSS_SETTLE_SECS = 1.0


def run_start_secs(path: Path, beside: Path | None = None, timeout: float = 600.0) -> float:
    """Seconds from starting `docktrail run` to its first connection to the Engine."""
    return run_start(path, beside, timeout).secs


def run_start(path: Path, beside: Path | None = None, timeout: float = 600.0) -> RunStart:
    """`docktrail run`'s start on `path`, and its memory once started;
    `beside`: where its config and the Engine's socket go (default: the trail's directory)."""
    where = path.parent if beside is None else beside
    config = trail_config(path, where)
    config_file = where / "docktrail.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json", exclude_defaults=True)))
    engine = EngineStandIn(where / "engine.sock")
    log_path = where / "run.log"
    started = time.perf_counter()
    with log_path.open("wb") as log_file:
        service = subprocess.Popen(
            [sys.executable, "-m", "listener", "--config", str(config_file), "run"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        _wait_until(lambda: engine.first is not None, service, started, timeout, "read the Engine")
        _wait_until(lambda: _running(log_path), service, started, timeout, "say it is running")
        ready = time.perf_counter() - started
        time.sleep(RSS_SETTLE_SECS)
        assert engine.first is not None
        return RunStart(engine.first - started, ready, _rss_mb(service.pid))
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(timeout=60)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
        engine.close()


def _wait_until(
    done: Callable[[], bool],
    service: subprocess.Popen[bytes],
    started: float,
    timeout: float,
    what: str,
) -> None:
    while not done():
        if service.poll() is not None:
            raise SystemExit(f"docktrail run exited with {service.returncode} before it did {what}")
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"docktrail run did not {what} in time")
        time.sleep(0.005)


def _running(log_path: Path) -> bool:
    return b'"docktrail running"' in log_path.read_bytes()


def figure(name: str, values: list[float], unit: str, baseline: float, ratio: float) -> None:
    median = statistics.median(values)
    print_figure(name, median, unit, baseline=baseline, ratio=ratio, spread=values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1M", help="trail sizes, e.g. 100k,1M,10M")
    parser.add_argument("--new", type=int, default=20_000, help="events ingested into each")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/docktrail-growth"))
    parser.add_argument("--rebuild", action="store_true", help="build the cached trails again")
    parser.add_argument(
        "--cached-only", action="store_true", help="skip (with a NOTE) sizes not in the cache"
    )
    parser.add_argument("--no-run", action="store_true", help="skip the `run` start-up figures")
    parser.add_argument("--no-ingest", action="store_true", help="skip the ingest figures")
    parser.add_argument("--restart", action="store_true", help="also a second ingest")
    parser.add_argument(
        "--cold", action="store_true", help="also `run` with the saved states deleted (rebuilt)"
    )
    args = parser.parse_args()
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    mix = load_mix()
    args.cache.mkdir(parents=True, exist_ok=True)
    os.chmod(args.cache, 0o700)
    if args.cached_only:
        sizes = [n for n in sizes if in_cache(args.cache, n)]
        if not sizes:
            return
    cached = {n: cached_trail(args.cache, mix, n, args.rebuild) for n in sizes}
    with tempfile.TemporaryDirectory(prefix="growth-", dir=args.cache) as tmp:
        work = Path(tmp)
        new_events = mix.write(work / "new.jsonl", NEW_FIRST_ROUND, args.new)
        if not args.no_ingest:
            measure_ingest(sizes, cached, work, new_events, args)
        if not args.no_run:
            measure_run(sizes, cached, work, args.repeat, cold=args.cold)


def measure_ingest(
    sizes: list[int], cached: dict[int, Path], work: Path, new_events: Path, args: Any
) -> None:
    """Round after round, an empty trail and each size in turn, the order reversed every
    other round (a drift of the machine then weighs on both sides alike). A size's ratio is
    the median of its rounds' ratios to the empty trail's rate in the same round.

    One ingest into an empty trail comes first and is not counted: the first of a process
    pays for what later ones find ready (lazy imports, caches), which would flatter every
    size against the empty baseline measured first."""
    ingest_secs(copy_trail(None, work / "t"), new_events)
    empty: list[float] = []
    rates: dict[int, list[float]] = {n: [] for n in sizes}
    ratios: dict[int, list[float]] = {n: [] for n in sizes}
    again: dict[int, list[float]] = {n: [] for n in sizes}
    cold: dict[int, list[float]] = {n: [] for n in sizes if n >= BULK_FROM}
    cold_ratios: dict[int, list[float]] = {n: [] for n in cold}
    for round_no in range(args.repeat):
        order: list[int | None] = [None, *sizes] if round_no % 2 == 0 else [*sizes, None]
        measured = {n: _ingest_rate(n, cached, work, new_events, args, again, cold)
                    for n in order}  # fmt: skip
        empty.append(measured[None])
        for n in sizes:
            rates[n].append(measured[n])
            ratios[n].append(measured[n] / measured[None])
        for n in cold:
            cold_ratios[n].append(cold[n][-1] / measured[None])
    base = statistics.median(empty)
    figure("growth.ingest.empty", empty, "events/s", base, 1.0)
    for n in sizes:
        name = size_name(n)
        figure(f"growth.ingest.{name}", rates[n], "events/s", base, statistics.median(ratios[n]))
        if again[n]:
            ratio = statistics.median(again[n]) / base
            figure(f"growth.ingest.{name}.restart", again[n], "events/s", base, ratio)
    for n in cold:
        ratio = statistics.median(cold_ratios[n])
        figure(f"growth.ingest.{size_name(n)}.cold", cold[n], "events/s", base, ratio)


def _ingest_rate(
    n: int | None,
    cached: dict[int, Path],
    work: Path,
    new_events: Path,
    args: Any,
    again: dict[int, list[float]],
    cold: dict[int, list[float]],
) -> float:
    """Events/s of `--new` events into an empty trail (`n` None) or one of `n` events.

    In place, cold first (none of the trail's pages cached, added to `cold[n]`), then
    warm: the pages an ingest reads at the trail's ends are cached by the cold one, the
    actor index by `warmed`, and `run`, measured after the rounds, finds them so too."""
    if n is None:
        return float(args.new / ingest_secs(copy_trail(None, work / "t"), new_events))
    if n >= BULK_FROM:
        path = evicted(in_place(cached[n]))
        cold[n].append(args.new / ingest_secs(path, fresh_events(work, path, args.new)))
        path = warmed(path)
        return float(args.new / ingest_secs(path, fresh_events(work, path, args.new)))
    path = copy_trail(cached[n], work / "t")
    rate = float(args.new / ingest_secs(path, new_events))
    if args.restart:  # only on copies: in place, the next round is a second start
        more = load_mix().write(work / "more.jsonl", NEW_FIRST_ROUND * 2, args.new)
        again[n].append(args.new / ingest_secs(path, more))
    return rate


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for process {pid}")


def measure_run(
    sizes: list[int], cached: dict[int, Path], work: Path, repeat: int, *, cold: bool
) -> None:
    empty = [run_start(copy_trail(None, work / "r")) for _ in range(repeat)]
    base = statistics.median(start.secs for start in empty)
    figure("growth.run_to_engine.empty", [start.secs for start in empty], "s", base, 1.0)
    ready_base = statistics.median(start.ready_secs for start in empty)
    _ready_figure("empty", empty, ready_base)
    _rss_figure("empty", empty)
    for n in sizes:
        if n >= BULK_FROM:  # its config and the Engine's socket go to `work`, not the cache
            starts = [run_start(in_place(cached[n]), work) for _ in range(repeat)]
        else:
            starts = [run_start(copy_trail(cached[n], work / "r")) for _ in range(repeat)]
        times = [start.secs for start in starts]
        ratio = statistics.median(times) / base
        figure(f"growth.run_to_engine.{size_name(n)}", times, "s", base, ratio)
        _ready_figure(size_name(n), starts, ready_base)
        _rss_figure(size_name(n), starts)
        if cold and n >= BULK_FROM:
            print(f"# {size_name(n)}: no cold start (it would delete the cached trail's states)")
        elif cold:  # the first start after an upgrade, or after the saved states were deleted
            path = copy_trail(cached[n], work / "r")
            with sqlite3.connect(path) as conn:
                conn.execute("DELETE FROM rule_state")
            took = run_start_secs(path)
            figure(f"growth.run_to_engine.{size_name(n)}.cold", [took], "s", base, took / base)


def _ready_figure(size: str, starts: list[RunStart], base: float) -> None:
    """From the start to "docktrail running": the Engine is already being read by then."""
    ready = [start.ready_secs for start in starts]
    figure(f"growth.run_ready.{size}", ready, "s", base, statistics.median(ready) / base)


def _rss_figure(size: str, starts: list[RunStart]) -> None:
    rss = [start.rss_mb for start in starts]
    median = statistics.median(rss)
    print_figure(f"growth.run_rss.{size}", median, "MB", baseline=100.0, ratio=median / 100.0,
                 target="<100", spread=rss)  # fmt: skip


if __name__ == "__main__":
    main()
