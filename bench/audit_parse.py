"""Benchmark: auditd log parse+assemble throughput, ours vs ``ausearch -if FILE -i``;
and the CPU share of the live audit tail while the docker CLI runs 1000 times a second.

Usage: python bench/audit_parse.py [FILE] [--repeat N] [--live-rate N] [--live-secs S]
       [--live-store none|sqlite] [--no-live]

FILE defaults to ../shared/fixtures/scenario-a/audit.log, else the gzipped copy
in tests/data (unpacked to a temporary file, since ausearch reads plain files).
Both tools read the same file in the same run, alternately, ``--repeat`` times
each (best and median reported), so machine load affects both alike. Ours is
measured end to end: open, decode, parse every field, assemble events, order
them (records parse their fields when first asked: ``run_ours`` asks every
record, as ``ausearch -i`` interprets every record); ausearch's time includes its
process start. The target is a ratio >= 2.0. Ours runs twice per round: with
the GC as `docktrail run` and `docktrail ingest` tune it (``listener.app.tune_gc``:
start-up objects frozen, fewer collections; the ``*_gc_run`` figure, which is how
docktrail parses, so the target is checked on it) and with CPython's default GC
settings (for comparison): in this process, which holds every module of the
service, the default collector's full passes over those objects are a sixth of
the parse.

Live: a separate writer process appends audit records of docker CLI calls to a
log at ``--live-rate`` calls per second (the 41 CLI execve events of scenario-a,
5 or 6 records each: SYSCALL, EXECVE, CWD, PATH, PROCTITLE, some BPRM_FCAPS;
cycled with fresh time stamps and serials, written every 10 ms as auditd
would), while this process runs what ``docktrail run`` runs for
auditd: the tail (follow, parse, assemble, filter, convert), the correlator and
the pipeline with its checkpointing trail wrapper — into a trail that discards
(``none``, the audit side alone) or the SQLite trail (``sqlite``). Reported:
the process CPU time (all threads) over wall time, the calls seen per second,
and how far the correlator's watermark trails the clock. The target is < 10 %.
The `docker ps -a` loop runs first with CPython's default GC settings, then as
`docktrail run` tunes the GC (`listener.app.tune_gc`); their ratio is printed.
A real loop cannot run the docker CLI 1000 times a second (each call costs
tens of ms of CPU), hence the writer.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import gc
import gzip
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from figures import figure  # noqa: E402

from config.models import AuditdConfig  # noqa: E402
from listener.app import tune_gc  # noqa: E402
from listener.correlate import Attribution, Correlator  # noqa: E402
from listener.model.event import Event  # noqa: E402
from listener.pipeline import Pipeline  # noqa: E402
from listener.sources.auditd import AuditLogTail, CheckpointedTrail  # noqa: E402
from listener.sources.auditparse import AuditEvent, read_audit_file  # noqa: E402
from sinks.base import AppendResult  # noqa: E402

SHARED = REPO.parent / "shared" / "fixtures" / "scenario-a" / "audit.log"
PACKED = REPO / "tests" / "data" / "scenario-a" / "audit.log.gz"


def default_file() -> Path:
    if SHARED.exists():
        return SHARED
    if PACKED.exists():
        work = tempfile.mkdtemp(prefix="dt-bench-")
        atexit.register(shutil.rmtree, work, True)
        unpacked = Path(work) / "audit.log"
        unpacked.write_bytes(gzip.decompress(PACKED.read_bytes()))
        return unpacked
    sys.exit(f"no audit.log found; pass a file ({SHARED} or {PACKED})")


def run_ours(path: Path) -> tuple[float, int]:
    """Every field of every record parsed: records parse their fields when first asked
    for them, so ask (as ``ausearch -i`` interprets every record it prints)."""
    start = time.perf_counter()
    records = 0
    for item in read_audit_file(path):
        if isinstance(item, AuditEvent):
            for record in item.records:
                record.fields  # noqa: B018 (parses)
                record.enriched  # noqa: B018
            records += len(item.records)
    return time.perf_counter() - start, records


def run_ausearch(ausearch: str, path: Path) -> float:
    start = time.perf_counter()
    # exit status 1 only means "no matches"; output goes nowhere like the spec'd > /dev/null
    subprocess.run(
        [ausearch, "-if", str(path), "-i"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - start


# --------------------------------------------------------------------------- live

_STAMP = "@@STAMP@@"
WRITER = """
import sys, time
templates = open(sys.argv[1]).read().split("\\f")
log, rate, secs = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
per_tick, serial, start, n = max(1, rate // 100), 1, time.time(), 0
with open(log, "a") as out:
    while time.time() - start < secs:
        now = time.time()
        chunk = []
        for _ in range(per_tick):
            chunk.append(templates[n % len(templates)].replace("@@STAMP@@", f"{now:.3f}:{serial}"))
            serial += 1
            n += 1
        out.write("".join(chunk))
        out.flush()
        time.sleep(max(0.0, start + n / rate - time.time()))
"""


def cli_templates(path: Path, argv: list[str] | None = None) -> list[str]:
    """The docker CLI execve events of a log, each as text with its stamp replaced.

    With `argv`, every event runs that command instead (EXECVE and PROCTITLE
    rewritten), e.g. the `docker ps` of a monitoring loop.
    """
    events = [
        item
        for item in read_audit_file(path)
        if isinstance(item, AuditEvent) and "docker-cli" in item.key
    ]
    # One pass over the log for every event's lines (it was read once per event).
    lines = _lines_of(path, [record.line for event in events for record in event.records])
    found = []
    for event in events:
        text = "".join(lines[r.line].replace(event.id, _STAMP) for r in event.records)
        found.append(text if argv is None else _with_argv(text, argv))
    return found


def _with_argv(text: str, argv: list[str]) -> str:
    out = []
    for line in text.splitlines(keepends=True):
        head = line[: line.index("): ") + 3] if "): " in line else ""
        if line.startswith("type=EXECVE"):
            args = " ".join(f'a{i}="{a}"' for i, a in enumerate(argv))
            line = f"{head}argc={len(argv)} {args}\n"
        elif line.startswith("type=PROCTITLE"):
            line = f"{head}proctitle={chr(0).join(argv).encode().hex().upper()}\n"
        out.append(line)
    return "".join(out)


def _lines_of(path: Path, numbers: Sequence[int]) -> dict[int, str]:
    wanted = set(numbers)
    with open(path, encoding="utf-8", errors="surrogateescape", newline="\n") as stream:
        return {n: line for n, line in enumerate(stream, 1) if n in wanted}


class NullTrail:
    """Keeps nothing: the audit side's own cost."""

    async def write(self, batch: Sequence[Event], *, source_state: Any = None) -> AppendResult:
        return AppendResult(stored=list(batch))

    async def load_source_state(self, name: str) -> dict[str, Any] | None:
        return None


class SqliteWithoutState:
    """The SQLite trail until it stores source checkpoints (the checkpoint is dropped)."""

    def __init__(self, trail: Any) -> None:
        self.trail = trail

    async def write(self, batch: Sequence[Event], *, source_state: Any = None) -> AppendResult:
        result: AppendResult = await self.trail.write(batch)
        return result

    async def load_source_state(self, name: str) -> dict[str, Any] | None:
        return None


async def _run_tail(
    log: Path, trail: Any, warmup: float, secs: float, cli_events: str = "all", gc_mode: str = "run"
) -> dict[str, float]:
    config = AuditdConfig(log_file=log, start_at="end", passwd_file=None, cli_events=cli_events)
    correlator = Correlator.from_config(config)
    tail = AuditLogTail(config, "bench", correlator=correlator)
    pipeline = Pipeline(
        CheckpointedTrail(trail, [tail]),
        stages=[Attribution(correlator, hold_secs=1.0)],
        write_when_idle=True,  # as `docktrail run` writes
    )

    async def consume() -> None:
        async for event in tail:
            await pipeline.put(event)

    if gc_mode == "run":
        tune_gc()  # as `docktrail run` does at start
    else:  # CPython's defaults: the baseline of the GC tuning
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
    async with tail:
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(warmup)
        before, started = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        calls = tail.converter.counters.calls
        await asyncio.sleep(secs)
        after, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - started
        lag = (time.time_ns() - correlator.watermark_ns) / 1e6
        seen = tail.converter.counters.calls - calls
    await consumer
    await pipeline.aclose()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu / wall, "rate": seen / wall, "lag_ms": lag, "rss_mb": after.ru_maxrss / 1024}


