"""Run every benchmark, collect their FIGURE lines, write docs/PERFORMANCE.md.

Usage: python bench/all.py [--out docs/PERFORMANCE.md] [--budget-secs 1200] [--only NAME ...]
       [--runs N] [--note TEXT]

Each bench script runs as a subprocess, several times (``runs``), each run
under its own time cap; the whole is kept within ``--budget-secs`` (runs that
would start after the budget is spent are skipped and say so). A bench prints
lines of the form (see bench/figures.py)::

    FIGURE <name> <value> <unit> [baseline=<number>] [ratio=<number>] [target=<text>]

and the harness renders, per figure, min/median/max of the value over the
runs, the median baseline, min/median/max of the ratio, the target and
whether the median meets it. A script that does not exist on this branch, a
bench that needs root when not run as root, a run that failed or hit its cap:
each is listed with the reason, never fatal. The machine (cores, RAM,
kernel, Python, SQLite) and its load average before and after are recorded,
since absolute figures depend on what else runs.

The page ends with the Cost growth table of issue #20 (ingest rate, verify, peak
RSS, bytes per event, `run` start and its delay from an Engine event to the commit
at 100k, 1M and 10M events; see
docs/trail-10m.md for the 10M trails, measured last on what is left of the budget).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "PERFORMANCE.md"


@dataclass(frozen=True)
class Bench:
    script: str  # under bench/
    args: tuple[str, ...] = ()
    runs: int = 3
    cap_secs: float = 120.0  # per run
    needs_root: bool = False  # a private dockerd / auditd
    about: str = ""
    needs_secs: float = 0.0  # budget a run needs at least (0: any 30 s, or its cap if less)


# Sizes are cut down from the scripts' defaults so that everything fits in 20 minutes
# on 2 cores; the scripts' docstrings say what each figure is.
DOCKER_EVENTS_ARGS = ("--containers", "100", "--volumes", "1000", "--modes")
DOCKER_EVENTS_ARGS += ("timer", "idle", "attribution", "attribution-auditd", "busy")
TEN_MILLION = ("--sizes", "10M", "--cached-only")
BENCHES: tuple[Bench, ...] = (
    Bench("audit_parse.py", ("--repeat", "5", "--live-secs", "5"), 3, 150, False, "audit"),
    Bench("metrics_stage.py", ("--events", "50000"), 3, 60, False, "pipeline"),
    Bench("trail_append.py", ("--events", "20000"), 3, 120, False, "trail"),
    Bench("trail_contention.py", ("--repeat", "1", "--cap", "5"), 2, 90, False, "trail writer"),
    Bench("loop_contention.py", ("--secs", "1", "--repeat", "3"), 1, 90, False, "loop threads"),
    Bench("rules.py", ("--events", "50000"), 3, 120, False, "rules"),
    Bench("export.py", ("--events", "20000"), 3, 90, False, "export"),
    Bench("query_filters.py", ("--events", "20000", "--queries", "200"), 3, 90, False, "query"),
    Bench("intent_match.py", ("--creates", "5000"), 3, 90, False, "intents"),
    Bench("input_bounds.py", ("--events", "10000", "--bomb-mib", "64"), 1, 120, False, "input"),
    Bench("ingest_rate.py", ("--events", "30000", "--repeat", "1"), 3, 120, False, "ingest"),
    Bench("kafka.py", ("--events", "10000"), 2, 120, False, "kafka"),
    Bench("growth.py", ("--sizes", "100k,1M"), 1, 420, False, "trail growth"),
    Bench("live_state.py", ("--live", "170k"), 1, 240, False, "live containers"),
    Bench("trail_scale.py", ("--sizes", "100k,1M"), 1, 420, False, "trail scale"),
    Bench("verify_parts.py", ("--size", "1M", "--runs", "1"), 1, 180, False, "verify parts"),
    # One run: its figures are the exec sessions', and the second run (38 s) is what the
    # last bench below lacked on a slower day. For the same reason the trail writer's
    # contention, the input bounds and the posture sweep (no performance target) run fewer times.
    Bench("exec_sessions.py", (), 1, 120, True, "exec sessions"),
    Bench("docker_events.py", DOCKER_EVENTS_ARGS, 2, 240, True, "docker"),
    Bench("notify_latency.py", ("--containers", "40"), 3, 120, True, "notify"),
    Bench("posture_sweep.py", ("--containers", "40", "--running", "10"), 1, 180, True, "posture"),
    # One whole measurement (200 samples of each call): with two, the 10M trails below
    # no longer fitted the 20 minutes on a slower day (proxy 126 s of them).
    Bench("proxy.py", ("--rounds", "200", "--cycles", "60", "--runs", "1"), 1, 300, True, "proxy"),
    Bench("attribution_mix.py", ("--rounds", "1"), 2, 300, True, "attribution"),
    Bench("noise.py", ("--rounds", "2"), 2, 300, True, "alert noise, a restart"),
    # Last, on what is left of the budget: the 10M-event trails, bulk-built once by the
    # scripts themselves (bench/bulk_trail.py; cold, about 12 + 25 min): a cold cache or a
    # spent budget is a note that says so, and the Cost growth table says "not measured".
    # Growth first: it needs less and is over in about a minute; trail_scale's verify of
    # 13 GB takes 2-4 minutes, depending on how much of the file the page cache holds.
    Bench("growth.py", TEN_MILLION, 1, 240, False, "trail growth 10M", needs_secs=90),
    Bench("trail_scale.py", (*TEN_MILLION, "--append-events", "0"), 1, 420, False,
          "trail scale 10M", needs_secs=240),
    # Into the cached 1M and 10M trails, in place (a few thousand events each run): 12 s
    # when last measured whole; a run is stopped at what is left of the budget anyway.
    Bench("docker_events.py", ("--containers", "50", "--volumes", "500", "--modes", "idle",
                               "--sizes", "1M,10M"), 1, 180, True, "docker into 1M and 10M trails",
          needs_secs=30),
)  # fmt: skip

_FIGURE = re.compile(r"^FIGURE (\S+) (\S+) (\S+)((?: \w+=\S+)*)\s*$")
_TARGET = re.compile(r"^(ratio)?(<=|>=|<|>)(-?[0-9.]+(?:e-?\d+)?)$")


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    unit: str
    baseline: float | None = None
    ratio: float | None = None
    target: str | None = None


def parse_figures(text: str) -> list[Figure]:
    """The FIGURE lines of a bench's output; other lines and garbled numbers are ignored."""
    found = []
    for line in text.splitlines():
        match = _FIGURE.match(line.strip())
        if match is None:
            continue
        name, value, unit, rest = match.groups()
        extra = dict(item.split("=", 1) for item in rest.split())
        try:
            found.append(
                Figure(
                    name,
                    float(value),
                    unit,
                    _number(extra.get("baseline")),
                    _number(extra.get("ratio")),
                    extra.get("target"),
                )
            )
        except ValueError:
            continue
    return found


