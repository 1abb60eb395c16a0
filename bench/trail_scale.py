"""The trail at 100k, 1M (and 10M) events: size on disk, append, verify, replay read,
query p95 per documented filter with its plan, and peak RSS.

    .venv/bin/python bench/trail_scale.py [--sizes 100k,1M] [--10m] [--cache /tmp/...]

Each trail is written by the trail's own writer (`SQLiteTrail.append` in large
batches, durability normal, hash chain and indexes computed: the honest path)
from bench/trail_append.py's synthetic stream, and cached under `--cache` so a
second run reuses it (`--rebuild` to start over). For every size it prints

- bytes per event on disk, against the raw JSON of the same events (compact
  JSON of `to_json_object()`, as `query --format json` prints them);
- append rate (events/s while building) against a bare sqlite-utils
  `insert_all` of the same rows, measured on the first 100k events;
- `verify` time (per 1M events) and its peak RSS, in a child process;
- replay read (every event as an `Event`, as `replay` reads them) against a
  plain read (the same rows decoded as JSON), and its peak RSS;
- p95 of each documented filter (first page: LIMIT 100, as the explorer asks)
  with `EXPLAIN QUERY PLAN`.

Figures are printed as `FIGURE name value unit baseline=... ratio=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
for where in (REPO, REPO / "bench"):
    if str(where) not in sys.path:  # run as a script from a checkout
        sys.path.insert(0, str(where))

from figures import figure as print_figure  # noqa: E402
from figures import plan as print_plan  # noqa: E402

from bench import bulk_trail  # noqa: E402
from bench.trail_append import bench_raw, synthetic_events  # noqa: E402
from listener.model.alert import Alert  # noqa: E402
from listener.model.event import Event, natural_id  # noqa: E402
from sinks.base import AlertFilter, EventFilter  # noqa: E402
from sinks.sqlite import SQLiteTrail  # noqa: E402

BATCH = 5_000
# Of the cached trails: bump when the trail's layout changes (2: 8 KiB pages;
# 3: time-ordered event ids, as Docker and audit events now have).
FORMAT = 3
QUERIES = 200
WINDOW_NS = 5 * 10**9  # a time-range query's window: 4,000 events of the synthetic stream
SIZES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
BULK_FROM = 10_000_000  # sizes built with deferred secondary indexes (bench/bulk_trail.py)


def figure(
    name: str, value: float, unit: str, baseline: float | None = None, target: str | None = None
) -> None:
    ratio = value / baseline if baseline else None
    print_figure(name, value, unit, baseline=baseline, ratio=ratio, target=target)


def build(path: Path, count: int) -> tuple[float, int]:
    """Write `count` events with the trail's writer; (seconds appending, raw JSON bytes)."""
    if count < BULK_FROM:
        return _fill(path, count)
    written: list[tuple[float, int]] = []
    took = bulk_trail.build(
        path, path.with_suffix(".key"), lambda: written.append(_fill(path, count))
    )
    print(f"# built {_label(count)} trail (bulk) in {took:.0f}s", flush=True)
    return took, written[0][1]


def _fill(path: Path, count: int) -> tuple[float, int]:
    raw_bytes = 0
    spent = 0.0
    events = synthetic_events(count)
    with SQLiteTrail(path, durability="normal", checkpoint_every_events=100_000) as trail:
        while chunk := [event for _, event in zip(range(BATCH), events, strict=False)]:
            raw_bytes += sum(len(orjson.dumps(e.to_json_object())) for e in chunk)
            started = time.perf_counter()
            stored = trail.append(chunk).stored
            trail.append_alerts([_alert(e) for e in stored if e.config.get("privileged")])
            spent += time.perf_counter() - started
    return spent, raw_bytes


def _alert(event: Event) -> Alert:
    return Alert(
        id=natural_id("scale-alert", event.id),
        time_ns=event.time_ns,
        rule="privileged-container",
        severity="critical",
        event_seq=event.seq or 0,
        event_id=event.id,
        host=event.host,
        container=event.actor.name,
        image=event.actor.image,
        who=event.who,
        summary=f"privileged container {event.actor.name}",
    )


def cache_names(cache: Path, label: str, count: int) -> tuple[Path, Path]:
    """The cached trail and its build record (bulk-built ones have names of their own)."""
    bulk = "-bulk" if count >= BULK_FROM else ""
    return (
        cache / f"trail-v{FORMAT}-{label}{bulk}.db",
        cache / f"trail-v{FORMAT}-{label}{bulk}.json",
    )