def bench_live(
    source: Path,
    rate: int,
    secs: float,
    store: str,
    mix: str,
    cli_events: str = "all",
    gc_mode: str = "run",
) -> float:
    warmup = 1.0
    work = Path(tempfile.mkdtemp(prefix="dt-live-"))
    templates = work / "templates"
    argv = ["docker", "ps", "-a"] if mix == "ps" else None
    templates.write_text("\f".join(cli_templates(source, argv)))
    log = work / "audit.log"
    log.touch()
    trail: Any = NullTrail()
    if store == "sqlite":
        from config.models import TrailConfig
        from sinks.sqlite import SQLiteTrail

        inner = SQLiteTrail.from_config(TrailConfig(path=work / "t.db", durability="normal"))
        trail = SqliteWithoutState(inner)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(templates), str(log), str(rate), str(warmup + secs + 1)]
    )
    try:
        if store == "sqlite":
            result = asyncio.run(_with_sqlite(trail, log, warmup, secs, cli_events, gc_mode))
        else:
            result = asyncio.run(_run_tail(log, trail, warmup, secs, cli_events, gc_mode))
    finally:
        writer.terminate()
        writer.wait()
        shutil.rmtree(work, ignore_errors=True)
    what = "docker ps -a loop" if mix == "ps" else "scenario-a's 41 calls (run, exec, rm…)"
    print(
        f"live tail, {what}, cli_events={cli_events}, {store} trail, GC {gc_mode}: "
        f"{result['cpu'] * 100:.1f} % of one CPU at "
        f"{result['rate']:.0f} docker CLI calls/s (writer asked {rate}); watermark "
        f"{result['lag_ms']:.0f} ms behind the clock; max RSS {result['rss_mb']:.0f} MB"
    )
    name = f"audit_tail.cpu.{mix}.{cli_events}.{store}.gc_{gc_mode}"
    figure(name, result["cpu"] * 100, "%", target="<10" if mix == "scenario" else None)
    return result["cpu"]