def parse_plans(text: str) -> dict[tuple[str, str], str]:
    """The PLAN lines of a bench's output (bench/figures.py): (size, filter) -> plan."""
    found = {}
    for line in text.splitlines():
        parts = line.strip().split(" ", 3)
        if len(parts) == 4 and parts[0] == "PLAN":
            found[parts[1], parts[2]] = parts[3]
    return found


def _number(text: str | None) -> float | None:
    return None if text is None else float(text)


def target_met(target: str | None, value: float, ratio: float | None) -> bool | None:
    """Whether ``value`` (or ``ratio`` for ``ratio>=X``) meets ``target``; None if unchecked."""
    match = None if target is None else _TARGET.match(target)
    if match is None:
        return None
    on_ratio, op, bound_text = match.groups()
    subject = ratio if on_ratio else value
    if subject is None:
        return None
    bound = float(bound_text)
    return {
        "<": subject < bound,
        "<=": subject <= bound,
        ">": subject > bound,
        ">=": subject >= bound,
    }[op]


@dataclass
class Outcome:
    bench: Bench
    figures: list[Figure] = field(default_factory=list)
    runs_done: int = 0
    notes: list[str] = field(default_factory=list)
    secs: float = 0.0
    plans: dict[tuple[str, str], str] = field(default_factory=dict)  # (size, filter) -> plan