def in_cache(cache: Path, label: str) -> bool:
    """Whether the trail of `label` is cached; if not, a NOTE line says so (bench/all.py)."""
    if cache_names(cache, label, SIZES[label])[1].exists():
        return True
    print(
        f"NOTE not measured at {label}: no cached trail in {cache} (build it: "
        f"bench/trail_scale.py --sizes {label}; cold, 10M takes about 12 min)",
        flush=True,
    )
    return False


def cached_trail(cache: Path, label: str, count: int, rebuild: bool) -> tuple[Path, dict[str, Any]]:
    path, meta_path = cache_names(cache, label, count)
    bulk = count >= BULK_FROM
    if rebuild or not meta_path.exists():
        for suffix in ("", "-wal", "-shm", "-writer"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        spent, raw_bytes = build(path, count)
        meta = {"append_secs": spent, "raw_bytes": raw_bytes, "events": count, "bulk": bulk}
        meta_path.write_text(json.dumps(meta))
    return bulk_trail.up_to_date(path), json.loads(meta_path.read_text())


def append_ratio(count: int) -> None:
    """Hash-chained append against a bare insert_all of the same rows (fresh files)."""
    with tempfile.TemporaryDirectory(prefix="docktrail-scale-") as tmp:
        trail_path = Path(tmp) / "trail.db"
        spent, _ = build(trail_path, count)
        conn = sqlite3.connect(trail_path)
        conn.row_factory = sqlite3.Row
        rows = [dict(row) for row in conn.execute("SELECT * FROM events ORDER BY seq")]
        conn.close()
        raw = bench_raw(Path(tmp) / "raw.db", "normal", rows, BATCH)
    figure(f"trail.append.{_label(count)}", count / spent, "events/s", count / raw)


def in_child(path: Path, what: str) -> tuple[float, int]:
    """(seconds, peak RSS in KiB) of `what` run on `path` in a fresh process."""
    result = subprocess.run(
        [sys.executable, __file__, "--child", what, "--path", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    secs, rss = result.stdout.split()
    return float(secs), int(rss)


def child(what: str, path: Path, label: str) -> None:
    started = time.perf_counter()
    if what == "verify":
        with SQLiteTrail(path) as trail:
            report = trail.verify()
            if not report.ok:
                raise SystemExit(f"verify failed: {report.problem}")
    elif what == "replay-read":
        with SQLiteTrail(path) as trail:
            for _ in trail.query(EventFilter()):
                pass
    elif what == "queries":
        with SQLiteTrail(path) as trail:
            query_p95(trail, label, trail.count())
        figure(f"trail.query.peak_rss.{label}", _peak_kib() / 1024, "MB", 100.0, "<100")
        return
    elif what == "plain-read":
        conn = sqlite3.connect(path)
        for _ in conn.execute("SELECT seq, body, prev_hash, hash FROM events ORDER BY seq"):
            orjson.loads(_[1])
        conn.close()
    secs = time.perf_counter() - started
    print(secs, _peak_kib())


def _peak_kib() -> int:
    """This process's peak RSS (VmHWM: ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def query_p95(trail: SQLiteTrail, label: str, count: int) -> None:
    rng = random.Random(11)
    t0 = next(iter(trail.query(EventFilter(limit=1)))).time_ns
    span = next(iter(trail.query(EventFilter(after_seq=count - 1)))).time_ns - t0
    containers = max(count // 13, 1)
    cases: dict[str, Callable[[], EventFilter | AlertFilter]] = {
        "container": lambda: EventFilter(container=_name(rng.randrange(containers)), limit=100),
        "login": lambda: EventFilter(
            user=rng.choice(("alice", "bob", "carol", "deploy")), limit=100
        ),
        "image": lambda: EventFilter(image="registry.internal/api/shop:2024.11.3", limit=100),
        "time-range": lambda: EventFilter(
            since_ns=(s := t0 + rng.randrange(span)), until_ns=s + WINDOW_NS, limit=100
        ),
        "since": lambda: EventFilter(since_ns=t0 + span - WINDOW_NS, limit=100),
        "rule": lambda: AlertFilter(rule="privileged-container", limit=100),
        # The synthetic stream's execs carry no exec id (Engine API < 1.44 style): this
        # measures the index seek, not the rows of a session.
        "session": lambda: EventFilter(session=f"{rng.getrandbits(48):012x}", limit=100),
        # The label index (sinks.sqlite.labels): a label no event has; a ticket about 1 %
        # of the containers carry; the compose project every container carries.
        "label": lambda: EventFilter(labels={"audit.ticket": "OPS-0000"}, limit=100),
        "label-rare": lambda: EventFilter(
            labels={"audit.ticket": f"OPS-{1000 + rng.randrange(97)}"}, limit=100
        ),
        "label-common": lambda: EventFilter(
            labels={"com.docker.compose.project": "shop"}, limit=100
        ),
        # Two labels, each on many containers, together on few: a service and a ticket.
        "label-two": lambda: EventFilter(
            labels={
                "com.docker.compose.service": _name(rng.randrange(5)).split("-")[0],
                "audit.ticket": f"OPS-{1000 + rng.randrange(97)}",
            },
            limit=100,
        ),
    }
    for name, make in cases.items():
        times = []
        for _ in range(QUERIES):
            f = make()
            started = time.perf_counter()
            if isinstance(f, AlertFilter):
                list(trail.query_alerts(f))
            else:
                list(trail.query(f))
            times.append(time.perf_counter() - started)
        p95 = statistics.quantiles(times, n=20)[-1] * 1000
        sample = make()
        plan = (
            trail.alerts_query_plan(sample)
            if isinstance(sample, AlertFilter)
            else trail.query_plan(sample)
        )
        print_plan(label, name, plan)
        figure(f"trail.query.{name}.p95.{label}", p95, "ms", 50.0, "<50")


def _name(k: int) -> str:
    return f"{('web', 'api', 'cache', 'db', 'exporter')[k % 5]}-{k}"


def _label(count: int) -> str:
    return next((k for k, v in SIZES.items() if v == count), str(count))


def run_size(cache: Path, label: str, count: int, rebuild: bool) -> None:
    path, meta = cached_trail(cache, label, count, rebuild)
    on_disk = sum(
        Path(f"{path}{s}").stat().st_size for s in ("", "-wal") if Path(f"{path}{s}").exists()
    )
    raw_per_event = meta["raw_bytes"] / count
    figure(f"trail.bytes_per_event.{label}", on_disk / count, "B", raw_per_event, "ratio<=1.5")
    built = "build_bulk" if meta.get("bulk") else "build"  # bulk: load + indexes + verify
    figure(f"trail.{built}.{label}", count / meta["append_secs"], "events/s")
    verify_secs, verify_rss = in_child(path, "verify")
    figure(f"trail.verify.{label}", verify_secs, "s", target="<30" if count >= 10**7 else None)
    figure(f"trail.verify_per_1M.{label}", verify_secs * 1_000_000 / count, "s", 30.0 / 10)
    figure(f"trail.verify.peak_rss.{label}", verify_rss / 1024, "MB", 100.0, "<100")
    plain_secs, _ = in_child(path, "plain-read")
    replay_secs, replay_rss = in_child(path, "replay-read")
    figure(f"trail.replay_read.{label}", count / replay_secs, "events/s", count / plain_secs)
    figure(f"trail.replay_read.peak_rss.{label}", replay_rss / 1024, "MB", 100.0, "<100")
    result = subprocess.run(
        [sys.executable, __file__, "--child", "queries", "--path", str(path), "--label", label],
        check=True,
        capture_output=True,
        text=True,
    )
    print(result.stdout, end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1M")
    parser.add_argument("--10m", dest="ten_million", action="store_true", help="add 10M")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "docktrail-scale"
    )
    parser.add_argument("--rebuild", action="store_true")
    parser.add_argument(
        "--cached-only", action="store_true", help="skip (with a NOTE) sizes not in the cache"
    )
    parser.add_argument("--append-events", type=int, default=100_000, help="0: no append figure")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--label", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.path, args.label)
        return 0
    labels = [s.strip() for s in args.sizes.split(",") if s.strip()]
    if args.ten_million and "10M" not in labels:
        labels.append("10M")
    args.cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    print(f"cpus {os.cpu_count()}, cache {args.cache}")
    if args.append_events:
        append_ratio(args.append_events)
    for label in labels:
        if args.cached_only and not in_cache(args.cache, label):
            continue
        run_size(args.cache, label, SIZES[label], args.rebuild)
    return 0


if __name__ == "__main__":
    sys.exit(main())