async def _with_sqlite(
    trail: SqliteWithoutState,
    log: Path,
    warmup: float,
    secs: float,
    cli_events: str,
    gc_mode: str,
) -> Any:
    async with trail.trail:
        return await _run_tail(log, trail, warmup, secs, cli_events, gc_mode)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--live-rate", type=int, default=1000)
    parser.add_argument("--live-secs", type=float, default=5.0)
    parser.add_argument("--live-store", choices=["none", "sqlite"], default="none")
    parser.add_argument("--no-live", action="store_true")
    args = parser.parse_args()
    path: Path = args.file or default_file()
    bench_parse(path, args.repeat)
    if not args.no_live:
        live = functools.partial(bench_live, path, args.live_rate, args.live_secs, args.live_store)
        default_gc = live("ps", "all", gc_mode="default")
        tuned = live("ps", "all")
        print(f"GC as `docktrail run` tunes it / CPython's defaults: {tuned / default_gc:.2f}x CPU")
        figure("audit_tail.gc_tuned_vs_default", tuned * 100, "%", baseline=default_gc * 100,
               ratio=tuned / default_gc)  # fmt: skip
        live("ps", "changes")
        live("scenario", "all")


def bench_parse(path: Path, repeat: int) -> None:
    ausearch = shutil.which("ausearch") or (
        "/usr/sbin/ausearch" if Path("/usr/sbin/ausearch").exists() else None
    )
    ours: list[float] = []
    ours_gc_run: list[float] = []  # with the GC as `docktrail run` tunes it
    theirs: list[float] = []
    cpu_ours: list[float] = []  # CPU seconds: less swayed than wall time by a busy machine
    cpu_theirs: list[float] = []
    records = 0
    run_ours(path)  # warm the page cache and imports for both tools
    for _ in range(repeat):
        cpu_before = time.process_time()
        elapsed, records = run_ours(path)
        cpu_ours.append(time.process_time() - cpu_before)
        ours.append(elapsed)
        ours_gc_run.append(_with_run_gc(run_ours, path)[0])
        if ausearch:
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            theirs.append(run_ausearch(ausearch, path))
            cpu_theirs.append(_children_cpu() - (children.ru_utime + children.ru_stime))

    size_mb = path.stat().st_size / 1e6
    print(f"file: {path} ({size_mb:.1f} MB, {records} records)")
    best, median = records / min(ours), records / statistics.median(ours)
    print(f"ours:     {best:10.0f} records/s best, {median:10.0f} median")
    if not theirs:
        print("ausearch: not installed (apt-get install auditd); no ratio")
        return
    tbest, tmedian = records / min(theirs), records / statistics.median(theirs)
    print(f"ausearch: {tbest:10.0f} records/s best, {tmedian:10.0f} median")
    print(f"ratio ours/ausearch: {best / tbest:.2f}x best, {median / tmedian:.2f}x median")
    figure("audit_parse.records_per_s", median, "records/s", baseline=tmedian,
           ratio=median / tmedian)  # fmt: skip
    figure("audit_parse.records_per_s_best", best, "records/s", baseline=tbest,
           ratio=best / tbest)  # fmt: skip
    run_gc = records / statistics.median(ours_gc_run)
    print(f"ours, GC as `docktrail run` tunes it: {run_gc:10.0f} records/s median, "
          f"ratio {run_gc / tmedian:.2f}x; vs default GC {run_gc / median:.2f}x")  # fmt: skip
    figure("audit_parse.records_per_s_gc_run", run_gc, "records/s", baseline=tmedian,
           ratio=run_gc / tmedian, target="ratio>=2.0")  # fmt: skip
    cpu, tcpu = records / statistics.median(cpu_ours), records / statistics.median(cpu_theirs)
    print(f"per CPU second (median): ours {cpu:10.0f} records/s, ausearch {tcpu:10.0f}, "
          f"ratio {cpu / tcpu:.2f}x")  # fmt: skip
    figure("audit_parse.records_per_cpu_s", cpu, "records/s", baseline=tcpu, ratio=cpu / tcpu)


def _with_run_gc(run: Any, path: Path) -> tuple[float, int]:
    """``run(path)`` with the GC as `docktrail run` sets it, then CPython's defaults again."""
    tune_gc()
    try:
        result: tuple[float, int] = run(path)
    finally:
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)
    return result


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


if __name__ == "__main__":
    main()