def run_bench(bench: Bench, deadline: float, runs: int | None = None) -> Outcome:
    outcome = Outcome(bench)
    script = REPO / "bench" / bench.script
    if not script.exists():
        outcome.notes.append("not run: the script does not exist on this branch")
        return outcome
    if bench.needs_root and os.geteuid() != 0:
        outcome.notes.append("not run: needs root (a private dockerd / auditd)")
        return outcome
    for number in range(1, (runs or bench.runs) + 1):
        left = deadline - time.monotonic()
        if left < max(min(bench.cap_secs, 30.0), bench.needs_secs):
            outcome.notes.append(
                f"run {number}: skipped, the time budget was spent{_need(bench, left)}"
            )
            print(f"[bench] {bench.script} {' '.join(bench.args)}: {outcome.notes[-1]}", flush=True)
            break
        _one_run(outcome, script, number, min(bench.cap_secs, left))
    return outcome


def _need(bench: Bench, left: float) -> str:
    if not bench.needs_secs:
        return ""
    return f" (it needs about {bench.needs_secs:.0f} s, {max(left, 0):.0f} s were left)"


def _one_run(outcome: Outcome, script: Path, number: int, cap: float) -> None:
    started = time.monotonic()
    command = [sys.executable, str(script), *outcome.bench.args]
    print(f"[bench] {outcome.bench.script} run {number} (cap {cap:.0f} s)", flush=True)
    try:
        done = subprocess.run(
            command, cwd=REPO, capture_output=True, text=True, timeout=cap, check=False
        )
        output, status = done.stdout, done.returncode
    except subprocess.TimeoutExpired as expired:
        output = _text(expired.stdout)
        status = None
        outcome.notes.append(f"run {number}: stopped at its cap of {cap:.0f} s")
    outcome.secs += time.monotonic() - started
    figures = parse_figures(output)
    outcome.figures.extend(figures)
    outcome.runs_done += 1
    if status not in (0, None):
        err = (done.stderr or "").strip().splitlines()[-1:] or ["(no message)"]
        outcome.notes.append(f"run {number}: exit status {status}: {err[0][:160]}")
    outcome.plans.update(parse_plans(output))
    said = [line[5:].strip() for line in output.splitlines() if line.startswith("NOTE ")]
    outcome.notes.extend(f"run {number}: {note}" for note in said)
    if not figures and not said:
        outcome.notes.append(f"run {number}: printed no FIGURE line")
    sys.stdout.write("".join(f"  {line}\n" for line in output.splitlines() if line))


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode("utf-8", "replace") if isinstance(data, bytes) else data


# --------------------------------------------------------------------------- render


def machine() -> dict[str, str]:
    mem_kb = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "cores": str(os.cpu_count()),
        "RAM": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "Python": platform.python_version(),
        "SQLite": sqlite3.sqlite_version,
        "CPU": _cpu_model(),
    }


def _cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.3g}"


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "-"
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{_fmt(low)} / {_fmt(mid)} / {_fmt(high)}"


def figure_rows(figures: Iterable[Figure]) -> list[str]:
    """Markdown rows, one per figure name in first-seen order, runs aggregated."""
    by_name: dict[str, list[Figure]] = {}
    for item in figures:
        by_name.setdefault(item.name, []).append(item)
    rows = []
    for name, seen in by_name.items():
        values = [f.value for f in seen]
        ratios = [f.ratio for f in seen if f.ratio is not None]
        baselines = [f.baseline for f in seen if f.baseline is not None]
        target = seen[-1].target
        median = statistics.median(values)
        met = target_met(target, median, statistics.median(ratios) if ratios else None)
        verdict = {True: "yes", False: "**no**", None: "-"}[met]
        rows.append(
            f"| `{name}` | {seen[0].unit} | {_spread(values)} | "
            f"{_fmt(statistics.median(baselines)) if baselines else '-'} | "
            f"{_spread(ratios)} | {target or '-'} | {verdict} | {len(seen)} |"
        )
    return rows


def render(
    outcomes: Sequence[Outcome], info: dict[str, str], wall_secs: float, note: str = ""
) -> str:
    lines = [
        "# Performance",
        "",
        "Written by `make bench` (`bench/all.py`); do not edit by hand. Each figure is",
        "printed by the bench named in its prefix (see the script's docstring for what",
        "it measures and against which baseline); the baseline is measured in the same",
        "run, so the ratio is the figure to compare across machines.",
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        f"- run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"`make bench` wall time {wall_secs / 60:.1f} min",
        "",
        "Absolute figures are noisy: the machine may be shared with other work",
        "(load average above). Compare ratios. The targets a 2-core machine does not",
        "reach, what their time is spent on and what they would take:",
        "[performance-limits.md](performance-limits.md).",
        *([note, ""] if note else []),
        "",
        "## Figures",
        "",
        "min / median / max over the runs; the target is checked on the median.",
        "",
        "| figure | unit | value | baseline | ratio | target | met | runs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for outcome in outcomes:
        lines.extend(figure_rows(outcome.figures))
    lines += cost_growth(outcomes)
    lines += query_plans(outcomes)
    lines += ["", "## Benches", "", "| bench | runs | time (s) | notes |", "|---|---|---|---|"]
    for outcome in outcomes:
        notes = "; ".join(outcome.notes) or "-"
        lines.append(
            f"| {outcome.bench.script} {' '.join(outcome.bench.args)} | "
            f"{outcome.runs_done} | {outcome.secs:.0f} | {notes} |"
        )
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------- cost growth

GROWTH_SIZES = ("100k", "1M", "10M")
RSS_TARGET_MB = 100.0
QUERY_P95_TARGET_MS = 50.0


def cost_growth(outcomes: Sequence[Outcome]) -> list[str]:
    """The issue's cost-growth table: one row per trail size, medians over the runs."""
    medians = _medians(outcomes)
    lines = [
        "",
        "## Cost growth",
        "",
        "The same measures at each trail size (bench/growth.py, bench/trail_scale.py).",
        "Targets: ingest >= 0.8 of the rate into an empty trail; verify < 30 s at 10M;",
        "peak RSS < 100 MB (`run`: its resident memory 1 s after it says it is running);",
        "`run` start to Engine < 1 s. `run` opens the Engine's stream first and reads it",
        "while it restores what the trail knows; `run` running: when that is done and the",
        "stages are wired (no target: shown for the cost that moved). Ingest: an empty",
        "trail and each size in turn, round after round, after one ingest not counted; a",
        "size's ratio is the median of its rounds' ratios. The 10M trails are bulk-built",
        "(bench/bulk_trail.py): their secondary indexes are packed fuller than grown ones,",
        "so their size and query figures are slightly flattering, and the first insert",
        "into a full leaf splits it, which weighs on their ingest; 100k and 1M are",
        "grown as the service grows them. The 10M growth trail is measured in place (no",
        "13 GB copy), with its actor index read into the page cache first, as a running",
        "service keeps it (100k and 1M are copied before each ingest, so all their pages",
        "are cached); cold: with none of its pages cached, as after a reboot, where each",
        "new container's rows cost a random read of the index from disk (no target).",
        "Its host removes the containers each round leaves in the next, so it",
        "keeps a handful at any size: what `run` holds grows with the containers a host",
        "keeps, not with its trail, and is measured apart (bench/live_state.py, below).",
        "The delay from an Engine event to its commit is bench/docker_events.py's idle",
        "mode (as `docktrail run` writes) into the cached trail of that size; into a",
        f"fresh one: {_empty_commit_p99(medians)} (target < 100 ms).",
        "",
        "| events | ingest into it (x empty) | verify | peak RSS verify / replay / "
        "queries | bytes / event | `run` to Engine | `run` running | `run` RSS "
        "| `run` Engine event to commit p99, containers / volumes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for size in GROWTH_SIZES:
        cells = [_cell(size, medians, outcomes, col) for col in _COLUMNS]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    return lines + _live_state(medians)


def query_plans(outcomes: Sequence[Outcome]) -> list[str]:
    """Each documented filter's p95 and plan on the largest trail that has plans."""
    plans = {key: plan for outcome in outcomes for key, plan in outcome.plans.items()}
    sizes = [size for size in GROWTH_SIZES if any(key[0] == size for key in plans)]
    if not sizes:
        return []
    size, medians = sizes[-1], _medians(outcomes)
    lines = [
        "",
        "## Query plans",
        "",
        f"Each documented filter on the {size}-event trail (bench/trail_scale.py): the p95 of",
        "its first page (LIMIT 100, target < 50 ms) and what each step of SQLite's",
        "EXPLAIN QUERY PLAN reads (its SEARCH, SCAN and sort lines; `xN`: N lines alike but",
        "for a subquery's number). The bench prints the whole plans.",
        "",
        "| filter | p95 | plan |",
        "|---|---|---|",
    ]
    for (at, name), plan in plans.items():
        if at == size:
            p95 = medians.get(f"trail.query.{name}.p95.{size}", (None, None))[0]
            shown = "-" if p95 is None else f"{_fmt(p95)} ms{_met(p95 < QUERY_P95_TARGET_MS)}"
            lines.append(f"| {name} | {shown} | {plan_steps(plan)} |")
    return lines


_NEXT_PAGE = "then, if the page is not full:"  # a label query's second step (query_plan)
_READS = re.compile(r"^(SEARCH|SCAN|USE TEMP B-TREE) ")
_NUMBERED = re.compile(r"(SUBQUERY |subquery-)\d+")


def plan_steps(plan: str) -> str:
    """What each step of a plan reads (its SEARCH, SCAN and sort lines), repeats counted:
    a label query unrolls a subquery per actor, hundreds of lines alike but for a number."""
    phases = []
    for phase in plan.split(_NEXT_PAGE):
        counts: dict[str, int] = {}
        for line in phase.split(" | "):
            line = _NUMBERED.sub(r"\1n", line.strip())
            if _READS.match(line):
                counts[line] = counts.get(line, 0) + 1
        shown = (f"`{line}`" + (f" x{n}" if n > 1 else "") for line, n in counts.items())
        phases.append("; ".join(shown).replace("|", "\\|"))
    return f"; {_NEXT_PAGE} ".join(phases)


def _empty_commit_p99(got: dict[str, tuple[float, float | None]]) -> str:
    values = [got.get(f"docker_events.idle.{burst}.all.p99", (None, None))[0] for burst in _BURSTS]
    if all(v is None for v in values):
        return "not measured in this run"
    return " / ".join("-" if v is None else _fmt(v) for v in values) + " ms"


def _live_state(got: dict[str, tuple[float, float | None]]) -> list[str]:
    """bench/live_state.py's figures as a sentence: `run`'s memory by live containers."""
    prefix, rss = "live_state.run_rss.", []
    for name, (value, _) in got.items():
        size = name.removeprefix(prefix)
        if name.startswith(prefix) and size != "empty":
            per = got.get(f"live_state.kib_per_container.{size}", (None, None))[0]
            each = "" if per is None else f" ({_fmt(per)} KiB per container)"
            rss.append(f"{size} containers: {_fmt(value)} MB{each}")
    if not rss:
        return []
    empty = got.get(f"{prefix}empty", (None, None))[0]
    on_empty = "" if empty is None else f" (an empty trail: {_fmt(empty)} MB)"
    return ["", f"`run` RSS on a trail of containers never removed{on_empty}: "
            + "; ".join(rss) + "."]  # fmt: skip


def _medians(outcomes: Sequence[Outcome]) -> dict[str, tuple[float, float | None]]:
    """name -> (median value, median ratio) over every run of every bench."""
    by_name: dict[str, list[Figure]] = {}
    for outcome in outcomes:
        for item in outcome.figures:
            by_name.setdefault(item.name, []).append(item)
    found = {}
    for name, seen in by_name.items():
        ratios = [f.ratio for f in seen if f.ratio is not None]
        value = statistics.median(f.value for f in seen)
        found[name] = (value, statistics.median(ratios) if ratios else None)
    return found


def _met(ok: bool) -> str:
    return "" if ok else " **(target missed)**"


def _ingest(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    value, ratio = got.get(f"growth.ingest.{size}", (None, None))
    if value is None or ratio is None:
        return None
    cold = got.get(f"growth.ingest.{size}.cold", (None, None))[1]
    after_reboot = "" if cold is None else f"; cold {cold:.2f}x"
    return f"{_fmt(value)} events/s ({ratio:.2f}x{after_reboot}){_met(ratio >= 0.8)}"


def _verify(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    value = got.get(f"trail.verify.{size}", (None, None))[0]
    if value is None:
        return None
    return f"{_fmt(value)} s{_met(size != '10M' or value < 30.0)}"


def _rss(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    names = ("trail.verify.peak_rss", "trail.replay_read.peak_rss", "trail.query.peak_rss")
    values = [got.get(f"{name}.{size}", (None, None))[0] for name in names]
    if all(v is None for v in values):
        return None
    shown = " / ".join("-" if v is None else _fmt(v) for v in values)
    return f"{shown} MB{_met(all(v is None or v < RSS_TARGET_MB for v in values))}"


def _bytes(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    value = got.get(f"trail.bytes_per_event.{size}", (None, None))[0]
    return None if value is None else f"{_fmt(value)} B"


def _commit_p99(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    prefix = f"docker_events.idle.{size}"
    values = [got.get(f"{prefix}.{burst}.all.p99", (None, None))[0] for burst in _BURSTS]
    if all(v is None for v in values):
        return None
    shown = " / ".join("-" if v is None else _fmt(v) for v in values)
    return f"{shown} ms{_met(all(v is None or v < 100.0 for v in values))}"


_BURSTS = ("containers", "volumes")


def _run_start(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    value = got.get(f"growth.run_to_engine.{size}", (None, None))[0]
    return None if value is None else f"{_fmt(value)} s{_met(value < 1.0)}"


def _run_ready(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    value = got.get(f"growth.run_ready.{size}", (None, None))[0]
    return None if value is None else f"{_fmt(value)} s"


def _run_rss(size: str, got: dict[str, tuple[float, float | None]]) -> str | None:
    value = got.get(f"growth.run_rss.{size}", (None, None))[0]
    return None if value is None else f"{_fmt(value)} MB{_met(value < RSS_TARGET_MB)}"


_COLUMNS = (
    ("growth.py", _ingest),
    ("trail_scale.py", _verify),
    ("trail_scale.py", _rss),
    ("trail_scale.py", _bytes),
    ("growth.py", _run_start),
    ("growth.py", _run_ready),
    ("growth.py", _run_rss),
    ("docker_events.py", _commit_p99),
)


def _cell(
    size: str,
    got: dict[str, tuple[float, float | None]],
    outcomes: Sequence[Outcome],
    column: tuple[str, Callable[[str, dict[str, tuple[float, float | None]]], str | None]],
) -> str:
    script, render_cell = column
    shown = render_cell(size, got)
    return shown if shown is not None else "not measured: " + _why_not(script, size, outcomes)


_NOTE_HEAD = re.compile(r"^run \d+: (not measured at \S+: )?")


def _why_not(script: str, size: str, outcomes: Sequence[Outcome]) -> str:
    """What the run of `script` at `size` noted, or that it did not run."""
    for outcome in outcomes:
        args = outcome.bench.args
        sizes = args[args.index("--sizes") + 1].split(",") if "--sizes" in args else []
        if outcome.bench.script == script and size in sizes:
            notes = "; ".join(_NOTE_HEAD.sub("", note) for note in outcome.notes)
            return notes or f"{script} printed no figure for {size}"
    return f"{script} at {size} was not chosen in this run"


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--budget-secs", type=float, default=1200.0)
    parser.add_argument("--runs", type=int, help="runs per bench (default: each bench's own)")
    parser.add_argument("--only", nargs="*", help="bench scripts to run (e.g. audit_parse.py)")
    parser.add_argument("--note", default="", help="a paragraph on the conditions of this run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    deadline = started + args.budget_secs
    info = machine()
    info["load average before"] = _load()
    chosen = [b for b in BENCHES if not args.only or b.script in args.only]
    outcomes = [run_bench(bench, deadline, args.runs) for bench in chosen]
    info["load average after"] = _load()
    wall = time.monotonic() - started
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(outcomes, info, wall, args.note))
    print(f"[bench] wrote {args.out} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
